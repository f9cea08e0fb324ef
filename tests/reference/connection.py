"""What the detector remembers about one connection key: bounded, whatever the storm."""

from __future__ import annotations

import zlib
from datetime import datetime

from reference.window import SecondWindow
from retrywatch.detect.events import Event

__all__ = ["MAX_DISTINCT", "ConnKey", "ConnState"]

#: Distinct upstreams, errnos and requests remembered per connection; more are summed
#: under "(other)", so a connection's memory is bounded however long it runs.
MAX_DISTINCT = 32
OTHER = "(other)"
#: Distinct failing requests counted per connection (memory bound; the count saturates).
MAX_REQUEST_KEYS = 256

ConnKey = tuple[str, int, int]  # (source, worker pid, connection id)


def _bump(table: dict[str, int], key: str, n: int) -> int:
    if key in table or len(table) < MAX_DISTINCT:
        value = table.get(key, 0) + n
    else:
        key = OTHER
        value = table.get(OTHER, 0) + n
    table[key] = value
    return value


class ConnState:
    """Failures of one (source, pid, cid) while it is tracked."""

    __slots__ = (
        "client",
        "errnos",
        "failures",
        "first",
        "first_seen",
        "host",
        "key",
        "kinds",
        "last",
        "last_seen",
        "max_repeat",
        "peak",
        "peak_ts",
        "request_keys",
        "requests",
        "sample",
        "server",
        "subsystem",
        "upstream_url",
        "upstreams",
        "window",
    )

    def __init__(self, key: ConnKey, width: int, ev: Event) -> None:
        self.key = key
        self.window = SecondWindow(width)
        self.failures = 0
        self.first = ev.ts
        self.first_seen: datetime = ev.time
        self.last = ev.ts
        self.last_seen: datetime = ev.time
        self.peak = 0
        self.peak_ts = ev.ts
        self.max_repeat = 0  # the most failures against any one upstream
        self.upstreams: dict[str, int] = {}
        self.errnos: dict[str, int] = {}
        self.kinds: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        # Distinct failing requests (hashes), exact up to MAX_REQUEST_KEYS: a keep-alive
        # connection carries request after request, a stuck one repeats one. A set, so
        # the count does not depend on the order lines are read in.
        self.request_keys: set[int] = set()
        self.client = ev.client
        self.server = ev.server
        self.host = ev.host
        self.subsystem = ev.subsystem
        self.upstream_url = ev.upstream
        self.sample = ev.line

    def add(self, ev: Event, n: int) -> int:
        """Count ``n`` identical failures; returns the failures now in the window."""
        ts = ev.ts
        self.failures += n
        in_second = self.window.add(ts, n)
        if in_second > self.peak:
            self.peak = in_second
            self.peak_ts = ts
        if ts >= self.last:
            self.last = ts
            self.last_seen = ev.time
        elif ts < self.first:
            self.first = ts
            self.first_seen = ev.time
        repeat = _bump(self.upstreams, ev.peer or "?", n)
        self.max_repeat = max(self.max_repeat, repeat)
        kind = ev.kind or "other"
        self.kinds[kind] = self.kinds.get(kind, 0) + n
        if ev.errno is not None:
            _bump(self.errnos, f"{ev.errno}: {ev.errno_text}", n)
        if ev.request is not None:
            _bump(self.requests, ev.request, n)
            if len(self.request_keys) < MAX_REQUEST_KEYS:
                # crc32, not hash(): stable across processes (the state is checkpointed).
                self.request_keys.add(zlib.crc32(ev.request.encode("utf-8", "surrogateescape")))
        if self.client is None:
            self.client = ev.client
        if self.server is None:
            self.server = ev.server
        if self.host is None:
            self.host = ev.host
        if self.subsystem is None:
            self.subsystem = ev.subsystem
        if self.upstream_url is None:
            self.upstream_url = ev.upstream
        return self.window.count()

    @property
    def failures_in_window(self) -> int:
        return self.window.count()

    @property
    def distinct_requests(self) -> int:
        return len(self.request_keys)

    @property
    def window_span(self) -> int:
        return self.window.span()

    def in_window(self, now: int, width: int | None = None) -> int:
        return self.window.count(now)
