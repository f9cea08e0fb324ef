"""The live service's one state store: ``STATE_DIR/retrywatch.sqlite3``.

This module owns the SQLite schema (versioned: ``PRAGMA user_version``, with
:data:`MIGRATIONS`), and writes, in one transaction, each followed file's position, the
engine's state those positions produced (the core's versioned bytes and the alerts as
JSON) and the deliveries' state. A restart, even after ``kill -9``, loads them together:
no line lost, none counted twice. Nothing stored is code, and nothing read is executed.

The database runs in WAL mode with ``synchronous=NORMAL``: a commit survives a crash of
the process at any moment; on power loss only the last commits can be lost, positions
and engine state together (one transaction), so the lines are read again and counted
once. ``FULL`` would add an fsync to every commit, several a second, for no exactness.

Opening never leaves the service unable to start over a bad file:

- the directory is created ``0700``; one that cannot be created or written, or that
  another retrywatch uses, is a :class:`StateDirError` (one line, said at start);
- a database that cannot be read (cut short, garbage, a directory in its place, a schema
  of another shape or of a newer retrywatch) is moved aside to
  ``retrywatch.sqlite3.corrupt-TIMESTAMP`` (its ``-wal`` beside it), logged in one line,
  and a new one is started (:attr:`StateStore.moved_aside`);
- a database left by a process that did not stop cleanly, whose write-ahead log
  (``-wal``) is gone, is said in one line (:attr:`StateStore.wal_lost`): the checkpoints
  in the log are lost, the service resumes from what the database file holds. The mark
  of a running service is copied into the database file itself at open (a WAL checkpoint),
  and the log is copied into it every :data:`FOLD_EVERY` seconds, which bounds that loss.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import orjson

from retrywatch.detect.core import DetectorConfig
from retrywatch.sources.checkpoint import Position
from retrywatch.sources.fingerprint import Fingerprint
from retrywatch.timezones import resolve_zone

__all__ = [
    "DETECTOR_FIELDS",
    "FILENAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Saved",
    "SavedEngine",
    "StateDirError",
    "StateStore",
    "Transaction",
    "settings_record",
    "zone_name",
]

log = logging.getLogger("retrywatch")

FILENAME = "retrywatch.sqlite3"
#: The version of the schema this retrywatch writes (``PRAGMA user_version``).
SCHEMA_VERSION = 1
#: Seconds between copies of the write-ahead log into the database file.
FOLD_EVERY = 30.0
#: The detector settings recorded with each snapshot (``DetectorConfig`` fields).
DETECTOR_FIELDS = ("window", "threshold", "min_repeat", "resolve_after", "max_tracked")

#: ``MIGRATIONS[v]`` takes a database at version ``v - 1`` to version ``v``. Version 0 is
#: retrywatch's layout before the schema had a version: the three tables below, each
#: created on first use (so some may be missing).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS file_positions (
            path TEXT PRIMARY KEY, dev INTEGER NOT NULL, ino INTEGER NOT NULL,
            fp_length INTEGER NOT NULL, fp_digest TEXT NOT NULL, offset INTEGER NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS engine_state (
            id INTEGER PRIMARY KEY CHECK (id = 1), taken REAL NOT NULL, core BLOB NOT NULL,
            alerts BLOB NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS delivery_state (
            id INTEGER PRIMARY KEY CHECK (id = 1), state BLOB NOT NULL)""",
        # The detector settings and time zone the snapshot was taken under (JSON; NULL in
        # snapshots of version 0, which did not record them).
        "ALTER TABLE engine_state ADD COLUMN settings TEXT",
        # running: '1' while a service has the database open, '0' after a clean stop.
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
}
#: Each table's columns at :data:`SCHEMA_VERSION`: a database of another shape is unreadable.
COLUMNS = {
    "file_positions": ("path", "dev", "ino", "fp_length", "fp_digest", "offset"),
    "engine_state": ("id", "taken", "core", "alerts", "settings"),
    "delivery_state": ("id", "state"),
    "meta": ("key", "value"),
}

_U64 = (1 << 64) - 1
_UPSERT = """
INSERT INTO file_positions (path, dev, ino, fp_length, fp_digest, offset)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (path) DO UPDATE SET dev = excluded.dev, ino = excluded.ino,
    fp_length = excluded.fp_length, fp_digest = excluded.fp_digest, offset = excluded.offset
"""


class StateDirError(Exception):
    """The state directory cannot be used (one line: said at start, exit 2)."""


class _Unreadable(Exception):
    """The database cannot be read as a state database."""


@dataclass(frozen=True, slots=True)
class SavedEngine:
    """The engine's saved state: the core's bytes, the alerts, and what they were taken
    under (None: a snapshot of schema version 0, which did not record it)."""

    taken: float
    core: bytes
    alerts: bytes
    settings: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Saved:
    """Everything the last checkpoint wrote."""

    positions: dict[str, Position]
    engine: SavedEngine | None
    delivery: bytes | None


class Transaction:
    """One open transaction of a :class:`StateStore`; the caller may write its own rows
    with :attr:`connection` (never commit or roll back through it)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def save_positions(self, positions: Iterable[Position]) -> None:
        _write_positions(self.connection, positions)

    def save_engine(self, taken: float, core: bytes, alerts: bytes,
                    settings: dict[str, Any]) -> None:
        self.connection.execute(
            "INSERT OR REPLACE INTO engine_state (id, taken, core, alerts, settings) "
            "VALUES (1, ?, ?, ?, ?)",
            (taken, zlib.compress(core, 1), alerts, orjson.dumps(settings).decode()))

    def save_delivery(self, state: bytes) -> None:
        self.connection.execute(
            "INSERT OR REPLACE INTO delivery_state (id, state) VALUES (1, ?)", (state,))


class StateStore:
    """The state database in ``state_dir`` (both created when missing); see the module
    docstring for what opening does with a directory or a database it cannot use."""

    def __init__(self, state_dir: str | Path, filename: str = FILENAME, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(state_dir)
        self.path = self.directory / filename
        self._clock = clock
        #: Where an unreadable database was moved at open (None: it was readable).
        self.moved_aside: Path | None = None
        #: The previous service did not stop cleanly and its write-ahead log is gone.
        self.wal_lost = False
        _prepare_directory(self.directory)
        self._lock_fd = _lock(self.directory / f"{filename}.lock")
        try:
            self._conn = self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._folded_at = float("-inf")  # the first checkpoint goes into the file at once

    # -- opening -----------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        path = self.path
        existed = os.path.lexists(path)
        if existed and not path.is_file():
            self._move_aside("not a regular file")
            existed = False
        had_wal = Path(f"{path}-wal").is_file()
        size = path.stat().st_size if existed else 0
        try:
            conn, version, unclean = _connect(path)
        except _Unreadable as exc:
            self._move_aside(str(exc))
            try:
                conn, version, unclean = _connect(path)
            except _Unreadable as again:  # a new database: the directory is at fault
                raise StateDirError(f"state database {path} cannot be created: {again}") from again
            existed = False
        try:
            self._said_on_open(conn, existed, size, had_wal, version, unclean)
            _execute_in_transaction(conn, "INSERT OR REPLACE INTO meta VALUES ('running', '1')")
            # The mark goes into the database file itself, not only the log: a restart that
            # finds it without a log knows the log was lost.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            conn.close()
            raise StateDirError(f"state database {path} cannot be written: {exc}") from exc
        return conn

    def _said_on_open(self, conn: sqlite3.Connection, existed: bool, size: int,
                      had_wal: bool, version: int, unclean: bool) -> None:
        """One log line for a database that lost what the service wrote to it."""
        name = self.path.name
        if not existed:
            return
        if size == 0:
            log.warning("state database %s is empty (0 bytes): nothing to resume from, "
                        "starting afresh", self.path)
            return
        if version == 0 and not _has_rows(conn):
            log.warning("state database %s holds no checkpoint (its write-ahead log %s-wal "
                        "lost?): starting afresh", self.path, name)
            return
        if version < SCHEMA_VERSION:
            log.info("state database %s: schema migrated from version %d to %d", self.path,
                     version, SCHEMA_VERSION)
        if unclean and not had_wal:
            self.wal_lost = True
            row = conn.execute("SELECT taken FROM engine_state WHERE id = 1").fetchone()
            since = (f"the checkpoint of {_iso(row[0])} that the database file holds"
                     if row else "no checkpoint (the database file holds none)")
            log.warning("state database %s: its write-ahead log %s-wal is missing after an "
                        "unclean stop (kill -9, crash, partial copy): the checkpoints in it "
                        "are lost, resuming from %s", self.path, name, since)

    def _move_aside(self, reason: str) -> None:
        """The unreadable database (and its log) renamed ``NAME.corrupt-TIMESTAMP``."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while os.path.lexists(target):
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            os.rename(self.path, target)
            for suffix in ("-wal", "-journal"):
                if os.path.lexists(f"{self.path}{suffix}"):
                    os.rename(f"{self.path}{suffix}", f"{target}{suffix}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}-shm")  # an index SQLite rebuilds from the log
        except OSError as exc:
            raise StateDirError(f"state database {self.path} cannot be read ({reason}) "
                                f"nor moved aside: {exc.strerror or exc}") from exc
        self.moved_aside = target
        log.error("state database %s cannot be read (%s): moved aside to %s, starting afresh",
                  self.path, reason, target.name)

    # -- reading -----------------------------------------------------------------------
    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    def load(self) -> dict[str, Position]:
        """Every saved position, by followed path."""
        rows = self._conn.execute(
            "SELECT path, dev, ino, fp_length, fp_digest, offset FROM file_positions")
        return {path: Position(path, Fingerprint(dev & _U64, ino & _U64, length, digest), offset)
                for path, dev, ino, length, digest, offset in rows}

    def load_state(self) -> Saved:
        """What the last checkpoint wrote. An engine state whose bytes cannot be
        decompressed is left out (logged); the core and the alerts are checked by
        ``Engine.restore``."""
        engine = None
        row = self._conn.execute(
            "SELECT taken, core, alerts, settings FROM engine_state WHERE id = 1").fetchone()
        if row is not None:
            taken, core, alerts, settings = row
            try:
                record = orjson.loads(settings) if settings is not None else None
                engine = SavedEngine(float(taken), zlib.decompress(core), bytes(alerts),
                                     record if isinstance(record, dict) else None)
            except (zlib.error, orjson.JSONDecodeError, TypeError, ValueError) as exc:
                log.error("the saved engine state cannot be read (%s): starting afresh", exc)
        delivery = self._conn.execute(
            "SELECT state FROM delivery_state WHERE id = 1").fetchone()
        return Saved(self.load(), engine, bytes(delivery[0]) if delivery else None)

    # -- writing -----------------------------------------------------------------------
    def save(self, positions: Iterable[Position],
             conn: sqlite3.Connection | None = None) -> None:
        """Record ``positions``: within the caller's open transaction on ``conn`` (the
        caller commits), or in a transaction of their own when ``conn`` is ``None``."""
        if conn is not None:
            _write_positions(conn, positions)
            return
        with self.transaction() as tx:
            tx.save_positions(positions)

    def save_state(self, positions: Iterable[Position], core: bytes, alerts: bytes,
                   settings: dict[str, Any], delivery: bytes | None,
                   taken: float | None = None) -> None:
        """A checkpoint: positions, the engine state they produced (taken under
        ``settings``: :func:`settings_record`) and the deliveries', in one transaction
        (sqlite3.Error when it cannot be written)."""
        with self.transaction() as tx:
            tx.save_positions(positions)
            tx.save_engine(time.time() if taken is None else taken, core, alerts, settings)
            if delivery is not None:
                tx.save_delivery(delivery)
        if self._clock() - self._folded_at >= FOLD_EVERY:
            self.fold()

    def fold(self) -> None:
        """Copy the write-ahead log into the database file (what a lost log can lose)."""
        self._folded_at = self._clock()
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def forget(self, paths: Iterable[str]) -> None:
        """Drop the positions of paths no longer followed."""
        with self.transaction() as tx:
            tx.connection.executemany("DELETE FROM file_positions WHERE path = ?",
                                      [(p,) for p in paths])

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A transaction committed when the block ends, rolled back if it raises."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield Transaction(self._conn)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # a failed commit already ended it
                self._conn.execute("ROLLBACK")
            raise
        try:
            self._conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Marked as stopped cleanly, then closed (SQLite folds the log and removes it)."""
        with contextlib.suppress(sqlite3.Error):  # read-only, full: the next start says so
            _execute_in_transaction(self._conn,
                                    "INSERT OR REPLACE INTO meta VALUES ('running', '0')")
        self._conn.close()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- what a snapshot was taken under ---------------------------------------------------
def zone_name(tz: tzinfo) -> str:
    """The IANA name of a zone (a ZoneInfo's ``str`` is its key), ``str`` of anything
    else (a fixed offset: ``UTC+05:45``)."""
    return str(tz)


def settings_record(config: DetectorConfig, tz: tzinfo) -> dict[str, Any]:
    """The detector settings and the time zone a snapshot is taken under."""
    record: dict[str, Any] = {f: getattr(config, f) for f in DETECTOR_FIELDS}
    record["timezone"] = zone_name(tz)
    return record


def changed_fields(saved: dict[str, Any], config: DetectorConfig) -> list[str]:
    """``threshold 20 → 100000`` for each detector setting that differs."""
    return [f"{f} {saved[f]} → {getattr(config, f)}" for f in DETECTOR_FIELDS
            if f in saved and saved[f] != getattr(config, f)]


def same_instants(saved_zone: str, tz: tzinfo, taken: float) -> bool:
    """Whether local times read in ``saved_zone`` and in ``tz`` give the same seconds
    around ``taken`` (the same name, an alias such as UTC and Etc/UTC, or two zones with
    the same offsets then): the saved event seconds then mean the same instants."""
    if saved_zone == zone_name(tz):
        return True
    try:
        old = resolve_zone(saved_zone)
    except ValueError:
        return False
    at = datetime.fromtimestamp(taken, UTC)
    moments = [at - timedelta(days=1), at, datetime.now(UTC)]
    return all(m.astimezone(old).utcoffset() == m.astimezone(tz).utcoffset() for m in moments)


# -- helpers -----------------------------------------------------------------------------
def _prepare_directory(directory: Path) -> None:
    """Created 0700 when missing; writable (a file is created and removed)."""
    try:
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            os.chmod(directory, 0o700)  # whatever the umask
        elif not directory.is_dir():
            raise StateDirError(f"state directory {directory} is not a directory")
        probe = directory / f".retrywatch-probe-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StateDirError(f"state directory {directory} cannot be written: "
                            f"{exc.strerror or exc}") from exc


def _lock(path: Path) -> int:
    """An exclusive lock on ``path`` for this process's life: one service per directory."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateDirError(f"state directory {path.parent} cannot be written: "
                            f"{exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StateDirError(f"state directory {path.parent} is in use by another retrywatch "
                            f"(pid {holder})") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _connect(path: Path) -> tuple[sqlite3.Connection, int, bool]:
    """The database opened, checked and migrated: (connection, the version it had,
    whether a service had it open without closing it). Raises :class:`_Unreadable` or
    :class:`StateDirError`."""
    conn = None
    try:
        # Autocommit mode: transactions are begun and ended explicitly. One writer at a
        # time (the ingest loop, then shutdown after it stopped): the connection may move
        # between threads.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA synchronous=NORMAL")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise _Unreadable(f"schema version {version} is newer than this retrywatch's "
                              f"{SCHEMA_VERSION}")
        check = conn.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise _Unreadable(f"integrity check: {check[0][0]}")
        unclean = version >= 1 and _running_mark(conn)
        _migrate(conn, version)
        for table, columns in COLUMNS.items():
            found = tuple(r[1] for r in conn.execute(f"PRAGMA table_info({table})"))
            if found != columns:
                raise _Unreadable(f"table {table} has columns {list(found)}")
        # Read every row once: a damaged page shows now, not at the first checkpoint.
        conn.execute("SELECT count(*), sum(length(fp_digest)) FROM file_positions").fetchall()
        conn.execute("SELECT length(core), length(alerts), settings FROM engine_state"
                     ).fetchall()
        conn.execute("SELECT length(state) FROM delivery_state").fetchall()
        return conn, version, unclean
    except BaseException as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, sqlite3.Error) and not _cannot_write(exc):
            raise _Unreadable(str(exc)) from exc
        if isinstance(exc, sqlite3.Error):
            hint = ("in use by another process" if _busy(exc) else "cannot be written")
            raise StateDirError(f"state database {path} {hint}: {exc}") from exc
        raise


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    for to in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in MIGRATIONS[to]:
                conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {to}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _running_mark(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT value FROM meta WHERE key = 'running'").fetchone()
    return bool(row) and row[0] == "1"


def _has_rows(conn: sqlite3.Connection) -> bool:
    return any(conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
               for table in ("file_positions", "engine_state", "delivery_state"))


def _execute_in_transaction(conn: sqlite3.Connection, sql: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(sql)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _error_name(exc: sqlite3.Error) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or "")


def _busy(exc: sqlite3.Error) -> bool:
    return _error_name(exc).startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def _cannot_write(exc: sqlite3.Error) -> bool:
    """The database may be fine, but this process cannot write it (or not now)."""
    name = _error_name(exc)
    if name in ("SQLITE_FULL", "SQLITE_PERM", "SQLITE_AUTH", "SQLITE_NOMEM"):
        return True
    if name.startswith(("SQLITE_READONLY", "SQLITE_BUSY", "SQLITE_LOCKED")):
        return True
    return name.startswith("SQLITE_IOERR") and "READ" not in name


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _signed(n: int) -> int:
    """An unsigned 64-bit device or inode number as SQLite's signed INTEGER."""
    return n - (1 << 64) if n >= 1 << 63 else n


def _write_positions(conn: sqlite3.Connection, positions: Iterable[Position]) -> None:
    conn.executemany(_UPSERT, [
        (p.path, _signed(p.fingerprint.dev), _signed(p.fingerprint.ino), p.fingerprint.length,
         p.fingerprint.digest, p.offset) for p in positions])
