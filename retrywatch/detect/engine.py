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

import logging
import threading
import time
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, tzinfo
from operator import attrgetter
from typing import Any

import orjson
from pydantic import ValidationError

from retrywatch.detect.alerts import Alert, AlertChange
from retrywatch.detect.core import Conn, Core, DetectorConfig, localize, new_core, restore_core
from retrywatch.detect.disk import DiskAlert, DiskChange, DiskWatch
from retrywatch.detect.judge import judge
from retrywatch.detect.knowledge import Knowledge, Verdict
from retrywatch.detect.schema import (
    AlertData,
    ConnectionData,
    saved_disk_alert,
    saved_upstream_alert,
)
from retrywatch.detect.stats import SourceStats
from retrywatch.detect.upstreams import UpstreamAlert, UpstreamChange, UpstreamWatch
from retrywatch.serve.health import ServiceHealth

log = logging.getLogger("retrywatch")

__all__ = ["DetectorStats", "Engine", "RuledOut", "SourceInfo", "apply_changes"]

#: A subscriber hears every change: of a runaway connection's alert, or of a disk alert.
Subscriber = Callable[[AlertChange | DiskChange | UpstreamChange], None]
Clock = Callable[[], float]
#: A change as the core hands it back: (kind, at, reason, connection figures).
RawChange = tuple[str, int, str | None, dict[str, Any]]

#: Resolved alerts kept in memory for the API (the oldest are dropped first).
RESOLVED_KEPT = 10_000
#: The version of the Python half of the engine's state (the core's has its own).
STATE_VERSION = 1


@dataclass(slots=True)
class DetectorStats:
    """The core's detection counters, read at one moment."""

    connect_failures: int = 0
    by_source_kind: dict[tuple[str, str, str], int] = field(default_factory=dict)
    evictions: int = 0
    untracked: int = 0
    expired: int = 0
    ended: int = 0
    fired: int = 0
    resolved: int = 0

    @classmethod
    def of(cls, core: Core) -> DetectorStats:
        d = core.detector_stats()
        by = {(source, kind, sub): n for (source, kind, sub), n in d.pop("by_source_kind")}
        return cls(by_source_kind=by, **d)


@dataclass(slots=True)
class RuledOut:
    """Connections past the threshold whose route the configuration bounds: no alert."""

    now: set[tuple[str, int, int]] = field(default_factory=set)  # while tracked
    total: int = 0  # connections ruled out since the start (not counting any alerted later)

    def add(self, key: tuple[str, int, int]) -> None:
        if key not in self.now:
            self.now.add(key)
            self.total += 1

    def alerted(self, key: tuple[str, int, int]) -> None:
        """The log now contradicts the configuration: the key has an alert after all."""
        if key in self.now:
            self.now.discard(key)
            self.total -= 1


def apply_changes(raw: Iterable[RawChange], by_key: dict[tuple[str, int, int], Alert],
                  tz: tzinfo, knowledge: Knowledge | None = None,
                  ruled_out: RuledOut | None = None, *,
                  redact: bool = False) -> list[AlertChange]:
    """The alert lifecycle: the core's changes applied to the alerts of firing keys.

    Each change is judged (judge.py): a connection whose route the configuration bounds
    gets no alert (it is counted in ``ruled_out``); a suspected alert whose evidence becomes
    strong is ``confirmed``; one alert per connection, fired once. An alert that fired in
    these changes (one batch) and became confirmed by the end of them is one ``fired``
    change, confirmed: not a ``fired`` and a ``confirmed`` that could page twice (and
    the same whether identical lines came one by one or counted together).
    """
    ruled_out = ruled_out if ruled_out is not None else RuledOut()
    out: list[AlertChange] = []
    fired_now: set[tuple[str, int, int]] = set()
    for kind, at, reason, figures in raw:
        conn = Conn.of(figures, tz)
        alert = by_key.get(conn.key)
        if kind == "resolved":
            ruled_out.now.discard(conn.key)
            if alert is not None:
                alert.refresh(conn, judge(conn, _verdict(knowledge, conn)), redact=redact)
                del by_key[conn.key]
                alert.resolve(localize(at, tz), reason or "quiet")
                out.append(AlertChange("resolved", alert))
            continue
        judgement = judge(conn, _verdict(knowledge, conn))
        if alert is None:
            if judgement.confidence == "ruled_out":
                ruled_out.add(conn.key)
                continue
            ruled_out.alerted(conn.key)
            alert = Alert.fire(conn, localize(at, tz), judgement, redact=redact)
            by_key[conn.key] = alert
            fired_now.add(conn.key)
            out.append(AlertChange("fired", alert))
            continue
        became = alert.refresh(conn, judgement, redact=redact)
        confirmed = became and conn.key not in fired_now
        out.append(AlertChange("confirmed" if confirmed else "updated", alert))
    return out


def _verdict(knowledge: Knowledge | None, conn: Conn) -> Verdict | None:
    return knowledge.verdict(conn) if knowledge is not None else None


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
    def __init__(self, config: DetectorConfig, tz: tzinfo, *, idle_flush: float = 1.0,
                 clock: Clock = time.monotonic, core: Core | None = None,
                 knowledge: Knowledge | None = None, keep_query_strings: bool = True) -> None:
        self.config = config
        self.tz = tz
        #: False: query values in the alerts' request and sample are replaced (alerts.py);
        #: kept here as replay keeps them, the service redacts by default (its settings)
        self._keep_query_strings = keep_query_strings
        self.knowledge = knowledge  # the nginx configuration given (--nginx-config)
        #: connections past the threshold whose route the configuration bounds (no alert)
        self.ruled_out = RuledOut()
        self.core = core if core is not None else new_core(config, tz)
        self.idle_flush = idle_flush
        self._clock = clock
        self._lock = threading.RLock()
        self._fed_at: dict[str, float] = {}  # wall clock of each stream source's last bytes
        self._pending: set[str] = set()  # sources that may hold an unfinished event
        self.info: dict[str, SourceInfo] = {}
        self.firing: dict[str, Alert] = {}
        self._by_key: dict[tuple[str, int, int], Alert] = {}
        # A plain dict (in resolve order): copying its 10,000 values under the lock takes
        # a tenth of an OrderedDict's time.
        self.resolved: dict[str, Alert] = {}
        #: bytes of the feed in progress (0 between feeds): a big one is a backlog being
        #: read, and the API's readers give it the processor (serve/api.py)
        self.feeding = 0
        #: every alert kept, oldest fired first (the API's list, without a sort per read)
        self._order: list[Alert] = []
        self.subscribers: list[Subscriber] = []
        self.changes_total = 0
        #: alert changes published, by kind (fired, confirmed, resolved, updated)
        self.published: dict[str, int] = {}
        self._last_ts: int | None = None  # newest event second seen
        self._last_ts_at: float | None = None  # wall clock when it was seen
        self.started_at = clock()
        #: How the service around the engine fares (checkpoints, ingest loop): set by the
        #: service, read by the API and the metrics.
        self.health = ServiceHealth()
        #: The followed files' growth and the disk forecast: set by the service (none in a
        #: replay), read by the API and the metrics.
        self.disk: DiskWatch | None = None
        #: disk alerts firing in the snapshot restored (the service hands them to its
        #: DiskWatch)
        self.restored_disk: list[DiskAlert] = []
        #: The upstream peers' figures and alerts (detect/upstreams.py): set by the service
        #: with :meth:`count_upstreams`, read by the API and the metrics.
        self.upstreams: UpstreamWatch | None = None
        #: upstream alerts firing in the snapshot restored, and the peers' baselines
        self.restored_upstreams: list[UpstreamAlert] = []
        self._saved_baselines: list[tuple[str, float, float, int]] = []

    # -- input ---------------------------------------------------------------
    def add_source(self, name: str, kind: str) -> SourceInfo:
        with self._lock:
            info = self.info.get(name)
            if info is None:
                info = self.info[name] = SourceInfo(name, kind)
            self.core.add_source(name)
            return info

    def remove_source(self, name: str) -> list[AlertChange]:
        """Forget a source gone for good: its info, its counters and series, what the
        detector holds of it (an alert still firing resolves, ``source_removed``)."""
        with self._lock:
            self.info.pop(name, None)
            self._fed_at.pop(name, None)
            self._pending.discard(name)
            self.ruled_out.now = {key for key in self.ruled_out.now if key[0] != name}
            return self._apply(self.core.remove_source(name))

    def feed(self, source: str, data: bytes) -> list[AlertChange]:
        """Bytes of a stream source (a file, stdin)."""
        with self._lock:
            self._fed_at[source] = self._clock()
            self._pending.add(source)
            self.feeding = len(data)
            try:
                return self._apply(self.core.feed(source, data))
            finally:
                self.feeding = 0

    def feed_records(self, source: str, records: list[bytes]) -> list[AlertChange]:
        """Datagrams of a record source (syslog): each one line."""
        with self._lock:  # (a record is whole: nothing is held for an idle flush)
            return self._apply(self.core.feed_records(source, records))

    def end(self, source: str) -> list[AlertChange]:
        """A stream ended (stdin EOF, a file rotated away): release what it holds."""
        with self._lock:
            self._pending.discard(source)
            return self._apply(self.core.flush(source))

    def tick(self) -> list[AlertChange]:
        """Wall-clock housekeeping: flush quiet sources, move event time on when idle."""
        with self._lock:
            now = self._clock()
            changes: list[AlertChange] = []
            for source in [s for s in self._pending if now - self._fed_at[s] >= self.idle_flush]:
                self._pending.discard(source)
                # idle: an over-long line being dropped stays dropped (counted once).
                changes += self._apply(self.core.flush(source, idle=True))
            if self._last_ts is not None and self._last_ts_at is not None:
                idle = int(now - self._last_ts_at)
                if idle >= 1:
                    changes += self._publish(apply_changes(
                        self.core.advance(self._last_ts + idle), self._by_key, self.tz,
                        self.knowledge, self.ruled_out, redact=not self.keep_query_strings))
            return changes

    def _apply(self, raw: list[RawChange]) -> list[AlertChange]:
        newest = self.core.watermark
        if newest is not None and (self._last_ts is None or newest > self._last_ts):
            self._last_ts = newest
            self._last_ts_at = self._clock()
        if not raw:
            return []
        return self._publish(apply_changes(raw, self._by_key, self.tz, self.knowledge,
                                           self.ruled_out, redact=not self.keep_query_strings))

    def _publish(self, changes: list[AlertChange]) -> list[AlertChange]:
        for change in changes:
            alert = change.alert
            if change.kind == "resolved":
                self.firing.pop(alert.id, None)
                self.resolved.pop(alert.id, None)  # (re)inserted last: the newest
                self.resolved[alert.id] = alert
                while len(self.resolved) > RESOLVED_KEPT:
                    self._unindex(self.resolved.pop(next(iter(self.resolved))))
            else:
                if change.kind == "fired":
                    self._index(alert)
                self.firing[alert.id] = alert
            self.changes_total += 1
            self.published[change.kind] = self.published.get(change.kind, 0) + 1
            for subscriber in list(self.subscribers):
                subscriber(change)
        return changes

    @property
    def lock(self) -> threading.RLock:
        """Held while the engine changes: take it to read several figures consistently."""
        return self._lock

    @property
    def keep_query_strings(self) -> bool:
        return self._keep_query_strings

    @keep_query_strings.setter
    def keep_query_strings(self, keep: bool) -> None:
        """False: query values are replaced from now on, in the alerts kept too (restored
        from a state saved with them)."""
        with self._lock:
            self._keep_query_strings = keep
            if not keep:
                for alert in [*self.firing.values(), *self.resolved.values()]:
                    alert.redact()

    # -- what the detector holds -------------------------------------------------------
    @property
    def watermark(self) -> int | None:
        with self._lock:  # the core is busy (and borrowed) while a chunk is read
            return self.core.watermark

    @property
    def tracked_keys(self) -> int:
        with self._lock:
            return self.core.tracked_keys

    def detector_stats(self) -> DetectorStats:
        with self._lock:
            return DetectorStats.of(self.core)

    # -- persistence -------------------------------------------------------------
    def snapshot(self) -> tuple[bytes, bytes]:
        """The engine's whole state: the core's versioned bytes, and the alerts and
        sources as JSON. Neither is code: restoring runs nothing it reads."""
        with self._lock:
            extra = {
                "version": STATE_VERSION,
                "firing": [a.to_state() for a in self.firing.values()],
                "resolved": [a.to_state() for a in self.resolved.values()],
                "by_key": [[*key, alert.id] for key, alert in self._by_key.items()],
                "info": [asdict(info) for info in self.info.values()],
                "changes_total": self.changes_total,
                "published": self.published,
                "last_ts": self._last_ts,
                "disk": self.disk.firing_dicts() if self.disk is not None else [],
                "upstreams": (self.upstreams.firing_dicts() if self.upstreams is not None
                              else []),
                "upstream_baselines": self.core.upstream_baselines(),
            }
            return self.core.snapshot(), orjson.dumps(extra)

    @classmethod
    def restore(cls, core_state: bytes, extra_state: bytes, config: DetectorConfig,
                tz: tzinfo, *, clock: Clock = time.monotonic,
                idle_flush: float = 1.0, knowledge: Knowledge | None = None) -> Engine:
        """An engine from :meth:`snapshot`, with today's settings (ValueError when the
        state cannot be read)."""
        try:
            extra = orjson.loads(extra_state)
            if not isinstance(extra, dict) or extra.get("version") != STATE_VERSION:
                raise ValueError("unknown engine state version")
            engine = cls(config, tz, clock=clock, idle_flush=idle_flush,
                         core=restore_core(core_state, config, tz), knowledge=knowledge)
            for d in extra["firing"]:
                alert = Alert.from_state(d)
                engine.firing[alert.id] = alert
            for d in extra["resolved"]:
                alert = Alert.from_state(d)
                engine.resolved[alert.id] = alert
            for source, pid, cid, alert_id in extra["by_key"]:
                if alert_id in engine.firing:
                    engine._by_key[str(source), int(pid), int(cid)] = engine.firing[alert_id]
            for d in extra["info"]:
                info = SourceInfo(**d)
                info.open = info.kind == "file"
                engine.info[info.name] = info
            engine.changes_total = int(extra["changes_total"])
            engine.published = {str(k): int(v) for k, v in
                                dict(extra.get("published") or {}).items()}
            engine.restored_disk = _disk_alerts(extra.get("disk") or [])
            engine.restored_upstreams = _upstream_alerts(extra.get("upstreams") or [])
            engine._saved_baselines = _baselines(extra.get("upstream_baselines") or [])
            last_ts = extra.get("last_ts")
            if last_ts is not None:
                engine._last_ts = int(last_ts)
                engine._last_ts_at = clock()
        except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"unreadable engine state: {exc}") from exc
        return engine

    def count_upstreams(self, capacity: int, warmup: int = 60) -> None:
        """Count connect failures per upstream peer, naming at most ``capacity`` peers
        (0: stop), baselines learnt in full for the first ``warmup`` log seconds (the
        status quo), except those saved in the snapshot restored. The core keeps the
        counts; :meth:`upstream_figures` reads them."""
        with self._lock:
            self.core.set_upstreams(capacity, warmup)
            # (from the log second of the snapshot: the seconds after it, quiet or not,
            # are learnt as they come; without one there is nothing to start from)
            if capacity and self._saved_baselines and self._last_ts is not None:
                self.core.seed_upstreams(self._saved_baselines, self._last_ts)
            self._saved_baselines = []

    def event_now(self) -> int | None:
        """The log second now: the newest seen, moved on by the wall-clock seconds since
        it was seen (a quiet log's time goes on, as :meth:`tick` moves the detector's)."""
        with self._lock:
            if self._last_ts is None or self._last_ts_at is None:
                return None
            return self._last_ts + max(0, int(self._clock() - self._last_ts_at))

    def runaway_upstreams(self) -> list[tuple[str, int, list[str]]]:
        """The runaway alerts firing: id, connection id and the peers each fails on."""
        with self._lock:
            return [(a.id, a.cid, list(a.snapshot.get("upstreams", {})))
                    for a in self.firing.values()]

    def upstream_figures(self, before_any: int | None = None) -> dict[str, Any] | None:
        """The core's figures per upstream peer at :meth:`event_now` (None: not counted).
        ``before_any``: the log second now while no event was seen yet (the service's
        wall clock: the warm-up starts when watching starts, not at the first line)."""
        with self._lock:
            now = self.event_now()
            return self.core.upstreams(now if now is not None else before_any)

    def publish_disk(self, changes: list[DiskChange] | list[UpstreamChange]) -> None:
        """Disk and upstream alerts fired and resolved (detect/disk.py, upstreams.py) to
        every subscriber, under the lock as the others are (the alert counters are the
        runaway alerts' only)."""
        if not changes:
            return
        with self._lock:
            for change in changes:
                for subscriber in list(self.subscribers):
                    subscriber(change)

    def resolve_all(self, reason: str) -> list[AlertChange]:
        """Every firing alert resolved now with ``reason``, and the event time forgotten:
        for a detector whose state was discarded (the seconds it counted were read in
        another time zone), so its alerts would never resolve by themselves."""
        with self._lock:
            now = datetime.now(self.tz)
            changes = []
            for alert in list(self.firing.values()):
                alert.resolve(now, reason)
                changes.append(AlertChange("resolved", alert))
            self._by_key.clear()
            self.ruled_out.now.clear()
            self._last_ts = self._last_ts_at = None
            return self._publish(changes)

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

    def alerts(self) -> list[AlertData]:
        """Every alert kept, newest first, as the API shows them."""
        return self.alert_dicts(self.alert_list())

    def alert_list(self) -> list[Alert]:
        """Every alert kept, newest first: a copy of the references, all a reader of many
        alerts holds ingest up for (the order is kept as alerts fire and go)."""
        with self._lock:
            if len(self._order) != len(self.firing) + len(self.resolved):  # restored
                self._order = sorted([*self.firing.values(), *self.resolved.values()],
                                     key=_FIRED_AT)
            return self._order[::-1]

    def _index(self, alert: Alert) -> None:
        if self._order and _FIRED_AT(alert) < _FIRED_AT(self._order[-1]):
            insort(self._order, alert, key=_FIRED_AT)  # another source's older alert
        else:
            self._order.append(alert)

    def _unindex(self, alert: Alert) -> None:
        # (fired_at, id) is one alert's: where it sorts, it is, unless the order was not
        # built yet (restored, and not read since: alert_list builds it whole)
        i = bisect_left(self._order, _FIRED_AT(alert), key=_FIRED_AT)
        if i < len(self._order) and self._order[i] is alert:
            del self._order[i]

    def alert_dicts(self, alerts: Iterable[Alert]) -> list[AlertData]:
        """The API objects of ``alerts`` (a page of :meth:`alert_list`), each read whole
        under the lock (a refresh replaces several fields)."""
        with self._lock:
            return [a.to_dict() for a in alerts]

    def alert_json(self, alerts: Iterable[Alert]) -> list[bytes]:
        """The API objects of ``alerts`` as JSON, under the lock: made once per change and
        kept (the thousands of resolved alerts kept cost a page nothing more)."""
        with self._lock:
            return [a.to_json() for a in alerts]

    def alert(self, alert_id: str) -> AlertData | None:
        with self._lock:
            alert = self.firing.get(alert_id) or self.resolved.get(alert_id)
            return alert.to_dict() if alert is not None else None

    def connections(self, limit: int) -> list[ConnectionData]:
        """The hottest tracked connections now (their figures copied under the lock, made
        into the API's objects without it)."""
        with self._lock:
            rows = self.core.hottest(limit)
        return [_connection(Conn.of(d, self.tz), self.config.window) for d in rows]

    def source_stats(self) -> list[tuple[SourceInfo, SourceStats]]:
        with self._lock:
            return [(self.info.get(name) or SourceInfo(name, "unknown"), SourceStats.of(name, d))
                    for name, d in self.core.source_stats().items()]


def _disk_alerts(saved: list[Any]) -> list[DiskAlert]:
    """The firing disk alerts of a snapshot; one that cannot be read is left out (said in
    the log), not the engine's whole state."""
    out = []
    for data in saved:
        try:
            out.append(DiskAlert.from_data(saved_disk_alert(data)))
        except (ValidationError, ValueError, TypeError, KeyError) as exc:
            log.warning("a saved disk alert cannot be read (%s): left out", exc)
    return out


#: The API's order: by time fired, then id (the same order after a restore).
_FIRED_AT = attrgetter("fired_at", "id")


def _upstream_alerts(saved: list[Any]) -> list[UpstreamAlert]:
    """The firing upstream alerts of a snapshot; one that cannot be read is left out."""
    out = []
    for data in saved:
        try:
            out.append(UpstreamAlert.from_data(saved_upstream_alert(data)))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("a saved upstream alert cannot be read (%s): left out", exc)
    return out


def _baselines(saved: list[Any]) -> list[tuple[str, float, float, int]]:
    """The peers' baselines of a snapshot (those that cannot be read left out)."""
    out = []
    for row in saved:
        try:
            peer, mean, var, seconds = row
            out.append((str(peer), float(mean), float(var), int(seconds)))
        except (ValueError, TypeError):
            log.warning("a saved upstream baseline cannot be read: left out")
    return out


def _connection(st: Conn, window: int) -> ConnectionData:
    in_window = st.failures_in_window
    source, pid, cid = st.key
    return {
        "source": source, "pid": pid, "cid": cid,
        "failures_in_window": in_window,
        "rate_per_second": round(in_window / min(window, st.window_span), 1),
        "failures": st.failures,
        "upstreams": dict(sorted(st.upstreams.items(), key=lambda kv: -kv[1])),
        "client": st.client, "server": st.server,
        "first_seen": st.first_seen.isoformat(), "last_seen": st.last_seen.isoformat(),
    }
