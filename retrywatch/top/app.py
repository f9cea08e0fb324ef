"""``retrywatch top``: the view, on Textual.

Four tabs, each a table that fits 80 columns: the alerts firing (with the highlighted
one's cause and fix under it), the hottest connections, the upstreams they fail against,
the sources with their lag and disk forecast. The event stream updates the alerts as they
change; the rest is read again every ``every`` seconds. Keys: 1-4 the tabs, s the next
sort column, r the other order, / a filter over every table (Escape clears it), u read
everything now, q quit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from retrywatch.detect.disk import human_bytes, human_seconds
from retrywatch.top.feed import Feed, View

__all__ = ["TopApp"]

#: What an empty cell shows.
NONE = "-"
Row = tuple[str, list[Any]]  # (key, cells)


def tail(text: str, width: int) -> str:
    """``text`` cut to ``width`` from its start (``…`` says so): the end tells paths apart."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


def head(text: str, width: int) -> str:
    """``text`` cut to ``width`` from its end (``…`` says so): a code's start names it."""
    return text if len(text) <= width else text[:width - 1] + "…"


def number(n: float | None) -> str:
    return NONE if n is None else f"{n:,.0f}"


def per_second(n: float) -> str:
    """A rate with the digits that matter: ``0.05``, ``2.2``, ``4,200``."""
    return f"{n:,.2f}" if n < 10 else f"{n:,.1f}" if n < 1000 else f"{n:,.0f}"


@dataclass(frozen=True)
class Sort:
    """A column a table can be sorted by: its label, the value of a row, the first order."""

    label: str
    key: Callable[[Any], Any]
    descending: bool = True


@dataclass(frozen=True)
class Column:
    """A column of a table: its label, its width, and how a longer text is cut to it
    (``tail``: a path's or an address's end; ``head``: a code's start)."""

    label: str
    width: int
    cut: Callable[[str, int], str] | None = None


@dataclass
class Table:
    """A tab's table: its columns, its sorts, and its rows from the view."""

    tab: str
    #: the widths and their cell padding add up to 78 at most, the inside of an 80-column
    #: terminal
    columns: tuple[Column, ...]
    sorts: tuple[Sort, ...]
    rows: Callable[[View], list[tuple[Any, Row]]]  # (the item sorted on, the row)
    sort: int = 0
    reverse: bool = False


def _alert_rows(view: View) -> list[tuple[Any, Row]]:
    out: list[tuple[Any, Row]] = []
    for a in view.disk.values():
        f = a["forecast"]
        left = f["seconds_to_full"]
        out.append(({"window": float("inf"), "peak": 0, "cid": -1, "source": a["mount"]}, (
            a["id"], ["disk", a["mount"], "full now" if left == 0 else
                      f"full {human_seconds(left)}" if left is not None else NONE,
                      f"{human_bytes(f['bytes_per_second'] or 0)}/s", "disk",
                      a["diagnosis"]["code"]])))
    for a in view.peers.values():
        f = a["figures"]
        out.append(({"window": f["failures"], "peak": 0, "cid": -1, "source": a["peer"]}, (
            a["id"], ["upstream", a["peer"], number(f["failures"]),
                      f"{f['connections']:,} conn", "upstream", a["diagnosis"]["code"]])))
    for a in view.alerts.values():
        out.append(({"window": a["failures_in_window"], "peak": a["peak_per_second"],
                     "cid": a["cid"], "source": a["source"]}, (
            a["id"], [f"*{a['cid']}/{a['pid']}", a["source"],
                      number(a["failures_in_window"]), number(a["peak_per_second"]),
                      a["confidence"], (a["diagnosis"] or {}).get("code", NONE)])))
    return out


def _connection_rows(view: View) -> list[tuple[Any, Row]]:
    out: list[tuple[Any, Row]] = []
    for c in view.connections:
        top = max((c.get("upstreams") or {}).items(), key=lambda kv: kv[1], default=(NONE, 0))
        out.append((c, (f"{c['source']}\x1f{c['pid']}\x1f{c['cid']}", [
            f"*{c['cid']}/{c['pid']}", c["source"], number(c["rate_per_second"]),
            number(c["failures_in_window"]), top[0]])))
    return out


def _upstream_rows(view: View) -> list[tuple[Any, Row]]:
    """The upstream peers counted, ``!`` before one failing far above its baseline."""
    return [(p, (p["peer"], [
        ("! " if p["anomalous"] else "") + p["peer"], per_second(p["failures_per_second"]),
        number(p["connections"]), f"{p['failing_seconds']} s",
        per_second(p["baseline_per_second"]) if p["warm"] else "learning"]))
        for p in view.upstreams]


def _source_rows(view: View) -> list[tuple[Any, Row]]:
    out: list[tuple[Any, Row]] = []
    for s in view.sources:
        growth = s.get("growth") or {}
        fs = growth.get("filesystem") or {}
        left = fs.get("seconds_to_full")
        lag = (f"{human_bytes(s['lag_bytes'])} {human_seconds(s['lag_seconds'] or 0)}"
               if s.get("lag_bytes") else "caught up" if s["kind"] == "file" else NONE)
        out.append(({"name": s["name"], "lag": s.get("lag_bytes") or 0,
                     "full": float("inf") if left is None else left}, (s["name"], [
            s["name"], lag,
            NONE if growth.get("bytes_per_second") is None
            else f"{human_bytes(growth['bytes_per_second'])}/s",
            human_bytes(fs["free_bytes"]) if fs else NONE,
            Text(human_seconds(left), style="bold red" if left < 1800 else "")
            if left is not None else NONE])))
    return out


def _shown(columns: tuple[Column, ...], cells: list[Any]) -> list[Any]:
    """A row's cells as shown: each text cut to its column's width, its own way."""
    return [column.cut(cell, column.width) if column.cut and isinstance(cell, str) else cell
            for column, cell in zip(columns, cells, strict=True)]


TABLES = (
    Table("alerts", (Column("conn", 13), Column("source", 11, tail), Column("in window", 9),
                     Column("peak/s", 8), Column("conf", 9), Column("diagnosis", 16, head)), (
        Sort("in window", lambda r: r["window"]), Sort("peak/s", lambda r: r["peak"]),
        Sort("cid", lambda r: r["cid"], False), Sort("source", lambda r: r["source"], False)),
        _alert_rows),
    Table("connections", (Column("conn", 13), Column("source", 16, tail),
                          Column("rate/s", 9), Column("in window", 9),
                          Column("upstream", 19, tail)), (
        Sort("rate/s", lambda c: c["rate_per_second"]),
        Sort("in window", lambda c: c["failures_in_window"]),
        Sort("cid", lambda c: c["cid"], False)), _connection_rows),
    Table("upstreams", (Column("upstream", 28, tail), Column("failures/s", 10),
                        Column("conns", 9), Column("failing", 8), Column("baseline", 9)), (
        Sort("failures/s", lambda p: p["failures_per_second"]),
        Sort("conns", lambda p: p["connections"]),
        Sort("upstream", lambda p: p["peer"], False)), _upstream_rows),
    Table("sources", (Column("source", 22, tail), Column("lag", 16), Column("growth", 12),
                      Column("free", 10), Column("full in", 8)), (
        Sort("source", lambda s: s["name"], False), Sort("lag", lambda s: s["lag"]),
        Sort("full in", lambda s: s["full"], False)), _source_rows),
)


class TopApp(App[None]):
    CSS = """
    #status { height: 1; background: $boost; padding: 0 1; }
    #status.down { background: $error; color: $text; }
    DataTable { height: 1fr; }
    #detail { height: auto; max-height: 12; padding: 0 1; border-top: solid $primary; }
    #filter { dock: bottom; display: none; }
    #filter.shown { display: block; }
    """
    TITLE = "retrywatch top"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "tab('alerts')", "alerts"), Binding("2", "tab('connections')", "conns"),
        Binding("3", "tab('upstreams')", "upstreams"), Binding("4", "tab('sources')", "sources"),
        Binding("s", "sort", "sort"), Binding("r", "reverse", "reverse"),
        Binding("slash", "filter", "filter"), Binding("escape", "clear", "clear", show=False),
        Binding("u", "update", "update"), Binding("q", "quit", "quit"),
    ]

    def __init__(self, url: str, token: str | None = None, *, every: float = 5.0,
                 feed: Feed | None = None) -> None:
        super().__init__()
        self.feed = feed or Feed(url, token)
        self.every = every
        self.tables = {t.tab: Table(t.tab, t.columns, t.sorts, t.rows) for t in TABLES}
        self.filter = ""
        self._dirty = False

    # -- layout ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("connecting…", id="status")
        with TabbedContent(initial="alerts"):
            for table in self.tables.values():
                with TabPane(table.tab.capitalize(), id=table.tab):
                    yield DataTable(id=f"{table.tab}-table", cursor_type="row",
                                    zebra_stripes=True)
                    if table.tab == "alerts":
                        yield Static("", id="detail")
        yield Input(placeholder="filter: text in any column (Enter: keep, Escape: clear)",
                    id="filter", disabled=True)  # (enabled by /: no keys go to it before)
        yield Footer()

    def on_mount(self) -> None:
        for table in self.tables.values():
            widget = self.query_one(f"#{table.tab}-table", DataTable)
            for column in table.columns:
                widget.add_column(column.label, width=column.width)
        self.query_one("#alerts-table", DataTable).focus()
        self.set_interval(0.25, self._draw_if_changed)
        self.set_interval(self.every, self.action_update)
        self.run_worker(self._follow(), exclusive=True, group="stream")

    async def on_unmount(self) -> None:
        await self.feed.close()

    # -- reading -----------------------------------------------------------------------
    async def _follow(self) -> None:
        """The event stream (the alerts read once it is open); after a break, wait (1 s
        doubling to 10 s, from 1 s again after a stream open 30 s) and do it again."""
        wait = 1.0
        await self.feed.load_others()
        while True:
            opened = asyncio.get_running_loop().time()
            await self.feed.follow(self._changed)
            if asyncio.get_running_loop().time() - opened > 30:  # (not a stream cut at once)
                wait = 1.0
            self._changed()
            await asyncio.sleep(wait)
            wait = min(wait * 2, 10.0)

    def _changed(self) -> None:
        self._dirty = True

    def _draw_if_changed(self) -> None:
        if self._dirty:
            self._dirty = False
            self.draw()

    # -- drawing -------------------------------------------------------------------------
    def draw(self) -> None:
        """The table shown (the others when they are shown: a storm's thousands of rows are
        laid out for one table, not four), the status line, the alert's detail."""
        view = self.feed.view
        self._fill(self.tables[self._tab()], view)
        self._status(view)
        self._detail()

    def _fill(self, table: Table, view: View) -> None:
        widget = self.query_one(f"#{table.tab}-table", DataTable)
        sort = table.sorts[table.sort]
        items = [(item, (key, _shown(table.columns, cells)))
                 for item, (key, cells) in table.rows(view)]
        needle = self.filter.lower()
        if needle:
            items = [(item, row) for item, row in items
                     if any(needle in str(cell).lower() for cell in row[1])]
        items.sort(key=lambda pair: sort.key(pair[0]), reverse=sort.descending != table.reverse)
        selected, at, scrolled = None, widget.cursor_row, widget.scroll_y
        if widget.row_count and widget.cursor_row < widget.row_count:
            selected = widget.coordinate_to_cell_key(widget.cursor_coordinate).row_key.value
        widget.clear()
        for _, (key, cells) in items:
            widget.add_row(*cells, key=key)
        keys = [key for _, (key, _) in items]
        # the same row highlighted; its place when it is gone (not the top of the table)
        row = keys.index(selected) if selected in keys else min(at, len(keys) - 1)
        if row >= 0:
            widget.move_cursor(row=row, animate=False, scroll=False)
        widget.scroll_to(y=scrolled, animate=False, immediate=True)

    def _status(self, view: View) -> None:
        status = self.query_one("#status", Static)
        table = self.tables[self._tab()]
        sort = table.sorts[table.sort].label + (" ↑" if table.reverse else "")
        firing = len(view.alerts) + len(view.disk) + len(view.peers)
        state = view.error or ("live" if view.live else "reconnecting…")
        text = f"{view.url} · {state} · {firing} firing · sort {sort}"
        if self.filter:
            text += f" · filter “{self.filter}”"
        status.update(text)
        status.set_class(view.error is not None, "down")

    def _detail(self) -> None:
        """The highlighted alert's cause and fix."""
        widget = self.query_one("#alerts-table", DataTable)
        detail = self.query_one("#detail", Static)
        view = self.feed.view
        alert = None
        if widget.row_count:
            key = widget.coordinate_to_cell_key(widget.cursor_coordinate).row_key.value
            alert = (view.alerts.get(key or "") or view.disk.get(key or "")
                     or view.peers.get(key or ""))
        diagnosis = (alert or {}).get("diagnosis")
        if not diagnosis:
            detail.update("No alert firing." if not widget.row_count else "")
            return
        text = Text()
        text.append("Cause: ", style="bold")
        text.append(diagnosis["cause"].strip() + "\n")
        text.append("Fix: ", style="bold cyan")
        text.append(diagnosis["fix"].strip())
        detail.update(text)

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._detail()

    # -- keys ------------------------------------------------------------------------------
    def _tab(self) -> str:
        return self.query_one(TabbedContent).active or "alerts"

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self.query_one(f"#{tab}-table", DataTable).focus()
        self.draw()

    def action_sort(self) -> None:
        table = self.tables[self._tab()]
        table.sort, table.reverse = (table.sort + 1) % len(table.sorts), False
        self.draw()

    def action_reverse(self) -> None:
        table = self.tables[self._tab()]
        table.reverse = not table.reverse
        self.draw()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.disabled = False
        box.add_class("shown")
        box.focus()

    def action_clear(self) -> None:
        box = self.query_one("#filter", Input)
        box.value, self.filter = "", ""
        box.remove_class("shown")
        box.disabled = True
        self.query_one(f"#{self._tab()}-table", DataTable).focus()
        self.draw()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter = event.value.strip()
        self.draw()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.query_one(f"#{self._tab()}-table", DataTable).focus()

    async def action_update(self) -> None:
        """Read the connections and sources now (and every ``every`` seconds); the alerts
        come from the stream (read here too while it is not open)."""
        await self.feed.load_others()
        self._changed()
