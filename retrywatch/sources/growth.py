"""How fast a followed file grows, and the filesystem it grows on.

:func:`filesystem_of` reads the free space of a file's filesystem (``statvfs``) and finds
its mount point; it is called in the file input's own thread (sources/source.py), where a
filesystem that hangs stalls that input only. :class:`Growth` turns the file's size,
sampled at each poll, into bytes per second over the last minute, through rotation and
truncation: what nginx writes, not what retrywatch has read (a lagging reader would
understate the growth the disk sees; the size is read with the free space, not from the
reader's position). Not counted: what nginx writes to a log renamed by a rotation until
it reopens its files (seconds, when logrotate's postrotate signals it).
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

__all__ = ["IDLE_AFTER", "RATE_SPAN", "Filesystem", "Growth", "filesystem_of", "mount_point"]

#: Seconds of samples a rate is measured over.
RATE_SPAN = 60.0
#: The fewest seconds of samples a rate is given for (fewer: ``None``, not yet known).
MIN_SPAN = 5.0
#: Seconds without a byte written after which a file is not growing, however much it grew
#: earlier in the minute: a log that stopped filling stops its forecast then, not a minute
#: later. Longer than a writer's pauses between bursts.
IDLE_AFTER = 30.0
#: Seconds between two samples kept: a minute's rate is measured from at most
#: RATE_SPAN / SAMPLE_EVERY + 3 of them, however often the file is polled (the memory
#: bound of one file).
SAMPLE_EVERY = 1.0


@dataclass(frozen=True, slots=True)
class Filesystem:
    """The filesystem holding a file, as ``statvfs`` read it at ``read_at``."""

    #: Its device (``st_dev`` of the file, symbolic links followed): one filesystem seen
    #: through bind mounts or symbolic links is one device.
    dev: int
    #: Where it is mounted (of the file's real path: the nearest ancestor on another
    #: device, or ``/``).
    mount: str
    #: Bytes a writer without root's reserve can still use (``df``'s Avail).
    free_bytes: int
    size_bytes: int
    #: When it was read (the reader's monotonic clock): the newest reading of a device
    #: is its free space.
    read_at: float = 0.0
    #: The file's size at that moment (fresher than the follower's while it drains a
    #: backlog).
    file_size: int | None = None


def mount_point(path: str) -> str:
    """The mount point of the filesystem holding ``path`` (an existing path, its symbolic
    links resolved): its nearest ancestor whose parent lies on another device, or ``/``."""
    path = os.path.realpath(path)
    dev = os.stat(path).st_dev
    if not os.path.isdir(path):
        path = os.path.dirname(path)
    while True:
        parent = os.path.dirname(path)
        if parent == path or os.stat(parent).st_dev != dev:
            return path
        path = parent


def filesystem_of(path: str, known: tuple[int, str] | None = None, *,
                  now: float = 0.0) -> Filesystem:
    """The filesystem holding ``path`` now (OSError when it cannot be read). ``known``:
    the device and mount point found before, used again while the file's device is the
    same (a path now on another filesystem is looked up again)."""
    st = os.stat(path)
    vfs = os.statvfs(path)
    mount = known[1] if known is not None and known[0] == st.st_dev else mount_point(path)
    return Filesystem(st.st_dev, mount, vfs.f_bavail * vfs.f_frsize,
                      vfs.f_blocks * vfs.f_frsize, now, st.st_size)


class Growth:
    """One file's growth: its size and lines read sampled over time (``observe``), the
    bytes and lines per second over the last :data:`RATE_SPAN` seconds. A size smaller
    than the last one is a new file (rotated, truncated): it grew by all its bytes.
    At most one sample a :data:`SAMPLE_EVERY`: bounded whatever the poll rate."""

    __slots__ = ("_grew_at", "_last_size", "_now", "_samples", "_span", "bytes_total",
                 "lines_total")

    def __init__(self, span: float = RATE_SPAN) -> None:
        self._span = span
        self._last_size: int | None = None
        self._now = float("-inf")  # the last sample's time
        self._grew_at = float("-inf")  # when the file last grew
        #: bytes the file grew by since the first sample, through rotations
        self.bytes_total = 0
        self.lines_total = 0
        self._samples: deque[tuple[float, int, int]] = deque()

    def observe(self, now: float, size: int, lines: int) -> None:
        """The file's size and the lines read from it (a running count) at ``now``."""
        if self._last_size is not None:
            grew = size - self._last_size if size >= self._last_size else size
            if grew > 0:
                self.bytes_total += grew
                self._grew_at = now
        self._last_size = size
        self._now = now
        self.lines_total = max(self.lines_total, lines)
        samples = self._samples
        # the newest sample moves with each call until it is SAMPLE_EVERY past the one
        # before it, and then stays: kept samples are at least SAMPLE_EVERY apart
        if len(samples) >= 2 and samples[-1][0] - samples[-2][0] < SAMPLE_EVERY:
            samples[-1] = (now, self.bytes_total, self.lines_total)
        else:
            samples.append((now, self.bytes_total, self.lines_total))
        while len(samples) > 2 and now - samples[1][0] >= self._span:
            samples.popleft()

    def _rate(self, i: int) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, *first), (t1, *last) = self._samples[0], self._samples[-1]
        if t1 - t0 < MIN_SPAN:
            return None
        return (last[i] - first[i]) / (t1 - t0)

    @property
    def bytes_per_second(self) -> float | None:
        """Over the last minute (``None`` until :data:`MIN_SPAN` seconds are sampled)."""
        return self._rate(0)

    @property
    def idle_for(self) -> float:
        """Seconds since it last grew, as of the last sample (infinite: never seen to)."""
        return self._now - self._grew_at

    @property
    def growing(self) -> bool:
        """It grew within the last :data:`IDLE_AFTER` seconds (of the last sample)."""
        return self.idle_for < IDLE_AFTER

    @property
    def lines_per_second(self) -> float | None:
        return self._rate(1)
