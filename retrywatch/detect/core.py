"""The compiled core (``retrywatch._core``) seen from Python: its settings, the
connection figures it hands back, and the time zone it is given.

The per-line path (framing, wrappers, the head parse, keys, the window, eviction,
threshold crossing and every count) runs in Rust with the GIL released; Python gets
back alert changes as ``(kind, at, reason, conn)`` tuples and turns them into
:class:`~retrywatch.detect.alerts.Alert` objects (:mod:`retrywatch.detect.engine`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Any

from retrywatch._core import Core, EventReader, ParsedChunk, SourceReader

__all__ = ["DEFAULT_MAX_LINE", "Conn", "Core", "DetectorConfig", "EventReader", "ParsedChunk",
           "SourceReader", "localize", "new_core", "restore_core", "zone_arguments"]

_EPOCH = datetime(1970, 1, 1)
#: The longest line read (bytes); a longer one is counted as unparsed (``too_long``).
DEFAULT_MAX_LINE = 64 * 1024


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    window: int = 60  # seconds of event time
    threshold: int = 10  # connect failures within the window
    min_repeat: int = 2  # failures against one peer (repetition)
    resolve_after: int = 60  # seconds without a failure before an alert resolves
    max_tracked: int = 100_000  # connection keys held at once

    def __post_init__(self) -> None:
        for name in ("window", "threshold", "min_repeat", "resolve_after", "max_tracked"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    def arguments(self) -> dict[str, Any]:
        """The settings as the core's keyword arguments."""
        return asdict(self)


def zone_arguments(tz: tzinfo) -> dict[str, Any]:
    """How the core turns nginx's naive local seconds into POSIX seconds: a fixed offset,
    or a function it calls once per distinct second (cached in the core)."""
    if isinstance(tz, timezone):
        offset = tz.utcoffset(None)
        return {"utc_offset": int(offset.total_seconds())}

    def to_ts(naive: int) -> int:
        try:
            return int((_EPOCH + timedelta(seconds=naive)).replace(tzinfo=tz).timestamp())
        except (OverflowError, ValueError):
            return naive

    return {"to_ts": to_ts}


def new_core(config: DetectorConfig, tz: tzinfo, *, aggregates: bool = False,
             rows: bool = False, max_line: int = DEFAULT_MAX_LINE) -> Core:
    return Core(**config.arguments(), **zone_arguments(tz), aggregates=aggregates, rows=rows,
                max_line=max_line)


def restore_core(state: bytes, config: DetectorConfig, tz: tzinfo) -> Core:
    """A core from its saved state, with today's settings and zone (ValueError if the
    state cannot be read)."""
    return Core.restore(state, **config.arguments(), **zone_arguments(tz))


@lru_cache(maxsize=4096)
def localize(ts: int, tz: tzinfo) -> datetime:
    """The aware local time of a POSIX second (cached: storms share seconds)."""
    return datetime.fromtimestamp(ts, UTC).astimezone(tz)


@dataclass(slots=True)
class Conn:
    """A connection's figures as the core hands them back (the alert's view)."""

    key: tuple[str, int, int]  # (source, worker pid, connection id)
    failures: int
    failures_in_window: int
    window_span: int
    first: int
    last: int
    first_seen: datetime
    last_seen: datetime
    peak: int
    peak_ts: int
    max_repeat: int
    upstreams: dict[str, int]
    errnos: dict[str, int]
    kinds: dict[str, int]
    requests: dict[str, int]
    distinct_requests: int
    client: str | None
    server: str | None
    host: str | None
    upstream_url: str | None
    subsystem: str | None
    sample: str

    @classmethod
    def of(cls, d: dict[str, Any], tz: tzinfo) -> Conn:
        return cls(
            (d["source"], d["pid"], d["cid"]), d["failures"], d["failures_in_window"],
            d["window_span"], d["first"], d["last"], localize(d["first"], tz),
            localize(d["last"], tz), d["peak"], d["peak_ts"], d["max_repeat"],
            dict(d["upstreams"]), dict(d["errnos"]), dict(d["kinds"]), dict(d["requests"]),
            d["distinct_requests"], d["client"], d["server"], d["host"], d["upstream_url"],
            d["subsystem"], d["sample"])
