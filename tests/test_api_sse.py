"""The alert event stream (serve/events.py): its headers, greeting and keep-alive, event
ids that increase, a client that reconnects with ``Last-Event-ID`` getting exactly what it
missed, and a ``reset`` when that cannot be. The hub itself in an event loop of the test
(flushed by hand: nothing waits on a clock), the HTTP side under a real uvicorn server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from service_harness import LiveServer, feed_storm, new_engine, serving, storm_bytes

from retrywatch.detect.engine import Engine
from retrywatch.serve.events import HISTORY, RETRY_MS, StreamHub

WAIT = 10.0  # seconds: the bound of every wait on the live server
STEP = 800_000  # bytes of the storm sample (16 MB, 5 alerts) fed between two flushes
HALF = 10_000_000  # bytes: three alerts fired, one resolved by then


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)


def parse(text: str) -> list[Event]:
    """Each block of a Server-Sent Events text (a block of comments alone too)."""
    out = []
    for block in text.split("\n\n"):
        if not block:
            continue
        event, data = Event(), []
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if not name:
                event.comments.append(value)
            elif name == "data":
                data.append(value)
            elif name == "event":
                event.event = value
            elif name == "id":
                event.id = value
            elif name == "retry":
                event.retry = int(value)
        event.data = "\n".join(data)
        out.append(event)
    return out


def read(client: Any) -> list[Event]:
    """What is queued for a client of the hub: its preamble, then its pieces."""
    return parse((client.preamble + b"".join(client.pieces)).decode())


def events_only(events: list[Event]) -> list[Event]:
    return [e for e in events if e.data]


def in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


async def feed(engine: Engine, hub: StreamHub | None, start: int,
               end: int | None = None) -> None:
    """The storm sample from ``start`` to ``end`` (to its end: and the source's end), a
    step at a time, the hub flushed after each (a few events each time)."""
    data = storm_bytes()[start:end]
    for i in range(0, len(data), STEP):
        engine.feed("nginx", data[i:i + STEP])
        if hub is not None:
            await hub.flush()
    if end is None:
        engine.end("nginx")
        if hub is not None:
            await hub.flush()


# -- the hub --------------------------------------------------------------------------
def test_ids_increase_and_the_data_is_the_alert() -> None:
    async def test() -> None:
        engine = new_engine()
        hub = StreamHub(engine, 10)
        client = hub.join(None)
        assert client is not None
        (greeting,) = read(client)
        assert greeting.comments == ["retrywatch alert stream"]
        assert (greeting.id, greeting.retry) == (str(hub.last_id), RETRY_MS)
        feed_storm(engine)
        await hub.flush()
        events = events_only(read(client))
        ids = [int(e.id or "") for e in events]
        assert ids == list(range(int(greeting.id) + 1, hub.last_id + 1))  # one apart
        kinds = {e.event for e in events}
        assert {"fired", "resolved"} <= kinds <= {"fired", "updated", "confirmed", "resolved"}
        for e in events:
            alert = orjson.loads(e.data)
            assert engine.alert(alert["id"]) is not None  # the alert's id is in the data
        hub.leave(client)

    in_loop(test)


def test_a_client_resuming_gets_exactly_what_it_missed() -> None:
    async def test() -> None:
        engine = new_engine()
        hub = StreamHub(engine, 10)
        stays, goes = hub.join(None), hub.join(None)
        assert stays is not None and goes is not None
        await feed(engine, hub, 0, HALF)
        seen = events_only(read(goes))
        assert seen
        hub.leave(goes)
        await feed(engine, hub, HALF)  # missed; the hub is subscribed for the one that stays
        back = hub.join(None, seen[-1].id)
        assert back is not None
        everything = events_only(read(stays))
        missed = everything[len(seen):]
        assert missed and [e.id for e in everything[:len(seen)]] == [e.id for e in seen]
        preamble, *rest = read(back)
        assert preamble.comments == ["retrywatch alert stream"] and preamble.id is None
        assert [(e.id, e.event, e.data) for e in rest] == [
            (e.id, e.event, e.data) for e in missed]

    in_loop(test)


def test_resuming_after_the_last_client_left_within_the_grace() -> None:
    async def test() -> None:
        engine = new_engine()
        hub = StreamHub(engine, 10, resume_grace=60)
        first = hub.join(None)
        assert first is not None
        await feed(engine, hub, 0, HALF)
        last = events_only(read(first))[-1].id
        hub.leave(first)
        assert engine.subscribers  # still: the grace
        await feed(engine, hub, HALF)
        back = hub.join(None, last)
        assert back is not None
        missed = read(back)[1:]
        assert missed and all(e.event != "reset" for e in missed)
        assert int(missed[0].id or "") == int(last or "") + 1
        assert missed[-1].id == str(hub.last_id)
        hub.leave(back)

    in_loop(test)


def test_after_the_grace_the_hub_unsubscribes_and_an_old_id_is_reset() -> None:
    async def test() -> None:
        engine = new_engine()
        hub = StreamHub(engine, 10, resume_grace=0)
        first = hub.join(None)
        assert first is not None
        await feed(engine, hub, 0, HALF)
        last = events_only(read(first))[-1].id
        hub.leave(first)
        assert engine.subscribers == []  # no client, no cost for ingest
        await feed(engine, None, HALF)  # changes nobody saw
        back = hub.join(None, last)
        assert back is not None
        _, reset = read(back)
        assert reset.event == "reset"
        assert int(reset.id or "") == hub.last_id > int(last or "")
        assert orjson.loads(reset.data)["read"] == "/api/v1/alerts"

    in_loop(test)


@pytest.mark.parametrize("given", ["1", "not a number", "", "99999999999999999999999",
                                   "-5"])
def test_an_unknown_id_gets_a_reset(given: str) -> None:
    async def test() -> None:
        engine = new_engine()
        hub = StreamHub(engine, 10)
        client = hub.join(None, given)
        assert client is not None
        greeting, reset = read(client)
        assert greeting.retry == RETRY_MS
        assert reset.event == "reset" and reset.id == str(hub.last_id)
        assert orjson.loads(reset.data) == {
            "reason": "not an event id of this run of the service", "read": "/api/v1/alerts"}
        assert not client.pieces

    in_loop(test)


def test_an_id_older_than_the_history_gets_a_reset_then_the_new_events() -> None:
    async def test() -> None:
        engine = new_engine()
        hub = StreamHub(engine, 10, history=5)
        first = hub.join(None)
        assert first is not None
        await feed(engine, hub, 0, HALF)
        ids = [int(e.id or "") for e in events_only(read(first))]
        assert len(ids) > 5
        kept = hub.join(None, str(ids[-6]))  # the last five are kept
        old = hub.join(None, str(ids[-7]))
        assert kept is not None and old is not None
        assert [int(e.id or "") for e in read(kept)[1:]] == ids[-5:]
        assert [e.event for e in read(old)[1:]] == ["reset"]
        await feed(engine, hub, HALF)
        after = read(old)[2:]
        assert after and int(after[0].id or "") == ids[-1] + 1  # then the live events

    in_loop(test)


def test_the_history_is_bounded() -> None:
    assert HISTORY == 10_000

    async def test() -> None:
        engine = new_engine()
        hub = StreamHub(engine, 10, history=3)
        client = hub.join(None)
        assert client is not None
        feed_storm(engine)
        await hub.flush()
        assert len(hub._history) == 3
        assert [i for i, _ in hub._history] == [hub.last_id - 2, hub.last_id - 1, hub.last_id]

    in_loop(test)


# -- under uvicorn ------------------------------------------------------------------------
@pytest.fixture
def live() -> Iterator[tuple[Engine, LiveServer, StreamHub]]:
    engine = new_engine()
    with serving(engine) as server:
        hub: StreamHub = server.app.state.stream_hub
        hub.keepalive = 0.3
        yield engine, server, hub


class Reader:
    """One stream client, its events parsed as they come (each read bounded)."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()
        self.got: list[Event] = []

    def next(self) -> Event:
        block: list[str] = []
        deadline = time.monotonic() + WAIT
        for line in self.lines:
            assert time.monotonic() < deadline, "no whole event in time"
            if line:
                block.append(line)
            elif block:
                (event,) = parse("\n".join(block) + "\n\n")
                self.got.append(event)
                return event
        raise AssertionError("the stream ended")

    def until_quiet(self, done: Callable[[list[Event]], bool] = bool) -> list[Event]:
        """The events until ``done(events)`` and then a keep-alive comment (the hub had
        nothing more)."""
        while True:
            event = self.next()
            if event.comments == ["keep-alive"] and done(events_only(self.got)):
                return events_only(self.got)


def stream(http: httpx.Client, **kwargs: Any) -> Any:
    return http.stream("GET", "/api/v1/alerts/stream", **kwargs)


def test_headers_greeting_and_keep_alive(live: tuple[Engine, LiveServer, StreamHub]) -> None:
    _, server, hub = live
    with server.client(timeout=WAIT) as http, stream(http) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        reader = Reader(response)
        greeting = reader.next()
        assert greeting.comments == ["retrywatch alert stream"]
        assert (greeting.id, greeting.retry) == (str(hub.last_id), RETRY_MS)
        started = time.monotonic()
        assert reader.next().comments == ["keep-alive"]  # nothing happened meanwhile
        assert time.monotonic() - started >= hub.keepalive * 0.9


@pytest.mark.parametrize("how", ["header", "query"])
def test_reconnecting_with_the_last_id_resumes(live: tuple[Engine, LiveServer, StreamHub],
                                               how: str) -> None:
    engine, server, hub = live
    with server.client(timeout=WAIT) as http, stream(http) as response:
        control = Reader(response)
        control.next()
        feed_storm(engine)
        stats = engine.detector_stats()
        # Every fired and resolved goes out (updated ones are coalesced): once they are
        # all there, the last batch is, and the next keep-alive says the hub is quiet.
        everything = control.until_quiet(lambda got: sum(
            e.event in ("fired", "resolved") for e in got) == stats.fired + stats.resolved)
        ids = [int(e.id or "") for e in everything]
        assert ids == sorted(set(ids)) and ids[-1] == hub.last_id  # increasing, all there
        last = str(ids[len(ids) // 2])
        asked: dict[str, Any] = ({"headers": {"Last-Event-ID": last}} if how == "header"
                                 else {"params": {"last_event_id": last}})
        with stream(http, **asked) as again:
            reader = Reader(again)
            greeting = reader.next()
            assert greeting.comments == ["retrywatch alert stream"] and greeting.id is None
            missed = reader.until_quiet()
    assert [(e.id, e.event, e.data) for e in missed] == [
        (e.id, e.event, e.data) for e in everything if int(e.id or "") > int(last)]


def test_the_header_wins_over_the_query(live: tuple[Engine, LiveServer, StreamHub]) -> None:
    """A browser keeps the URL it was given (``?last_event_id=``) when it reconnects, with
    the newer id in the header."""
    _, server, hub = live
    with server.client(timeout=WAIT) as http, \
            stream(http, headers={"Last-Event-ID": str(hub.last_id)},
                   params={"last_event_id": "1"}) as response:
        reader = Reader(response)
        reader.next()
        assert reader.next().comments == ["keep-alive"]  # no reset


def test_a_stale_id_gets_a_reset_over_http(live: tuple[Engine, LiveServer, StreamHub]) -> None:
    _, server, hub = live
    with server.client(timeout=WAIT) as http, \
            stream(http, headers={"Last-Event-ID": "12"}) as response:
        reader = Reader(response)
        reader.next()
        reset = reader.next()
        assert reset.event == "reset" and reset.id == str(hub.last_id)
        assert orjson.loads(reset.data)["read"] == "/api/v1/alerts"


def test_the_last_client_out_unsubscribes_after_the_grace(
        live: tuple[Engine, LiveServer, StreamHub]) -> None:
    engine, server, hub = live
    hub.resume_grace = 0.2
    with server.client(timeout=WAIT) as http, stream(http) as response:
        Reader(response).next()
        assert len(engine.subscribers) == 1
    deadline = time.monotonic() + WAIT
    while engine.subscribers:
        assert time.monotonic() < deadline, "the hub did not unsubscribe"
        time.sleep(0.02)
