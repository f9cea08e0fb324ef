"""The state store's decisions, in one process: which SQLite errors mean "cannot write"
(the database kept) rather than "cannot read" (moved aside), the name and companions of a
database moved aside, what is said of a database without a checkpoint, and the detector
settings that changed. (test_state.py drives the same through real services; mutation
testing showed these results were reached in-process but not looked at.)"""

from __future__ import annotations

import logging
import re
import resource
import sqlite3
import threading
from datetime import UTC, datetime, tzinfo
from pathlib import Path

import pytest
from test_state import LEGACY_DDL, STATE_FILE, db_at_version, pos

import retrywatch.serve.state as state_module
from retrywatch.detect.core import DetectorConfig
from retrywatch.serve.state import StateStore, changed_fields, settings_record
from retrywatch.sources.checkpoint import Position
from retrywatch.sources.fingerprint import Fingerprint


def error(name: str | None) -> sqlite3.Error:
    exc = sqlite3.OperationalError("x")
    exc.sqlite_errorname = name  # type: ignore[attr-defined]
    return exc


# -- SQLite's errors ------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "cannot_write"), [
    ("SQLITE_FULL", True), ("SQLITE_PERM", True), ("SQLITE_AUTH", True),
    ("SQLITE_NOMEM", True), ("SQLITE_READONLY", True), ("SQLITE_READONLY_DBMOVED", True),
    ("SQLITE_BUSY", True), ("SQLITE_BUSY_TIMEOUT", True), ("SQLITE_LOCKED", True),
    ("SQLITE_LOCKED_SHAREDCACHE", True), ("SQLITE_IOERR", True),
    ("SQLITE_IOERR_WRITE", True), ("SQLITE_IOERR_FSYNC", True),
    # the database itself is at fault: these move it aside
    ("SQLITE_IOERR_READ", False), ("SQLITE_IOERR_SHORT_READ", False),
    ("SQLITE_CORRUPT", False), ("SQLITE_NOTADB", False), ("SQLITE_ERROR", False),
    ("SQLITE_FULLER", False), ("", False), (None, False),
])
def test_which_errors_mean_cannot_write(name: str | None, cannot_write: bool) -> None:
    assert state_module._cannot_write(error(name)) is cannot_write


@pytest.mark.parametrize(("name", "busy"), [
    ("SQLITE_BUSY", True), ("SQLITE_BUSY_SNAPSHOT", True), ("SQLITE_LOCKED", True),
    ("SQLITE_LOCKED_VTAB", True), ("SQLITE_FULL", False), ("", False), (None, False),
])
def test_which_errors_mean_busy(name: str | None, busy: bool) -> None:
    assert state_module._busy(error(name)) is busy


def test_an_error_name_is_a_string_even_without_one() -> None:
    assert state_module._error_name(error("SQLITE_FULL")) == "SQLITE_FULL"
    assert state_module._error_name(error(None)) == ""
    assert state_module._error_name(sqlite3.Error("no name at all")) == ""


def test_a_real_full_write_is_cannot_write(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db")
    conn.execute("CREATE TABLE t (x BLOB)")
    conn.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.Error) as caught:
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    conn.close()
    assert state_module._error_name(caught.value) == "SQLITE_FULL"
    assert state_module._cannot_write(caught.value)


# -- a database moved aside ---------------------------------------------------------------
_FROZEN = datetime(2026, 12, 3, 6, 50, 1, tzinfo=UTC).timestamp()


class _Frozen(datetime):
    """``now`` stopped at 2026-12-03 06:50:01 UTC, in the zone asked for (the process's
    local time when none is, as the real one)."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> _Frozen:
        return cls.fromtimestamp(_FROZEN, tz)


@pytest.mark.usefixtures("away_from_utc")  # the name is in UTC, not the machine's zone
def test_a_database_moved_aside_is_named_for_the_moment_with_its_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(state_module, "datetime", _Frozen)
    # SQLite itself deletes the companions of a file that is no database when it opens
    # it: found unreadable without being opened, the file keeps them to be moved along.
    real_connect = state_module._connect
    calls = []

    def unreadable_once(path: Path) -> object:
        calls.append(path)
        if len(calls) == 1:
            raise state_module._Unreadable("file is not a database")
        return real_connect(path)

    monkeypatch.setattr(state_module, "_connect", unreadable_once)
    state = tmp_path / "state"
    state.mkdir()
    db = state / STATE_FILE
    db.write_bytes(b"garbage " * 100)
    Path(f"{db}-wal").write_bytes(b"the log")
    Path(f"{db}-journal").write_bytes(b"a journal")
    Path(f"{db}-shm").write_bytes(b"an index")
    taken = state / f"{STATE_FILE}.corrupt-20261203T065001Z"
    taken.write_bytes(b"moved aside before, in the same second")
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(state) as store:
        moved = store.moved_aside
        store.save([pos(3)])
    assert moved == state / f"{STATE_FILE}.corrupt-20261203T065001Z-2"
    assert moved.read_bytes() == b"garbage " * 100
    assert Path(f"{moved}-wal").read_bytes() == b"the log"
    assert Path(f"{moved}-journal").read_bytes() == b"a journal"
    assert not Path(f"{moved}-shm").exists()
    assert taken.read_bytes() == b"moved aside before, in the same second"
    (said,) = [r.getMessage() for r in caplog.records if "moved aside" in r.getMessage()]
    assert said.startswith(f"state database {db} cannot be read (file is not a database)")
    assert said.endswith(f"moved aside to {moved.name}, starting afresh")


def test_a_third_in_the_same_second_is_numbered_3(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "datetime", _Frozen)
    state = tmp_path / "state"
    state.mkdir()
    stamp = "20261203T065001Z"
    for name in (f"{STATE_FILE}.corrupt-{stamp}", f"{STATE_FILE}.corrupt-{stamp}-2"):
        (state / name).write_bytes(b"")
    (state / STATE_FILE).write_bytes(b"garbage " * 100)
    with StateStore(state) as store:
        assert store.moved_aside == state / f"{STATE_FILE}.corrupt-{stamp}-3"


def test_a_database_that_cannot_be_moved_aside_is_a_state_dir_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / STATE_FILE).write_bytes(b"garbage " * 100)

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(state_module.os, "rename", refuse)
    with pytest.raises(state_module.StateDirError,
                       match=r"cannot be read \(.*\) nor moved aside: Permission denied"):
        StateStore(state)


# -- what is said on opening (word for word: test_state_open.py) ---------------------------
@pytest.mark.parametrize(("table", "said"), [
    (None, True), ("file_positions", False), ("engine_state", False),
    ("delivery_state", False)])
def test_a_legacy_database_without_rows_is_said_to_hold_no_checkpoint(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, table: str | None,
        said: bool) -> None:
    state = tmp_path / "state"
    state.mkdir()
    conn = sqlite3.connect(state / STATE_FILE, isolation_level=None)
    for sql in LEGACY_DDL:
        conn.execute(sql)
    rows = {"file_positions": "INSERT INTO file_positions VALUES ('/x', 1, 2, 3, 'ab', 4)",
            "engine_state": "INSERT INTO engine_state VALUES (1, 1.0, x'00', x'00')",
            "delivery_state": "INSERT INTO delivery_state VALUES (1, x'00')"}
    if table is not None:
        conn.execute(rows[table])
    conn.close()
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(state) as store:
        assert store.moved_aside is None
    assert ("holds no checkpoint" in caplog.text) is said, caplog.text


# -- detector settings ------------------------------------------------------------------------
def test_changed_fields_say_each_setting_that_differs() -> None:
    config = DetectorConfig(threshold=100_000, window=30)
    saved = {"window": 60, "threshold": 20, "min_repeat": config.min_repeat,
             "timezone": "UTC"}
    assert changed_fields(saved, config) == ["window 60 → 30", "threshold 20 → 100000"]
    assert changed_fields({}, config) == []
    assert changed_fields(settings_record(config, state_module.resolve_zone("UTC")),
                          config) == []
    assert re.fullmatch(r"max_tracked 5 → \d+",
                        changed_fields({"max_tracked": 5}, config)[0])


# -- positions and the write-ahead log --------------------------------------------------------
@pytest.mark.parametrize("ino", [0, (1 << 63) - 1, 1 << 63, (1 << 63) + 1, (1 << 64) - 1])
def test_an_inode_number_round_trips_through_sqlites_signed_integer(tmp_path: Path,
                                                                     ino: int) -> None:
    """Device and inode numbers are unsigned 64-bit; SQLite's INTEGER is signed: from
    2^63 on they are stored negative and read back as they were."""
    p = Position("/var/log/nginx/error.log", Fingerprint(ino, ino, 256, "ab" * 16), 7)
    with StateStore(tmp_path) as store:
        store.save([p])
        assert store.load() == {p.path: p}
        (dev,) = store.connection.execute("SELECT dev FROM file_positions").fetchone()
    assert dev == (ino - (1 << 64) if ino >= 1 << 63 else ino)


def _offsets_in_the_file(db: Path) -> list[int]:
    """The offsets the database file itself holds (what its write-ahead log holds left
    out): what a copy without the log would resume from."""
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        return [row[0] for row in conn.execute("SELECT offset FROM file_positions")]
    finally:
        conn.close()


def test_the_log_is_folded_into_the_file_every_fold_every_seconds(tmp_path: Path) -> None:
    now = [0.0]
    settings = settings_record(DetectorConfig(), UTC)
    with StateStore(tmp_path, clock=lambda: now[0]) as store:
        db = store.path
        store.save_state([pos(10)], b"core", b"{}", settings, None, taken=1.0)
        assert _offsets_in_the_file(db) == [10]  # the first checkpoint: folded at once
        now[0] = state_module.FOLD_EVERY - 0.001
        store.save_state([pos(20)], b"core", b"{}", settings, None, taken=2.0)
        assert _offsets_in_the_file(db) == [10]  # in the log only
        assert store.load() == {pos(20).path: pos(20)}
        now[0] = state_module.FOLD_EVERY
        store.save_state([pos(30)], b"core", b"{}", settings, None, taken=3.0)
        assert _offsets_in_the_file(db) == [30]
        now[0] = 2 * state_module.FOLD_EVERY - 0.001
        store.save_state([pos(40)], b"core", b"{}", settings, None, taken=4.0)
        assert _offsets_in_the_file(db) == [30]


# -- failures while opening, writing and closing -----------------------------------------------
def _full(conn: sqlite3.Connection, sql: str) -> None:
    """_execute_in_transaction on a full disk."""
    raise sqlite3.OperationalError("database or disk is full")


def test_a_database_that_cannot_be_created_is_a_state_dir_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(path: Path) -> object:
        raise state_module._Unreadable("file is not a database")

    monkeypatch.setattr(state_module, "_connect", unreadable)
    db = tmp_path / STATE_FILE
    db.write_bytes(b"garbage " * 100)  # moved aside, then the new one fails as well
    with pytest.raises(state_module.StateDirError) as raised:
        StateStore(tmp_path)
    assert str(raised.value) == f"state database {db} cannot be created: file is not a database"
    monkeypatch.undo()
    StateStore(tmp_path).close()  # the refused open let go of its lock


def test_a_running_mark_that_cannot_be_written_is_a_state_dir_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "_execute_in_transaction", _full)
    with pytest.raises(state_module.StateDirError) as raised:
        StateStore(tmp_path)
    assert str(raised.value) == (
        f"state database {tmp_path / STATE_FILE} cannot be written: database or disk is full")
    monkeypatch.undo()
    StateStore(tmp_path).close()


def test_a_migration_beyond_the_file_size_limit_keeps_the_database(tmp_path: Path) -> None:
    """A real write failure at open (the process may write 8 KiB per file: RLIMIT_FSIZE,
    as on a full disk): "cannot be written", the database kept and migrated the next time."""
    db = tmp_path / STATE_FILE
    db_at_version(db, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))  # CPython ignores SIGXFSZ
    try:
        with pytest.raises(state_module.StateDirError) as raised:
            StateStore(tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(raised.value) == f"state database {db} cannot be written: disk I/O error"
    with StateStore(tmp_path) as store:
        assert store.moved_aside is None
        assert list(store.load()) == ["/var/log/nginx/error.log"]


def test_the_connection_may_be_used_from_another_thread(tmp_path: Path) -> None:
    """The ingest loop opens the store; shutdown may write the last checkpoint from
    another thread."""
    errors: list[BaseException] = []
    with StateStore(tmp_path) as store:
        def write() -> None:
            try:
                store.save([pos(5)])
            except BaseException as exc:  # reported below
                errors.append(exc)

        worker = threading.Thread(target=write)
        worker.start()
        worker.join(10)
        assert errors == []
        assert store.load() == {pos(5).path: pos(5)}


def test_closing_twice_or_unable_to_mark_the_stop_is_quiet(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(tmp_path)
    store.close()
    store.close()  # the database and the lock are closed already: nothing to do
    store = StateStore(tmp_path)

    monkeypatch.setattr(state_module, "_execute_in_transaction", _full)
    store.close()  # the stop not marked: the next start says the log may be lost
    monkeypatch.undo()
    StateStore(tmp_path).close()  # closed and unlocked all the same


def test_a_failed_statement_is_rolled_back_and_raised_as_it_was(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db", isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(sqlite3.OperationalError, match="no such table: nope"):
        state_module._execute_in_transaction(conn, "INSERT INTO nope VALUES (1)")
    assert not conn.in_transaction
    # a statement that ends the transaction itself: the rollback after it fails quietly
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON t BEGIN "
                 "SELECT RAISE(ROLLBACK, 'refused by a trigger'); END")
    with pytest.raises(sqlite3.IntegrityError, match=r"^refused by a trigger$"):
        state_module._execute_in_transaction(conn, "INSERT INTO t VALUES (1)")
    assert not conn.in_transaction
    conn.close()


def test_a_connection_that_cannot_be_made_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(state_module._Unreadable, match=r"^unable to open database file$"):
        state_module._connect(tmp_path / "missing" / STATE_FILE)
