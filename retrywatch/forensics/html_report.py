"""``retrywatch analyze --html FILE``: one self-contained HTML forensic report.

The page opens offline: no scripts, no external stylesheets, fonts or images. The plots
are drawn with matplotlib on figures of their own (never pyplot's global state) and
inlined as SVG, with text as glyph outlines so they need no font. A Content-Security-Policy
forbids the page to fetch anything at all. Everything that comes from the logs (peer
addresses, requests, hosts, file names) is untrusted and escaped by jinja2's autoescaping.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import jinja2
import matplotlib
import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from markupsafe import Markup, escape
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from retrywatch import __version__
from retrywatch.forensics.analysis import Analysis

__all__ = [
    "DIAGNOSIS_COLORS",
    "KIND_COLORS",
    "PEER_COLORS",
    "STORM_COLOR",
    "render_html",
]

#: Colours of the failure kinds in the timeline (stacked, largest at the bottom).
KIND_COLORS: dict[str, str] = {
    "connect_failed": "#1f5fa8",
    "connect_to_failed": "#7b3fa0",
    "no_live_upstreams": "#e08a00",
    "upstream_timed_out": "#2a9d8f",
}
_KIND_FALLBACK = "#8c8c8c"

#: Bar colours of the runaway connections, by diagnosis code.
DIAGNOSIS_COLORS: dict[str, str] = {
    "http_retry_loop": "#c0392b",
    "stream_retry_loop": "#d35400",
    "synchronous_loop": "#8e44ad",
    "slow_timeout_loop": "#16a085",
    "keepalive_failing_requests": "#7f8c8d",
    "retry_loop": "#2c3e50",
}
_DIAGNOSIS_FALLBACK = "#34495e"

#: Colours of the top upstream peers; "other" is grey.
PEER_COLORS: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
)
_OTHER_COLOR = "#b0b0b0"

#: Shading of the storms (alert first_seen .. last_seen) on the timelines.
STORM_COLOR = "#e74c3c"

KIND_LABELS: dict[str, str] = {
    "connect_failed": "connect() failed",
    "connect_to_failed": "connect() to … failed",
    "no_live_upstreams": "no live upstreams",
    "upstream_timed_out": "upstream timed out (connecting)",
}

#: Linux errno names, for errnos that no alert sample named.
_ERRNO_NAMES: dict[str, str] = {
    "2": "No such file or directory",
    "11": "Resource temporarily unavailable",
    "13": "Permission denied",
    "24": "Too many open files",
    "99": "Cannot assign requested address",
    "101": "Network is unreachable",
    "104": "Connection reset by peer",
    "110": "Connection timed out",
    "111": "Connection refused",
    "113": "No route to host",
}

_DASH = "\u2013"
TOP_PEERS = 8
TOP_CONNECTIONS = 15
MAX_TABLE_ROWS = 200
_MAX_STORM_LABELS = 40
_LABEL_ROWS = 4
_PEER_LABEL_CHARS = 44


@dataclass(frozen=True, slots=True)
class _Resolution:
    rule: str  # pandas offset alias
    seconds: int
    word: str  # "second", "minute", "hour"
    unit: str  # "s", "min", "h"


_SECOND = _Resolution("1s", 1, "second", "s")
_MINUTE = _Resolution("1min", 60, "minute", "min")
_HOUR = _Resolution("1h", 3600, "hour", "h")


def _resolution(span_seconds: float) -> _Resolution:
    """Per second up to ~2 h, per minute up to ~5 days (7,200 bins either way), then hours."""
    if span_seconds <= 2 * 3600:
        return _SECOND
    if span_seconds <= 120 * 3600:
        return _MINUTE
    return _HOUR


# --------------------------------------------------------------------------- figures


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)  # explicit non-interactive canvas: text can be measured
    return fig


_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_ID = re.compile(r'\sid="([^"]*)"')
_REF = re.compile(r'(?:href="#|url\(#)([^")]+)')
_SIZE = re.compile(r'^<svg\b([^>]*?)\swidth="[^"]*"\sheight="[^"]*"')


def _inline_svg(fig: Figure, prefix: str, label: str) -> Markup:
    """``fig`` as an ``<svg>`` element for inlining: no prolog, no comments, unique ids."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": prefix,
                                "svg.image_inline": True}):
        fig.savefig(buf, format="svg", metadata={
            "Creator": None, "Date": None, "Format": None, "Type": None})
    svg = _COMMENT.sub("", _PROLOG.sub("", buf.getvalue(), count=1))
    # Element ids live in one namespace per HTML page: drop those nothing refers to and
    # prefix the others with the plot's name.
    used = set(_REF.findall(svg))

    def _id(m: re.Match[str]) -> str:
        return f' id="{prefix}-{m.group(1)}"' if m.group(1) in used else ""

    svg = _ID.sub(_id, svg)
    svg = re.sub(r'(href="#|url\(#)([^")]+)', lambda m: f"{m.group(1)}{prefix}-{m.group(2)}",
                 svg)
    svg = _SIZE.sub(r"<svg\1", svg, count=1)  # the page sizes it (viewBox kept)
    # matplotlib's stylesheet says "*{...}": keep it to this plot.
    svg = svg.replace('<style type="text/css">*{', f'<style type="text/css">#{prefix} *{{', 1)
    aria = escape(label)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{aria}" ', 1)
    return Markup(svg.strip())  # made here by matplotlib; its text is escaped


def _thousands(value: float, _pos: int | None = None) -> str:
    return f"{value:,.0f}"


def _num(when: pd.Timestamp) -> float:
    """A matplotlib date number for ``when`` (tz-aware)."""
    naive = when.tz_convert("UTC").tz_localize(None)
    return float(mdates.date2num(naive))  # type: ignore[no-untyped-call]


def _utc_naive(index: pd.DatetimeIndex) -> np.ndarray[Any, Any]:
    return np.asarray(index.tz_convert("UTC").tz_localize(None).to_numpy())


def _edges(bins: pd.DatetimeIndex, res: _Resolution) -> np.ndarray[Any, Any]:
    last = bins[-1] + pd.Timedelta(seconds=res.seconds)
    naive = _utc_naive(bins.append(pd.DatetimeIndex([last])))
    return np.asarray(mdates.date2num(naive))  # type: ignore[no-untyped-call]


def _time_axis(ax: Axes, tz: tzinfo, tzname: str, edges: np.ndarray[Any, Any]) -> None:
    locator = mdates.AutoDateLocator(  # type: ignore[no-untyped-call]
        tz=tz, minticks=4, maxticks=12)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(  # type: ignore[no-untyped-call]
        locator, tz=tz,
        formats=["%Y", "%b", "%m-%d", "%H:%M", "%H:%M", "%H:%M:%S"],
        zero_formats=["", "%Y", "%Y-%m", "%m-%d", "%H:%M", "%H:%M"],
        offset_formats=["", "%Y", "%Y", "%Y-%m-%d", "%Y-%m-%d", "%Y-%m-%d"]))
    ax.set_xlim(float(edges[0]), float(edges[-1]))
    ax.set_xlabel(f"time ({tzname})")


def _style(ax: Axes) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=9)


def _time_figure(entries: int, ncols: int) -> tuple[Figure, Axes, float]:
    """A full-width time plot with room for its legend below; returns the legend's top."""
    width, top, axes, xlabel = 12.0, 0.4, 2.7, 0.62
    legend = 0.1 + 0.2 * -(-entries // ncols)
    height = top + axes + xlabel + legend
    fig = _figure(width, height)
    fig.subplots_adjust(left=0.85 / width, right=1 - 0.45 / width, top=1 - top / height,
                        bottom=(xlabel + legend) / height)
    ax = fig.add_subplot()
    _style(ax)
    return fig, ax, legend / height


def _steps(values: np.ndarray[Any, Any], edges: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The outline of a step area from 0 to ``values``, runs of equal values merged."""
    n = len(values)
    change = np.flatnonzero(np.diff(values) != 0) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [n]))
    heights = values[starts]
    top = np.empty((2 * len(starts), 2))
    top[0::2, 0] = edges[starts]
    top[1::2, 0] = edges[ends]
    top[0::2, 1] = heights
    top[1::2, 1] = heights
    return np.vstack(([[edges[0], 0.0]], top, [[edges[-1], 0.0]]))


def _stack(ax: Axes, frame: pd.DataFrame, edges: np.ndarray[Any, Any],
           colors: list[str], labels: list[str]) -> list[PolyCollection]:
    """Stacked step areas, one per column of ``frame`` (first column at the bottom).

    Each layer is drawn as one polygon from 0 to its cumulative top, the highest first,
    so a layer needs only its top outline (half the points of a band), and runs of equal
    values are merged: a long per-second range of mostly idle seconds stays small.
    """
    tops: list[tuple[np.ndarray[Any, Any], str, str]] = []
    base = np.zeros(len(frame), dtype=float)
    for column, color, label in zip(frame.columns, colors, labels, strict=True):
        values = frame[column].to_numpy(dtype=float)
        if not values.any():
            continue
        base = base + values
        tops.append((base, color, label))
    layers = []
    for top, color, label in reversed(tops):
        layer = PolyCollection([_steps(top, edges)], facecolors=color, linewidths=0,
                               label=label)
        ax.add_collection(layer, autolim=False)
        layers.append(layer)
    return layers[::-1]  # for the legend: bottom layer first, as in the stack


@dataclass
class _Storm:
    start: pd.Timestamp
    end: pd.Timestamp
    cids: list[str]
    failures: int


def _storm_groups(analysis: Analysis, bins: pd.DatetimeIndex, res: _Resolution) -> list[_Storm]:
    """The alerts' spans on the bin grid, overlapping ones merged into one group."""
    def _bin(iso: str) -> pd.Timestamp:
        i = int(bins.searchsorted(pd.Timestamp(iso), side="right")) - 1
        return pd.Timestamp(bins[min(max(i, 0), len(bins) - 1)])

    spans = []
    for alert in analysis.alerts:
        d = alert.to_dict()
        start = _bin(d["first_seen"])
        end = _bin(d["last_seen"]) + pd.Timedelta(seconds=res.seconds)
        spans.append((start, end, f"*{d['cid']}", int(d["failures"])))
    spans.sort(key=lambda s: (s[0], -s[3]))
    groups: list[_Storm] = []
    for start, end, cid, failures in spans:
        if groups and start <= groups[-1].end:
            g = groups[-1]
            g.end = max(g.end, end)
            g.cids.append(cid)
            g.failures += failures
        else:
            groups.append(_Storm(start, end, [cid], failures))
    return groups


def _storm_label(cids: list[str]) -> str:
    if len(cids) <= 5:
        return " ".join(cids)
    return " ".join(cids[:4]) + f" +{len(cids) - 4} more"


def _shade(ax: Axes, groups: list[_Storm], alpha: float) -> None:
    for g in groups:
        ax.axvspan(_num(g.start), _num(g.end), color=STORM_COLOR, alpha=alpha, linewidth=0,
                   zorder=0)


def _label_storms(ax: Axes, fig: Figure, groups: list[_Storm]) -> int:
    """Label the storm groups with their cids, in rows; returns the label rows used."""
    # Labels: biggest storms first, each in the first row where it overlaps no other.
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    axes_box = ax.get_window_extent(renderer)
    rows: list[list[tuple[float, float]]] = [[] for _ in range(_LABEL_ROWS)]
    used = 0
    ranked = sorted(groups, key=lambda g: -g.failures)[:_MAX_STORM_LABELS]
    for g in ranked:
        x0 = _num(g.start)
        x1 = _num(g.end)
        text = ax.text(x0, 0.97, _storm_label(g.cids), transform=ax.get_xaxis_transform(),
                       ha="left", va="top", fontsize=8, color="#922b21", zorder=5,
                       bbox={"boxstyle": "round,pad=0.2", "facecolor": "white",
                             "edgecolor": STORM_COLOR, "linewidth": 0.6, "alpha": 0.9})
        box = text.get_window_extent(renderer)
        if box.x1 > axes_box.x1:  # keep it inside: right-align on the storm's end
            text.set_x(x1)
            text.set_horizontalalignment("right")
            box = text.get_window_extent(renderer)
        span = (box.x0 - 3, box.x1 + 3)
        for r, row in enumerate(rows):
            if all(span[1] < a or span[0] > b for a, b in row):
                row.append(span)
                text.set_y(0.97 - r * 0.085)
                used = max(used, r + 1)
                break
        else:
            text.remove()  # no room: the storm stays shaded, and listed in the table
    return used


@dataclass(frozen=True)
class _Grid:
    """The time bins shared by the time plots (so their x axes line up)."""

    res: _Resolution
    bins: pd.DatetimeIndex
    edges: np.ndarray[Any, Any]
    storms: list[_Storm]


def _grid(analysis: Analysis) -> _Grid:
    timeline = analysis.timeline
    span = (timeline.index.max() - timeline.index.min()).total_seconds()
    res = _resolution(span)
    bins = pd.DatetimeIndex(timeline.resample(res.rule).sum().index)
    return _Grid(res, bins, _edges(bins, res), _storm_groups(analysis, bins, res))


def _on_grid(frame: pd.DataFrame, grid: _Grid) -> pd.DataFrame:
    return frame.resample(grid.res.rule).sum().reindex(grid.bins, fill_value=0)


def _timeline_svg(analysis: Analysis, grid: _Grid, tz: tzinfo, tzname: str) -> Markup:
    res, edges = grid.res, grid.edges
    kinds = _on_grid(analysis.by_kind, grid)
    order = list(kinds.sum().sort_values(ascending=False).index)
    kinds = kinds[order]

    entries = int((kinds.sum() > 0).sum()) + (1 if analysis.alerts else 0)
    fig, ax, legend_top = _time_figure(entries, 5)
    _time_axis(ax, tz, tzname, edges)
    handles: list[Artist] = list(_stack(
        ax, kinds, edges, [KIND_COLORS.get(str(k), _KIND_FALLBACK) for k in order],
        [KIND_LABELS.get(str(k), str(k)) for k in order]))
    ax.set_ylabel(f"connect failures / {res.unit}")
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_title(f"Connect failures per {res.word}", loc="left", fontsize=11)
    peak = float(kinds.sum(axis=1).max())
    ax.set_ylim(0, max(peak, 1.0) * 1.05)
    _shade(ax, grid.storms, 0.13)
    rows = _label_storms(ax, fig, grid.storms)
    if rows:  # leave the label rows above the data
        ax.set_ylim(0, max(peak, 1.0) / (0.93 - rows * 0.085))
    if analysis.alerts:
        handles.append(Patch(color=STORM_COLOR, alpha=0.25, linewidth=0,
                             label="runaway connection (labelled *cid)"))
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.85 / 12, legend_top),
               ncols=5, fontsize=9, frameon=False)
    return _inline_svg(fig, "plot-timeline", f"Connect failures per {res.word}")


def _connections_svg(rows: list[dict[str, Any]]) -> Markup:
    top = sorted(rows, key=lambda d: -int(d["failures"]))[:TOP_CONNECTIONS]
    labels = [f"*{d['cid']} pid {d['pid']}" for d in top]
    if len(set(labels)) < len(labels):  # the same ids from two nginx instances
        labels = [f"{lab} ({Path(str(d['source'])).name})" for lab, d in zip(labels, top,
                                                                              strict=True)]
    codes = [str((d["diagnosis"] or {}).get("code") or "retry_loop") for d in top]
    fig = _figure(12, 1.1 + 0.42 * len(top))
    fig.subplots_adjust(left=1.6 / 12, right=1 - 0.25 / 12,
                        top=1 - 0.45 / (1.1 + 0.42 * len(top)),
                        bottom=0.6 / (1.1 + 0.42 * len(top)))
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=9)
    y = np.arange(len(top))
    values = [int(d["failures"]) for d in top]
    ax.barh(y, values, height=0.68,
            color=[DIAGNOSIS_COLORS.get(c, _DIAGNOSIS_FALLBACK) for c in codes])
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, max(values) * 1.3)
    ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_xlabel("connect failures")
    ax.set_title(f"Top runaway connections by failures ({len(top)} of {len(rows)})",
                 loc="left", fontsize=11)
    for yi, d in zip(y, top, strict=True):
        note = (f"{int(d['failures']):,}  ·  peak {int(d['peak_per_second']):,}/s  ·  "
                f"{_duration(int(d['duration_seconds']))}")
        ax.text(int(d["failures"]), float(yi), "  " + note, va="center", fontsize=8, color="#333")
    seen = list(dict.fromkeys(codes))
    ax.legend([Patch(color=DIAGNOSIS_COLORS.get(c, _DIAGNOSIS_FALLBACK)) for c in seen], seen,
              loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(seen), fontsize=9,
              frameon=False, borderaxespad=0.2)
    return _inline_svg(fig, "plot-connections", "Top runaway connections by failures")


def _short(text: str, width: int = _PEER_LABEL_CHARS) -> str:
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: keep // 2] + "…" + text[len(text) - (keep - keep // 2):]


def _peer_frame(analysis: Analysis) -> tuple[pd.DataFrame, pd.Series]:
    up = analysis.by_upstream.copy()
    up["peer"] = up["peer"].fillna("(none)").astype(str)
    totals = up.groupby("peer")["failures"].sum().sort_values(ascending=False)
    return up, totals


def _upstreams_svg(analysis: Analysis, grid: _Grid, tz: tzinfo, tzname: str) -> Markup:
    res, edges = grid.res, grid.edges
    up, totals = _peer_frame(analysis)
    top = [str(p) for p in totals.index[:TOP_PEERS]]
    up["peer"] = up["peer"].where(up["peer"].isin(top), "other")
    wide = _on_grid(up.pivot_table(index="time", columns="peer", values="failures",
                                   aggfunc="sum", fill_value=0), grid)
    columns = top + (["other"] if "other" in wide.columns else [])
    wide = wide.reindex(columns=columns, fill_value=0)

    fig, ax, legend_top = _time_figure(len(columns), 3)
    _time_axis(ax, tz, tzname, edges)
    colors = [PEER_COLORS[i % len(PEER_COLORS)] for i in range(len(top))]
    if "other" in columns:
        colors.append(_OTHER_COLOR)
    layers = _stack(ax, wide, edges, colors,
                    [_short(c) if c != "other" else f"other ({len(totals) - len(top)} peers)"
                     for c in columns])
    peak = float(wide.sum(axis=1).max())
    ax.set_ylim(0, max(peak, 1.0) * 1.05)
    ax.set_ylabel(f"connect failures / {res.unit}")
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_title(f"Connect failures per upstream peer, per {res.word} (top {len(top)})",
                 loc="left", fontsize=11)
    _shade(ax, grid.storms, 0.10)
    fig.legend(handles=layers, loc="upper left", bbox_to_anchor=(0.85 / 12, legend_top),
               ncols=3, fontsize=9, frameon=False)
    return _inline_svg(fig, "plot-upstreams", "Connect failures per upstream peer")


# --------------------------------------------------------------------------- text


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min" + (f" {s % 60} s" if s % 60 else "")
    if s < 86400:
        return f"{s // 3600} h" + (f" {s % 3600 // 60} min" if s % 3600 // 60 else "")
    return f"{s // 86400} d" + (f" {s % 86400 // 3600} h" if s % 86400 // 3600 else "")


def _clock(iso: str | None) -> str:
    if not iso:
        return _DASH
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S")


def _zone(analysis: Analysis) -> tuple[tzinfo, str]:
    index = analysis.timeline.index
    if isinstance(index, pd.DatetimeIndex) and index.tz is not None:
        return index.tz, str(index.tz)
    first = analysis.summary.get("first_event")
    if first:
        stamp = datetime.fromisoformat(first)
        if stamp.tzinfo is not None:
            return stamp.tzinfo, "UTC" + stamp.isoformat()[19:]
    return UTC, "UTC"


def _errno_names(analysis: Analysis) -> dict[str, str]:
    names = dict(_ERRNO_NAMES)
    for alert in analysis.alerts:
        for key in (alert.snapshot.get("errnos") or {}):
            number, _, text = str(key).partition(":")
            if number.strip().isdigit() and text.strip():
                names[number.strip()] = text.strip()
    return names


def _totals_table(frame: pd.DataFrame, column: str) -> list[dict[str, Any]]:
    if frame.empty:
        return []
    f = frame.copy()
    f[column] = f[column].fillna("(none)").astype(str)
    grouped = f.groupby(column)
    sums = grouped["failures"].sum()
    peaks = grouped["failures"].max()
    first = grouped["time"].min()
    last = grouped["time"].max()
    total = float(sums.sum()) or 1.0
    rows = []
    for name in sums.sort_values(ascending=False).index:
        rows.append({
            "name": str(name),
            "failures": int(sums[name]),
            "share": 100.0 * float(sums[name]) / total,
            "peak": int(peaks[name]),
            "first": pd.Timestamp(first[name]).strftime("%Y-%m-%d %H:%M:%S"),
            "last": pd.Timestamp(last[name]).strftime("%Y-%m-%d %H:%M:%S"),
        })
    return rows


def _connection_rows(analysis: Analysis) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for alert in analysis.alerts:
        a = alert.to_dict()
        diag = a["diagnosis"]
        start, end = _clock(a["first_seen"]), _clock(a["last_seen"])
        rows.append({
            **a,
            "diagnosis_code": diag["code"] if diag else _DASH,
            "cause": diag["cause"] if diag else "",
            "fix": diag["fix"] if diag else "",
            "start": start,
            "end": end[11:] if end[:10] == start[:10] else end,
            "duration": _duration(float(a["duration_seconds"])),
            "upstream_list": list(a["upstreams"].items()),
        })
    rows.sort(key=lambda d: (str(d["first_seen"]), -int(d["failures"])))
    return rows


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)
_ENV.filters["n"] = lambda v: f"{int(v):,}"
_ENV.filters["f1"] = lambda v: f"{float(v):,.1f}"
_ENV.filters["short"] = _short
_ENV.filters["dash"] = lambda v: v if v not in (None, "") else _DASH

_TEMPLATE = _ENV.from_string("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="generator" content="retrywatch {{ version }}">
<title>{{ title }}</title>
<style>
:root { --fg:#1d2330; --muted:#5d6678; --line:#dfe3ea; --bg:#f5f6f8; --card:#fff;
        --bad:#c0392b; --ok:#1e8449; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans",
             "Liberation Sans", Arial, sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 20px 24px 40px; }
header h1 { font-size: 22px; margin: 0 0 4px; }
header p { margin: 0; color: var(--muted); }
h2 { font-size: 17px; margin: 0 0 10px; }
h3 { font-size: 14px; margin: 14px 0 6px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
          padding: 16px 18px; margin-top: 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr));
         gap: 12px; margin-top: 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
        padding: 10px 14px; }
.card .v { font-size: 22px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase;
           letter-spacing: .04em; }
.card.bad { border-color: var(--bad); border-left-width: 5px; }
.card.bad .v { color: var(--bad); }
.card.ok .v { color: var(--ok); }
.plot svg { display: block; width: 100%; height: auto; }
.empty { color: var(--muted); font-style: italic; padding: 12px 0; margin: 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { background: #eef1f5; font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.t { white-space: nowrap; font-variant-numeric: tabular-nums; }
code, .mono, pre { font-family: "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas,
                   monospace; font-size: 12px; }
td.wrap code { overflow-wrap: anywhere; }
code.nw { white-space: nowrap; }
span.n { color: var(--muted); white-space: nowrap; font-variant-numeric: tabular-nums; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 4px 0 0; padding: 6px 8px;
      background: #f3f4f7; border-radius: 4px; }
details { margin-top: 4px; color: var(--muted); }
summary { cursor: pointer; font-size: 12px; }
tr.conn td { border-bottom: none; }
tr.conn td.cid { font-weight: 650; white-space: nowrap; }
tr.detail td { padding-top: 0; padding-bottom: 10px; }
.fix { border-left: 4px solid var(--bad); background: #fdf2f1; padding: 6px 10px;
       margin: 2px 0 4px; }
.fix b { color: var(--bad); }
.cause { color: var(--muted); margin: 4px 0 0; }
.badge { display: inline-block; padding: 0 6px; margin-left: 4px; border-radius: 9px;
         font-size: 11px; font-weight: 600; }
.badge.firing { background: var(--bad); color: #fff; }
.badge.resolved { background: #d5dbe3; color: #333; }
.diag { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 12px;
        white-space: nowrap; }
.confidence { font-size: 11px; font-weight: 600; }
.confidence.confirmed { color: var(--bad); }
.confidence.suspected { color: var(--muted); }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
@media (max-width: 900px) { .grid2 { grid-template-columns: 1fr; } }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px; margin: 0; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; font-variant-numeric: tabular-nums; }
footer { color: var(--muted); font-size: 12px; margin-top: 18px; }
</style>
</head>
<body>
<main>
<header>
  <h1>{{ title }}</h1>
  <p>{{ s.files | n }} log file{{ "" if s.files == 1 else "s" }},
     {% if s.first_event %}{{ first }} → {{ last }} ({{ span }}){% else %}no events{% endif %};
     times in {{ tzname }}.</p>
</header>

<div class="cards" id="summary-cards">
  <div class="card {{ 'bad' if s.storms else 'ok' }}"><div class="k">Runaway connections</div>
    <div class="v">{{ s.storms | n }}</div></div>
  <div class="card"><div class="k">Connect failures</div>
    <div class="v">{{ s.connect_failures | n }}</div></div>
  <div class="card"><div class="k">…in runaway connections</div>
    <div class="v">{{ s.storm_failures | n }}{% if s.connect_failures %}
      <small>({{ (100 * s.storm_failures / s.connect_failures) | f1 }} %)</small>{% endif %}
    </div></div>
  <div class="card"><div class="k">Lines parsed</div>
    <div class="v">{{ s.lines_parsed | n }}</div></div>
  <div class="card {{ 'bad' if s.lines_unparsed else '' }}"><div class="k">Lines unparsed</div>
    <div class="v">{{ s.lines_unparsed | n }}</div></div>
</div>

<section id="timeline">
  <h2>Timeline</h2>
  {% if timeline_svg %}
  <div class="plot" id="plot-timeline">{{ timeline_svg }}</div>
  {% else %}
  <p class="empty">No connect failures in these logs: nothing to plot.</p>
  {% endif %}
</section>

<section id="connections">
  <h2>Runaway connections ({{ conns | length }})</h2>
  {% if connections_svg %}
  <div class="plot" id="plot-connections">{{ connections_svg }}</div>
  <table id="connections-table">
    <thead><tr>
      <th>connection</th><th>start</th><th>end</th><th class="num">duration</th>
      <th class="num">failures</th><th class="num">peak /s</th><th class="num">mean /s</th>
      <th>upstreams</th><th>client</th><th>server / request</th><th>diagnosis</th>
    </tr></thead>
    <tbody>
    {% for c in conns %}
    <tr class="conn">
      <td class="cid">*{{ c.cid }} <span class="badge {{ c.state }}">{{ c.state }}</span><br>
        <span class="mono">pid {{ c.pid }}</span></td>
      <td class="t" title="{{ c.first_seen }}">{{ c.start }}</td>
      <td class="t" title="{{ c.last_seen }}">{{ c.end }}</td>
      <td class="num">{{ c.duration }}</td>
      <td class="num">{{ c.failures | n }}</td>
      <td class="num">{{ c.peak_per_second | n }}</td>
      <td class="num">{{ c.mean_per_second | f1 }}</td>
      <td class="wrap">{% for peer, n in c.upstream_list[:4] %}<code>{{ peer }}</code>
          <span class="n">&times;{{ n | n }}</span><br>{% endfor %}
          {% if c.upstream_list | length > 4 %}+{{ (c.upstream_list | length) - 4 }} more
          {% endif %}</td>
      <td><code class="nw">{{ c.client | dash }}</code></td>
      <td class="wrap"><code>{{ c.server | dash }}</code>{% if c.request %}<br>
          <code>{{ c.request }}</code>{% endif %}</td>
      <td><span class="diag">{{ c.diagnosis_code }}</span><br>
          <span class="confidence {{ c.confidence }}">{{ c.confidence }}</span></td>
    </tr>
    <tr class="detail"><td></td><td colspan="10">
      <div class="fix"><b>Fix:</b> {{ c.fix | dash }}</div>
      {% if c.evidence %}<p class="evidence"><b>{{ c.confidence | capitalize }}:</b>
        {{ c.evidence | join("; ") }}.</p>{% endif %}
      {% if c.cause %}<p class="cause">{{ c.cause }}</p>{% endif %}
      <details><summary>log <code>{{ c.source }}</code>: a sample line</summary>
        <pre>{{ c.sample | dash }}</pre></details>
    </td></tr>
    {% endfor %}
    </tbody>
  </table>
  {% else %}
  <p class="empty">No runaway connections (no connect() retry loop) were found.</p>
  {% endif %}
</section>

<section id="upstreams">
  <h2>Upstreams and servers</h2>
  {% if upstreams_svg %}
  <div class="plot" id="plot-upstreams">{{ upstreams_svg }}</div>
  {% else %}
  <p class="empty">No connect failures against any upstream.</p>
  {% endif %}
  <div class="grid2">
    <div>
      <h3>Failures per upstream peer</h3>
      {% if peers %}
      <table id="upstreams-table">
        <thead><tr><th>peer</th><th class="num">failures</th><th class="num">share</th>
          <th class="num">peak /s</th></tr></thead>
        <tbody>{% for r in peers[:max_rows] %}
          <tr><td><code>{{ r.name }}</code></td><td class="num">{{ r.failures | n }}</td>
            <td class="num">{{ r.share | f1 }} %</td><td class="num">{{ r.peak | n }}</td></tr>
        {% endfor %}</tbody>
      </table>
      {% if peers | length > max_rows %}<p class="empty">
        +{{ (peers | length) - max_rows }} more peers</p>{% endif %}
      {% else %}<p class="empty">None.</p>{% endif %}
    </div>
    <div>
      <h3>Failures per server</h3>
      {% if servers %}
      <table id="servers-table">
        <thead><tr><th>server</th><th class="num">failures</th><th class="num">share</th>
          <th class="num">peak /s</th><th>first</th><th>last</th></tr></thead>
        <tbody>{% for r in servers[:max_rows] %}
          <tr><td><code>{{ r.name }}</code></td><td class="num">{{ r.failures | n }}</td>
            <td class="num">{{ r.share | f1 }} %</td><td class="num">{{ r.peak | n }}</td>
            <td class="t">{{ r.first }}</td><td class="t">{{ r.last }}</td></tr>
        {% endfor %}</tbody>
      </table>
      {% if servers | length > max_rows %}<p class="empty">
        +{{ (servers | length) - max_rows }} more servers</p>{% endif %}
      {% else %}<p class="empty">None.</p>{% endif %}
    </div>
  </div>
</section>

<section id="summary">
  <h2>Summary</h2>
  <div class="grid2">
    <div>
      <h3>Input</h3>
      <dl class="kv">
        <dt>first event</dt><dd>{{ s.first_event | dash }}</dd>
        <dt>last event</dt><dd>{{ s.last_event | dash }}</dd>
        <dt>files</dt><dd>{{ s.files | n }} ({{ s.bytes | n }} bytes)</dd>
        <dt>lines read</dt><dd>{{ s.lines_read | n }}</dd>
        <dt>lines parsed</dt><dd>{{ s.lines_parsed | n }}</dd>
        <dt>lines unparsed</dt><dd>{{ s.lines_unparsed | n }}</dd>
        {% for reason, n in s.unparsed_by_reason.items() %}
        <dt>&nbsp;&nbsp;{{ reason }}</dt><dd>{{ n | n }}</dd>
        {% endfor %}
        <dt>runaway connections</dt><dd>{{ s.storms | n }}
          ({{ s.storm_failures | n }} failures)</dd>
      </dl>
    </div>
    <div>
      <h3>Connect failures by kind</h3>
      {% if kinds %}
      <table id="kinds-table"><tbody>{% for k, label, n in kinds %}
        <tr><td>{{ label }} <span class="mono">({{ k }})</span></td>
          <td class="num">{{ n | n }}</td></tr>{% endfor %}
        <tr><th>total</th><th class="num">{{ s.connect_failures | n }}</th></tr>
      </tbody></table>
      {% else %}<p class="empty">None.</p>{% endif %}
      <h3>Connect failures by errno</h3>
      {% if errnos %}
      <table id="errno-table"><tbody>{% for e, name, n in errnos %}
        <tr><td>{{ e }}{% if name %}: {{ name }}{% endif %}</td>
          <td class="num">{{ n | n }}</td></tr>{% endfor %}
      </tbody></table>
      {% else %}<p class="empty">None.</p>{% endif %}
    </div>
  </div>
  {% if files %}
  <h3>Files</h3>
  <table id="files-table">
    <thead><tr><th>log (source)</th><th>file</th><th class="num">bytes</th></tr></thead>
    <tbody>{% for f in files %}
      <tr><td><code>{{ f.source }}</code></td><td><code>{{ f.path }}</code></td>
        <td class="num">{{ f.size | n }}</td></tr>{% endfor %}</tbody>
  </table>
  {% endif %}
</section>

<footer>Generated by retrywatch {{ version }} at {{ generated }}. This file is
self-contained: it loads nothing from the network.</footer>
</main>
</body>
</html>
""")


def render_html(analysis: Analysis, path: Path | str, *,
                title: str = "retrywatch forensic report") -> None:
    """Write the HTML report of ``analysis`` to ``path`` (UTF-8, one self-contained file)."""
    s = analysis.summary
    tz, tzname = _zone(analysis)
    conns = _connection_rows(analysis)
    has_failures = not analysis.timeline.empty and int(analysis.timeline.sum()) > 0
    has_peers = not analysis.by_upstream.empty and int(analysis.by_upstream["failures"].sum()) > 0
    grid = _grid(analysis) if has_failures else None
    names = _errno_names(analysis)
    errnos = sorted(((e, names.get(str(e), ""), int(n))
                     for e, n in (s.get("connect_failures_by_errno") or {}).items()),
                    key=lambda t: -t[2])
    kinds = sorted(((k, KIND_LABELS.get(k, k), int(n))
                    for k, n in (s.get("connect_failures_by_kind") or {}).items()),
                   key=lambda t: -t[2])
    first, last = s.get("first_event"), s.get("last_event")
    span = ""
    if first and last:
        seconds = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
        span = _duration(seconds + 1)
    html = _TEMPLATE.render(
        title=title,
        version=__version__,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        s=s,
        tzname=tzname,
        first=_clock(first),
        last=_clock(last),
        span=span,
        timeline_svg=_timeline_svg(analysis, grid, tz, tzname) if grid else None,
        connections_svg=_connections_svg(conns) if conns else None,
        upstreams_svg=_upstreams_svg(analysis, grid, tz, tzname) if grid and has_peers else None,
        conns=conns,
        peers=_totals_table(analysis.by_upstream, "peer"),
        servers=_totals_table(analysis.by_server, "server"),
        max_rows=MAX_TABLE_ROWS,
        kinds=kinds,
        errnos=errnos,
        files=analysis.files,
    )
    Path(path).write_text(html, encoding="utf-8")
