"""``retrywatch top`` (retrywatch/top/) driven by Textual's own test pilot in an 80 x 24
terminal, against a real ``retrywatch run``: the storm's alert arrives over the event
stream (the periodic read is set to a minute, so only the stream can bring it), with its
cause and fix; the keys switch tabs, sort and filter; every table fits 80 columns; the
screen is captured (SVG) in the test. Then the words it says when the service cannot be
reached or wants a token, and the event-stream parsing on its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
from bounds_harness import Run, poll, running
from nginx_harness import free_port
from service_harness import STORM_FIRING_CID, storm_bytes
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from retrywatch.top.app import TopApp
from retrywatch.top.feed import Feed, sse_events

SIZE = (80, 24)
WAIT = 30.0


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


async def until(pilot: Pilot[None], what: str, check: Callable[[], bool],
                timeout: float = WAIT) -> None:
    """Let the app run until ``check`` holds (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"top did not show {what} within {timeout:g} s")
        await pilot.pause(0.1)


def rows(app: TopApp, tab: str) -> list[list[str]]:
    table = app.query_one(f"#{tab}-table", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def status(app: TopApp) -> str:
    return str(app.query_one("#status", Static).render())


def failure(cid: int, stamp: str) -> bytes:
    """A connect failure of ``cid`` at ``stamp`` (nginx's time stamp)."""
    return (f"{stamp} [error] 2454#2454: *{cid} connect() failed (111: Connection refused) "
            f"while connecting to upstream, client: 10.0.0.9, server: shop, request: "
            f'"GET /cart HTTP/1.1", upstream: "http://127.0.0.1:5555/cart", host: "shop"\n'
            ).encode()


def follow(tmp_path: Path, *extra: str) -> tuple[list[str], Path]:
    log = tmp_path / "error.log"
    log.write_bytes(b"")
    return ["--log", str(log), "--from", "beginning", "--timezone", "UTC", *extra], log


def test_top_follows_a_running_service_in_80_columns(tmp_path: Path) -> None:
    args, log = follow(tmp_path)
    with running(args, tmp_path / "run") as svc:
        run(lambda: _scenario(svc, log, tmp_path))


async def _scenario(svc: Run, log: Path, tmp_path: Path) -> None:
    app = TopApp(f"http://127.0.0.1:{svc.port}", every=60.0)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, "the stream live", lambda: "· live ·" in status(app))
        assert "0 firing" in status(app)
        assert "No alert firing." in str(app.query_one("#detail", Static).render())

        # the storm, all at once, and two more runaway connections in its last second
        storm = storm_bytes()
        last = storm.rstrip(b"\n").rsplit(b"\n", 1)[-1][:19].decode()
        log.write_bytes(storm + b"".join(failure(cid, last) for cid in (7001, 7002)
                                         for _ in range(30)))
        alert = await asyncio.to_thread(poll, "the storm's alert in the API", lambda: next(
            (a for a in svc.get("/api/v1/alerts", state="firing")["alerts"]
             if a["cid"] == STORM_FIRING_CID), None))
        await until(pilot, "the storm's alert", lambda: any(
            r[0] == f"*{STORM_FIRING_CID}/{alert['pid']}" for r in rows(app, "alerts")))
        assert app.feed.view.events > 0  # (it came over the stream: no read was due)
        (row,) = [r for r in rows(app, "alerts") if r[0].startswith(f"*{STORM_FIRING_CID}/")]
        assert row[4:] == ["confirmed", alert["diagnosis"]["code"]]
        # the highlighted alert's cause and fix under the table
        table = app.query_one("#alerts-table", DataTable)
        table.move_cursor(row=[r[0] for r in rows(app, "alerts")].index(row[0]))
        await pilot.pause(0.1)
        detail = str(app.query_one("#detail", Static).render())
        assert detail.startswith("Cause: ") and "Fix: " in detail
        assert " ".join(alert["diagnosis"]["fix"].split()) in " ".join(detail.split())

        await until(pilot, "three alerts", lambda: len(rows(app, "alerts")) == 3)
        # sorted by the failures in the window, most first; r: the other way; s: by cid
        conns = [r[0].split("/")[0] for r in rows(app, "alerts")]
        assert conns[0] == f"*{STORM_FIRING_CID}" and sorted(conns[1:]) == ["*7001", "*7002"]
        await pilot.press("r")
        assert [r[0].split("/")[0] for r in rows(app, "alerts")][-1] == f"*{STORM_FIRING_CID}"
        await pilot.press("s", "s")
        assert "sort cid" in status(app)
        assert [r[0].split("/")[0] for r in rows(app, "alerts")] == [
            "*7001", "*7002", f"*{STORM_FIRING_CID}"]
        await pilot.press("s", "s")  # back to in window
        # u reads the rest now; 2 shows the hottest connections, by rate
        await pilot.press("u")
        await until(pilot, "the connections", lambda: len(app.feed.view.connections) == 3)
        await pilot.press("2")  # (a table is laid out when it is shown)
        assert len(rows(app, "connections")) == 3
        assert "sort rate/s" in status(app)
        assert rows(app, "connections")[0][0].startswith(f"*{STORM_FIRING_CID}/")
        await pilot.press("r")
        assert rows(app, "connections")[-1][0].startswith(f"*{STORM_FIRING_CID}/")
        # 3: the upstream peers counted (once the service has read them: u again);
        # 4: the source, caught up, its disk forecast
        await asyncio.to_thread(poll, "the peers in the API", lambda: any(
            "sock" in p["peer"] for p in svc.get("/api/v1/upstreams")["peers"]))
        await pilot.press("u")
        await until(pilot, "the peers", lambda: len(app.feed.view.upstreams) == 3)
        await pilot.press("3")
        assert any(r[0].startswith("unix:") or "sock" in r[0] for r in rows(app, "upstreams"))
        assert "sort failures/s" in status(app)
        await pilot.press("4")
        await until(pilot, "the source caught up",
                    lambda: any(r[1] == "caught up" for r in rows(app, "sources")))
        # / filters every table; Escape clears it
        await pilot.press("1", "slash", "7", "0", "0", "1", "enter")
        assert [r[0].split("/")[0] for r in rows(app, "alerts")] == ["*7001"]
        assert "filter “7001”" in status(app)
        await pilot.press("escape")
        assert len(rows(app, "alerts")) == 3 and "filter" not in status(app)

        # Every table fits the 80 columns: nothing to scroll sideways.
        for tab in ("alerts", "connections", "upstreams", "sources"):
            await pilot.press(str(["alerts", "connections", "upstreams", "sources"].index(tab)
                                  + 1))
            await pilot.pause(0.1)
            widget = app.query_one(f"#{tab}-table", DataTable)
            assert widget.virtual_size.width <= widget.size.width <= 80, tab
        await pilot.press("1")
        await pilot.pause(0.1)
        screen = app.export_screenshot(title="retrywatch top")
        (tmp_path / "top.svg").write_text(screen)
        assert f"{STORM_FIRING_CID}" in screen and "Cause:" in screen


def test_top_says_when_the_service_cannot_be_reached(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    async def scenario() -> None:
        app = TopApp(url, every=60.0)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, "why", lambda: "cannot reach" in status(app))
            assert status(app).startswith(f"{url} · cannot reach {url}")
            assert "is `retrywatch run` listening there? (--url)" in status(app)
            assert app.query_one("#status", Static).has_class("down")
            (tmp_path / "top-down.svg").write_text(app.export_screenshot())

    run(scenario)


def test_top_says_when_it_needs_the_token_and_reads_with_it(tmp_path: Path) -> None:
    config = tmp_path / "retrywatch.json"
    config.write_text(json.dumps({"api_token": "t0p-secret"}))
    args, _ = follow(tmp_path, "--config", str(config))
    with running(args, tmp_path / "run") as svc:
        url = f"http://127.0.0.1:{svc.port}"

        async def scenario() -> None:
            for token, says in ((None, "wants its API token"), ("t0p-secret", "· live ·")):
                app = TopApp(url, token, every=60.0)
                async with app.run_test(size=SIZE) as pilot:
                    await until(pilot, says, lambda a=app, s=says: s in status(a))  # type: ignore[misc]

        run(scenario)


def test_sse_parsing_and_upstreams() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in [": hello", "id: 6", "retry: 5", "", "event: fired", 'data: {"a":',
                     "data: 1}", "id: 7", "", "retry: 5", "", "event: resolved", "id: 8",
                     "data: {}", "", "data: x"]:
            yield line

    async def scenario() -> None:
        got = [e async for e in sse_events(lines())]
        # the greeting's id (no data) is known at once; a block of neither is nothing
        assert got == [("", "", "6"), ("fired", '{"a":\n1}', "7"), ("resolved", "{}", "8")]

    run(scenario)


def test_an_event_for_another_kind_changes_nothing() -> None:
    async def scenario() -> None:
        feed = Feed("http://127.0.0.1:9")
        try:
            assert not await feed.apply("keepalive", "{}")
            assert await feed.apply("disk_fired", '{"id": "d1", "mount": "/"}')
            assert await feed.apply("fired", '{"id": "a1"}')
            assert set(feed.view.disk) == {"d1"} and set(feed.view.alerts) == {"a1"}
            assert await feed.apply("resolved", '{"id": "a1"}')
            assert await feed.apply("disk_resolved", '{"id": "d1"}')
            assert await feed.apply("upstream_fired", '{"id": "u1", "peer": "p:1"}')
            assert set(feed.view.peers) == {"u1"} and feed.view.alerts == {}
            assert await feed.apply("upstream_resolved", '{"id": "u1"}')
            assert feed.view.alerts == {} and feed.view.disk == {} and feed.view.peers == {}
            assert feed.view.events == 6
        finally:
            await feed.close()

    run(scenario)


def test_a_change_during_the_list_read_is_not_lost_under_it() -> None:
    """The stream is opened before the alerts are read, and read after: an alert that
    resolves while the (older) list is on its way leaves the view."""
    alert = {"id": "a1", "state": "firing"}

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/alerts/stream":
            body = (b": hello\nid: 10\n\nevent: resolved\nid: 11\ndata: "
                    + json.dumps({**alert, "state": "resolved"}).encode() + b"\n\n")
            return httpx.Response(200, content=body,
                                  headers={"content-type": "text/event-stream"})
        if path == "/api/v1/alerts":  # written before the resolve: still firing
            return httpx.Response(200, json={"alerts": [alert]})
        if path in ("/api/v1/disk", "/api/v1/upstreams"):
            return httpx.Response(200, json={"alerts": []})
        return httpx.Response(404)

    async def scenario() -> None:
        client = httpx.AsyncClient(base_url="http://rw.test",
                                   transport=httpx.MockTransport(answer))
        feed = Feed("http://rw.test", client=client)
        seen: list[set[str]] = []
        try:
            await feed.follow(lambda: seen.append(set(feed.view.alerts)))
        finally:
            await feed.close()
        assert {"a1"} in seen  # the list, read once the stream was open
        assert feed.view.alerts == {} and feed._last_id == "11"

    run(scenario)
