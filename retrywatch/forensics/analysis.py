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

from retrywatch.detect.alerts import Alert
from retrywatch.detect.core import Core, DetectorConfig, new_core
from retrywatch.detect.knowledge import Knowledge
from retrywatch.forensics.discover import LogFile
from retrywatch.forensics.replay import replay

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
    #: The files read of which no line is an nginx error log line (ReplayResult's).
    not_nginx_logs: list[str] = field(default_factory=list)

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
                "subsystem": d["subsystem"],
                "diagnosis": d["diagnosis"]["code"] if d["diagnosis"] else None,
                "fix": d["diagnosis"]["fix"] if d["diagnosis"] else None,
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


def _frame(columns: dict[str, list[Any]], tz: tzinfo) -> pd.DataFrame:
    """Export rows as the core gathers them, typed (a chunk whose peers are all unknown
    exports like any other)."""
    frame = pd.DataFrame(columns, columns=EVENT_COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True).dt.tz_convert(tz)
    frame["errno"] = frame["errno"].astype("Int64")
    return frame.astype({"source": "str", "kind": "str", "peer": "str", "server": "str",
                         "pid": "int64", "cid": "int64", "count": "int64"})


def _long(rows: list[tuple[int, Any, int]], column: str, tz: tzinfo) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["time", column, "failures"])
    frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True).dt.tz_convert(tz)
    frame[column] = frame[column].astype("str")
    frame["failures"] = frame["failures"].astype("int64")
    return frame.sort_values(["time", column], ignore_index=True)


class _Export:
    """Takes the core's export rows after each chunk and hands them to the sink."""

    def __init__(self, tz: tzinfo, sink: EventSink) -> None:
        self.tz = tz
        self.sink = sink
        self.rows = 0

    def __call__(self, core: Core) -> None:
        columns = core.take_rows()
        if columns["time"]:
            frame = _frame(columns, self.tz)
            self.rows += len(frame)
            self.sink(frame)


def analyze(
    files: list[LogFile],
    *,
    tz: tzinfo,
    config: DetectorConfig | None = None,
    on_raw: Callable[[int], None] | None = None,
    sink: EventSink | None = None,
    threads: int | None = None,
    knowledge: Knowledge | None = None,
) -> Analysis:
    """Replay ``files`` (already discovered and ordered) and aggregate their failures."""
    config = config or DetectorConfig()
    core = new_core(config, tz, aggregates=True, rows=sink is not None)
    export = _Export(tz, sink) if sink is not None else None
    result = replay([f.path for f in files], tz=tz, config=config, on_chunk=export,
                    on_raw=on_raw, names=[f.source for f in files], core=core,
                    threads=threads, knowledge=knowledge)
    agg = core.aggregates()
    kinds = pd.DataFrame(agg["by_kind"], columns=["time", "kind", "count"])
    kinds["time"] = pd.to_datetime(kinds["time"], unit="s", utc=True).dt.tz_convert(tz)
    kinds = kinds.sort_values(["time", "kind"], ignore_index=True)
    timeline = kinds.groupby("time")["count"].sum().rename("failures").astype("int64")
    by_kind = kinds.pivot_table(index="time", columns="kind", values="count",
                                aggfunc="sum", fill_value=0)
    by_upstream = _long(agg["by_peer"], "peer", tz)
    by_server = _long(agg["by_server"], "server", tz)
    errnos = {str(e): n for e, n in sorted(agg["by_errno"], key=lambda kv: kv[0] or 0)
              if e is not None}
    stats = result.stats()
    first = pd.Timestamp(agg["first"], unit="s", tz="UTC").tz_convert(tz) \
        if agg["first"] is not None else None
    last = pd.Timestamp(agg["last"], unit="s", tz="UTC").tz_convert(tz) \
        if agg["last"] is not None else None
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
        "event_rows": export.rows if export is not None else 0,
    }
    return Analysis(summary, result.alerts, timeline, by_kind, by_upstream, by_server, files,
                    result.not_nginx_logs())
