"""The HTTP service: REST alerts, connections, sources, an event stream, health, metrics.

Read-only: nothing here changes state, so nothing needs a token (an endpoint that did
would require the configured bearer token, compared in constant time).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from retrywatch import __version__
from retrywatch.delivery import Notifier
from retrywatch.detect.alerts import AlertChange
from retrywatch.detect.engine import Engine
from retrywatch.serve.metrics import CONTENT_TYPE, new_registry, render

__all__ = ["create_app"]

#: ``fired``/``resolved`` changes buffered per event-stream client; past that the newest
#: are dropped and the client is told how many by a ``dropped`` event.
STREAM_QUEUE = 1000


class Diagnosis(BaseModel):
    code: str
    cause: str
    fix: str
    docs: str = Field("", description="The page on this failure mode, relative to the "
                      "project's root (`retrywatch lint --explain CODE` prints it).")


class Configuration(BaseModel):
    """What the nginx configuration given (--nginx-config) allows the alert's route."""

    loop: bool
    bound: int | None
    why: str


class AlertOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    state: Literal["firing", "resolved"]
    source: str
    pid: int
    cid: int
    subsystem: str | None
    client: str | None
    server: str | None
    request: str | None
    host: str | None
    upstreams: dict[str, int]
    failures: int
    failures_in_window: int
    first_seen: str
    last_seen: str
    duration_seconds: int
    peak_per_second: int
    mean_per_second: float
    errnos: dict[str, int]
    kinds: dict[str, int]
    distinct_requests: int
    sample: str
    fired_at: str
    resolved_at: str | None
    resolved_reason: str | None
    diagnosis: Diagnosis | None
    confidence: Literal["confirmed", "suspected"] = Field(
        description="confirmed: the log (or the configuration given) shows one request or "
                    "session retrying without end; suspected: the count crossed the threshold "
                    "but many bounded requests would look the same. Only confirmed alerts page.")
    evidence: list[str] = Field(description="What the confidence rests on, plainly.")
    configuration: Configuration | None = None


class AlertList(BaseModel):
    alerts: list[AlertOut]
    total: int
    limit: int
    offset: int


class Connection(BaseModel):
    source: str
    pid: int
    cid: int
    failures_in_window: int
    rate_per_second: float
    failures: int
    upstreams: dict[str, int]
    client: str | None
    server: str | None
    first_seen: str
    last_seen: str


class ConnectionList(BaseModel):
    connections: list[Connection]


class SourceOut(BaseModel):
    name: str
    kind: str
    position: int | None
    lag_bytes: int | None
    lag_seconds: float | None
    lines_read: int
    bytes_read: int
    lines_unparsed: int
    unparsed_by_reason: dict[str, int]
    rotations: int
    last_error: str | None
    open: bool
    caught_up: bool


class SourceList(BaseModel):
    sources: list[SourceOut]


class Health(BaseModel):
    status: str
    detail: list[str] = []


def create_app(engine: Engine, notifier: Notifier | None = None) -> FastAPI:
    app = FastAPI(title="retrywatch", version=__version__,
                  description="nginx connections stuck in connect() retry loops.")
    registry = new_registry(engine, notifier)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return _LANDING.format(version=__version__, firing=len(engine.firing))

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        """Alive."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, responses={503: {"model": Health}})
    def readyz() -> Response:
        """Ready: every source open and caught up."""
        problems = [f"{info.name}: {'not open' if not info.open else 'lagging'}"
                    for info, _ in engine.source_stats()
                    if not info.open or not info.caught_up]
        body = Health(status="ready" if not problems else "not ready", detail=problems)
        return Response(body.model_dump_json(), status_code=503 if problems else 200,
                        media_type="application/json")

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {}}}})
    def metrics() -> Response:
        """Prometheus metrics."""
        return Response(render(registry), media_type=CONTENT_TYPE)

    @app.get("/api/v1/alerts", response_model=AlertList)
    def alerts(
        state: Literal["firing", "resolved", "all"] = "all",
        since: Annotated[str | None, AfterValidator(_iso_datetime), Query(
            json_schema_extra={"format": "date-time"},
            description="only alerts whose connection failed at or after this time "
                        "(ISO 8601 date and time; without an offset, the alerts' zone)")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
        confidence: Literal["confirmed", "suspected", "all"] = "all",
    ) -> dict[str, Any]:
        """Alerts, newest first (firing and resolved)."""
        items = engine.alerts()
        if state != "all":
            items = [a for a in items if a["state"] == state]
        if confidence != "all":
            items = [a for a in items if a["confidence"] == confidence]
        if since is not None:
            when = datetime.fromisoformat(since)
            items = [a for a in items if _after(a["last_seen"], when)]
        return {"alerts": items[offset:offset + limit], "total": len(items), "limit": limit,
                "offset": offset}

    @app.get("/api/v1/alerts/stream", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
    async def stream() -> StreamingResponse:
        """Server-Sent Events: ``fired``, ``updated``, ``confirmed`` (a suspected alert's
        evidence became strong) and ``resolved``, with the alert."""
        return StreamingResponse(_events(engine), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.get("/api/v1/alerts/{alert_id}", response_model=AlertOut,
             responses={404: {"description": "no such alert"}})
    def alert(alert_id: str) -> dict[str, Any]:
        found = engine.alert(alert_id)
        if found is None:
            raise HTTPException(404, f"no alert {alert_id}")
        return found

    @app.get("/api/v1/connections", response_model=ConnectionList)
    def connections(limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict[str, Any]:
        """The hottest tracked connections now (those past their first few failures)."""
        return {"connections": engine.connections(limit)}

    @app.get("/api/v1/sources", response_model=SourceList)
    def sources() -> dict[str, Any]:
        """Each source with its position, lag, lines, unparsed lines, rotations, last error."""
        out = []
        for info, stats in engine.source_stats():
            out.append({
                "name": info.name, "kind": info.kind, "position": info.position,
                "lag_bytes": info.lag_bytes, "lag_seconds": info.lag_seconds,
                "lines_read": stats.lines_read, "bytes_read": stats.bytes_read,
                "lines_unparsed": stats.lines_unparsed,
                "unparsed_by_reason": dict(stats.unparsed), "rotations": info.rotations,
                "last_error": info.last_error, "open": info.open, "caught_up": info.caught_up,
            })
        return {"sources": out}

    return app


def _iso_datetime(text: str | None) -> str | None:
    """An ISO 8601 date and time, not a bare date or a number (a 422 otherwise)."""
    if text is None:
        return None
    if "T" not in text.upper() and " " not in text:
        raise ValueError("an ISO 8601 date and time is needed, e.g. 2026-11-25T17:33:44Z")
    datetime.fromisoformat(text)  # raises ValueError with the reason
    return text


def _after(iso: str, since: datetime) -> bool:
    when = datetime.fromisoformat(iso)
    if since.tzinfo is None:
        since = since.replace(tzinfo=when.tzinfo)
    return when >= since


async def _events(engine: Engine) -> AsyncIterator[bytes]:
    """Each change as an event. ``updated`` changes are coalesced per alert (a storm
    updates every firing alert on every chunk read); ``fired`` and ``resolved`` always
    go out, and a client that falls ``STREAM_QUEUE`` of them behind is told how many it
    missed (the newest are the ones dropped)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[AlertChange] = asyncio.Queue(STREAM_QUEUE)
    updates: dict[str, AlertChange] = {}  # the latest update of each alert, not yet sent
    ready = asyncio.Event()
    dropped = 0

    def offer(change: AlertChange) -> None:
        nonlocal dropped
        if change.kind == "updated":
            updates[change.alert.id] = change
        elif queue.full():
            dropped += 1
        else:
            updates.pop(change.alert.id, None)
            queue.put_nowait(change)
        ready.set()

    def on_change(change: AlertChange) -> None:  # the engine's thread
        with contextlib.suppress(RuntimeError):  # the loop closed under us
            loop.call_soon_threadsafe(offer, change)

    unsubscribe = engine.subscribe(on_change)
    try:
        yield b": retrywatch alert stream\n\n"
        while True:  # the response is cancelled when the client goes away
            try:
                await asyncio.wait_for(ready.wait(), timeout=5)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            ready.clear()
            if dropped:
                yield b"event: dropped\ndata: " + str(dropped).encode() + b"\n\n"
                dropped = 0
            while not queue.empty():
                yield _event(queue.get_nowait())
            pending, updates = list(updates.values()), {}
            for change in pending:
                yield _event(change)
    finally:
        unsubscribe()


def _event(change: AlertChange) -> bytes:
    return (b"event: " + change.kind.encode() + b"\nid: " + change.alert.id.encode()
            + b"\ndata: " + orjson.dumps(change.alert.to_dict()) + b"\n\n")


_LANDING = """<!doctype html>
<html><head><meta charset="utf-8"><title>retrywatch</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">
<h1>retrywatch {version}</h1>
<p>nginx connections stuck in connect() retry loops. Firing now: <b>{firing}</b>.</p>
<ul>
<li><a href="/api/v1/alerts?state=firing">/api/v1/alerts?state=firing</a> - alerts firing</li>
<li><a href="/api/v1/alerts">/api/v1/alerts</a> - all alerts (state, since, limit, offset)</li>
<li><a href="/api/v1/alerts/stream">/api/v1/alerts/stream</a> - Server-Sent Events</li>
<li><a href="/api/v1/connections">/api/v1/connections</a> - hottest connections now</li>
<li><a href="/api/v1/sources">/api/v1/sources</a> - sources, positions, lag</li>
<li><a href="/metrics">/metrics</a> - Prometheus metrics</li>
<li><a href="/healthz">/healthz</a>, <a href="/readyz">/readyz</a></li>
<li><a href="/docs">/docs</a> - the OpenAPI schema (<a href="/openapi.json">JSON</a>)</li>
</ul></body></html>
"""
