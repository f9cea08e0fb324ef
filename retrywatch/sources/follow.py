"""Following log files as they are written: one path or a glob, through rotation.

A :class:`FileFollower` reads what is new in its files on each :meth:`~FileFollower.poll`
and returns it as :class:`Chunk` s, each with the :class:`Position` reached. The caller
commits a position only after its chunk was consumed downstream. Nothing here waits:
when to poll is the caller's business, told by a :class:`Waker` (watchdog events, or a
timer where inotify does not work), so tests step a follower by calling ``poll()``.

What each poll does with a path is decided by :func:`retrywatch.sources.rotation.decide`:
rename and create (the renamed file is read to its end before switching), copytruncate
(restart at 0), delete and recreate, symlink retargeted. Files are identified by
:mod:`~retrywatch.sources.fingerprint`; a file is open in at most one place, so a glob
matching both ``error.log`` and ``error.log.1`` never reads a line twice.

Rotations faster than the looks lose nothing. Under load a file can come and go between
two polls: created and renamed away before it was seen, or a whole generation copied
and truncated. Whenever a poll sees a rotation or a truncation (or a file it saw empty
written since), it lists the path's rotated siblings (``error.log.1``, ``0.log.2024…``;
not compressed ones) and reads first, oldest first, those with lines it has not read:
copytruncate's copy of the generation it was reading, from where it stopped (found by
the first bytes' fingerprint, another inode); files new since the last look, from 0; a
file it let go and written since, from where it stopped. Siblings there at the first
look are older than the follower and are not read.

A path naming something other than a regular file (a FIFO, a directory, a device) is
skipped, its reason in :attr:`FileStatus.skipped`: it is checked before it is opened,
and opened ``O_NONBLOCK``, so ``open()`` never waits for a FIFO's writer.

Where reading starts, for a file being opened:

1. a file this follower has already read (a symlink switched back, a rotated file the
   glob picks up under its new name): where it stopped;
2. a file with a checkpoint whose fingerprint matches: exactly the checkpoint's offset;
3. a path whose checkpoint names another file (rotated while retrywatch was down):
   offset 0; the checkpointed file, when it is still beside it under another name
   (``error.log.1``, found by its fingerprint), is read to its end first, then the
   siblings newer than it (rotated twice); after a copytruncate, its copy is read from
   the checkpoint's offset. When it is gone or compressed, the lines written to it
   after the checkpoint are lost;
4. otherwise, in the first poll: the end (``from_end=True``, like a tailer, at the
   start of the last complete line) or 0; a file appearing later is new: 0.

Chunks end at a newline, so a committed position never splits a line, except when a
line is longer than a whole poll's ``max_bytes`` and for the last bytes of a file left
behind. A file left behind is read to its end when the change is seen; lines written
to it after that are lost unless the glob also matches its new name.
"""

from __future__ import annotations

import glob
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from retrywatch.sources.checkpoint import Position
from retrywatch.sources.files import is_rotated_name, source_name
from retrywatch.sources.fingerprint import (
    FINGERPRINT_BYTES,
    Fingerprint,
    matches,
    refresh,
    same_head,
    take,
)
from retrywatch.sources.rotation import Action, FileStat, decide

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Chunk",
    "FileFollower",
    "FileStatus",
    "ManualWaker",
    "NotRegularFile",
    "PollingWaker",
    "Waker",
    "WatchdogWaker",
    "open_regular",
]

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
#: nginx reopens its logs when told (USR1 from logrotate's postrotate); lines it writes to
#: the old file until then are read for this long after the switch.
ROTATION_GRACE = 5.0
_TAIL_PROBE = 64 * 1024  # how far back from the end a start at the end looks for a newline
_REMEMBERED = 256  # files left behind whose position is remembered
_GENERATIONS = 16  # truncated generations of one path whose fingerprint is remembered
_Inode = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes read from one file, and the position reached after them.

    A change of position without new bytes (a start at the end, a truncation, a switch
    to a new file) comes as a chunk with empty ``data``, so every position reaches the
    caller the same way.
    """

    #: The source the bytes belong to (rotation suffixes removed from the path).
    source: str
    #: The file read: the followed path, or a rotated sibling drained first.
    path: str
    data: bytes
    #: Commit only after ``data`` was consumed downstream.
    position: Position
    #: A new file, or a truncated one from 0: a partial line held from before does not
    #: continue into these bytes.
    boundary: bool = False


@dataclass(frozen=True, slots=True)
class FileStatus:
    """How one followed path is doing, for ``/api/v1/sources`` and the lag metrics."""

    path: str
    offset: int
    size: int
    #: Bytes written and not read yet (including a rotated file still being drained).
    lag_bytes: int
    #: Age of the unread data: time since this path was last caught up (at open, since
    #: the file's mtime); 0 when caught up.
    lag_seconds: float
    rotations: int
    truncations: int
    last_error: str | None
    #: ``False`` while the path is waited for.
    open: bool
    #: Why the path is not read, when it names something other than a regular file
    #: (a FIFO, a directory, a device): it is skipped, never opened in a way that blocks.
    skipped: str | None = None


@dataclass(slots=True, eq=False)
class _Open:
    """One open file: the descriptor, its identity and how far it has been read."""

    fd: int
    path: str
    fingerprint: Fingerprint
    offset: int
    stat: FileStat

    @property
    def inode(self) -> _Inode:
        return (self.stat.dev, self.stat.ino)


def _has_magic(pattern: str) -> bool:
    return glob.escape(pattern) != pattern


def _stat_path(path: str) -> FileStat | None:
    """The path's stat through symlinks; ``None`` when it (or its target) is missing."""
    try:
        return FileStat.of(os.stat(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


class NotRegularFile(Exception):
    """A followed path names something that is not a regular file: it is skipped."""


def _not_regular(mode: int) -> str:
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special")
    return f"{kind}, not a regular file"


def open_regular(path: str) -> int:
    """A read-only descriptor of the regular file ``path``; :class:`NotRegularFile` for
    anything else. Never blocks: a FIFO would block ``open()`` until a writer comes, so
    the path is checked first and opened ``O_NONBLOCK`` (a FIFO swapped in between is
    caught by the ``fstat`` after)."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFile(_not_regular(mode))
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFile(_not_regular(mode))
    return fd


def _age(path: str, st: os.stat_result) -> tuple[int, int, str]:
    """Oldest first: by modification time, then ``.2`` before ``.1`` (same tick)."""
    suffix = path.rpartition(".")[2]
    return st.st_mtime_ns, -int(suffix) if suffix.isdigit() else 0, path


def _line_start_before(fd: int, size: int) -> int:
    """Where the last complete line ends, looking back at most :data:`_TAIL_PROBE`."""
    start = max(0, size - _TAIL_PROBE)
    tail = os.pread(fd, size - start, start)
    cut = tail.rfind(b"\n")
    return size if cut < 0 else start + cut + 1


class _Tailer:
    """One followed path: the file it names now, and older files to read first."""

    def __init__(self, follower: FileFollower, path: str, initial: bool) -> None:
        self.follower = follower
        self.path = path
        self.source = source_name(path)
        self.initial = initial
        self.current: _Open | None = None
        self.backlog: list[_Open] = []
        #: Files rotated or deleted away, still read for a grace period: nginx writes
        #: to the old file until it reopens its logs (logrotate's postrotate USR1).
        self.retired: list[tuple[_Open, float]] = []
        self.rotations = 0
        self.truncations = 0
        self.last_error: str | None = None
        self.skipped: str | None = None
        self.caught_up_at = 0.0
        #: The rotated siblings (``error.log.1``...) at the last look at them: size,
        #: mtime and fingerprint (``None`` before the first look). A sibling not among
        #: them came while this path was not looked at (see :meth:`_missed`).
        self.siblings: dict[_Inode, tuple[int, int, Fingerprint]] | None = None
        #: The fingerprints of this path's truncated generations and how far each was
        #: read: copytruncate's copy of one is read from there.
        self.generations: list[tuple[Fingerprint, int]] = []

    @property
    def idle(self) -> bool:
        return self.current is None and not self.backlog and not self.retired

    def poll(self, budget: int, max_bytes: int) -> list[Chunk]:
        out: list[Chunk] = []
        try:
            budget = self._read_retired(out, budget, max_bytes)
            if self.current is None and not self._open(out):
                return out
            budget = self._drain_backlog(out, budget, max_bytes)
            if not self.backlog:
                self._follow(out, budget, max_bytes)
        except OSError as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
        return out

    def _chunk(self, f: _Open, data: bytes, boundary: bool = False) -> Chunk:
        return Chunk(self.source, f.path, data,
                     Position(self.path, f.fingerprint, f.offset), boundary)

    def _drain_backlog(self, out: list[Chunk], budget: int, max_bytes: int) -> int:
        while self.backlog and budget > 0:
            f = self.backlog[0]
            f.stat = FileStat.of(os.fstat(f.fd))
            budget -= self._read(out, f, budget, max_bytes, final=True)
            if f.offset < f.stat.size:
                break
            done = self.backlog.pop(0)
            if self.follower.grace > 0:  # read for its grace period: a writer may not
                self.retired.append((done, self.follower.clock() + self.follower.grace))
            else:  # have reopened yet
                self.follower.release(done)
            following = self.backlog[0] if self.backlog else self.current
            if following is not None:
                out.append(self._chunk(following, b"", boundary=True))
        return budget

    def _follow(self, out: list[Chunk], budget: int, max_bytes: int) -> None:
        for _ in range(3):  # at most: truncation or switch, then a read
            f = self.current
            if f is None:
                return
            generation, previous = (f.fingerprint, f.offset), f.stat
            action = self._look(f)
            if generation[0].length == 0 and action is not Action.TRUNCATED and (
                    f.stat.size > 0 or f.stat.mtime != previous.mtime):
                # Empty at the last look, written since: an empty file's fingerprint cannot
                # tell whether it was also copied and truncated in between; a copy can.
                # (Renamed away too: siblings newer than it came after it.)
                self.backlog = self._missed(before=f.inode if action.drains else None)
                if self.backlog:
                    out.append(self._chunk(self.backlog[0], b"", boundary=True))
                    budget = self._drain_backlog(out, budget, max_bytes)
                    if self.backlog:
                        return
                    continue
            if action is Action.IDLE:
                self.caught_up_at = self.follower.clock()
                return
            if action is Action.TRUNCATED:
                self.truncations += 1
                self.generations = [*self.generations[1 - _GENERATIONS:], generation]
                f.offset = 0
                f.fingerprint = take(f.fd, self.follower.fingerprint_bytes)
                # What was not read yet is in copytruncate's copy: read it first.
                here = _stat_path(self.path)
                left = here is None or not here.same_file(f.stat)
                self.backlog = self._missed(before=f.inode if left else None)
                out.append(self._chunk(self.backlog[0] if self.backlog else f, b"",
                                       boundary=True))
                budget = self._drain_backlog(out, budget, max_bytes)
                if self.backlog:
                    return
                continue
            # Whole lines only, even from a file being left: a write in progress may be
            # half visible; its rest is read with the file's grace period.
            available, before = f.stat.size - f.offset, budget
            budget -= self._read(out, f, budget, max_bytes, final=False)
            if not action.drains or available > before:
                return  # read what the budget allows; the rest next poll
            self.current = None
            self.retired.append((f, self.follower.clock() + self.follower.grace))
            if action is Action.DELETED:
                return
            self.rotations += 1
            if not self._open(out):
                return
            # Files missed between two looks, read first: as much as the budget allows.
            budget = self._drain_backlog(out, budget, max_bytes)
            if self.backlog:
                return

    def _read_retired(self, out: list[Chunk], budget: int, max_bytes: int) -> int:
        """Lines written to rotated-away files after they were left, until their grace
        period ends (then a last read to the very end, and the file is released)."""
        now = self.follower.clock()
        keep: list[tuple[_Open, float]] = []
        for f, until in self.retired:
            f.stat = FileStat.of(os.fstat(f.fd))
            fresh = refresh(f.fingerprint, f.fd, self.follower.fingerprint_bytes)
            if f.stat.size < f.offset or fresh is None:
                # Rewritten in place (a copy written over it): no longer nginx's log.
                self.follower.release(f)
                continue
            f.fingerprint = fresh
            last = now >= until
            budget -= self._read(out, f, budget, max_bytes, final=last)
            if last and f.offset >= f.stat.size:
                self.follower.release(f)
            else:
                keep.append((f, until))
        self.retired = keep
        return budget

    def _look(self, f: _Open) -> Action:
        now = FileStat.of(os.fstat(f.fd))
        fresh = refresh(f.fingerprint, f.fd, self.follower.fingerprint_bytes)
        if fresh is not None:
            f.fingerprint = fresh
        action = decide(f.stat, now, _stat_path(self.path), f.offset,
                        head_changed=fresh is None)
        f.stat = now
        return action

    def _open(self, out: list[Chunk]) -> bool:
        initial, self.initial = self.initial, False
        try:
            opened = self.follower.open(self.path, initial)
        except NotRegularFile as exc:
            self.skipped = str(exc)
            self.last_error = f"skipped: {exc}"
            return False
        if self.skipped is not None:
            self.skipped = self.last_error = None
        if opened is None:
            return False
        self.current, self.backlog = opened
        # Files that came and went since the last look (renamed away before they were
        # seen) are read before this one. The first open only notes the siblings there
        # are, but after a restart those written after the checkpointed file are read.
        after = (_age(self.backlog[-1].path, os.fstat(self.backlog[-1].fd))
                 if self.backlog else None)
        self.backlog += self._missed(after)
        f = self.current
        self.caught_up_at = self.follower.clock() if f.offset >= f.stat.size else f.stat.mtime
        first = self.backlog[0] if self.backlog else f
        out.append(self._chunk(first, b"", boundary=True))
        return True

    def _rotated_siblings(self) -> list[tuple[str, os.stat_result]]:
        """The regular files beside the path (its target, for a symlink) named like its
        rotations (``error.log.1``, not compressed ones)."""
        directory, base = os.path.split(os.path.realpath(self.path))
        out: list[tuple[str, os.stat_result]] = []
        try:
            with os.scandir(directory or ".") as entries:
                for entry in entries:
                    if entry.name.endswith(".gz") or not is_rotated_name(entry.name, base):
                        continue
                    try:
                        st = entry.stat()
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        out.append((entry.path, st))
        except OSError:
            return []
        return out

    def _missed(self, after: tuple[int, int, str] | None = None, *,
                before: _Inode | None = None) -> list[_Open]:
        """Rotated siblings with lines this path's reader has not read, oldest first, each
        opened where its unread lines start: copytruncate's copy of a truncated
        generation (from where that generation was left), a file that appeared and was
        renamed away between two looks, or a whole generation copied and truncated
        between two looks (from 0), a file left here and written since (from where it
        was left). Only siblings new or changed since the last call are opened; the
        first call only notes them (they are older than the follower), except those
        newer than ``after`` (the :func:`_age` of a restart's checkpointed file).

        ``before``: the open file, left (renamed) while its unread lines could not be
        placed (truncated, or empty at the last look). Unknown siblings older than it
        are copies of its earlier generations, read now; newer ones came after it and
        are left to the look after its end (they stay new to it)."""
        follower = self.follower
        known = self.siblings
        now: dict[_Inode, tuple[int, int, Fingerprint]] = {}
        found: list[tuple[tuple[int, int, str], _Open, bool]] = []
        pivot: tuple[int, int, str] | None = None
        for path, st in self._rotated_siblings():
            inode = (st.st_dev, st.st_ino)
            if inode == before:
                pivot = _age(path, st)
            seen = known.get(inode) if known is not None else None
            if seen is not None and seen[:2] == (st.st_size, st.st_mtime_ns):
                now[inode] = seen
                continue
            try:
                fd = open_regular(path)
            except (OSError, NotRegularFile):
                continue
            fingerprint = take(fd, follower.fingerprint_bytes)
            now[inode] = (st.st_size, st.st_mtime_ns, fingerprint)
            start: tuple[int, bool] | None = None
            if inode in follower._open_inodes:
                pass  # being read (here, or under its own name by the glob)
            elif known is not None:
                start = self._unread_from(fd, inode, seen)
            elif after is not None and _age(path, st) > after:
                start = (0, True)
            if start is None or start[0] >= st.st_size:
                os.close(fd)
                continue
            f = _Open(fd, path, fingerprint, start[0], FileStat.of(os.fstat(fd)))
            found.append((_age(path, st), f, start[1]))
        out: list[_Open] = []
        for age, f, certain in sorted(found, key=lambda item: item[0]):
            if before is not None and not certain and (pivot is None or age >= pivot):
                os.close(f.fd)  # later than the open file: read after it
                del now[f.inode]
            else:
                out.append(f)
        self.siblings = now
        follower._open_inodes.update(f.inode for f in out)
        return out

    def _unread_from(self, fd: int, inode: _Inode, seen: tuple[int, int, Fingerprint]
                     | None) -> tuple[int, bool] | None:
        """Where a sibling new or changed since the last look starts to be read, and
        whether it is known how it relates to this path's files (``None``: not read)."""
        left = self.follower._left.get(inode)
        # (An empty file's fingerprint matches any file its inode number is reused for.)
        if left is not None and left[0].length and matches(left[0], fd):
            del self.follower._left[inode]
            return left[1], True
        for fingerprint, offset in reversed(self.generations):
            if same_head(fingerprint, fd):
                return offset, True  # a copy of a truncated generation
        if seen is not None and seen[2].length and matches(seen[2], fd):
            return None  # one that was there before and grew: never this reader's
        return 0, False

    def _read(self, out: list[Chunk], f: _Open, budget: int, max_bytes: int,
              final: bool) -> int:
        """Read from ``f`` up to ``budget`` bytes, ending at a newline unless the file is
        being left behind and this reaches its end, or one line fills ``max_bytes``."""
        available = f.stat.size - f.offset
        if available <= 0 or budget <= 0:
            return 0
        data = os.pread(f.fd, min(available, budget), f.offset)
        if not matches(f.fingerprint, f.fd):
            # Truncated (and written again) since the look: these may be the new
            # generation's bytes. Not taken: the next look sees the truncation, and the
            # copy gives what this generation still had.
            return 0
        if not (final and len(data) == available):
            cut = data.rfind(b"\n")
            if cut >= 0:
                data = data[:cut + 1]
            elif len(data) < max_bytes:
                return 0  # a line still being written: wait for its end
        if not data:
            return 0
        f.offset += len(data)
        out.append(self._chunk(f, data))
        return len(data)

    def status(self, now: float) -> FileStatus:
        f = self.current
        offset = f.offset if f else 0
        size = f.stat.size if f else 0
        behind = [*self.backlog, *(f for f, _ in self.retired)]
        lag = sum(max(0, b.stat.size - b.offset) for b in behind) + max(0, size - offset)
        return FileStatus(self.path, offset, size, lag,
                          max(0.0, now - self.caught_up_at) if lag else 0.0,
                          self.rotations, self.truncations, self.last_error, f is not None,
                          self.skipped)

    def close(self) -> None:
        retired = [f for f, _ in self.retired]
        for f in [*retired, *self.backlog, *([self.current] if self.current else [])]:
            os.close(f.fd)
        self.backlog, self.current, self.retired = [], None, []


class FileFollower:
    """Follows one path or glob (re-evaluated on every poll: new files are picked up;
    a path that does not exist yet is waited for).

    ``checkpoints`` are the positions saved by a previous run
    (:meth:`retrywatch.serve.state.StateStore.load`); ``from_end`` applies
    only to files without one. ``clock`` is the wall clock, for lag in seconds.
    """

    def __init__(self, pattern: str, *, from_end: bool = True,
                 checkpoints: dict[str, Position] | None = None,
                 fingerprint_bytes: int = FINGERPRINT_BYTES,
                 grace: float = ROTATION_GRACE,
                 clock: Callable[[], float] = time.time) -> None:
        self.pattern = pattern
        #: Seconds a rotated-away or deleted file is still read after it was left.
        self.grace = grace
        self.is_glob = _has_magic(pattern)
        self.from_end = from_end
        self.fingerprint_bytes = fingerprint_bytes
        self.clock = clock
        self._checkpoints = dict(checkpoints or {})
        self._tailers: dict[str, _Tailer] = {}
        self._open_inodes: set[_Inode] = set()
        self._left: OrderedDict[_Inode, tuple[Fingerprint, int]] = OrderedDict()
        self._first = True
        self._turn = 0

    # -- polling -------------------------------------------------------------
    def poll(self, max_bytes: int = DEFAULT_MAX_BYTES) -> list[Chunk]:
        """What is new, at most ``max_bytes`` in all; the files take turns to go first,
        so one busy file cannot starve the others."""
        matched = self._discover()
        tailers = list(self._tailers.values())
        self._turn = (self._turn + 1) % max(1, len(tailers))
        chunks: list[Chunk] = []
        budget = max_bytes
        for tailer in tailers[self._turn:] + tailers[:self._turn]:
            got = tailer.poll(budget, max_bytes)
            budget -= sum(len(c.data) for c in got)
            chunks += got
        for path in [p for p, t in self._tailers.items() if t.idle and p not in matched]:
            del self._tailers[path]
        self._first = False
        return chunks

    def _discover(self) -> set[str]:
        matched = set(glob.glob(self.pattern)) if self.is_glob else {self.pattern}
        for path in sorted(matched - self._tailers.keys()):
            self._tailers[path] = _Tailer(self, path, self._first)
        return matched

    def status(self) -> list[FileStatus]:
        now = self.clock()
        return [t.status(now) for t in self._tailers.values()]

    def positions(self) -> list[Position]:
        """The position of every open file now: committable once every chunk returned
        so far was consumed."""
        out: list[Position] = []
        for t in self._tailers.values():
            f = t.backlog[0] if t.backlog else t.current
            if f is not None:
                out.append(Position(t.path, f.fingerprint, f.offset))
        return out

    def watch_dirs(self) -> set[str]:
        """The directories whose changes should wake the poll loop: those of the
        pattern (or its nearest existing ancestor), of matched files and of symlink
        targets."""
        dirs: set[str] = set()
        parent = os.path.dirname(self.pattern) or "."
        dirs.update(d for d in glob.glob(parent) if os.path.isdir(d))
        while _has_magic(parent) or not os.path.isdir(parent):
            parent = os.path.dirname(parent) or "."
        dirs.add(parent)
        for t in self._tailers.values():
            if t.current is not None:
                dirs.add(os.path.dirname(os.path.realpath(t.path)) or ".")
        return dirs

    def close(self) -> None:
        for t in self._tailers.values():
            t.close()
        self._tailers.clear()
        self._open_inodes.clear()

    # -- opening and leaving files (called by the tailers) -------------------
    def open(self, path: str, initial: bool) -> tuple[_Open, list[_Open]] | None:
        """Open ``path`` where reading should start, with the older files to read
        first; ``None`` when missing or open elsewhere; :class:`NotRegularFile` when it
        is not a regular file (never opened in a way that could block)."""
        try:
            fd = open_regular(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        st = os.fstat(fd)
        inode = (st.st_dev, st.st_ino)
        if inode in self._open_inodes:
            os.close(fd)
            return None
        f = _Open(fd, path, take(fd, self.fingerprint_bytes), 0, FileStat.of(st))
        backlog = self._place(f, initial)
        self._open_inodes.update(b.inode for b in [f, *backlog])
        return f, backlog

    def release(self, f: _Open) -> None:
        """A file left behind: closed, its position remembered in case it shows up again."""
        os.close(f.fd)
        self._open_inodes.discard(f.inode)
        self._left[f.inode] = (f.fingerprint, f.offset)
        self._left.move_to_end(f.inode)
        while len(self._left) > _REMEMBERED:
            self._left.popitem(last=False)

    def _place(self, f: _Open, initial: bool) -> list[_Open]:
        """Set where reading ``f`` starts (see the module docstring); the backlog."""
        left = self._left.pop(f.inode, None)
        if left is not None and matches(left[0], f.fd):
            f.offset = min(left[1], f.stat.size)
            return []
        for key, saved in list(self._checkpoints.items()):
            if matches(saved.fingerprint, f.fd):
                del self._checkpoints[key]
                f.offset = saved.offset if saved.offset <= f.stat.size else 0
                return []
        saved_here = self._checkpoints.pop(f.path, None)
        if saved_here is not None:
            return self._find_sibling(f.path, saved_here)
        if initial and self.from_end:
            f.offset = _line_start_before(f.fd, f.stat.size)
        return []

    def _find_sibling(self, path: str, saved: Position) -> list[_Open]:
        """What is left of the file ``saved`` was taken of, beside ``path`` under other
        names: the file itself, read from the saved offset; or, when it was truncated
        (copytruncate while down), the copy of what it held, from the saved offset, then
        the file itself from 0 if it was rewritten and renamed since."""
        directory = os.path.dirname(path) or "."
        name = source_name(path)
        with os.scandir(directory) as entries:
            names = [os.path.join(os.path.dirname(path), e.name) for e in entries]
        siblings = [n for n in names if n != path and source_name(n) == name]
        for sibling in siblings:
            try:
                st = os.stat(sibling)
            except FileNotFoundError:
                continue
            if not saved.fingerprint.same_inode(st.st_dev, st.st_ino):
                continue
            if (st.st_dev, st.st_ino) in self._open_inodes:
                return []
            try:
                fd = open_regular(sibling)
            except (OSError, NotRegularFile):
                return []
            st = os.fstat(fd)
            if matches(saved.fingerprint, fd) and st.st_size >= saved.offset:
                return [_Open(fd, sibling, saved.fingerprint, saved.offset, FileStat.of(st))]
            copy = self._find_copy(siblings, saved)  # truncated, written again, renamed
            rewritten = _Open(fd, sibling, take(fd, self.fingerprint_bytes), 0, FileStat.of(st))
            return [copy, rewritten] if copy is not None else [rewritten]
        copy = self._find_copy(siblings, saved)
        return [copy] if copy is not None else []

    def _find_copy(self, siblings: list[str], saved: Position) -> _Open | None:
        """The sibling that begins as the file ``saved`` was taken of (another inode),
        with bytes past its offset: copytruncate's copy."""
        for sibling in siblings:
            if sibling.endswith(".gz"):
                continue
            try:
                fd = open_regular(sibling)
            except (OSError, NotRegularFile):
                continue
            st = os.fstat(fd)
            if ((st.st_dev, st.st_ino) not in self._open_inodes
                    and st.st_size > saved.offset and same_head(saved.fingerprint, fd)):
                return _Open(fd, sibling, take(fd, self.fingerprint_bytes), saved.offset,
                             FileStat.of(st))
            os.close(fd)
        return None


# -- wakers ------------------------------------------------------------------
class Waker(Protocol):
    """Tells the poll loop when to poll again. An event only wakes the loop: the data
    is always read by ``poll()``."""

    def watch(self, directories: Iterable[str]) -> None:
        """The directories of interest now (from :meth:`FileFollower.watch_dirs`)."""

    def wait(self, timeout: float) -> bool:
        """Block until woken or ``timeout`` seconds passed; whether it was woken."""

    def wake(self) -> None:
        """Wake the waiting loop now (a change, or shutdown)."""

    def close(self) -> None: ...


class ManualWaker:
    """Woken only by :meth:`wake`: for tests, which step the follower themselves."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.watched: set[str] = set()

    def watch(self, directories: Iterable[str]) -> None:
        self.watched = set(directories)

    def wait(self, timeout: float) -> bool:
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken

    def wake(self) -> None:
        self._event.set()

    def close(self) -> None:
        self._event.set()


class PollingWaker(ManualWaker):
    """A timer: wakes every ``interval`` seconds, for where inotify does not work
    (network filesystems)."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__()
        self.interval = interval

    def wait(self, timeout: float) -> bool:
        return super().wait(min(timeout, self.interval))


class _WakeOnEvent(FileSystemEventHandler):
    def __init__(self, waker: ManualWaker) -> None:
        self.waker = waker

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.waker.wake()


class WatchdogWaker(ManualWaker):
    """Woken by watchdog (inotify, kqueue, ...) events in the watched directories, not
    recursively; the ``timeout`` of :meth:`wait` remains the polling fallback."""

    def __init__(self) -> None:
        super().__init__()
        self._handler = _WakeOnEvent(self)
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.start()
        self._watches: dict[str, ObservedWatch] = {}

    def watch(self, directories: Iterable[str]) -> None:
        wanted = {os.path.abspath(d) for d in directories}
        for gone in self._watches.keys() - wanted:
            self._observer.unschedule(self._watches.pop(gone))
        for new in wanted - self._watches.keys():
            try:
                self._watches[new] = self._observer.schedule(self._handler, new)
            except OSError:
                continue  # vanished, or no inotify watch left: the timeout still polls
        self.watched = set(self._watches)

    def close(self) -> None:
        self._observer.stop()
        self._observer.join()
        super().close()
