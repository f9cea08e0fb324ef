"""``retrywatch analyze`` on a terminal: summary, storms, upstreams, servers, timeline."""

from __future__ import annotations

from typing import TextIO

import pandas as pd
from rich.console import Console
from rich.table import Table

from retrywatch.forensics.analysis import Analysis
from retrywatch.forensics.report import upstreams_cell

__all__ = ["render_analysis"]


def render_analysis(analysis: Analysis, out: TextIO) -> None:
    """``retrywatch analyze`` on a terminal: summary, storms, upstreams, servers, timeline."""
    console = Console(file=out, width=max(Console(file=out).width, 120), highlight=False)
    s = analysis.summary
    summary = Table(title="Summary", show_header=False)
    summary.add_column("what")
    summary.add_column("value", overflow="fold")
    summary.add_row("time range", f"{s['first_event']} -> {s['last_event']}")
    summary.add_row("files", f"{s['files']} ({s['bytes']:,} bytes)")
    summary.add_row("lines", f"{s['lines_read']:,} (parsed {s['lines_parsed']:,}, unparsed "
                    f"{s['lines_unparsed']:,})")
    if s["unparsed_by_reason"]:
        summary.add_row("unparsed by reason", ", ".join(
            f"{k} {v:,}" for k, v in s["unparsed_by_reason"].items()))
    summary.add_row("connect failures", f"{s['connect_failures']:,}")
    summary.add_row("  by kind", ", ".join(
        f"{k} {v:,}" for k, v in s["connect_failures_by_kind"].items()) or "-")
    summary.add_row("  by errno", ", ".join(
        f"{k} {v:,}" for k, v in s["connect_failures_by_errno"].items()) or "-")
    summary.add_row("storms (runaway connections)",
                    f"{s['storms']} ({s['storm_failures']:,} failures)")
    console.print(summary)

    if analysis.alerts:
        storms = Table(title="Runaway connections", show_lines=True)
        for col in ("connection", "start -> end", "duration", "failures", "peak/s", "mean/s",
                    "upstreams", "client -> server / request", "diagnosis"):
            storms.add_column(col, overflow="fold")
        for a in analysis.alerts:
            d = a.to_dict()
            target = d["server"] or ""
            if d["request"]:
                target += f"\n{d['request']}"
            storms.add_row(
                f"*{d['cid']} pid {d['pid']}\n{d['source']}",
                f"{_short(d['first_seen'])}\n{_short(d['last_seen'])}",
                f"{d['duration_seconds']:,} s", f"{d['failures']:,}",
                f"{d['peak_per_second']:,}", f"{d['mean_per_second']:,}",
                upstreams_cell(d), f"{d['client']} -> {target}",
                d["diagnosis"]["code"] if d["diagnosis"] else "",
            )
        console.print(storms)

    for title, frame, column in (("Failures per upstream", analysis.by_upstream, "peer"),
                                 ("Failures per server", analysis.by_server, "server")):
        if frame.empty:
            continue
        totals = frame.groupby(column, dropna=False)["failures"].sum()
        totals = totals.sort_values(ascending=False)
        table = Table(title=f"{title} (top 10 of {len(totals)})")
        table.add_column(column)
        table.add_column("failures", justify="right")
        table.add_column("first", overflow="fold")
        table.add_column("last", overflow="fold")
        spans = frame.groupby(column, dropna=False)["time"].agg(["min", "max"])
        for key, total in totals.head(10).items():
            table.add_row(str(key), f"{int(total):,}", str(spans.loc[key, "min"]),
                          str(spans.loc[key, "max"]))
        console.print(table)

    series, rule = analysis.resampled()
    if not series.empty:
        table = Table(title=f"Connect failures per {rule} (storms marked)")
        table.add_column("from")
        table.add_column("failures", justify="right")
        table.add_column("", no_wrap=True)
        table.add_column("storms", overflow="fold")
        top = max(int(series.max()), 1)
        spans = []
        for a in analysis.alerts:
            d = a.to_dict()
            spans.append((pd.Timestamp(d["first_seen"]), pd.Timestamp(d["last_seen"]), a.cid))
        step = pd.to_timedelta(rule)
        for when, n in series.items():
            end = when + step
            active = [f"*{cid}" for first, last, cid in spans if first < end and last >= when]
            bar = "█" * round(int(n) / top * 30)
            table.add_row(str(when), f"{int(n):,}", bar, " ".join(active))
        console.print(table)


def _short(iso: str) -> str:
    """``2026-11-25T17:33:43+00:00`` as ``2026-11-25 17:33:43`` (the zone is in the summary)."""
    return iso[:19].replace("T", " ")
