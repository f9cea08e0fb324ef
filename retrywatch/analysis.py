"""Forensics: the replay pipeline over historical logs, with pandas aggregates.

The detector is the one ``replay`` runs (same alerts). Beside it a tap reads each
batch's connect failures into a small DataFrame per chunk (identical lines arrive
counted, so a storm chunk is a few hundred rows), folds it into per-second
aggregates and, when asked, appends it to the export files. Memory is bounded by the
aggregates (seconds x distinct peers), not by the size of the logs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

import pandas as pd

from retrywatch.alerts import Alert
from retrywatch.detector import DetectorConfig
from retrywatch.discover import LogFile
from retrywatch.parser import Parser
from retrywatch.pipeline import Batch
from retrywatch.replay import replay

__all__ = ["Analysis", "EventSink", "analyze"]

#: Columns of the failure-event frames (one row per distinct line, with its count).
EVENT_COLUMNS = ["time", "source", "pid", "cid", "kind", "errno", "peer", "server", "count"]

EventSink = Callable[[pd.DataFrame], None]

CONNECTION_COLUMNS = ["id", "state", "source", "pid", "cid", "start", "end", "duration_seconds",
                      "failures", "peak_per_second", "mean_per_second", "upstreams", "client",
                      "server", "request", "subsystem", "diagnosis", "fix"]

#: Rows gathered before they become a DataFrame (bounds memory, amortises pandas' cost).
FRAME_ROWS = 50_000

#: Timeline bin sizes, smallest first (pandas offset aliases, seconds).
RESOLUTIONS = [("1s", 1), ("5s", 5), ("10s", 10), ("30s", 30), ("1min", 60), ("5min", 300),
               ("15min", 900), ("1h", 3600), ("6h", 21600), ("1D", 86400), ("7D", 604800)]


@dataclass
class Analysis:
    """What ``retrywatch analyze`` reports."""

    summary: dict[str, Any]
    alerts: list[Alert]
    timeline: pd.Series  # connect failures per second (tz-aware index)
    by_kind: pd.DataFrame  # per second x kind
    by_upstream: pd.DataFrame  # long: time, peer, failures
    by_server: pd.DataFrame  # long: time, server, failures
    files: list[LogFile] = field(default_factory=list)

    def connections(self) -> pd.DataFrame:
        """One row per runaway connection (alert)."""
        rows = []
        for alert in self.alerts:
            d = alert.to_dict()
            rows.append({
                "id": d["id"], "state": d["state"], "source": d["source"], "pid": d["pid"],
                "cid": d["cid"], "start": d["first_seen"], "end": d["last_seen"],
                "duration_seconds": d["duration_seconds"], "failures": d["failures"],
                "peak_per_second": d["peak_per_second"],
                "mean_per_second": d["mean_per_second"],
                "upstreams": ", ".join(f"{a} ({n})" for a, n in d["upstreams"].items()),
                "client": d["client"], "server": d["server"], "request": d["request"],
                "subsystem": d["subsystem"], "diagnosis": (d["diagnosis"] or {}).get("code"),
                "fix": (d["diagnosis"] or {}).get("fix"),
            })
        return pd.DataFrame(rows, columns=CONNECTION_COLUMNS)

    def resampled(self, max_bins: int = 40) -> tuple[pd.Series, str]:
        """The timeline in at most ``max_bins`` bins of a round size, and that size."""
        if self.timeline.empty:
            return self.timeline, "1s"
        span = (self.timeline.index.max() - self.timeline.index.min()).total_seconds() + 1
        rule = next((r for r, s in RESOLUTIONS if span / s <= max_bins), RESOLUTIONS[-1][0])
        series = self.timeline.resample(rule).sum()
        return series, rule

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "alerts": [a.to_dict() for a in self.alerts],
            "files": [f.to_dict() for f in self.files],
            "timeline": {
                "resolution_seconds": 1,
                "failures": {t.isoformat(): int(n) for t, n in self.timeline.items()},
            },
            "upstreams": _totals(self.by_upstream, "peer"),
            "servers": _totals(self.by_server, "server"),
        }


def _totals(frame: pd.DataFrame, column: str) -> dict[str, int]:
    if frame.empty:
        return {}
    sums = frame.groupby(column)["failures"].sum().sort_values(ascending=False)
    return {str(k): int(v) for k, v in sums.items()}


class _Tap:
    """Reads each batch's connect failures into frames and folds them into aggregates."""

    def __init__(self, parser: Parser, tz: tzinfo, sink: EventSink | None) -> None:
        self.parser = parser
        self.tz = tz
        self.sink = sink
        self.parts: dict[tuple[str, ...], list[pd.DataFrame]] = {
            dims: [] for dims in (("time", "kind"), ("time", "peer"), ("time", "server"),
                                  ("errno",))}
        self.rows = 0
        self.first: int | None = None
        self.last: int | None = None
        self.cols: dict[str, list[Any]] = {name: [] for name in EVENT_COLUMNS}

    def __call__(self, batch: Batch) -> None:
        cols = self.cols
        for head, n in batch.events:
            ts = head.ts
            if self.first is None or ts < self.first:
                self.first = ts
            if self.last is None or ts > self.last:
                self.last = ts
            if not head.failure:
                continue
            peer, server, errno = self.parser.failure_fields(head)
            cols["time"].append(ts)
            cols["source"].append(head.source)
            cols["pid"].append(head.pid)
            cols["cid"].append(head.cid)
            cols["kind"].append(head.failure)
            cols["errno"].append(errno)
            cols["peer"].append(peer)
            cols["server"].append(server)
            cols["count"].append(n)
        if len(cols["time"]) >= FRAME_ROWS:
            self.flush()

    def flush(self) -> None:
        """Turn the rows gathered so far into a frame: export it, fold it."""
        if not self.cols["time"]:
            return
        frame = pd.DataFrame(self.cols)
        self.cols = {name: [] for name in EVENT_COLUMNS}
        frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True).dt.tz_convert(self.tz)
        frame["errno"] = frame["errno"].astype("Int64")
        # Explicit types, so a chunk whose peers are all unknown exports like any other.
        frame = frame.astype({"source": "str", "kind": "str", "peer": "str", "server": "str",
                              "pid": "int64", "cid": "int64", "count": "int64"})
        if self.sink is not None:
            self.sink(frame)
        self.rows += len(frame)
        # Fold now into separate aggregates (per second and kind, per second and peer, per
        # second and server, per errno): memory follows them, not the lines read.
        for dims, parts in self.parts.items():
            parts.append(_sum(frame, list(dims)))
            if len(parts) >= 16:
                self.parts[dims] = [_sum(pd.concat(parts, ignore_index=True), list(dims))]

    def _folded(self, dims: tuple[str, ...]) -> pd.DataFrame:
        parts = self.parts[dims]
        if not parts:
            return pd.DataFrame(columns=[*dims, "count"])
        return _sum(pd.concat(parts, ignore_index=True), list(dims))

    def frames(self) -> tuple[pd.Series, pd.DataFrame, pd.DataFrame, pd.DataFrame,
                              dict[str, int]]:
        self.flush()
        kinds = self._folded(("time", "kind"))
        timeline = kinds.groupby("time")["count"].sum().rename("failures")
        by_kind = kinds.pivot_table(index="time", columns="kind", values="count",
                                    aggfunc="sum", fill_value=0)
        by_upstream = self._folded(("time", "peer")).rename(columns={"count": "failures"})
        by_server = self._folded(("time", "server")).rename(columns={"count": "failures"})
        errnos = self._folded(("errno",)).dropna(subset=["errno"])
        return (timeline, by_kind, by_upstream, by_server,
                {str(int(k)): int(v) for k, v in zip(errnos["errno"], errnos["count"],
                                                     strict=True)})


def _sum(frame: pd.DataFrame, dims: list[str]) -> pd.DataFrame:
    return frame.groupby(dims, dropna=False, observed=True)["count"].sum().reset_index()


def analyze(
    files: list[LogFile],
    *,
    tz: tzinfo,
    config: DetectorConfig | None = None,
    on_raw: Callable[[int], None] | None = None,
    sink: EventSink | None = None,
) -> Analysis:
    """Replay ``files`` (already discovered and ordered) and aggregate their failures."""
    parser = Parser(tz)
    tap = _Tap(parser, tz, sink)
    result = replay([f.path for f in files], tz=tz, config=config, on_batch=tap, on_raw=on_raw,
                    names=[f.source for f in files], parser=parser)
    timeline, by_kind, by_upstream, by_server, errnos = tap.frames()
    stats = result.stats()
    first = pd.Timestamp(tap.first, unit="s", tz="UTC").tz_convert(tz) if tap.first else None
    last = pd.Timestamp(tap.last, unit="s", tz="UTC").tz_convert(tz) if tap.last else None
    summary = {
        "files": len(files),
        "bytes": sum(f.size for f in files),
        "first_event": first.isoformat() if first is not None else None,
        "last_event": last.isoformat() if last is not None else None,
        "lines_read": stats["lines_read"],
        "lines_parsed": stats["lines_parsed"],
        "lines_unparsed": stats["lines_unparsed"],
        "unparsed_by_reason": stats["unparsed_by_reason"],
        "connect_failures": stats["connect_failures"],
        "connect_failures_by_kind": stats["connect_failures_by_kind"],
        "connect_failures_by_errno": errnos,
        "storms": len(result.alerts),
        "storm_failures": sum(a.to_dict()["failures"] for a in result.alerts),
        "event_rows": tap.rows,
    }
    return Analysis(summary, result.alerts, timeline, by_kind, by_upstream, by_server, files)
