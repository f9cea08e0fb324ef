"""Rendering replay results: a readable table, one JSON document, or JSON Lines."""

from __future__ import annotations

from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.table import Table

from retrywatch.detect.alerts import Alert
from retrywatch.detect.schema import AlertData

__all__ = ["render_json", "render_jsonl", "render_table", "upstreams_cell"]


def render_json(alerts: list[Alert], stats: dict[str, Any], out: TextIO) -> None:
    doc = {"alerts": [a.to_dict() for a in alerts], "stats": stats}
    out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    out.write("\n")


def render_jsonl(alerts: list[Alert], stats: dict[str, Any], out: TextIO) -> None:
    for alert in alerts:
        out.write(orjson.dumps(alert.to_dict()).decode())
        out.write("\n")
    out.write(orjson.dumps({"stats": stats}).decode())
    out.write("\n")


def upstreams_cell(d: AlertData) -> str:
    items = list(d["upstreams"].items())
    text = "\n".join(f"{addr} x{count:,}" for addr, count in items[:3])
    if len(items) > 3:
        text += f"\n+{len(items) - 3} more"
    return text


def _clock(iso: str) -> str:
    return iso[11:19]


def render_table(alerts: list[Alert], stats: dict[str, Any], out: TextIO) -> None:
    """A table of the runaway connections, then each one's cause and fix."""
    console = Console(file=out, width=max(Console(file=out).width, 120), highlight=False)
    if alerts:
        table = Table(title=f"Runaway connections: {len(alerts)}", show_lines=True)
        for col in ("state", "connection", "client -> server / request", "upstreams",
                    "failures", "peak/s", "seen (event time)", "diagnosis"):
            table.add_column(col, overflow="fold")
        for alert in alerts:
            d = alert.to_dict()
            target = d["server"] or ""
            if d["request"]:
                target += f"\n{d['request']}"
            state = "[red]firing[/red]" if d["state"] == "firing" else (
                f"resolved\n({d['resolved_reason']})")
            table.add_row(
                state,
                f"*{d['cid']} pid {d['pid']}\n{d['subsystem'] or ''}",
                f"{d['client']} -> {target}",
                upstreams_cell(d),
                f"{d['failures']:,}",
                f"{d['peak_per_second']:,}",
                f"{d['first_seen'][:10]}\n{_clock(d['first_seen'])} -> "
                f"{_clock(d['last_seen'])}\n({d['duration_seconds']:,} s)",
                f"{d['diagnosis']['code'] if d['diagnosis'] else ''}\n"
                + ("[red]confirmed[/red]" if d["confidence"] == "confirmed" else "suspected"),
            )
        console.print(table)
        for alert in alerts:
            d = alert.to_dict()
            diag = d["diagnosis"]
            console.print(f"\n[b]*{d['cid']}[/b] (pid {d['pid']}, {d['source']}): "
                          f"{diag['cause'] if diag else ''}")
            console.print(f"  [b]{d['confidence'].capitalize()}:[/b] "
                          + "; ".join(d["evidence"]))
            console.print(f"  [b]Fix:[/b] {diag['fix'] if diag else ''}")
            if diag:
                console.print(f"  [b]More:[/b] retrywatch lint --explain {diag['code']} "
                              "(find it in the configuration: retrywatch lint nginx.conf)")
    else:
        console.print("No runaway connections.")
    by_kind = ", ".join(f"{k} {v:,}" for k, v in stats.get("connect_failures_by_kind", {}).items())
    if stats.get("ruled_out_by_configuration"):
        console.print(f"\n{stats['ruled_out_by_configuration']:,} connection(s) past the "
                      "threshold on routes the nginx configuration bounds: no alert.")
    console.print(
        f"\nlines {stats['lines_read']:,} (parsed {stats['lines_parsed']:,}, unparsed "
        f"{stats['lines_unparsed']:,}); connect failures {stats['connect_failures']:,}"
        + (f" ({by_kind})" if by_kind else "")
        + f"; alerts fired {stats['alerts_fired']}, resolved {stats['alerts_resolved']}"
        + (f"; {stats['lines_per_second']:,} lines/s" if "lines_per_second" in stats else "")
    )
