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

Where reading starts, for a file being opened:

1. a file this follower has already read (a symlink switched back, a rotated file the
   glob picks up under its new name): where it stopped;
2. a file with a checkpoint whose fingerprint matches: exactly the checkpoint's offset;
3. a path whose checkpoint names another file (rotated while retrywatch was down):
   offset 0; the checkpointed file, when it is still beside it under another name
   (``error.log.1``, found by its fingerprint), is read to its end first. When it is gone
   or compressed, the lines written to it after the checkpoint are lost;
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
from retrywatch.sources.files import source_name
from retrywatch.sources.fingerprint import FINGERPRINT_BYTES, Fingerprint, matches, refresh, take
from retrywatch.sources.rotation import Action, FileStat, decide

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Chunk",
    "FileFollower",
    "FileStatus",
    "ManualWaker",
    "PollingWaker",
    "Waker",
    "WatchdogWaker",
]

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
#: nginx reopens its logs when told (USR1 from logrotate's postrotate); lines it writes to
#: the old file until then are read for this long after the switch.
ROTATION_GRACE = 5.0
_TAIL_PROBE = 64 * 1024  # how far back from the end a start at the end looks for a newline
_REMEMBERED = 256  # files left behind whose position is remembered
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
        self.caught_up_at = 0.0

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
            self.follower.release(self.backlog.pop(0))
        return budget

    def _follow(self, out: list[Chunk], budget: int, max_bytes: int) -> None:
        for _ in range(3):  # at most: truncation or switch, then a read
            f = self.current
            if f is None:
                return
            action = self._look(f)
            if action is Action.IDLE:
                self.caught_up_at = self.follower.clock()
                return
            if action is Action.TRUNCATED:
                self.truncations += 1
                f.offset = 0
                f.fingerprint = take(f.fd, self.follower.fingerprint_bytes)
                out.append(self._chunk(f, b"", boundary=True))
                continue
            # Whole lines only, even from a file being left: a write in progress may be
            # half visible; its rest is read with the file's grace period.
            before = budget
            budget -= self._read(out, f, budget, max_bytes, final=False)
            if not action.drains or (f.offset < f.stat.size and budget < before and budget <= 0):
                return  # read what the budget allows; the rest next poll
            self.current = None
            self.retired.append((f, self.follower.clock() + self.follower.grace))
            if action is Action.DELETED:
                return
            self.rotations += 1
            if not self._open(out) or self.backlog:
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
        opened = self.follower.open(self.path, initial)
        if opened is None:
            return False
        self.current, self.backlog = opened
        f = self.current
        self.caught_up_at = self.follower.clock() if f.offset >= f.stat.size else f.stat.mtime
        first = self.backlog[0] if self.backlog else f
        out.append(self._chunk(first, b"", boundary=True))
        return True

    def _read(self, out: list[Chunk], f: _Open, budget: int, max_bytes: int,
              final: bool) -> int:
        """Read from ``f`` up to ``budget`` bytes, ending at a newline unless the file is
        being left behind and this reaches its end, or one line fills ``max_bytes``."""
        available = f.stat.size - f.offset
        if available <= 0 or budget <= 0:
            return 0
        data = os.pread(f.fd, min(available, budget), f.offset)
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
                          self.rotations, self.truncations, self.last_error, f is not None)

    def close(self) -> None:
        retired = [f for f, _ in self.retired]
        for f in [*retired, *self.backlog, *([self.current] if self.current else [])]:
            os.close(f.fd)
        self.backlog, self.current, self.retired = [], None, []


class FileFollower:
    """Follows one path or glob (re-evaluated on every poll: new files are picked up;
    a path that does not exist yet is waited for).

    ``checkpoints`` are the positions saved by a previous run
    (:meth:`retrywatch.sources.checkpoint.CheckpointStore.load`); ``from_end`` applies
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
        first; ``None`` when missing, not a regular file, or open elsewhere."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        st = os.fstat(fd)
        inode = (st.st_dev, st.st_ino)
        if not stat.S_ISREG(st.st_mode) or inode in self._open_inodes:
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
            old = self._find_sibling(f.path, saved_here)
            return [old] if old is not None else []
        if initial and self.from_end:
            f.offset = _line_start_before(f.fd, f.stat.size)
        return []

    def _find_sibling(self, path: str, saved: Position) -> _Open | None:
        """The file ``saved`` was taken of, still beside ``path`` under another name."""
        directory = os.path.dirname(path) or "."
        name = source_name(path)
        with os.scandir(directory) as entries:
            names = [os.path.join(os.path.dirname(path), e.name) for e in entries]
        for sibling in [n for n in names if n != path and source_name(n) == name]:
            try:
                st = os.stat(sibling)
            except FileNotFoundError:
                continue
            if not saved.fingerprint.same_inode(st.st_dev, st.st_ino):
                continue
            if (st.st_dev, st.st_ino) in self._open_inodes or st.st_size < saved.offset:
                return None
            fd = os.open(sibling, os.O_RDONLY | os.O_CLOEXEC)
            if not matches(saved.fingerprint, fd):
                os.close(fd)
                return None
            return _Open(fd, sibling, saved.fingerprint, saved.offset,
                         FileStat.of(os.fstat(fd)))
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
