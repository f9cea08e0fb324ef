"""The HTTP service: REST alerts, connections, sources, an event stream, health, metrics.

Read-only. With ``api_token`` set, every endpoint but ``/healthz`` and ``/readyz`` (the
probes carry no token) and the documentation (``/docs``, ``/redoc``, the schema and their
assets: a browser cannot send the token to load them) requires ``Authorization: Bearer
TOKEN``, compared in constant time: ``/metrics`` too (Prometheus sends it:
``authorization: {credentials: ...}``).

Every error is a problem document (RFC 9457, serve/problems.py), declared in the schema.
The documentation pages are served with their own assets (Swagger UI and ReDoc, from the
``fastapi-offline`` package): they work without internet access.

Readers cannot starve ingest: the event stream has one engine subscriber for all its
clients (serve/events.py: each change serialized once, bounded and paced fan-out, a
client that does not read disconnected, at most ``max_stream_clients``), and the list
endpoints copy references under the engine's lock and read only their page.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import weakref
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import anyio
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator, BaseModel, Field
from starlette.types import Receive, Scope, Send

from retrywatch import __version__
from retrywatch.delivery import Notifier
from retrywatch.detect.engine import Engine
from retrywatch.detect.schema import (
    AlertData,
    ConnectionData,
    DiskAlertData,
    FileGrowthData,
    ForecastData,
    UpstreamAlertData,
    UpstreamData,
)
from retrywatch.serve import problems
from retrywatch.serve.events import (
    MAX_STREAM_CLIENTS,
    TRANSPORT,
    EventStream,
    StreamHub,
    ingest_behind,
)
from retrywatch.serve.metrics import CONTENT_TYPE, StreamCollector, new_registry, render
from retrywatch.serve.page import PAGE_PATHS, add_page

__all__ = ["DOCS_PATHS", "OPEN_PATHS", "StreamHub", "create_app", "ingest_behind"]

#: Answered without the API token: a liveness or readiness probe carries none.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
#: The interactive documentation, its assets and the schema it reads: open without the
#: token too (a browser cannot send it to load them; Swagger UI's Authorize button then
#: sends it with every request it makes).
DOCS_PATHS = frozenset({"/docs", "/redoc", "/openapi.json"})
DOCS_ASSETS = "/docs/assets"
#: Seconds a list request waits, at most, while ingest is behind (one at a time: list
#: requests are answered ten a second at most then).
READER_PAUSE = 0.1
TAGS = [
    {"name": "alerts", "description": "Runaway connections found: the list, one alert, "
                                      "and their changes as Server-Sent Events."},
    {"name": "connections", "description": "The connections tracked now."},
    {"name": "sources", "description": "What is read: positions, lag, errors, checkpoints."},
    {"name": "disk", "description": "The followed logs' growth, when they will fill their "
                                    "filesystems, and the disk alerts."},
    {"name": "upstreams", "description": "Connect failures per upstream peer against its "
                                         "learnt baseline, and the upstream alerts."},
    {"name": "health", "description": "Liveness and readiness probes (no token needed)."},
    {"name": "metrics", "description": "Prometheus metrics."},
]


class AlertList(BaseModel):
    alerts: list[AlertData]
    total: int
    limit: int
    offset: int


class ConnectionList(BaseModel):
    connections: list[ConnectionData]


class SyslogFigures(BaseModel):
    """What a syslog listener received and refused; the TCP fields for TCP only."""

    transport: Literal["udp", "tcp"]
    records: int = Field(description="Records received: UDP datagrams or TCP frames.")
    bytes: int
    frames_too_long: int = Field(description="Records over syslog_max_frame, skipped.")
    errors: int = Field(description="Socket errors and TCP frames cut short.")
    drops: int = Field(0, description="UDP datagrams the kernel dropped (receive buffer).")
    clients: int | None = Field(None, description="TCP clients connected now.")
    max_clients: int | None = None
    idle_timeout: float | None = None
    connections: int | None = Field(None, description="TCP clients accepted in all.")
    refused: int | None = Field(None, description="TCP clients refused at max_clients.")
    timed_out: int | None = Field(None, description="TCP clients closed when idle.")
    accept_errors: int | None = Field(None, description=(
        "accept() failures (out of descriptors): accepting paused a while each time."))
    accepting: bool | None = None


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
    syslog: SyslogFigures | None = Field(None, description=(
        "A syslog listener's own figures (kind syslog only)."))
    growth: FileGrowthData | None = Field(None, description=(
        "A followed file's growth and its filesystem's forecast (kind file only)."))


class CheckpointOut(BaseModel):
    """How the checkpoints of the state directory fare (positions, alerts, deliveries)."""

    last_success: str | None = Field(description="When the last one was written (UTC).")
    failures: int = Field(description="Checkpoints that could not be written since the start.")
    last_error: str | None = Field(description="Why they fail, while they fail (a file "
                                   "source's last_error says it too).")


class SourceList(BaseModel):
    sources: list[SourceOut]
    checkpoint: CheckpointOut | None = Field(None, description=(
        "The checkpoints of --state-dir (none: no state directory)."))


class DiskOut(BaseModel):
    horizon_seconds: float = Field(description=(
        "A disk alert fires when a filesystem will be full within this many seconds "
        "(disk_horizon; 0: never)."))
    filesystems: list[ForecastData]
    alerts: list[DiskAlertData] = Field(description=(
        "Firing first, then the last resolved ones, newest first."))


class UpstreamsOut(BaseModel):
    enabled: bool = Field(description="Whether peers are counted (upstream_anomalies).")
    at: str | None = Field(description=(
        "The log second the figures are for (RFC 3339; null before the first event)."))
    window_seconds: int = Field(60, description="The window the figures cover.")
    min_connections: int = Field(description=(
        "Distinct failing connections a peer needs before it can alert."))
    capacity: int = Field(description="Peers named at most (upstream_peers).")
    failures_total: int = Field(description="Connect failures naming a peer, since start.")
    without_peer_total: int = Field(description=(
        "Connect failures whose line names no peer (e.g. no live upstreams of a group)."))
    evicted_total: int = Field(description=(
        "Peers that left the table to make room for a new one."))
    window_failures: int = Field(description="Failures of every peer (named or not) in the "
                                             "window: the other peers are this less the named.")
    peers: list[UpstreamData] = Field(description=(
        "The named peers, most failures in the window first (at most `limit`)."))
    alerts: list[UpstreamAlertData] = Field(description=(
        "Firing first, then the last resolved ones, newest first."))


class Health(BaseModel):
    status: str
    detail: list[str] = []


def create_app(engine: Engine, notifier: Notifier | None = None, *,
               api_token: str | None = None,
               max_stream_clients: int = MAX_STREAM_CLIENTS) -> FastAPI:
    """The API over ``engine``. ``api_token``: every endpoint but ``OPEN_PATHS`` and the
    documentation (``DOCS_PATHS``, its assets) requires ``Authorization: Bearer TOKEN``."""
    app = _App(title="retrywatch", version=__version__, openapi_tags=TAGS,
               description="nginx connections stuck in connect() retry loops.",
               docs_url=None, redoc_url=None)
    app.api_token = api_token.encode() if api_token else None
    hub = StreamHub(engine, max_stream_clients)
    app.state.stream_hub = hub
    registry = new_registry(engine, notifier)
    registry.register(StreamCollector(hub))
    problems.install(app)
    _add_docs(app)
    _complete_openapi(app, bearer=bool(api_token))

    add_page(app)  # GET /: the live page (serve/page.py)

    @app.get("/healthz", response_model=Health, tags=["health"], operation_id="getLiveness",
             responses={503: {"model": Health, "description": _PROBE_503}, **_FAILED})
    def healthz() -> Response:
        """Alive: the ingest loop has turned within ``stall_timeout`` seconds."""
        stalled = engine.health.stalled_for()
        body = (Health(status="ok") if stalled is None else
                Health(status="stalled", detail=[f"ingest loop stalled for {stalled:.0f} s"]))
        return Response(body.model_dump_json(), status_code=200 if stalled is None else 503,
                        media_type="application/json")

    @app.get("/readyz", response_model=Health, tags=["health"], operation_id="getReadiness",
             responses={503: {"model": Health, "description": _PROBE_503}, **_FAILED})
    def readyz() -> Response:
        """Ready: every source open and caught up. A path skipped (a FIFO under a glob) is
        told in ``detail``; neither it nor a file gone (deleted, until it is forgotten)
        makes the service unready."""
        stats = engine.source_stats()
        failing = [f"{info.name}: {'not open' if not info.open else 'lagging'}"
                   for info, _ in stats
                   if (not info.open or not info.caught_up)
                   and not info.extra.get("skipped") and not info.extra.get("gone_since")]
        notes = [f"{info.name}: skipped ({info.extra['skipped']})"
                 for info, _ in stats if info.extra.get("skipped")]
        failing += engine.health.problems()  # checkpoints failing, stalled, stopping
        body = Health(status="ready" if not failing else "not ready",
                      detail=failing + notes)
        return Response(body.model_dump_json(), status_code=503 if failing else 200,
                        media_type="application/json")

    @app.get("/metrics", response_class=Response, tags=["metrics"], operation_id="getMetrics",
             responses={200: {"content": {CONTENT_TYPE: {}}}, **_FAILED})
    def metrics() -> Response:
        """Prometheus metrics."""
        return Response(render(registry), media_type=CONTENT_TYPE)

    @app.get("/api/v1/alerts", response_model=AlertList, tags=["alerts"],
             operation_id="listAlerts", responses=problems.declared(422, 500))
    async def alerts(
        state: Literal["firing", "resolved", "all"] = "all",
        since: Annotated[str | None, AfterValidator(_iso_datetime), Query(
            json_schema_extra={"format": "date-time"},
            description="only alerts whose connection failed at or after this time "
                        "(ISO 8601 date and time; without an offset, the alerts' zone)")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
        confidence: Literal["confirmed", "suspected", "all"] = "all",
    ) -> Response:
        """Alerts, newest first (firing and resolved)."""

        def page() -> bytes:
            _yield_to_ingest(engine)  # at most 1 / READER_PAUSE a second while it is behind
            # The alerts are copied (references, in order) under the engine's lock and
            # filtered without it; only the page is read (JSON made once per change).
            items = engine.alert_list()
            if state != "all":
                items = [a for a in items if a.state == state]
            if confidence != "all":
                items = [a for a in items if a.confidence == confidence]
            if since is not None:
                when = datetime.fromisoformat(since)
                items = [a for a in items if _after(a.snapshot["last_seen"], when)]
            alerts = engine.alert_json(items[offset:offset + limit])
            # The API objects are AlertData (tests check it): no second validation. The
            # offset by hand: any integer is valid, and orjson stops at 64 bits.
            return b'{"alerts":[%b],"total":%d,"limit":%d,"offset":%d}' % (
                b",".join(alerts), len(items), limit, offset)

        # One list read at a time: however many poll, one thread competes with ingest.
        body = await anyio.to_thread.run_sync(page, limiter=_one_at_a_time())
        return Response(body, media_type="application/json")

    @app.get("/api/v1/alerts/stream", response_class=Response, tags=["alerts"],
             operation_id="streamAlerts", responses=_STREAM_RESPONSES)
    async def stream(
        last_event_id_header: Annotated[str | None, Header(
            alias="Last-Event-ID", description="The id of the last event received: the "
            "events after it come first (a browser's EventSource sends it when it "
            "reconnects).")] = None,
        last_event_id: Annotated[str | None, Query(
            description="The same, for a client that cannot set the header (the header "
                        "wins).")] = None,
    ) -> Response:
        """Server-Sent Events: ``fired``, ``updated``, ``confirmed`` (a suspected alert's
        evidence became strong) and ``resolved``, the alert as JSON in ``data`` (its id
        there). Changes are coalesced per alert (its newest figures; a ``confirmed`` right
        after its ``fired`` is the fired event) and paced behind ingest in a storm.

        Each event's ``id`` is a number, increasing (this run's: the first is its start
        time in microseconds). Given the last one received (``Last-Event-ID``), the
        stream sends the events after it first (the last 10,000 are kept); when they are
        not all kept, or the id is not of this run, a ``reset`` event comes first instead:
        read ``GET /api/v1/alerts`` again. The greeting comment (``: retrywatch alert
        stream``) comes with ``retry:`` and, for a new client, the last id so far; a
        comment (``: keep-alive``) after 5 s of silence.

        A client that does not read (its socket full for 2 s, 1 MiB of events queued) is
        disconnected and counted in ``retrywatch_stream_clients_dropped_total``: it
        reconnects with its last id."""
        return EventStream(hub, last_event_id_header or last_event_id)

    @app.get("/api/v1/alerts/{alert_id}", response_model=AlertData, tags=["alerts"],
             operation_id="getAlert", responses=problems.declared(404, 422, 500))
    def alert(alert_id: str) -> AlertData:
        """One alert, firing or resolved (404: none by that id, or forgotten)."""
        found = engine.alert(alert_id)
        if found is None:
            raise HTTPException(404, f"no alert {alert_id}")
        return found

    @app.get("/api/v1/connections", response_model=ConnectionList, tags=["connections"],
             operation_id="listConnections", responses=problems.declared(422, 500))
    async def connections(
            limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict[str, Any]:
        """The hottest tracked connections now (those past their first few failures)."""

        def hottest() -> list[ConnectionData]:
            _yield_to_ingest(engine)
            return engine.connections(limit)

        return {"connections": await anyio.to_thread.run_sync(hottest,
                                                              limiter=_one_at_a_time())}

    @app.get("/api/v1/sources", response_model=SourceList, tags=["sources"],
             operation_id="listSources", responses=_FAILED)
    def sources() -> dict[str, Any]:
        """Each source with its position, lag, lines, unparsed lines, rotations, last error;
        and the checkpoints (positions saved?)."""
        health = engine.health
        # A file's position is not saved while checkpoints fail: its last error says so.
        unsaved = (f"checkpoint failing: {health.checkpoint_error}"
                   if health.checkpoint_error is not None else None)
        out = []
        for info, stats in engine.source_stats():
            out.append({
                "name": info.name, "kind": info.kind, "position": info.position,
                "lag_bytes": info.lag_bytes, "lag_seconds": info.lag_seconds,
                "lines_read": stats.lines_read, "bytes_read": stats.bytes_read,
                "lines_unparsed": stats.lines_unparsed,
                "unparsed_by_reason": dict(stats.unparsed), "rotations": info.rotations,
                "last_error": info.last_error, "open": info.open, "caught_up": info.caught_up,
                "syslog": info.extra.get("syslog"),
                "growth": engine.disk.growth(info.name)
                if engine.disk is not None and info.kind == "file" else None,
            })
            if out[-1]["last_error"] is None and info.kind == "file":
                out[-1]["last_error"] = unsaved
        checkpoint = None
        if health.checkpoints:
            at = health.checkpoint_last_success
            checkpoint = {"last_success": None if at is None else
                          datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds"),
                          "failures": health.checkpoint_failures,
                          "last_error": health.checkpoint_error}
        return {"sources": out, "checkpoint": checkpoint}

    @app.get("/api/v1/disk", response_model=DiskOut, tags=["disk"],
             operation_id="getDisk", responses=_FAILED)
    def disk() -> dict[str, Any]:
        """Each filesystem holding followed logs: free space, the logs' growth, the time
        until it is full at that growth; and the disk alerts with what writes most."""
        watch = engine.disk
        if watch is None:  # (an engine without a service: nothing is followed)
            return {"horizon_seconds": 0.0, "filesystems": [], "alerts": []}
        return {"horizon_seconds": watch.horizon, "filesystems": watch.forecasts(),
                "alerts": watch.alerts()}

    @app.get("/api/v1/upstreams", response_model=UpstreamsOut, tags=["upstreams"],
             operation_id="getUpstreams", responses=problems.declared(422, 500))
    def upstreams(limit: Annotated[int, Query(ge=1, le=65536, description=(
            "Peers listed at most."))] = 100) -> dict[str, Any]:
        """Each upstream peer's connect failures and failing connections in the last minute,
        its learnt baseline, whether it is failing far above it; and the upstream alerts
        (a peer failing for many connections), linked to the runaway alerts on it."""
        watch = engine.upstreams
        if watch is None:
            return {"enabled": False, "at": None, "min_connections": 0, "capacity": 0,
                    "failures_total": 0, "without_peer_total": 0, "evicted_total": 0,
                    "window_failures": 0, "peers": [], "alerts": []}
        s = watch.summary
        now = s.get("now")
        return {"enabled": bool(s), "at": None if now is None else
                datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
                "window_seconds": s.get("window", 60), "min_connections": watch.min_connections,
                "capacity": s.get("capacity", 0),
                **{k: s.get(k, 0) for k in ("failures_total", "without_peer_total",
                                            "evicted_total", "window_failures")},
                "peers": watch.peers()[:limit], "alerts": watch.alerts()}

    return app


_FAILED = problems.declared(500)
_PROBE_503 = ("Not alive, or not ready: the report says why (the probe's answer, not a "
              "problem document).")
_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The events, until the client goes.",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    **problems.declared(422, 500),
    503: {**problems.declared(503)[503],
          "description": "As many stream clients as max_stream_clients are connected: "
                         "retry later.",
          "headers": {"Retry-After": {"description": "Seconds to wait.",
                                      "schema": {"type": "integer"}}}}}


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


class _App(FastAPI):
    """The FastAPI app, with what must happen before routing: the bearer token checked,
    and the connection's transport noted (a stream client that falls behind is cut)."""

    api_token: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # uvicorn's send is a method of its request cycle, which holds the transport.
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is not None and hasattr(transport, "abort"):
                scope[TRANSPORT] = transport
            if (self.api_token is not None and not _open(scope["path"])
                    and not _authorized(scope, self.api_token)):
                await problems.problem_response(
                    401, "a bearer token is required (Authorization: Bearer TOKEN)",
                    scope["path"], headers={"WWW-Authenticate": 'Bearer realm="retrywatch"'},
                )(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


_LIST_LIMITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary())


def _one_at_a_time() -> anyio.CapacityLimiter:
    """The list requests' limiter of this event loop (one thread)."""
    loop = asyncio.get_running_loop()
    limiter = _LIST_LIMITERS.get(loop)
    if limiter is None:
        limiter = _LIST_LIMITERS[loop] = anyio.CapacityLimiter(1)
    return limiter


def _yield_to_ingest(engine: Engine) -> None:
    """Wait while ingest has anything left to read, ``READER_PAUSE`` seconds at most: in
    the one thread of the list requests (:func:`_one_at_a_time`), so that while ingest is
    behind they are answered ``1 / READER_PAUSE`` a second at most, all together."""
    waited = 0.0
    while waited < READER_PAUSE and ingest_behind(engine, 0):
        time.sleep(READER_PAUSE / 5)
        waited += READER_PAUSE / 5


def _open(path: str) -> bool:
    """Answered without the token: the probes, the documentation and its assets, the live
    page and its files (they hold no data: its script asks for the token)."""
    return (path in OPEN_PATHS or path in DOCS_PATHS or path in PAGE_PATHS
            or (path.startswith(DOCS_ASSETS + "/") and "/.." not in path))


def _add_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their assets served here (the package
    ``fastapi-offline`` has them): no CDN, no font service, no validator badge."""
    app.mount(DOCS_ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]),
              name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", oauth2_redirect_url=None,
            swagger_ui_parameters={"validatorUrl": None})

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False)


def _complete_openapi(app: FastAPI, *, bearer: bool) -> None:
    """The OpenAPI schema with the problem model; with ``bearer``, the token required by
    every operation but the probes, and its 401."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()  # kept by FastAPI as app.openapi_schema
        problems.add_schemas(schema)
        if not bearer:
            return schema
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "The api_token setting."}}
        schema["security"] = [{"bearer": []}]
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                if path in OPEN_PATHS:
                    operation["security"] = []
                else:
                    operation["responses"].update(
                        {str(k): v for k, v in problems.declared(401).items()})
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _authorized(scope: Scope, token: bytes) -> bool:
    """An ``Authorization: Bearer TOKEN`` header with the token (compared in constant
    time)."""
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, given = value.partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)
    return False


