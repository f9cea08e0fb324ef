"""Where reading stopped: each followed file's :class:`Position`.

A position is recorded per followed path: the fingerprint of the file that was being
read and the offset reached. A position is saved only after its chunk was consumed
downstream. The live service saves positions in the *same* SQLite transaction as the
detector and alert state those bytes produced (:mod:`retrywatch.serve.state`, which owns
the database and its schema), so a kill -9 at any moment leaves both before or both
after a chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrywatch.sources.fingerprint import Fingerprint

__all__ = ["DEFAULT_FILENAME", "Position"]

DEFAULT_FILENAME = "retrywatch.sqlite3"


@dataclass(frozen=True, slots=True)
class Position:
    """How far one followed path has been read: which file, up to which byte."""

    #: The followed path (the key): the path given or matched by the glob.
    path: str
    fingerprint: Fingerprint
    offset: int

