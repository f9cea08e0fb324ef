"""Rendering replay results: a readable table, one JSON document, or JSON Lines."""

from __future__ import annotations

from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.table import Table

from retrywatch.alerts import Alert

__all__ = ["render_json", "render_jsonl", "render_table"]


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


def _upstreams(d: dict[str, Any]) -> str:
    items = list(d["upstreams"].items())
    text = "\n".join(f"{addr} ×{count:,}" for addr, count in items[:3])
    if len(items) > 3:
        text += f"\n… {len(items) - 3} more"
    return text


def render_table(alerts: list[Alert], stats: dict[str, Any], out: TextIO) -> None:
    console = Console(file=out, width=max(Console(file=out).width, 120))
    if alerts:
        table = Table(title=f"Runaway connections: {len(alerts)}", show_lines=True)
        for col in ("state", "connection", "client → server", "upstreams", "failures",
                    "peak/s", "first → last seen", "diagnosis"):
            table.add_column(col, overflow="fold")
        for alert in alerts:
            d = alert.to_dict()
            target = d["server"] or ""
            if d["request"]:
                target += f"\n{d['request']}"
            diag = d["diagnosis"] or {}
            table.add_row(
                d["state"],
                f"*{d['cid']} pid {d['pid']}\n{d['source']}\n{d['subsystem'] or ''}",
                f"{d['client']} → {target}",
                _upstreams(d),
                f"{d['failures']:,}",
                f"{d['peak_per_second']:,}",
                f"{d['first_seen']}\n{d['last_seen']}",
                f"[b]{diag.get('code', '')}[/b]\nfix: {diag.get('fix', '')}",
            )
        console.print(table)
    else:
        console.print("[green]No runaway connections.[/green]")
    console.print(
        f"lines {stats['lines_read']:,} (parsed {stats['lines_parsed']:,}, unparsed "
        f"{stats['lines_unparsed']:,}), connect failures {stats['connect_failures']:,}, "
        f"alerts fired {stats['alerts_fired']}, resolved {stats['alerts_resolved']}"
        + (f", {stats['lines_per_second']:,.0f} lines/s" if "lines_per_second" in stats else "")
    )
