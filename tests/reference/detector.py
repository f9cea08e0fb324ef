"""The runaway-connection detector: events in, alert changes out.

Pure and deterministic: it reads only the events (event time comes from the log
line), so replaying a file gives the same alerts as following it live. State is
bounded: idle keys are dropped after the window, the number of tracked keys is
capped, and eviction keeps firing and hot keys.

A connection is *runaway* when, within ``window`` seconds of event time, it has at
least ``threshold`` upstream connect failures **and** it has failed against one peer
at least ``min_repeat`` times. The first is the rate; the second is the repetition
that tells a retry loop from one request failing over across many distinct peers
(which nginx does legitimately, once per server of the group).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice

from reference.connection import ConnKey, ConnState
from reference.parser import EventHead, subsystem_of
from retrywatch.detect.alerts import Alert, AlertChange
from retrywatch.detect.core import DetectorConfig  # the settings are one for both

__all__ = ["Detector", "DetectorConfig", "DetectorStats"]

EVICTION_SAMPLE = 8


class _Pending:
    """A key whose failures cannot fire yet: its lines, kept unparsed.

    Most failing connections fail once or a few times (one try per server of the
    group). Until a key has ``threshold`` failures within the window it cannot fire, so
    its lines are only counted; they are parsed when it reaches the threshold (or when
    its oldest failure leaves the window), and a key that goes quiet is dropped unread.
    """

    __slots__ = ("entries", "last", "n")

    def __init__(self, head: EventHead, n: int) -> None:
        self.entries = [(head, n)]
        self.n = n
        self.last = head.ts

    def in_window(self, now: int, width: int) -> int:
        edge = now - width
        return sum(n for head, n in self.entries if head.ts > edge)


@dataclass(slots=True)
class DetectorStats:
    connect_failures: int = 0  # failure lines counted
    #: The same, by (source, kind, subsystem): bounded label values for the metrics.
    by_source_kind: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    evictions: int = 0  # tracked keys pushed out by the cap
    untracked: int = 0  # failures of new keys not tracked because every slot was firing
    expired: int = 0  # idle keys dropped after the window
    ended: int = 0  # keys dropped because the connection ended
    fired: int = 0
    resolved: int = 0


class Detector:
    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self.stats = DetectorStats()
        self.watermark: int | None = None  # newest event second seen
        # Least recently updated first; keys below the threshold are cheap _Pending ones.
        self.tracked: OrderedDict[ConnKey, ConnState | _Pending] = OrderedDict()
        self.firing: OrderedDict[ConnKey, tuple[ConnState, Alert]] = OrderedDict()

    # -- public -------------------------------------------------------------
    def process(self, batch: Iterable[tuple[EventHead, int]]) -> list[AlertChange]:
        """Apply a batch of ``(event, times)``; identical events may come counted."""
        changes: list[AlertChange] = []
        touched: dict[ConnKey, tuple[ConnState, Alert]] = {}
        fired_now: set[ConnKey] = set()  # confirmed in the batch it fired in: one change
        cfg = self.config
        tracked = self.tracked
        firing = self.firing
        stats = self.stats
        for head, n in batch:
            if self.watermark is None or head.ts > self.watermark:
                self._advance(head.ts, head.time, changes)
            cid = head.cid
            if cid is None:
                continue
            if head.failure:
                stats.connect_failures += n
                stats.by_source_kind[head.source, head.failure, subsystem_of(head.text)] += n
                key = (head.source, head.pid, cid)
                hit = firing.get(key)
                if hit is not None:
                    firing.move_to_end(key)
                    hit[0].add(head.event(), n)
                    touched[key] = hit
                    continue
                st = self._state(key, head, n)
                if st is None:
                    continue
                count = st.add(head.event(), n)
                if count >= cfg.threshold and st.max_repeat >= cfg.min_repeat:
                    del tracked[key]
                    alert = Alert.fire(st, head.time)
                    firing[key] = (st, alert)
                    fired_now.add(key)
                    stats.fired += 1
                    changes.append(AlertChange("fired", alert))
            elif head.ended_hint:
                key = (head.source, head.pid, cid)
                if key not in firing and key not in tracked:
                    continue
                if not head.event().ended:
                    continue
                hit = firing.pop(key, None)
                if hit is not None:
                    touched.pop(key, None)
                    self._resolve(hit, head.time, "connection_ended", changes)
                elif tracked.pop(key, None) is not None:
                    stats.ended += 1
        for key, hit in touched.items():
            if firing.get(key) is hit:  # still the same firing alert (not resolved since)
                became = hit[1].refresh(hit[0])  # the alert lifecycle is shared: judge.py
                confirmed = became and key not in fired_now
                changes.append(AlertChange("confirmed" if confirmed else "updated", hit[1]))
        return changes

    def advance(self, ts: int, when: datetime) -> list[AlertChange]:
        """Move event time forward without an event (idle sources, end of a quiet period)."""
        changes: list[AlertChange] = []
        if self.watermark is None or ts > self.watermark:
            self._advance(ts, when, changes)
        return changes

    def firing_alerts(self) -> list[Alert]:
        return [alert for _, alert in self.firing.values()]

    def hottest(self, limit: int) -> list[ConnState]:
        """Tracked and firing connections with the most failures in the window now."""
        now = self.watermark
        states = [st for st, _ in self.firing.values()]
        states += [st for st in self.tracked.values() if type(st) is ConnState]
        states.sort(key=lambda st: -st.in_window(now if now is not None else st.last))
        return states[:limit]

    @property
    def tracked_keys(self) -> int:
        return len(self.tracked) + len(self.firing)

    # -- internals -------------------------------------------------------------
    def _advance(self, ts: int, when: datetime, changes: list[AlertChange]) -> None:
        self.watermark = ts
        idle_edge = ts - self.config.window
        tracked = self.tracked
        while tracked:
            key = next(iter(tracked))
            if tracked[key].last > idle_edge:
                break
            del tracked[key]
            self.stats.expired += 1
        # Firing keys are few: check them all (their order of update is not the order of
        # their last failure when workers' clocks differ by a second).
        quiet_edge = ts - self.config.resolve_after
        firing = self.firing
        for key in [k for k, (st, _) in firing.items() if st.last <= quiet_edge]:
            st, alert = firing.pop(key)
            quiet_at = datetime.fromtimestamp(st.last + self.config.resolve_after, when.tzinfo)
            self._resolve((st, alert), quiet_at, "quiet", changes)

    def _resolve(self, hit: tuple[ConnState, Alert], when: datetime, reason: str,
                 changes: list[AlertChange]) -> None:
        st, alert = hit
        alert.refresh(st)
        alert.resolve(when, reason)
        self.stats.resolved += 1
        changes.append(AlertChange("resolved", alert))

    def _state(self, key: ConnKey, head: EventHead, n: int) -> ConnState | None:
        """The state to count a failure in, or ``None`` when it was counted in a pending key
        (or no slot was free)."""
        cfg = self.config
        entry = self.tracked.get(key)
        now = head.ts if self.watermark is None else self.watermark
        if entry is not None and entry.last <= now - cfg.window:
            # Idle for a whole window of event time (the watermark, not this line's time: a
            # worker's line a few seconds late must not revive a key the sweep would have
            # dropped): a fresh start, whether or not the sweep got to it.
            del self.tracked[key]
            self.stats.expired += 1
            entry = None
        if entry is None:
            if n < cfg.threshold:
                self._track(key, _Pending(head, n), n)
                return None
            st = ConnState(key, cfg.window, head.event())
            return st if self._track(key, st, n) else None
        self.tracked.move_to_end(key)
        if type(entry) is not _Pending:
            return entry  # type: ignore[return-value]
        oldest = entry.entries[0][0].ts
        if entry.n + n < cfg.threshold and oldest > head.ts - cfg.window:
            entry.entries.append((head, n))
            entry.n += n
            entry.last = max(entry.last, head.ts)
            return None
        first = entry.entries[0][0].event()
        st = ConnState(key, cfg.window, first)
        for earlier, times in entry.entries:
            st.add(earlier.event(), times)
        self.tracked[key] = st
        return st

    def _track(self, key: ConnKey, entry: ConnState | _Pending, n: int) -> bool:
        if len(self.tracked) + len(self.firing) >= self.config.max_tracked and not self._evict():
            self.stats.untracked += n
            return False
        self.tracked[key] = entry
        return True

    def _evict(self) -> bool:
        """Drop the coldest of the least recently updated non-firing keys."""
        if not self.tracked:
            return False
        now = self.watermark
        sample = list(islice(self.tracked.items(), EVICTION_SAMPLE))
        width = self.config.window
        victim = min(sample, key=lambda kv: kv[1].in_window(now if now is not None else 0, width))
        del self.tracked[victim[0]]
        self.stats.evictions += 1
        return True
