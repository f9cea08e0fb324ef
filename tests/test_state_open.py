"""What opening the state database says, word for word, and what it leaves, in one
process: an empty file, a legacy one without a checkpoint, a migration, a lost
write-ahead log (with and without a checkpoint in the file), a newer or reshaped schema
moved aside with its reason, a directory in use, a file where the directory should be,
an engine state that cannot be read. (test_state.py runs the same through ``retrywatch
run`` in a subprocess, which mutation testing cannot see into; an operator reads these
lines, so their words are the behaviour.)"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from test_state import STATE_FILE, db_at_version, pos

from retrywatch.detect.core import DetectorConfig
from retrywatch.serve.state import SCHEMA_VERSION, StateDirError, StateStore, settings_record
from retrywatch.timezones import resolve_zone

SETTINGS = settings_record(DetectorConfig(), resolve_zone("UTC"))


def said(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "retrywatch"]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


def unclean_copy(tmp_path: Path, taken: float | None, with_log: bool = False) -> Path:
    """The database file of a running service copied without its log (kill -9, then a
    partial copy): its running mark is in the file, its log is not (``with_log``: it is,
    as after a plain kill -9)."""
    source = tmp_path / "running"
    store = StateStore(source)
    if taken is not None:
        store.save_state([pos(10)], b"core", b"{}", SETTINGS, None, taken=taken)
        store.fold()
        store.save_state([pos(20)], b"core", b"{}", SETTINGS, None, taken=taken + 1)
    copy = tmp_path / "copy"
    copy.mkdir()
    names = [STATE_FILE, f"{STATE_FILE}-wal"] if with_log else [STATE_FILE]
    for name in names:
        (copy / name).write_bytes((source / name).read_bytes())
    store.close()
    return copy


def test_a_new_database_says_nothing_and_is_marked_running(
        state: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, "retrywatch"), StateStore(state) as store:
        assert store.moved_aside is None and store.wal_lost is False
        mark = store.connection.execute("SELECT value FROM meta WHERE key = 'running'")
        assert mark.fetchone() == ("1",)
        assert store.connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert store.connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert store.connection.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    assert said(caplog) == []
    conn = sqlite3.connect(state / STATE_FILE)
    assert conn.execute("SELECT value FROM meta WHERE key = 'running'").fetchone() == ("0",)
    conn.close()


def test_a_directory_it_creates_is_private(tmp_path: Path) -> None:
    made = tmp_path / "a" / "b"
    old = os.umask(0)
    try:
        StateStore(made).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    lock = made / f"{STATE_FILE}.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert lock.read_text() == f"{os.getpid()}\n"
    # a longer pid left by an earlier holder is replaced whole, not overwritten in part
    lock.write_text("4194304000\n")
    StateStore(made).close()
    assert lock.read_text() == f"{os.getpid()}\n"


def test_an_empty_file_is_said_and_started_afresh(
        state: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = state / STATE_FILE
    db.write_bytes(b"")
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(state) as store:
        assert store.moved_aside is None and store.load() == {}
    assert said(caplog) == [("WARNING", f"state database {db} is empty (0 bytes): nothing to "
                                        "resume from, starting afresh")]


def test_a_legacy_database_without_a_checkpoint_is_said(
        state: Path, caplog: pytest.LogCaptureFixture) -> None:
    from test_state import LEGACY_DDL
    db = state / STATE_FILE
    conn = sqlite3.connect(db, isolation_level=None)
    for sql in LEGACY_DDL:
        conn.execute(sql)
    conn.close()
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(state):
        pass
    assert said(caplog) == [
        ("WARNING", f"state database {db} holds no checkpoint (its write-ahead log "
                    f"{STATE_FILE}-wal lost?): starting afresh")]


def test_a_migration_is_said_once_and_a_current_database_says_nothing(
        state: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = state / STATE_FILE
    db_at_version(db, 0)
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(state) as store:
        assert store.load_state().engine is not None
    assert said(caplog) == [
        ("INFO", f"state database {db}: schema migrated from version 0 to {SCHEMA_VERSION}")]
    caplog.clear()
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(state):
        pass
    assert said(caplog) == []


@pytest.mark.usefixtures("away_from_utc")  # the checkpoint's time is said in UTC
def test_a_lost_log_with_a_checkpoint_in_the_file_is_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    copy = unclean_copy(tmp_path, taken=86_400 + 61.0)
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(copy) as store:
        assert store.wal_lost is True
        assert store.load_state().engine is not None
    db = copy / STATE_FILE
    assert said(caplog) == [
        ("WARNING", f"state database {db}: its write-ahead log {STATE_FILE}-wal is missing "
                    "after an unclean stop (kill -9, crash, partial copy): the checkpoints in "
                    "it are lost, resuming from the checkpoint of 1970-01-02T00:01:01Z that the "
                    "database file holds")]


def test_an_unclean_stop_with_its_log_says_nothing_and_loses_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    copy = unclean_copy(tmp_path, taken=1000.0, with_log=True)
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(copy) as store:
        assert store.wal_lost is False
        saved = store.load_state()
    assert saved.engine is not None and saved.engine.taken == 1001.0  # the log's checkpoint
    assert saved.positions[pos(20).path].offset == 20
    assert said(caplog) == []


def test_a_lost_log_without_a_checkpoint_says_there_is_none(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    copy = unclean_copy(tmp_path, taken=None)
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(copy) as store:
        assert store.wal_lost is True
    (line,) = said(caplog)
    assert line[1].endswith("resuming from no checkpoint (the database file holds none)")


def test_a_clean_stop_then_open_says_nothing(
        state: Path, caplog: pytest.LogCaptureFixture) -> None:
    StateStore(state).close()
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(state) as store:
        assert store.wal_lost is False
    assert said(caplog) == []


def _moved_reason(caplog: pytest.LogCaptureFixture, db: Path) -> str:
    (line,) = [m for level, m in said(caplog) if level == "ERROR"]
    head = f"state database {db} cannot be read ("
    assert line.startswith(head), line
    return line[len(head):line.index("): moved aside to ")]


def test_a_newer_schema_is_moved_aside_with_its_reason(
        state: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = state / STATE_FILE
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(state) as store:
        assert store.moved_aside is not None
    assert _moved_reason(caplog, db) == (
        f"schema version {SCHEMA_VERSION + 1} is newer than this retrywatch's {SCHEMA_VERSION}")


def test_a_table_of_another_shape_is_moved_aside_with_its_columns(
        state: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = state / STATE_FILE
    db_at_version(db, SCHEMA_VERSION)
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE meta ADD COLUMN extra TEXT")
    conn.close()
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(state) as store:
        assert store.moved_aside is not None and store.load() == {}
    assert _moved_reason(caplog, db) == "table meta has columns ['key', 'value', 'extra']"


def test_a_migration_that_fails_is_rolled_back_and_moved_aside_with_its_reason(
        state: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A version-0 database that has the column version 1 adds already: the migration
    stops at its ALTER TABLE, leaves the file as it was, and says SQLite's reason."""
    db = state / STATE_FILE
    db_at_version(db, 0)
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE engine_state ADD COLUMN settings TEXT")
    conn.close()
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(state) as store:
        moved = store.moved_aside
    assert moved is not None
    assert _moved_reason(caplog, db) == "duplicate column name: settings"
    conn = sqlite3.connect(moved)  # kept as it was, its checkpoint in it
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (0,)
        assert conn.execute("SELECT offset FROM file_positions").fetchall() == [(4096,)]
    finally:
        conn.close()


def test_garbage_is_moved_aside_with_sqlites_reason(
        state: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = state / STATE_FILE
    db.write_bytes(b"garbage " * 100)
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(state) as store:
        assert store.moved_aside is not None
    assert _moved_reason(caplog, db) == "file is not a database"
    assert len(said(caplog)) == 1  # the new database in its place is said nothing of


def test_a_damaged_page_is_moved_aside_with_the_integrity_checks_words(
        state: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A database SQLite opens and reads the version of, but whose quick_check fails: a
    page of engine_state claims its cells start 10 bytes before its end, where none are."""
    StateStore(state).close()
    db = state / STATE_FILE
    conn = sqlite3.connect(db)
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    (page,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'engine_state'"
                           ).fetchone()
    conn.close()
    data = bytearray(db.read_bytes())
    at = (page - 1) * size
    assert data[at] == 0x0D  # a leaf page of a table
    data[at + 5:at + 7] = (size - 10).to_bytes(2, "big")  # where the cell content starts
    db.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(state) as store:
        assert store.moved_aside is not None and store.load_state().engine is None
    # ours up to the colon, then SQLite's first line of findings (its words vary by version)
    reason = _moved_reason(caplog, db)
    assert reason.startswith("integrity check: *** in database main ***\n"), reason
    assert reason.endswith(f" on page {page}"), reason


def test_a_directory_in_place_of_the_database_is_moved_aside(
        state: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = state / STATE_FILE
    db.mkdir()
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(state) as store:
        assert store.moved_aside is not None and store.moved_aside.is_dir()
        store.save([pos(1)])
    assert _moved_reason(caplog, db) == "not a regular file"
    assert db.is_file()


def test_a_directory_in_use_names_the_process_holding_it(state: Path) -> None:
    with StateStore(state), pytest.raises(StateDirError) as raised:
        StateStore(state)
    assert str(raised.value) == (
        f"state directory {state} is in use by another retrywatch (pid {os.getpid()})")


def test_a_database_locked_by_another_writer_is_in_use(state: Path) -> None:
    StateStore(state).close()
    other = sqlite3.connect(state / STATE_FILE, isolation_level=None, timeout=0)
    other.execute("PRAGMA journal_mode=DELETE")
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StateDirError) as raised:
            StateStore(state)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert str(raised.value).startswith(
        f"state database {state / STATE_FILE} in use by another process: "), raised.value
    assert not (state / STATE_FILE).with_name(f"{STATE_FILE}.corrupt").exists()
    assert not [p for p in state.iterdir() if ".corrupt-" in p.name]  # kept, not moved


def test_a_lock_file_of_another_holder_is_read_as_it_is(state: Path) -> None:
    """The holder's pid is what its lock file says: 32 bytes at most, bytes that are no
    UTF-8 replaced, and "?" for an empty file (a holder that had not written it yet)."""
    lock = state / f"{STATE_FILE}.lock"
    for content, shown in [(b"", "?"), (b"\xff12\n", "\ufffd12"), (b"  4242  \n", "4242")]:
        lock.write_bytes(content)
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(StateDirError) as raised:
                StateStore(state)
        finally:
            os.close(fd)
        assert str(raised.value) == (
            f"state directory {state} is in use by another retrywatch (pid {shown})")
        assert lock.read_bytes() == content  # a refused start leaves the holder's file alone


def test_a_lock_file_that_cannot_be_opened_is_said(state: Path) -> None:
    (state / f"{STATE_FILE}.lock").mkdir()
    with pytest.raises(StateDirError) as raised:
        StateStore(state)
    assert str(raised.value) == f"state directory {state} cannot be written: Is a directory"


def test_a_directory_that_cannot_be_made_is_said(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateDirError) as raised:
        StateStore(tmp_path / "file" / "state")
    assert str(raised.value) == (
        f"state directory {tmp_path / 'file' / 'state'} cannot be written: Not a directory")


def test_a_file_in_place_of_the_directory_is_said(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("x")
    with pytest.raises(StateDirError) as raised:
        StateStore(tmp_path / "state")
    assert str(raised.value) == f"state directory {tmp_path / 'state'} is not a directory"


def test_an_engine_state_that_cannot_be_read_is_said_and_left_out(
        state: Path, caplog: pytest.LogCaptureFixture) -> None:
    with StateStore(state) as store:
        store.save_state([pos(5)], b"core", b"{}", SETTINGS, b"deliveries")
        store.connection.execute("UPDATE engine_state SET core = x'00ff'")
        with caplog.at_level(logging.INFO, "retrywatch"):
            saved = store.load_state()
    assert saved.engine is None
    assert saved.positions == {pos(5).path: pos(5)} and saved.delivery == b"deliveries"
    (line,) = said(caplog)
    assert line[0] == "ERROR"
    assert line[1].startswith("the saved engine state cannot be read (Error -3 while ")
    assert line[1].endswith("): starting afresh")


def test_settings_that_are_not_an_object_are_read_as_none(state: Path) -> None:
    with StateStore(state) as store:
        store.save_state([], b"core", b"{}", SETTINGS, None, taken=5.0)
        store.connection.execute("UPDATE engine_state SET settings = '[1, 2]'")
        engine = store.load_state().engine
    assert engine is not None and engine.settings is None
    assert (engine.taken, engine.core) == (5.0, b"core")
