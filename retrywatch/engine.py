"""The live engine: each source's bytes in, alert changes out, state to read.

Sources call :meth:`Engine.feed` (bytes of a stream) or :meth:`Engine.feed_records`
(datagrams) from whatever thread reads them; the engine runs the source's pipeline and
the one detector under a lock, keeps an index of alerts for the API, and hands every
change to its subscribers (the event stream, and later the notifiers).

Event time comes from the lines. The wall clock is used for two things only: a source
that has been quiet for ``idle_flush`` seconds has its held last line released (an event
is complete only when the next one starts), and when no line at all arrives, event time
is moved on by the wall time elapsed so idle state expires and quiet alerts resolve.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from retrywatch.alerts import Alert, AlertChange
from retrywatch.connection import ConnState
from retrywatch.detector import Detector
from retrywatch.parser import Parser
from retrywatch.pipeline import Batch, SourcePipeline
from retrywatch.stats import SourceStats

__all__ = ["Engine", "SourceInfo"]

Subscriber = Callable[[AlertChange], None]
Clock = Callable[[], float]

#: Resolved alerts kept in memory for the API (the oldest are dropped first).
RESOLVED_KEPT = 10_000


@dataclass(slots=True)
class SourceInfo:
    """What the API says about a source beyond its line counters."""

    name: str
    kind: str  # file, stdin, syslog
    position: int | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    rotations: int = 0
    last_error: str | None = None
    open: bool = True
    caught_up: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class Engine:
    def __init__(self, parser: Parser, detector: Detector, *, idle_flush: float = 1.0,
                 clock: Clock = time.monotonic) -> None:
        self.parser = parser
        self.detector = detector
        self.idle_flush = idle_flush
        self._clock = clock
        self._lock = threading.RLock()
        self._pipes: dict[str, SourcePipeline] = {}
        self._fed_at: dict[str, float] = {}  # wall clock of each source's last bytes
        self._pending: set[str] = set()  # sources that may hold an unfinished event
        self.info: dict[str, SourceInfo] = {}
        self.firing: dict[str, Alert] = {}
        self.resolved: OrderedDict[str, Alert] = OrderedDict()
        self.subscribers: list[Subscriber] = []
        self.changes_total = 0
        self._last_ts: int | None = None  # newest event second seen
        self._last_ts_at: float | None = None  # wall clock when it was seen
        self._last_when: datetime | None = None
        self.started_at = clock()

    # -- input ---------------------------------------------------------------
    def add_source(self, name: str, kind: str) -> SourceInfo:
        with self._lock:
            info = self.info.get(name)
            if info is None:
                info = self.info[name] = SourceInfo(name, kind)
            self._pipe(name)
            return info

    def _pipe(self, name: str) -> SourcePipeline:
        pipe = self._pipes.get(name)
        if pipe is None:
            pipe = self._pipes[name] = SourcePipeline(name, self.parser)
        return pipe

    def feed(self, source: str, data: bytes) -> list[AlertChange]:
        """Bytes of a stream source (a file, stdin)."""
        with self._lock:
            pipe = self._pipe(source)
            self._fed_at[source] = self._clock()
            self._pending.add(source)
            return self._apply(pipe.feed(data))

    def feed_records(self, source: str, records: list[bytes]) -> list[AlertChange]:
        """Datagrams of a record source (syslog): each one line."""
        with self._lock:
            pipe = self._pipe(source)
            self._fed_at[source] = self._clock()
            return self._apply(pipe.feed_records(records))

    def end(self, source: str) -> list[AlertChange]:
        """A stream ended (stdin EOF, a file rotated away): release what it holds."""
        with self._lock:
            self._pending.discard(source)
            return self._apply(self._pipe(source).flush())

    def tick(self) -> list[AlertChange]:
        """Wall-clock housekeeping: flush quiet sources, move event time on when idle."""
        with self._lock:
            now = self._clock()
            changes: list[AlertChange] = []
            for source in [s for s in self._pending if now - self._fed_at[s] >= self.idle_flush]:
                self._pending.discard(source)
                changes += self._apply(self._pipes[source].flush())
            if self._last_ts is not None and self._last_ts_at is not None:
                idle = int(now - self._last_ts_at)
                if idle >= 1 and self._last_when is not None:
                    ts = self._last_ts + idle
                    when = self._last_when + timedelta(seconds=idle)
                    changes += self._publish(self.detector.advance(ts, when))
            return changes

    def _apply(self, batch: Batch) -> list[AlertChange]:
        if not batch.events:
            return []
        newest = max(head.ts for head, _ in batch.events)
        if self._last_ts is None or newest > self._last_ts:
            self._last_ts = newest
            self._last_ts_at = self._clock()
            self._last_when = next(h.time for h, _ in batch.events if h.ts == newest)
        return self._publish(self.detector.process(batch.events))

    def _publish(self, changes: list[AlertChange]) -> list[AlertChange]:
        for change in changes:
            alert = change.alert
            if change.kind == "resolved":
                self.firing.pop(alert.id, None)
                self.resolved[alert.id] = alert
                self.resolved.move_to_end(alert.id)
                while len(self.resolved) > RESOLVED_KEPT:
                    self.resolved.popitem(last=False)
            else:
                self.firing[alert.id] = alert
            self.changes_total += 1
            for subscriber in list(self.subscribers):
                subscriber(change)
        return changes

    @property
    def lock(self) -> threading.RLock:
        """Held while the engine changes: take it to read several figures consistently."""
        return self._lock

    # -- persistence -------------------------------------------------------------
    def snapshot(self) -> bytes:
        """The engine's whole state (pipelines, detector, alerts) as bytes."""
        with self._lock:
            return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for transient in ("_lock", "subscribers", "_clock"):
            del state[transient]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self.subscribers = []
        self._clock = time.monotonic

    def reattach(self, clock: Clock) -> None:
        """After a restore: a new process, a new clock (wall-clock marks start again)."""
        with self._lock:
            self._clock = clock
            now = clock()
            self._fed_at = dict.fromkeys(self._fed_at, now)
            if self._last_ts_at is not None:
                self._last_ts_at = now
            self.started_at = now
            for info in self.info.values():
                info.open = info.kind == "file"

    # -- state to read -------------------------------------------------------------
    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` with every change (under the engine's lock: be quick)."""
        with self._lock:
            self.subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self.subscribers:
                    self.subscribers.remove(subscriber)

        return unsubscribe

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert kept, newest first, as the API shows them."""
        with self._lock:
            items = [*self.firing.values(), *self.resolved.values()]
            return [a.to_dict() for a in sorted(items, key=lambda a: a.fired_at, reverse=True)]

    def alert(self, alert_id: str) -> dict[str, Any] | None:
        with self._lock:
            alert = self.firing.get(alert_id) or self.resolved.get(alert_id)
            return alert.to_dict() if alert is not None else None

    def connections(self, limit: int) -> list[dict[str, Any]]:
        """The hottest tracked connections now."""
        with self._lock:
            now = self.detector.watermark
            out = []
            for st in self.detector.hottest(limit):
                in_window = st.in_window(now if now is not None else st.last)
                out.append(_connection(st, in_window, self.detector.config.window))
            return out

    def source_stats(self) -> list[tuple[SourceInfo, SourceStats]]:
        with self._lock:
            return [(self.info.get(name) or SourceInfo(name, "unknown"), pipe.stats)
                    for name, pipe in self._pipes.items()]


def _connection(st: ConnState, in_window: int, window: int) -> dict[str, Any]:
    source, pid, cid = st.key
    return {
        "source": source, "pid": pid, "cid": cid,
        "failures_in_window": in_window,
        "rate_per_second": round(in_window / min(window, st.window.span()), 1),
        "failures": st.failures,
        "upstreams": dict(sorted(st.upstreams.items(), key=lambda kv: -kv[1])),
        "client": st.client, "server": st.server,
        "first_seen": st.first_seen.isoformat(), "last_seen": st.last_seen.isoformat(),
    }
