"""Will the log fill the disk? Growth per followed file, a forecast per filesystem, and
an alert when the filesystem will be full within ``disk_horizon`` seconds.

The incident behind retrywatch filled a node's disk with one connection's error lines.
The service samples each followed file's size and its filesystem's free space about once
a second (serve/service.py; ``statvfs`` runs in the file input's own thread). Files on
one filesystem add up: the forecast is the free space over their summed growth in the
last minute (sources/growth.py), ``0`` once nothing is free (the writes that fail then
stop the growth: a full disk is not a disk that stopped filling).

A filesystem none of whose files grew for IDLE_AFTER (30) seconds is not growing: no
forecast. An alert fires once a filesystem's forecast has stayed within the horizon for
``hold`` seconds while its files are still written (a burst that stopped does not page),
and resolves once it has stayed past :data:`RESOLVE_MARGIN` times the horizon, or not
growing, or without any file read (``source_gone``), for ``hold`` seconds. It names
the connections writing most of the lines (their connect failures per second over the
files' lines per second) and the upstreams they fail against, from the detector's
hottest connections, and says what to do first.

A firing alert is kept in the engine's checkpoint: after a restart it fires on, and the
growth, measured again, resolves it (``disabled`` at once when the forecast is turned off).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar, Literal

from retrywatch.detect.diagnosis import Diagnosis
from retrywatch.detect.schema import (
    DISK_ALERTNAME,
    ConnectionData,
    DiskAlertData,
    DiskConnectionData,
    FileGrowthData,
    ForecastData,
)
from retrywatch.sources.growth import IDLE_AFTER, RATE_SPAN, Filesystem, Growth

__all__ = ["DEFAULT_HOLD", "DEFAULT_HORIZON", "DiskAlert", "DiskChange", "DiskWatch",
           "human_bytes", "human_seconds"]

#: The default horizon: alert when the disk will be full within 30 minutes.
DEFAULT_HORIZON = 1800.0
#: Seconds a forecast must stay within the horizon to fire (and past it to resolve).
DEFAULT_HOLD = 10.0
#: An alert fires only if the files grew within this many seconds: held within the
#: horizon, but written no more (a burst that stopped), it waits.
FIRE_IF_GREW_WITHIN = 5.0
#: A firing alert resolves only once the forecast is this many horizons away: a rate that
#: wavers around the horizon does not fire and resolve over and over.
RESOLVE_MARGIN = 1.5
#: Connections and upstreams an alert names.
NAMED = 5
#: Resolved disk alerts kept for the API.
RESOLVED_KEPT = 100
#: The failure mode's code (its page: docs/lint/log_fills_disk.md).
CODE = "log_fills_disk"

Clock = Callable[[], float]
Hottest = Callable[[], list[ConnectionData]]


def human_bytes(n: float) -> str:
    """``4.0 MiB``: binary units, as df -h shows them."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_seconds(s: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``."""
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


@dataclass(slots=True)
class _File:
    growth: Growth
    filesystem: Filesystem | None = None


@dataclass(slots=True)
class Forecast:
    """One filesystem now: its free space, the followed files on it and their growth."""

    mount: str
    free_bytes: int
    size_bytes: int
    sources: list[str]
    #: Bytes per second the files grow by together; ``None`` until a rate is known.
    bytes_per_second: float | None
    lines_per_second: float | None
    #: Seconds since any of the files last grew.
    idle_for: float = 0.0
    #: When the free space was read (the newest reading of any of its files).
    read_at: float = float("-inf")

    @property
    def seconds_to_full(self) -> float | None:
        """At the growth of the last minute; 0 when nothing is free; ``None`` when not
        growing (no byte for IDLE_AFTER seconds, or no rate yet)."""
        if self.free_bytes <= 0:
            return 0.0
        if not self.growing or not self.bytes_per_second or self.bytes_per_second <= 0:
            return None
        return self.free_bytes / self.bytes_per_second

    @property
    def growing(self) -> bool:
        """Any of its files grew within the last IDLE_AFTER seconds."""
        return self.idle_for < IDLE_AFTER

    def to_dict(self, wall: float) -> ForecastData:
        left = self.seconds_to_full
        return {
            "mount": self.mount, "free_bytes": self.free_bytes, "size_bytes": self.size_bytes,
            "sources": list(self.sources),
            "bytes_per_second": _round(self.bytes_per_second),
            "lines_per_second": _round(self.lines_per_second),
            "seconds_to_full": _round(left),
            "full_at": None if left is None else _iso(wall + left),
        }


@dataclass(slots=True)
class DiskAlert:
    """A filesystem that the followed logs will fill within the horizon."""

    id: str
    mount: str
    fired_at: float  # wall clock
    forecast: Forecast
    horizon: float
    wall: float = 0.0  # when the figures were last taken
    state: Literal["firing", "resolved"] = "firing"
    resolved_at: float | None = None
    resolved_reason: str | None = None
    connections: list[DiskConnectionData] = field(default_factory=list)
    upstreams: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_data(cls, d: DiskAlertData) -> DiskAlert:
        """A firing alert saved in a checkpoint (:meth:`to_dict`), to go on firing after a
        restart until its filesystem's growth, measured again, resolves it."""
        f = d["forecast"]
        forecast = Forecast(f["mount"], f["free_bytes"], f["size_bytes"], list(f["sources"]),
                            f["bytes_per_second"], f["lines_per_second"])
        fired = datetime.fromisoformat(d["fired_at"]).timestamp()
        return cls(d["id"], d["mount"], fired, forecast, d["horizon_seconds"], wall=fired,
                   connections=list(d["connections"]), upstreams=dict(d["upstreams"]))

    def diagnosis(self) -> Diagnosis:
        f = self.forecast
        files = ", ".join(f.sources[:3]) + (f" and {len(f.sources) - 3} more"
                                            if len(f.sources) > 3 else "")
        left = f.seconds_to_full
        rate = f"{human_bytes(f.bytes_per_second or 0)}/s"
        if left == 0:
            when = "it is full now"
        elif left is None:
            when = "it has stopped filling"
        else:
            when = f"full in about {human_seconds(left)} at this rate"
        cause = (f"{f.mount} has {human_bytes(f.free_bytes)} free of "
                 f"{human_bytes(f.size_bytes)}; {files} grow{'s' if len(f.sources) == 1 else ''}"
                 f" by {rate}: {when}.")
        if self.connections:
            top = self.connections[0]
            cause += (f" nginx connection *{top['cid']} (pid {top['pid']}) writes "
                      f"{top['share']:.0%} of the lines, {top['rate_per_second']:,.0f} "
                      f"connect() failures a second")
            if self.upstreams:
                cause += " against " + ", ".join(list(self.upstreams)[:3])
            cause += "."
            stop = ("Stop the writer first: the runaway connection's alert says how to bound "
                    "its retries (until then each failure is another line). ")
        else:
            stop = ("Find what writes (the log's most repeated lines); no tracked connection "
                    "writes a large share of them. ")
        fix = (stop + "Then free space: `truncate -s 0 FILE` (nginx writes on at the new "
               "end; a deleted log keeps its space until `nginx -s reopen`). Keep the log "
               "on a volume of its own, rotated by size (logrotate `maxsize`), so a storm "
               "cannot take the node's disk.")
        return Diagnosis(CODE, cause, fix)

    def to_dict(self) -> DiskAlertData:
        return {
            "alertname": DISK_ALERTNAME,
            "id": self.id, "state": self.state, "mount": self.mount,
            "horizon_seconds": self.horizon,
            "forecast": self.forecast.to_dict(self.wall),
            "connections": list(self.connections),
            "upstreams": dict(self.upstreams),
            "fired_at": _iso(self.fired_at),
            "resolved_at": None if self.resolved_at is None else _iso(self.resolved_at),
            "resolved_reason": self.resolved_reason,
            "diagnosis": self.diagnosis().to_dict(),
        }


@dataclass(slots=True, frozen=True)
class DiskChange:
    #: The event stream's name of its kind: ``disk_fired``, ``disk_resolved``.
    EVENT: ClassVar[str] = "disk"
    kind: Literal["fired", "resolved"]
    alert: DiskAlert
    #: The alert as it was at the change (made under the watch's lock: the alert object
    #: goes on changing while receivers and the event stream read this).
    data: DiskAlertData


def disk_alert_id(mount: str, fired_at: float) -> str:
    """Stable for one filesystem and the second it fired."""
    raw = f"disk\x1f{mount}\x1f{int(fired_at)}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


class DiskWatch:
    """The followed files' growth, their filesystems' forecasts, and the disk alerts.

    The ingest loop calls :meth:`observe` for each file and then :meth:`evaluate`; the
    API reads :meth:`growth`, :meth:`forecasts` and :meth:`alerts` from other threads
    (a lock keeps each read whole)."""

    def __init__(self, horizon: float = DEFAULT_HORIZON, *, hold: float = DEFAULT_HOLD,
                 span: float = RATE_SPAN, clock: Clock = time.monotonic,
                 wall: Clock = time.time) -> None:
        self.horizon = horizon
        self.hold = hold
        self.span = span
        self.clock = clock
        self.wall = wall
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._forecasts: dict[int, Forecast] = {}  # by device
        #: per mount: since when its forecast has been within (or, firing, past) the horizon
        self._since: dict[str, float] = {}
        self.firing: dict[str, DiskAlert] = {}  # by mount
        self.resolved: list[DiskAlert] = []
        self.fired_total = 0
        self.resolved_total = 0

    # -- input (the ingest loop) -----------------------------------------------------
    def observe(self, source: str, size: int, lines: int,
                filesystem: Filesystem | None) -> None:
        """One file's size, lines read so far and filesystem (``None``: not read now, the
        file closed or gone: its last reading no longer counts)."""
        with self._lock:
            entry = self._files.get(source)
            if entry is None:
                entry = self._files[source] = _File(Growth(self.span))
            entry.growth.observe(self.clock(), size, lines)
            entry.filesystem = filesystem

    def restore(self, alerts: Iterable[DiskAlert]) -> None:
        """Firing alerts of the last checkpoint: they fire on, and resolve as any other."""
        with self._lock:
            for alert in alerts:
                if alert.state == "firing":
                    self.firing[alert.mount] = alert

    def resolve_all(self, reason: str) -> list[DiskChange]:
        """Every firing alert resolved now (the forecast turned off: nothing would)."""
        with self._lock:
            wall = self.wall()
            return [self._change(*self._resolve(a, wall, reason))
                    for a in list(self.firing.values())]

    def firing_dicts(self) -> list[DiskAlertData]:
        """The firing alerts, for a checkpoint."""
        with self._lock:
            return [a.to_dict() for a in self.firing.values()]

    def sources(self) -> list[str]:
        """The files observed (and not forgotten)."""
        with self._lock:
            return list(self._files)

    def forget(self, sources: Iterable[str]) -> None:
        """Files no longer followed (gone, or forgotten with their series)."""
        with self._lock:
            for source in sources:
                self._files.pop(source, None)

    def evaluate(self, hottest: Hottest | None = None) -> list[DiskChange]:
        """Each filesystem's forecast from its files now; alerts fired and resolved.
        ``hottest``: the detector's hottest connections, asked for only while an alert
        fires (to name what writes)."""
        now, wall = self.clock(), self.wall()
        changed: list[tuple[Literal["fired", "resolved"], DiskAlert]] = []
        with self._lock:
            self._forecasts = self._forecast()
            forecasts = {f.mount: f for f in self._forecasts.values()}
            for mount in set(self._since) - set(forecasts) - set(self.firing):
                del self._since[mount]
            for mount, f in forecasts.items():
                left = f.seconds_to_full
                alert = self.firing.get(mount)
                if alert is None:
                    within = self.horizon > 0 and left is not None and left <= self.horizon
                    if not within:
                        self._since.pop(mount, None)
                    # held, and still being written (or full): a burst that stopped, its
                    # minute's average still high, does not fire
                    elif (now - self._since.setdefault(mount, now) >= self.hold
                          and (f.idle_for < FIRE_IF_GREW_WITHIN or left == 0)):
                        del self._since[mount]
                        alert = DiskAlert(disk_alert_id(mount, wall), mount, wall, f,
                                          self.horizon)
                        self.firing[mount] = alert
                        self.fired_total += 1
                        changed.append(("fired", alert))
                    continue
                alert.forecast, alert.wall = f, wall
                past = left is None or left > self.horizon * RESOLVE_MARGIN
                if not past:
                    self._since.pop(mount, None)
                elif self._held(mount, now):
                    changed.append(self._resolve(alert, wall, "not_growing" if left is None
                                                 else "forecast_past_horizon"))
            # A filesystem none of whose files is read any more (gone, closed, unreadable,
            # or not polled yet after a restart): resolved after the hold too.
            for mount in [m for m in self.firing if m not in forecasts]:
                if self._held(mount, now):
                    changed.append(self._resolve(self.firing[mount], wall, "source_gone"))
            firing = list(self.firing.values())
        rows = hottest() if firing and hottest is not None else None  # (the engine's lock)
        with self._lock:
            if rows is not None:
                for alert in firing:
                    alert.connections, alert.upstreams = _writers(alert.forecast, rows)
            return [self._change(kind, alert) for kind, alert in changed]

    def _held(self, mount: str, now: float) -> bool:
        """The condition of ``mount`` holds now: has it held for ``hold`` seconds? (Then
        its clock starts again.)"""
        if now - self._since.setdefault(mount, now) >= self.hold:
            del self._since[mount]
            return True
        return False

    @staticmethod
    def _change(kind: Literal["fired", "resolved"], alert: DiskAlert) -> DiskChange:
        return DiskChange(kind, alert, alert.to_dict())

    def _resolve(self, alert: DiskAlert, wall: float,
                 reason: str) -> tuple[Literal["resolved"], DiskAlert]:
        del self.firing[alert.mount]
        alert.state, alert.resolved_at, alert.resolved_reason = "resolved", wall, reason
        self.resolved.append(alert)
        del self.resolved[:-RESOLVED_KEPT]
        self.resolved_total += 1
        return "resolved", alert

    def _forecast(self) -> dict[int, Forecast]:
        """The forecast of each filesystem, by device (bind mounts and symbolic links lead
        to one), named by the smallest of its mount points seen (a stable name)."""
        by_dev: dict[int, Forecast] = {}
        for source, entry in self._files.items():
            fs = entry.filesystem
            if fs is None:
                continue
            f = by_dev.get(fs.dev)
            if f is None:
                f = by_dev[fs.dev] = Forecast(fs.mount, fs.free_bytes, fs.size_bytes, [],
                                              None, None, float("inf"), fs.read_at)
            elif fs.read_at > f.read_at:  # the newest reading is the free space now
                f.free_bytes, f.size_bytes, f.read_at = fs.free_bytes, fs.size_bytes, fs.read_at
            f.mount = min(f.mount, fs.mount)
            f.sources.append(source)
            f.bytes_per_second = _add(f.bytes_per_second, entry.growth.bytes_per_second)
            f.lines_per_second = _add(f.lines_per_second, entry.growth.lines_per_second)
            f.idle_for = min(f.idle_for, entry.growth.idle_for)
        return by_dev

    # -- what the API reads ------------------------------------------------------------
    def growth(self, source: str) -> FileGrowthData | None:
        """One file's growth and filesystem (``None``: not a followed file)."""
        with self._lock:
            entry = self._files.get(source)
            if entry is None:
                return None
            fs = entry.filesystem
            f = self._forecasts.get(fs.dev) if fs is not None else None
            return {
                "bytes_per_second": _round(entry.growth.bytes_per_second),
                "lines_per_second": _round(entry.growth.lines_per_second),
                "filesystem": f.to_dict(self.wall()) if f is not None else None,
            }

    def forecasts(self) -> list[ForecastData]:
        with self._lock:
            wall = self.wall()
            return [f.to_dict(wall) for f in self._forecasts.values()]

    def alerts(self) -> list[DiskAlertData]:
        """Firing first, then the resolved ones kept, newest first."""
        with self._lock:
            return [a.to_dict() for a in [*self.firing.values(), *reversed(self.resolved)]]


def _writers(f: Forecast, rows: list[ConnectionData]
             ) -> tuple[list[DiskConnectionData], dict[str, int]]:
    """The connections on ``f``'s files writing most of their lines, and the upstreams
    those connections fail against (failures in the window, most first)."""
    on = set(f.sources)
    mine = sorted((r for r in rows if r["source"] in on),
                  key=lambda r: -r["rate_per_second"])
    lines = f.lines_per_second or 0.0
    named: list[DiskConnectionData] = [{
        "source": r["source"], "pid": r["pid"], "cid": r["cid"],
        "rate_per_second": r["rate_per_second"],
        "share": round(min(1.0, r["rate_per_second"] / lines), 3) if lines > 0 else 0.0,
        "upstreams": dict(list(r["upstreams"].items())[:3]),
    } for r in mine[:NAMED]]
    upstreams: Counter[str] = Counter()
    for r in mine:
        upstreams.update(r["upstreams"])
    return named, dict(upstreams.most_common(NAMED))


def _add(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else a + b


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds")
