"""Where reading stopped: each followed file's position, persisted in SQLite.

A :class:`Position` is recorded per followed path: the fingerprint of the file that was
being read and the offset reached. The live service commits positions in the *same*
transaction as the detector and alert state those bytes produced, so a kill -9 at any
moment leaves both before or both after a chunk::

    with store.transaction() as tx:
        tx.save_positions(positions)
        tx.connection.execute("INSERT INTO alerts ...")   # the caller's own rows

A position is saved only after its chunk was consumed downstream.

The database runs in WAL mode with ``synchronous=NORMAL``: a commit survives a crash of
the process (kill -9) at any moment, and the database stays consistent on power loss,
where only the last commits can be lost. Losing them rolls positions *and* detector
state back together (one transaction), so the lines are read again and counted once;
``FULL`` would add an fsync to every commit of a source that commits several times a
second, for no gain in exactness.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from retrywatch.sources.fingerprint import Fingerprint

__all__ = ["DEFAULT_FILENAME", "CheckpointStore", "Position", "Transaction"]

DEFAULT_FILENAME = "retrywatch.sqlite3"
_U64 = (1 << 64) - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_positions (
    path TEXT PRIMARY KEY,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    fp_length INTEGER NOT NULL,
    fp_digest TEXT NOT NULL,
    offset INTEGER NOT NULL
)
"""
_UPSERT = """
INSERT INTO file_positions (path, dev, ino, fp_length, fp_digest, offset)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (path) DO UPDATE SET dev = excluded.dev, ino = excluded.ino,
    fp_length = excluded.fp_length, fp_digest = excluded.fp_digest, offset = excluded.offset
"""


@dataclass(frozen=True, slots=True)
class Position:
    """How far one followed path has been read: which file, up to which byte."""

    #: The followed path (the key): the path given or matched by the glob.
    path: str
    fingerprint: Fingerprint
    offset: int


class Transaction:
    """One open transaction of a :class:`CheckpointStore`; the caller may write its own
    rows with :attr:`connection` (never commit or roll back through it)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def save_positions(self, positions: Iterable[Position]) -> None:
        _write(self.connection, positions)


class CheckpointStore:
    """File positions in ``state_dir``'s SQLite database (created when missing)."""

    def __init__(self, state_dir: str | Path, filename: str = DEFAULT_FILENAME) -> None:
        directory = Path(state_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / filename
        # Autocommit mode: transactions are begun and ended explicitly below.
        # One writer at a time (the ingest loop, then shutdown after it stopped), so the
        # connection may move between threads.
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    def load(self) -> dict[str, Position]:
        """Every saved position, by followed path."""
        rows = self._conn.execute(
            "SELECT path, dev, ino, fp_length, fp_digest, offset FROM file_positions")
        return {path: Position(path, Fingerprint(dev & _U64, ino & _U64, length, digest), offset)
                for path, dev, ino, length, digest, offset in rows}

    def save(self, positions: Iterable[Position],
             conn: sqlite3.Connection | None = None) -> None:
        """Record ``positions``: within the caller's open transaction on ``conn`` (the
        caller commits), or in a transaction of their own when ``conn`` is ``None``."""
        if conn is not None:
            _write(conn, positions)
            return
        with self.transaction() as tx:
            tx.save_positions(positions)

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
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _signed(n: int) -> int:
    """An unsigned 64-bit device or inode number as SQLite's signed INTEGER."""
    return n - (1 << 64) if n >= 1 << 63 else n


def _write(conn: sqlite3.Connection, positions: Iterable[Position]) -> None:
    conn.executemany(_UPSERT, [
        (p.path, _signed(p.fingerprint.dev), _signed(p.fingerprint.ino), p.fingerprint.length,
         p.fingerprint.digest, p.offset) for p in positions])
