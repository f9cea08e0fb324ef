"""The inputs of ``retrywatch run`` behind one interface, :class:`Source`, made by one
factory, :func:`open_sources`.

Each kind of input is one implementation: :class:`FileInput` (a path or glob, through
rotation), :class:`StdinInput` (``--log -``) and :class:`SyslogInput` (a UDP or TCP
listener). The ingest loop polls each in turn; a poll never blocks the loop, whatever
the input does:

- files are opened without ever blocking: a FIFO, a directory or a device under a
  followed glob is skipped, with the reason in its :class:`Report` (``/api/v1/sources``);
- a file input is polled in its own thread, and the loop waits for it a bounded time
  (:data:`POLL_WAIT`): a file system that hangs (a dead NFS server) stalls that input
  only, reported as stuck, and its reads are taken, in order, when they come;
- stdin and syslog are read by their own threads already and only handed over here.

A failure inside one input is the ingest loop's to isolate (it logs, counts and goes
on with the others); an input reports its own errors in its reports' ``last_error``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from retrywatch.sources.checkpoint import Position
from retrywatch.sources.files import source_name
from retrywatch.sources.follow import FileFollower, FileStatus
from retrywatch.sources.growth import Filesystem, filesystem_of
from retrywatch.sources.stdin import StdinSource
from retrywatch.sources.syslog import SyslogListener

if TYPE_CHECKING:
    from retrywatch.serve.settings import Settings

__all__ = ["POLL_WAIT", "FileInput", "Piece", "Report", "Source", "StdinInput",
           "SyslogInput", "open_sources"]

log = logging.getLogger("retrywatch")

#: Seconds the ingest loop waits for a file input's poll before it goes on without it.
POLL_WAIT = 1.0
#: Seconds without an answer after which a file input is reported stuck.
STUCK_AFTER = 5.0
#: Seconds between two reads of a file input's filesystems (free space).
FILESYSTEM_EVERY = 1.0


@dataclass(frozen=True, slots=True)
class Piece:
    """What a poll gave for one source (the engine's source name): bytes of a stream,
    or records (syslog: one line each)."""

    source: str
    data: bytes = b""
    records: Sequence[bytes] = ()
    #: Before the bytes: a new file, or a truncated one from 0; a line held from before
    #: does not continue into these bytes.
    boundary: bool = False
    #: After the bytes: the stream ended (stdin's end of input).
    end: bool = False


@dataclass(slots=True)
class Report:
    """How one source of an input is doing: what ``/api/v1/sources`` shows of it."""

    name: str
    kind: str
    position: int | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    rotations: int = 0
    last_error: str | None = None
    open: bool = True
    caught_up: bool = True
    #: Why it is not read at all (a FIFO under a glob): not a failure of the service.
    skipped: str | None = None
    #: A file's size now (as its filesystem was read, when it was), and its filesystem
    #: (free space: the disk forecast's input).
    size: int | None = None
    filesystem: Filesystem | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Source(Protocol):
    """One input of the live service. Only the ingest loop calls :meth:`poll` and
    :meth:`reports`; :meth:`positions` is what a checkpoint saves."""

    #: ``file``, ``stdin`` or ``syslog``.
    kind: str
    #: What it reads, for log lines: a path or glob, ``-``, a listener URL.
    name: str

    def start(self) -> None:
        """Begin reading (threads, sockets); files are opened by the first poll."""

    def poll(self) -> list[Piece]:
        """What is new, without blocking the caller for long (see the module doc)."""

    def reports(self) -> list[Report]:
        """How each of its sources is doing, as of the last poll."""

    def positions(self) -> list[Position]:
        """File positions reached by the pieces polled so far (files only)."""

    def watch_dirs(self) -> set[str]:
        """Directories whose changes should wake the ingest loop."""

    def close(self) -> None:
        """Stop reading and release what it holds; a stuck thread is left behind."""


# -- files ---------------------------------------------------------------------------
@dataclass(slots=True)
class _Poll:
    chunks: list[Any]
    positions: list[Position]
    statuses: list[FileStatus]
    dirs: set[str]
    filesystems: dict[str, Filesystem]


class _Worker:
    """One call at a time in a daemon thread; the caller waits for it a bounded time.
    (A daemon thread: one stuck in a system call cannot hold the process's exit.)"""

    def __init__(self, name: str) -> None:
        self.name = name
        self._call: Callable[[], Any] | None = None
        self._result: Any = None
        self._error: BaseException | None = None
        self._go = threading.Event()
        self._done = threading.Event()
        self._closed = False
        self.started_at: float | None = None  # monotonic, while a call runs
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self.started_at is not None

    def submit(self, call: Callable[[], Any]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        self._call = call
        self.started_at = time.monotonic()
        self._done.clear()
        self._go.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def take(self) -> Any:
        """The finished call's result (its exception raised)."""
        self.started_at = None
        self._done.clear()
        result, error = self._result, self._error
        self._result = self._error = None
        if error is not None:
            raise error
        return result

    def close(self) -> None:
        self._closed = True
        self._go.set()

    def _run(self) -> None:
        while True:
            self._go.wait()
            self._go.clear()
            if self._closed:
                return
            call, self._call = self._call, None
            try:
                self._result = call() if call is not None else None
            except BaseException as exc:  # handed to the ingest loop, which isolates it
                self._error = exc
            self._done.set()


class FileInput:
    """A path or glob followed by a :class:`~retrywatch.sources.follow.FileFollower`,
    polled in a thread of its own (see the module doc). Positions and reports are those
    of the last poll whose chunks were handed over: a checkpoint never runs ahead of
    what the engine got."""

    kind = "file"

    def __init__(self, follower: FileFollower, *, wait: float = POLL_WAIT,
                 stuck_after: float = STUCK_AFTER, filesystems: bool = True) -> None:
        self.follower = follower
        self.name = follower.pattern
        self.wait = wait
        self.stuck_after = stuck_after
        self._worker = _Worker(f"follow {follower.pattern}")
        self._positions: list[Position] = []
        self._statuses: list[FileStatus] = []
        self._dirs: set[str] | None = None
        self._error: str | None = None
        self._closed = False
        #: each open file's filesystem, read at most every FILESYSTEM_EVERY seconds (in the
        #: worker: statvfs on a hung filesystem stalls this input only); its mount point
        #: found once per path
        self._filesystems: dict[str, Filesystem] = {}
        self._mounts: dict[str, tuple[int, str]] = {}  # path -> (device, mount point)
        self._filesystems_at = float("-inf")
        #: False: no filesystem is read (the service's disk_forecast off)
        self.read_filesystems = filesystems
        self._polled_filesystems: dict[str, Filesystem] = {}

    def start(self) -> None:
        pass  # the worker starts with the first poll

    def _poll_now(self) -> _Poll:
        follower = self.follower
        chunks = follower.poll()
        statuses = follower.status()
        now = time.monotonic()
        if self.read_filesystems and now - self._filesystems_at >= FILESYSTEM_EVERY:
            self._filesystems_at = now
            self._filesystems = self._read_filesystems(statuses)
        return _Poll(chunks, follower.positions(), statuses, follower.watch_dirs(),
                     self._filesystems)

    def _read_filesystems(self, statuses: list[FileStatus]) -> dict[str, Filesystem]:
        out: dict[str, Filesystem] = {}
        mounts = self._mounts
        for st in statuses:
            if not st.open or st.skipped is not None:
                continue
            try:
                fs = filesystem_of(st.path, mounts.get(st.path), now=time.monotonic())
            except OSError:  # gone between the poll and now: the next poll says so
                continue
            out[st.path] = fs
            mounts[st.path] = (fs.dev, fs.mount)
        for path in [p for p in mounts if p not in out]:
            del mounts[path]
        return out

    def poll(self) -> list[Piece]:
        if self._closed:
            return []
        worker = self._worker
        fresh = not worker.busy
        if fresh:
            worker.submit(self._poll_now)
        if not worker.wait(self.wait if fresh else 0.0):
            return []  # stuck: the others go on (not waited for again until it answers)
        try:
            done: _Poll = worker.take()
        except Exception as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            raise
        self._error = None
        self._positions, self._statuses, self._dirs = done.positions, done.statuses, done.dirs
        self._polled_filesystems = done.filesystems
        return [Piece(c.source, c.data, boundary=c.boundary) for c in done.chunks]

    def reports(self) -> list[Report]:
        started = self._worker.started_at
        waited = time.monotonic() - started if started is not None else 0.0
        stuck = waited >= self.stuck_after
        out = []
        if stuck and not self._statuses:  # stuck in its first poll: say so all the same
            out.append(Report(source_name(self.name), self.kind, open=False, caught_up=False,
                              last_error=_stuck(waited)))
        for st in self._statuses:
            fs = self._polled_filesystems.get(st.path)
            error = _stuck(waited) if stuck else st.last_error or self._error
            out.append(Report(source_name(st.path), self.kind, position=st.offset,
                              lag_bytes=st.lag_bytes, lag_seconds=st.lag_seconds,
                              rotations=st.rotations + st.truncations, last_error=error,
                              open=st.open, caught_up=st.lag_bytes == 0 and not stuck,
                              skipped=st.skipped, size=st.size if fs is None or
                              fs.file_size is None else fs.file_size, filesystem=fs))
        return out

    def positions(self) -> list[Position]:
        return list(self._positions)

    def watch_dirs(self) -> set[str]:
        if self._dirs is None and not self._worker.busy:
            return self.follower.watch_dirs()  # before the first poll: no thread runs
        return set(self._dirs or ())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        worker = self._worker
        if worker.busy and not worker.wait(self.wait):
            log.warning("%s: a read is stuck; its files stay open", self.name)
            worker.close()
            return
        worker.close()
        self.follower.close()


def _stuck(seconds: float) -> str:
    return f"stuck: no answer from the file system for {seconds:.0f} s"


# -- stdin -----------------------------------------------------------------------------
class StdinInput:
    """``--log -``: standard input, read by :class:`~retrywatch.sources.stdin.StdinSource`'s
    thread; its end is told once (a :class:`Piece` with ``end``)."""

    kind = "stdin"
    name = "-"

    def __init__(self, reader: StdinSource | None = None) -> None:
        self.reader = reader if reader is not None else StdinSource()
        self._ended = False

    def start(self) -> None:
        self.reader.start()

    def poll(self) -> list[Piece]:
        pieces = [Piece("stdin", data) for data in self.reader.poll(0)]
        if self.reader.eof and not self._ended:
            self._ended = True
            pieces.append(Piece("stdin", end=True))
        return pieces

    def reports(self) -> list[Report]:
        return [Report("stdin", self.kind, open=not self._ended,
                       last_error=self.reader.stats.last_error)]

    def positions(self) -> list[Position]:
        return []

    def watch_dirs(self) -> set[str]:
        return set()

    def close(self) -> None:
        self.reader.stop()


# -- syslog ----------------------------------------------------------------------------
class SyslogInput:
    """A syslog listener (its receiver thread reads; records are handed over here)."""

    kind = "syslog"

    def __init__(self, listener: SyslogListener, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.listener = listener
        self.name = listener.name
        self.clock = clock
        self._drops = 0
        self._drops_read_at: float | None = None

    def start(self) -> None:
        self.listener.start()

    def poll(self) -> list[Piece]:
        records = self.listener.poll(0)
        if not records:
            return []
        return [Piece(self.listener.name, records=[r.data for r in records])]

    def reports(self) -> list[Report]:
        now = self.clock()
        if self._drops_read_at is None or now - self._drops_read_at >= 1.0:
            # /proc/net/udp is read at most once a second: it lists every socket.
            self._drops = self.listener.drops()
            self._drops_read_at = now
        # clients, refused, timed out, over-long frames: /api/v1/sources, /metrics
        extra: dict[str, Any] = {"drops": self._drops, "syslog": self.listener.summary()}
        return [Report(self.listener.name, self.kind, last_error=self.listener.stats.last_error,
                       extra=extra)]

    def positions(self) -> list[Position]:
        return []

    def watch_dirs(self) -> set[str]:
        return set()

    def close(self) -> None:
        self.listener.stop()


# -- the factory -------------------------------------------------------------------------
def open_sources(settings: Settings, checkpoints: dict[str, Position] | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> list[Source]:
    """Every input the settings name, in their order: files and globs (``from`` applies
    to files without a checkpoint), ``-`` (stdin), syslog listeners. Nothing is opened
    or bound yet: files on the first poll, listeners on :meth:`Source.start`."""
    from_end = settings.start_from == "end"
    sources: list[Source] = []
    for pattern in settings.log:
        if pattern == "-":
            sources.append(StdinInput())
        else:
            sources.append(FileInput(FileFollower(pattern, from_end=from_end,
                                                  checkpoints=checkpoints),
                                     filesystems=settings.disk_forecast))
    for url in settings.syslog:
        listener = SyslogListener(url, max_record=settings.syslog_max_frame,
                                  max_clients=settings.syslog_max_clients,
                                  idle_timeout=settings.syslog_idle_timeout)
        sources.append(SyslogInput(listener, clock=clock))
    return sources
