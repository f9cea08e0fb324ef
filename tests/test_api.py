"""Every endpoint of the HTTP service, in process (TestClient) and, for the event stream,
under a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from service_harness import STORM_FIRING_CID, LiveServer, feed_storm, new_engine, serving

from retrywatch.detect.core import new_core
from retrywatch.detect.engine import Engine
from retrywatch.serve.api import create_app

# starlette.testclient warns at import that it prefers httpx2 (not installed).
HTTPX_WARNING = ("ignore:Using `httpx` with `starlette.testclient` is deprecated"
                 ":starlette.exceptions.StarletteDeprecationWarning")
pytestmark = pytest.mark.filterwarnings(HTTPX_WARNING)

WAIT = 10.0  # seconds: the bound of every wait on the live server
STORM_CIDS = {73, 20137, 20302, 41557, 49447}


def test_client(app: FastAPI) -> Any:
    from fastapi.testclient import TestClient  # imported late: see HTTPX_WARNING

    return TestClient(app)


test_client.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture(scope="module")
def storm_engine() -> Engine:
    engine = new_engine()
    feed_storm(engine)
    return engine


@pytest.fixture
def client(storm_engine: Engine) -> Iterator[Any]:
    with test_client(create_app(storm_engine)) as c:
        yield c


@pytest.fixture
def empty() -> Iterator[tuple[Engine, Any]]:
    engine = new_engine()
    with test_client(create_app(engine)) as c:
        yield engine, c


# -- health (the page at / : tests/test_live_page.py) ---------------------------------
def test_healthz(client: Any) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "detail": []}


def test_readyz_when_every_source_is_open_and_caught_up(client: Any) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"status": "ready", "detail": []}


def test_readyz_with_no_source_is_ready(empty: tuple[Engine, Any]) -> None:
    engine, c = empty
    engine.info.clear()
    engine.core = new_core(engine.config, engine.tz)  # a core that never saw a source
    assert c.get("/readyz").status_code == 200


@pytest.mark.parametrize(("field", "detail"), [("caught_up", "nginx: lagging"),
                                               ("open", "nginx: not open")])
def test_readyz_503_names_the_source(empty: tuple[Engine, Any], field: str,
                                     detail: str) -> None:
    engine, c = empty
    engine.add_source("other", "file")
    setattr(engine.info["nginx"], field, False)
    r = c.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"status": "not ready", "detail": [detail]}
    setattr(engine.info["nginx"], field, True)
    assert c.get("/readyz").status_code == 200


def test_metrics(client: Any) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "retrywatch_runaway_connections 1.0" in r.text


# -- alerts -----------------------------------------------------------------------
def test_alerts_default_is_all_newest_first(client: Any, storm_engine: Engine) -> None:
    r = client.get("/api/v1/alerts")
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 5
    assert (body["limit"], body["offset"]) == (100, 0)
    assert body["alerts"] == storm_engine.alerts()
    assert {a["cid"] for a in body["alerts"]} == STORM_CIDS
    fired = [a["fired_at"] for a in body["alerts"]]
    assert fired == sorted(fired, reverse=True)


@pytest.mark.parametrize(("state", "cids"), [
    ("firing", {STORM_FIRING_CID}),
    ("resolved", STORM_CIDS - {STORM_FIRING_CID}),
    ("all", STORM_CIDS),
])
def test_alerts_by_state(client: Any, state: str, cids: set[int]) -> None:
    body = client.get("/api/v1/alerts", params={"state": state}).json()
    assert {a["cid"] for a in body["alerts"]} == cids
    assert body["total"] == len(cids)
    if state != "all":
        assert {a["state"] for a in body["alerts"]} == {state}


@pytest.mark.parametrize("since", ["2026-11-25T17:33:44Z", "2026-11-25T17:33:44+00:00",
                                   "2026-11-25T18:33:44+01:00",
                                   "2026-11-25T17:33:44"])  # naive: the alerts' zone
def test_alerts_since(client: Any, since: str) -> None:
    body = client.get("/api/v1/alerts", params={"since": since}).json()
    # *73's connection failed only at 17:33:43 (the sample README, and its last_seen).
    assert {a["cid"] for a in body["alerts"]} == STORM_CIDS - {73}
    assert all(a["last_seen"] >= "2026-11-25T17:33:44" for a in body["alerts"])


def test_alerts_since_later_than_all_and_earlier_than_all(client: Any) -> None:
    late = client.get("/api/v1/alerts", params={"since": "2026-11-25T17:34:00Z"}).json()
    assert (late["alerts"], late["total"]) == ([], 0)
    early = client.get("/api/v1/alerts", params={"since": "2020-01-01T00:00:00Z"}).json()
    assert early["total"] == 5


def test_alerts_since_with_state(client: Any) -> None:
    body = client.get("/api/v1/alerts",
                      params={"since": "2026-11-25T17:33:44Z", "state": "resolved"}).json()
    assert {a["cid"] for a in body["alerts"]} == {20137, 20302, 41557}


def test_alerts_pages(client: Any) -> None:
    whole = client.get("/api/v1/alerts").json()["alerts"]
    pages = []
    for offset in range(0, 6, 2):
        body = client.get("/api/v1/alerts", params={"limit": 2, "offset": offset}).json()
        assert (body["total"], body["limit"], body["offset"]) == (5, 2, offset)
        pages.append(body["alerts"])
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [a for p in pages for a in p] == whole
    past = client.get("/api/v1/alerts", params={"offset": 10}).json()
    assert (past["alerts"], past["total"]) == ([], 5)


@pytest.mark.parametrize("since", ["579", "6.2908493470566744e+16", "2026-11-25"])
def test_alerts_since_is_an_iso_datetime_only(client: Any, since: str) -> None:
    assert client.get("/api/v1/alerts", params={"since": since}).status_code == 422


@pytest.mark.parametrize("params", [{"state": "open"}, {"limit": 0}, {"limit": 1001},
                                    {"offset": -1}, {"since": "yesterday"},
                                    {"limit": "x"}])
def test_alerts_bad_parameters_are_422(client: Any, params: dict[str, Any]) -> None:
    r = client.get("/api/v1/alerts", params=params)
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


def test_one_alert(client: Any, storm_engine: Engine) -> None:
    (firing,) = client.get("/api/v1/alerts", params={"state": "firing"}).json()["alerts"]
    r = client.get(f"/api/v1/alerts/{firing['id']}")
    assert r.status_code == 200
    assert r.json() == firing == storm_engine.alert(firing["id"])
    assert firing["cid"] == STORM_FIRING_CID
    assert next(iter(firing["upstreams"])).startswith("unix:")
    assert firing["diagnosis"]["code"]


def test_one_alert_404(client: Any) -> None:
    r = client.get("/api/v1/alerts/0123456789abcdef")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {"type": "about:blank", "title": "Not Found", "status": 404,
                        "detail": "no alert 0123456789abcdef",
                        "instance": "/api/v1/alerts/0123456789abcdef"}


# -- connections, sources, schema ------------------------------------------------------
@pytest.mark.parametrize("limit", [1, 2, 1000])
def test_connections(client: Any, limit: int) -> None:
    r = client.get("/api/v1/connections", params={"limit": limit})
    assert r.status_code == 200
    conns = r.json()["connections"]
    assert 1 <= len(conns) <= limit
    in_window = [c["failures_in_window"] for c in conns]
    assert in_window == sorted(in_window, reverse=True)
    assert conns[0]["cid"] == STORM_FIRING_CID  # the one still tracked, firing


@pytest.mark.parametrize("limit", [0, 1001, -3])
def test_connections_bad_limit(client: Any, limit: int) -> None:
    assert client.get("/api/v1/connections", params={"limit": limit}).status_code == 422


def test_connections_empty(empty: tuple[Engine, Any]) -> None:
    _, c = empty
    assert c.get("/api/v1/connections").json() == {"connections": []}


def test_sources(client: Any, storm_engine: Engine) -> None:
    r = client.get("/api/v1/sources")
    assert r.status_code == 200
    (source,) = r.json()["sources"]
    ((_, stats),) = storm_engine.source_stats()
    assert source["name"] == "nginx"
    assert source["kind"] == "file"
    assert source["lines_read"] == stats.lines_read == 57_522
    assert source["bytes_read"] == stats.bytes_read
    assert source["lines_unparsed"] == stats.lines_unparsed
    assert source["unparsed_by_reason"] == dict(stats.unparsed)
    assert (source["open"], source["caught_up"]) == (True, True)
    assert source["last_error"] is None


def test_sources_shows_position_lag_and_errors(empty: tuple[Engine, Any]) -> None:
    engine, c = empty
    info = engine.info["nginx"]
    info.position, info.lag_bytes, info.lag_seconds = 4096, 100, 0.5
    info.rotations, info.last_error = 2, "permission denied"
    (source,) = c.get("/api/v1/sources").json()["sources"]
    assert {k: source[k] for k in ("position", "lag_bytes", "lag_seconds", "rotations",
                                    "last_error")} == {
        "position": 4096, "lag_bytes": 100, "lag_seconds": 0.5, "rotations": 2,
        "last_error": "permission denied"}


def test_openapi_lists_every_endpoint(client: Any) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    schema = r.json()
    assert schema["info"]["title"] == "retrywatch"
    assert set(schema["paths"]) >= {
        "/healthz", "/readyz", "/metrics", "/api/v1/alerts", "/api/v1/alerts/stream",
        "/api/v1/alerts/{alert_id}", "/api/v1/connections", "/api/v1/sources"}
    assert all(set(ops) == {"get"} for ops in schema["paths"].values())  # read-only


# -- the event stream, under uvicorn -------------------------------------------------
def sse_events(response: httpx.Response, deadline: float,
               ids: list[str] | None = None) -> Iterator[tuple[str, str]]:
    """``(event, data)`` of each Server-Sent Event (comments as ``("", comment)``) until
    the deadline, each event's ``id`` added to ``ids``; each read is bounded by the
    client's read timeout."""
    event, data = "", []
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            raise TimeoutError("no matching event before the deadline")
        if line.startswith(":"):
            yield "", line[1:].strip()
        elif line.startswith("event:"):
            event = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data.append(line.partition(":")[2].strip())
        elif line.startswith("id:") and ids is not None:
            ids.append(line.partition(":")[2].strip())
        elif line == "" and event:
            yield event, "\n".join(data)
            event, data = "", []


def wait_for(predicate: Any, what: str) -> None:
    done = threading.Event()
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        done.wait(0.01)


def test_event_stream_sends_fired_updated_resolved() -> None:
    engine = new_engine()
    with serving(engine) as live, live.client(timeout=WAIT) as http, \
            http.stream("GET", "/api/v1/alerts/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        events = sse_events(response, time.monotonic() + WAIT)
        # The first comment is sent once the stream has subscribed to the engine.
        assert next(events) == ("", "retrywatch alert stream")
        feed_storm(engine)  # from this thread, as a source's thread would
        # Feeding is synchronous: every change is made. "updated" changes may be coalesced
        # per alert; every "fired" and "resolved" goes out.
        stats = engine.detector_stats()
        expected = stats.fired + stats.resolved
        seen: dict[str, list[dict[str, Any]]] = {"fired": [], "updated": [], "confirmed": [],
                                                 "resolved": []}
        for event, data in events:
            if event:
                seen[event].append(orjson.loads(data))
            if len(seen["fired"]) + len(seen["resolved"]) == expected:
                break
    firing = [a for a in seen["fired"] if a["cid"] == STORM_FIRING_CID]
    assert len(firing) == 1
    assert firing[0]["state"] == "firing"
    assert firing[0]["id"] == next(a["id"] for a in engine.alerts()
                                   if a["cid"] == STORM_FIRING_CID)
    assert {a["cid"] for a in seen["fired"]} == STORM_CIDS
    assert {a["cid"] for a in seen["resolved"]} == STORM_CIDS - {STORM_FIRING_CID}
    assert {a["id"] for a in seen["updated"]} <= {a["id"] for a in seen["fired"]}
    assert all(a["state"] == "resolved" for a in seen["resolved"])


def test_event_stream_fired_event_is_the_alert_json() -> None:
    engine = new_engine()
    with serving(engine) as live, live.client(timeout=WAIT) as http, \
            http.stream("GET", "/api/v1/alerts/stream") as response:
        ids: list[str] = []
        events = sse_events(response, time.monotonic() + WAIT, ids)
        assert next(events)[0] == ""
        feed_storm(engine)
        event, data = next((e, d) for e, d in events if e == "fired")
        first = orjson.loads(data)
        assert event == "fired"
        assert ids[-1].isdigit()  # the event's id is a sequence number (test_api_sse.py)
        assert engine.alert(first["id"]) is not None  # the alert's is in the data
        assert set(first) >= {"id", "state", "source", "pid", "cid", "upstreams",
                              "failures", "fired_at", "diagnosis"}
        assert first["source"] == "nginx"
        assert first["cid"] in STORM_CIDS


def test_event_stream_client_gone_unsubscribes() -> None:
    engine = new_engine()
    with serving(engine) as live:
        live.app.state.stream_hub.resume_grace = 0.1  # stays subscribed that long
        with live.client(timeout=WAIT) as http, \
                http.stream("GET", "/api/v1/alerts/stream") as response:
            # Keep the reader: dropping it would close the response (a disconnect) at once.
            events = sse_events(response, time.monotonic() + WAIT)
            assert next(events)[0] == ""
            assert len(engine.subscribers) == 1
            del events
        wait_for(lambda: engine.subscribers == [], "the stream did not unsubscribe")


def test_two_stream_clients_both_hear() -> None:
    engine = new_engine()
    with serving(engine) as live, live.client(timeout=WAIT) as a, \
            live.client(timeout=WAIT) as b, \
            a.stream("GET", "/api/v1/alerts/stream") as ra, \
            b.stream("GET", "/api/v1/alerts/stream") as rb:
        streams = [sse_events(r, time.monotonic() + WAIT) for r in (ra, rb)]
        for s in streams:
            assert next(s)[0] == ""
        feed_storm(engine)
        for s in streams:
            assert next(e for e, _ in s if e == "fired") == "fired"


# -- the OpenAPI schema, exercised by schemathesis against the running service ---------------
@pytest.fixture(scope="module")
def live_storm(storm_engine: Engine) -> Iterator[LiveServer]:
    with serving(storm_engine) as live:
        yield live


#: Query parameters held valid while the others are generated (none now).
PINNED: dict[tuple[str, str], dict[str, str]] = {}


def fuzz(operation: Any, generation: Any, calls: dict[str, int]) -> None:
    """Up to 25 generated requests for one operation, each response checked."""
    from hypothesis import HealthCheck, given, settings

    query = PINNED.get((generation.value, operation.label))

    @given(case=operation.as_strategy(generation, query=query))
    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        calls[operation.label] = calls.get(operation.label, 0) + 1
        case.call_and_validate(timeout=WAIT)

    check()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_every_get_operation(live_storm: LiveServer, mode: str) -> None:
    """Generated requests for every GET operation (but the endless event stream): no 5xx,
    status codes, content types, headers and bodies as the schema says; invalid input
    is rejected with a 4xx."""
    import schemathesis
    from schemathesis.core.result import Err
    from schemathesis.generation.modes import GenerationMode

    schema = (schemathesis.openapi.from_url(f"{live_storm.url}/openapi.json")
              .include(method="GET").exclude(path="/api/v1/alerts/stream"))
    generation = GenerationMode(mode)
    calls: dict[str, int] = {}
    failures: list[str] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"schema: {result.err()}")
            continue
        operation = result.ok()
        if generation is GenerationMode.NEGATIVE and not operation.query:
            continue  # nothing to make invalid (any string is an alert id)

        try:
            fuzz(operation, generation, calls)
        except Exception as e:  # every operation's failure, reported together
            failures.append(f"{operation.label}: {type(e).__name__}: {e}")
    assert not failures, "\n\n".join(failures)
    if generation is GenerationMode.POSITIVE:
        assert set(calls) == {
            "GET /healthz", "GET /readyz", "GET /metrics", "GET /api/v1/alerts",
            "GET /api/v1/alerts/{alert_id}", "GET /api/v1/connections", "GET /api/v1/sources",
            "GET /api/v1/disk", "GET /api/v1/upstreams"}
    else:
        assert set(calls) == {"GET /api/v1/alerts", "GET /api/v1/connections",
                              "GET /api/v1/upstreams"}
