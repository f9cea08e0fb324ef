"""The positions in the state store (retrywatch/serve/state.py): they round-trip, and
transactions shared with the caller's own rows commit or roll back together."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from retrywatch.serve.state import StateStore
from retrywatch.sources.checkpoint import Position
from retrywatch.sources.fingerprint import Fingerprint

FP = Fingerprint(dev=2049, ino=1 << 63 | 5, length=256, digest="ab" * 16)


def pos(offset: int, path: str = "/var/log/nginx/error.log") -> Position:
    return Position(path, FP, offset)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    s = StateStore(tmp_path / "state")
    s.connection.execute("CREATE TABLE detector (k TEXT PRIMARY KEY, v INTEGER)")
    return s


def detector_rows(store: StateStore) -> list[tuple[str, int]]:
    return list(store.connection.execute("SELECT k, v FROM detector"))


def test_round_trip_survives_reopening(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state") as store:
        assert store.load() == {}
        store.save([pos(10), pos(20, "/other.log")])
        store.save([pos(30)])
    with StateStore(tmp_path / "state") as store:
        assert store.load() == {"/var/log/nginx/error.log": pos(30),
                                "/other.log": pos(20, "/other.log")}


def test_wal_and_synchronous_normal(store: StateStore) -> None:
    assert store.connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert store.connection.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL


def test_transaction_commits_positions_and_the_callers_rows(store: StateStore) -> None:
    with store.transaction() as tx:
        tx.save_positions([pos(10)])
        tx.connection.execute("INSERT INTO detector VALUES ('cid', 1)")
    assert store.load() == {pos(10).path: pos(10)}
    assert detector_rows(store) == [("cid", 1)]


def test_rollback_keeps_the_old_positions_and_rows(store: StateStore) -> None:
    store.save([pos(10)])
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.save_positions([pos(99)])
        tx.connection.execute("INSERT INTO detector VALUES ('cid', 1)")
        raise RuntimeError("the detector failed")
    assert store.load() == {pos(10).path: pos(10)}
    assert detector_rows(store) == []


def test_save_joins_the_callers_transaction(store: StateStore) -> None:
    conn = store.connection
    conn.execute("BEGIN")
    store.save([pos(5)], conn=conn)
    conn.execute("INSERT INTO detector VALUES ('cid', 2)")
    conn.execute("ROLLBACK")
    assert store.load() == {}
    assert detector_rows(store) == []


def test_uncommitted_positions_are_not_seen_by_another_connection(
        store: StateStore, tmp_path: Path) -> None:
    other = sqlite3.connect(store.path)
    with store.transaction() as tx:
        tx.save_positions([pos(7)])
        assert list(other.execute("SELECT offset FROM file_positions")) == []
    assert list(other.execute("SELECT offset FROM file_positions")) == [(7,)]
    other.close()


def test_forget(store: StateStore) -> None:
    store.save([pos(1), pos(2, "/b.log")])
    store.forget(["/b.log"])
    assert list(store.load()) == [pos(1).path]
