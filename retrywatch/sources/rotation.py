"""What a followed file's state means: one pure function, :func:`decide`.

The follower gathers the facts (the stat of the open descriptor, the stat of the path,
whether the file's first bytes are still those it fingerprinted, the read offset) and
this module says what they mean, without touching a disk, so every case is unit-tested
with plain values (mtail's ``filestream.go`` does the same).

The cases, first match wins:

- ``TRUNCATED``: the open file is shorter than the offset or than at the last look, or
  its first bytes changed (copytruncate, then writes that made it long again): read it
  again from offset 0.
- ``DELETED``: the path names nothing (or a dangling symlink): read the open file to
  its end, then close it and wait for the path to reappear.
- ``ROTATED``: the path names another file than the open one (rename and create,
  delete and recreate, a symlink whose target changed: the path is stat'ed through
  the link, so its resolved target is compared): read the open file to its end, then
  switch to the path's new file from offset 0.
- ``READ``: the open file has bytes past the offset.
- ``IDLE``: nothing to do.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

__all__ = ["Action", "FileStat", "decide"]


class Action(enum.Enum):
    """What the follower does next with one followed path."""

    IDLE = "idle"
    READ = "read"
    TRUNCATED = "truncated"
    ROTATED = "rotated"
    DELETED = "deleted"

    @property
    def drains(self) -> bool:
        """The open file is read to its end and then left behind."""
        return self in (Action.ROTATED, Action.DELETED)


@dataclass(frozen=True, slots=True)
class FileStat:
    """The part of a ``stat`` result that decides: identity, size, modification time."""

    dev: int
    ino: int
    size: int
    mtime: float = 0.0

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime)

    def same_file(self, other: FileStat) -> bool:
        return self.dev == other.dev and self.ino == other.ino


def decide(previous: FileStat, fd: FileStat, path: FileStat | None, offset: int,
           *, head_changed: bool = False) -> Action:
    """What to do with a followed path.

    ``previous`` is the open descriptor's stat at the last look, ``fd`` its stat now,
    ``path`` the path's stat now (``None`` when it is missing), ``offset`` how far the
    open file has been read, and ``head_changed`` whether its first bytes no longer
    match its fingerprint. A file that shrank since the last look was truncated even
    when it has already grown past the offset again.
    """
    if not fd.same_file(previous):
        raise ValueError("the descriptor's stats are of two different files")
    if fd.size < offset or fd.size < previous.size or head_changed:
        return Action.TRUNCATED
    if path is None:
        return Action.DELETED
    if not path.same_file(fd):
        return Action.ROTATED
    if fd.size > offset:
        return Action.READ
    return Action.IDLE
