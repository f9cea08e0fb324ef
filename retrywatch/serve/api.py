"""The HTTP service: REST alerts, connections, sources, an event stream, health, metrics.

Read-only. With ``api_token`` set, every endpoint but ``/healthz`` and ``/readyz`` (the
probes carry no token) requires ``Authorization: Bearer TOKEN``, compared in constant
time: ``/metrics`` too (Prometheus sends it: ``authorization: {credentials: ...}``).

Readers cannot starve ingest: the event stream has one engine subscriber for all its
clients (:class:`StreamHub`: each change serialized once, bounded and paced fan-out, a
client that does not read disconnected, at most ``max_stream_clients``), and the list
endpoints copy references under the engine's lock and read only their page.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import anyio
import orjson
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.types import Receive, Scope, Send

from retrywatch import __version__
from retrywatch.delivery import Notifier
from retrywatch.detect.alerts import AlertChange
from retrywatch.detect.engine import Engine
from retrywatch.detect.schema import AlertData, ConnectionData
from retrywatch.serve.metrics import CONTENT_TYPE, StreamCollector, new_registry, render

__all__ = ["OPEN_PATHS", "StreamHub", "create_app", "ingest_behind"]

log = logging.getLogger("retrywatch")

#: Answered without the API token: a liveness or readiness probe carries none.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
#: Event-stream clients at once, by default (``max_stream_clients``).
MAX_STREAM_CLIENTS = 500
#: Bytes of events a stream client may have queued while its socket is full (it does not
#: read) for ``SLOW_AFTER`` seconds before it is disconnected and counted
#: (``retrywatch_stream_clients_dropped_total``).
STREAM_BACKLOG = 1 << 20
SLOW_AFTER = 2.0
#: Seconds between two batches of changes to the streams: the changes in between go out
#: together, each ``updated`` alert once (its newest figures), serialized once for all.
STREAM_INTERVAL = 0.05
#: Bytes a second written to the event streams, all clients together: past it, writes
#: wait their turn rather than take the processor from ingest (on 2 cores, a few tenths
#: of one). ``PACE_BURST`` seconds' worth go at once (a change to 500 clients does).
FANOUT_RATE = 64 * (1 << 20)
PACE_BURST = 0.02
#: Seconds the streams wait, at most, while ingest is behind (events keep coming in a
#: storm that lasts).
MAX_PAUSE = 2.0
#: Changes serialized between two turns of the event loop.
SERIALIZE_BATCH = 64
#: One write to a client, at most (what a slow client's socket buffer may hold).
STREAM_PIECE = 64 * 1024
#: Seconds of silence after which a stream gets a comment (proxies keep it open).
KEEPALIVE = 5.0
#: Bytes a file source may have unread before ingest counts as behind (a 16th of what one
#: poll reads; a writer at 10 MB/s that is kept up with stays below): then event streams
#: wait for it (``MAX_PAUSE`` at most). List requests wait while anything is left to read
#: (``READER_PAUSE`` at most).
BEHIND_BYTES = 256 * 1024
#: Seconds a list request waits, at most, while ingest is behind (one at a time: list
#: requests are answered ten a second at most then).
READER_PAUSE = 0.1
#: Seconds between two log lines about dropped stream clients.
DROP_LOG_EVERY = 10.0
#: Where the app's ``__call__`` leaves the connection's transport in the scope (uvicorn).
_TRANSPORT = "retrywatch.transport"


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


class Health(BaseModel):
    status: str
    detail: list[str] = []


def create_app(engine: Engine, notifier: Notifier | None = None, *,
               api_token: str | None = None,
               max_stream_clients: int = MAX_STREAM_CLIENTS) -> FastAPI:
    """The API over ``engine``. ``api_token``: every endpoint but ``OPEN_PATHS`` requires
    ``Authorization: Bearer TOKEN``."""
    app = _App(title="retrywatch", version=__version__,
               description="nginx connections stuck in connect() retry loops.")
    app.api_token = api_token.encode() if api_token else None
    hub = StreamHub(engine, max_stream_clients)
    app.state.stream_hub = hub
    registry = new_registry(engine, notifier)
    registry.register(StreamCollector(hub))
    if api_token:
        _document_bearer(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return _LANDING.format(version=__version__, firing=len(engine.firing))

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    def healthz() -> Response:
        """Alive: the ingest loop has turned within ``stall_timeout`` seconds."""
        stalled = engine.health.stalled_for()
        body = (Health(status="ok") if stalled is None else
                Health(status="stalled", detail=[f"ingest loop stalled for {stalled:.0f} s"]))
        return Response(body.model_dump_json(), status_code=200 if stalled is None else 503,
                        media_type="application/json")

    @app.get("/readyz", response_model=Health, responses={503: {"model": Health}})
    def readyz() -> Response:
        """Ready: every source open and caught up. A path skipped (a FIFO under a glob) is
        told in ``detail``; neither it nor a file gone (deleted, until it is forgotten)
        makes the service unready."""
        stats = engine.source_stats()
        problems = [f"{info.name}: {'not open' if not info.open else 'lagging'}"
                    for info, _ in stats
                    if (not info.open or not info.caught_up)
                    and not info.extra.get("skipped") and not info.extra.get("gone_since")]
        notes = [f"{info.name}: skipped ({info.extra['skipped']})"
                 for info, _ in stats if info.extra.get("skipped")]
        problems += engine.health.problems()  # checkpoints failing, stalled, stopping
        body = Health(status="ready" if not problems else "not ready",
                      detail=problems + notes)
        return Response(body.model_dump_json(), status_code=503 if problems else 200,
                        media_type="application/json")

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {}}}})
    def metrics() -> Response:
        """Prometheus metrics."""
        return Response(render(registry), media_type=CONTENT_TYPE)

    @app.get("/api/v1/alerts", response_model=AlertList)
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
            # The API objects match AlertOut (tests check it): no second validation. The
            # offset by hand: any integer is valid, and orjson stops at 64 bits.
            return b'{"alerts":[%b],"total":%d,"limit":%d,"offset":%d}' % (
                b",".join(alerts), len(items), limit, offset)

        # One list read at a time: however many poll, one thread competes with ingest.
        body = await anyio.to_thread.run_sync(page, limiter=_one_at_a_time())
        return Response(body, media_type="application/json")

    @app.get("/api/v1/alerts/stream", response_class=Response,
             responses={200: {"content": {"text/event-stream": {}}},
                        503: {"description": "as many stream clients as max_stream_clients "
                                             "are connected: retry later (Retry-After)"}})
    async def stream() -> Response:
        """Server-Sent Events: ``fired``, ``updated``, ``confirmed`` (a suspected alert's
        evidence became strong) and ``resolved``, with the alert. Changes are coalesced per
        alert (its newest figures; a ``confirmed`` right after its ``fired`` is the fired
        event) and paced behind ingest in a storm; a client that does not read (its socket
        full for 2 s, 1 MiB of events queued) is disconnected and counted in
        ``retrywatch_stream_clients_dropped_total``: reconnect and read the alerts."""
        return _EventStream(hub)

    @app.get("/api/v1/alerts/{alert_id}", response_model=AlertOut,
             responses={404: {"description": "no such alert"}})
    def alert(alert_id: str) -> AlertData:
        found = engine.alert(alert_id)
        if found is None:
            raise HTTPException(404, f"no alert {alert_id}")
        return found

    @app.get("/api/v1/connections", response_model=ConnectionList)
    async def connections(
            limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict[str, Any]:
        """The hottest tracked connections now (those past their first few failures)."""

        def hottest() -> list[ConnectionData]:
            _yield_to_ingest(engine)
            return engine.connections(limit)

        return {"connections": await anyio.to_thread.run_sync(hottest,
                                                              limiter=_one_at_a_time())}

    @app.get("/api/v1/sources", response_model=SourceList)
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


class _App(FastAPI):
    """The FastAPI app, with what must happen before routing: the bearer token checked,
    and the connection's transport noted (a stream client that falls behind is cut)."""

    api_token: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # uvicorn's send is a method of its request cycle, which holds the transport.
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is not None and hasattr(transport, "abort"):
                scope[_TRANSPORT] = transport
            if (self.api_token is not None and scope["path"] not in OPEN_PATHS
                    and not _authorized(scope, self.api_token)):
                await JSONResponse(
                    {"detail": "a bearer token is required (Authorization: Bearer TOKEN)"},
                    status_code=401, headers={"WWW-Authenticate": 'Bearer realm="retrywatch"'},
                )(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def ingest_behind(engine: Engine, margin: int = BEHIND_BYTES) -> bool:
    """A file source has more than ``margin`` bytes not read yet, or a feed of more is
    under way (what a poll has read before it tells its lag): ingest is catching up on a
    backlog (a storm), and readers give it the processor first."""
    return engine.feeding > margin or any(info.open and (info.lag_bytes or 0) > margin
                                          for info in list(engine.info.values()))


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


def _document_bearer(app: FastAPI) -> None:
    """The OpenAPI schema says that every operation but the probes needs the token."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()  # kept by FastAPI as app.openapi_schema
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "The api_token setting."}}
        schema["security"] = [{"bearer": []}]
        for path in OPEN_PATHS:
            for operation in schema["paths"].get(path, {}).values():
                operation["security"] = []
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


class _Client:
    """One event-stream client: the pieces of events not written to it yet."""

    __slots__ = ("abort", "closed", "pieces", "queued", "ready", "writing_since")

    def __init__(self, abort: Callable[[], None] | None) -> None:
        self.pieces: deque[bytes] = deque()
        self.queued = 0  # bytes in pieces
        self.ready = asyncio.Event()
        self.closed = False
        self.abort = abort  # cuts the connection (None: not under uvicorn)
        #: when the write in progress began: a write waits only while the client's socket
        #: is full (it does not read); None between writes
        self.writing_since: float | None = None


class StreamHub:
    """The event stream's one engine subscriber, for every client.

    Under the engine's lock, a change is only noted (O(1)) and the event loop woken once.
    There, the changes noted are serialized once and the same bytes queued for every
    client (shared: memory does not grow with clients). Changes noted together are
    coalesced, per alert: its ``updated`` changes are one event (its newest figures), none
    at all when another of its events goes out (each event carries the figures of when it
    is written), and ``confirmed`` is left out when its ``fired`` is there (which then
    says ``confirmed``), as deliveries coalesce them.

    Readers never take the processor from ingest: while ingest is behind (a backlog, see
    :func:`ingest_behind`) nothing is written (``MAX_PAUSE`` at most), and writes to all
    clients together are paced to ``fanout_rate`` bytes a second: with many clients in a
    storm, events arrive later, and ingest keeps its pace.

    A client whose write has waited ``SLOW_AFTER`` seconds (its socket is full: it does
    not read) with more than ``backlog`` bytes still queued is disconnected and counted.
    At most ``max_clients`` at once: more are refused (503) and counted.
    """

    def __init__(self, engine: Engine, max_clients: int, *, backlog: int = STREAM_BACKLOG,
                 interval: float = STREAM_INTERVAL, fanout_rate: float = FANOUT_RATE) -> None:
        self.engine = engine
        self.max_clients = max_clients
        self.backlog = backlog
        self.interval = interval
        self.fanout_rate = fanout_rate
        self.clients: set[_Client] = set()
        self.dropped = 0  # clients cut for falling behind
        self.refused = 0  # clients refused at max_clients
        self._mutex = threading.Lock()  # the engine's thread notes, the loop takes
        self._ordered: list[AlertChange] = []  # fired, confirmed, resolved, in order
        self._listed: dict[str, str] = {}  # alert id -> the first kind it has in _ordered
        self._updates: dict[str, AlertChange] = {}  # the newest update of the others
        self._woken = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._owed = 0.0  # bytes written beyond the pace (a token bucket, in debt)
        self._owed_at = 0.0
        self._drops_unlogged = 0
        self._drop_logged_at = -DROP_LOG_EVERY

    @property
    def connected(self) -> int:
        return len(self.clients)

    # -- clients (the event loop) ------------------------------------------------------
    def join(self, abort: Callable[[], None] | None) -> _Client | None:
        """A new client, subscribed from now on; None at ``max_clients``."""
        if len(self.clients) >= self.max_clients:
            self.refused += 1
            return None
        client = _Client(abort)
        self.clients.add(client)
        if self._unsubscribe is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._task = self._loop.create_task(self._run(self._wake))
            self._unsubscribe = self.engine.subscribe(self._note)
        return client

    def leave(self, client: _Client) -> None:
        """The client is gone: the last one out unsubscribes."""
        client.closed = True
        self.clients.discard(client)
        if not self.clients and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
            if self._task is not None:
                self._task.cancel()
                self._task = None
            self._take()

    async def pace(self, size: int) -> None:
        """Wait for the turn of ``size`` bytes to one client: while ingest is behind
        (``MAX_PAUSE`` at most), and until the writes to all clients together are back
        within ``fanout_rate`` (a burst of ``PACE_BURST`` seconds' worth goes at once)."""
        waited = 0.0
        while waited < MAX_PAUSE and ingest_behind(self.engine):
            await asyncio.sleep(self.interval)
            waited += self.interval
        now = time.monotonic()
        self._owed = max(0.0, self._owed - (now - self._owed_at) * self.fanout_rate) + size
        self._owed_at = now
        delay = self._owed / self.fanout_rate - PACE_BURST
        if delay > 0:
            await asyncio.sleep(delay)

    def sweep(self) -> None:
        """Disconnect the clients that do not read: a write waiting ``SLOW_AFTER`` seconds
        with more than ``backlog`` bytes still queued behind it."""
        now = time.monotonic()
        for client in [c for c in self.clients if c.writing_since is not None
                       and now - c.writing_since > SLOW_AFTER and c.queued > self.backlog]:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        self.dropped += 1
        self.clients.discard(client)
        client.closed = True
        client.pieces.clear()
        client.queued = 0
        client.ready.set()
        if client.abort is not None:
            client.abort()  # what its socket holds is thrown away with it
        self._drops_unlogged += 1
        now = time.monotonic()
        if now - self._drop_logged_at >= DROP_LOG_EVERY:
            log.warning("event stream: %d client(s) disconnected for not reading (more than "
                        "%d bytes behind; %d in all)", self._drops_unlogged, self.backlog,
                        self.dropped)
            self._drops_unlogged = 0
            self._drop_logged_at = now

    # -- the engine's thread (under its lock: quick) ----------------------------------------
    def _note(self, change: AlertChange) -> None:
        aid, kind = change.alert.id, change.kind
        with self._mutex:
            listed = self._listed.get(aid)
            if kind == "updated":
                if listed is None:
                    self._updates[aid] = change
            elif not (kind == "confirmed" and listed == "fired"):
                self._updates.pop(aid, None)
                self._ordered.append(change)
                self._listed.setdefault(aid, kind)
            if self._woken:
                return
            self._woken = True
            loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                loop.call_soon_threadsafe(wake.set)

    # -- the event loop: serialize once, queue for each -------------------------------------
    async def _run(self, wake: asyncio.Event) -> None:
        while True:
            with anyio.move_on_after(SLOW_AFTER / 2):
                await wake.wait()
            try:
                self.sweep()
                if not wake.is_set():
                    continue
                # The changes of one interval go together; first, the poll that made them
                # tells its lag. While ingest is catching up on a backlog the changes wait
                # (MAX_PAUSE at most) and are coalesced meanwhile.
                paused = 0.0
                while True:
                    await asyncio.sleep(self.interval)
                    paused += self.interval
                    if paused >= MAX_PAUSE or not ingest_behind(self.engine):
                        break
                wake.clear()
                await self.flush()
            except Exception:  # a bug must not silence every stream
                log.exception("event stream")

    def _take(self) -> list[AlertChange]:
        with self._mutex:
            changes = [*self._ordered, *self._updates.values()]
            self._ordered, self._listed, self._updates, self._woken = [], {}, {}, False
        return changes

    async def flush(self) -> None:
        """The changes noted, as events, queued for every client. Serialized a batch at a
        time: the event loop answers other requests in between (a storm's thousands of
        alerts take tens of milliseconds)."""
        changes = self._take()
        if not changes or not self.clients:
            return
        events: list[bytes] = []
        for i in range(0, len(changes), SERIALIZE_BATCH):
            if i:
                await asyncio.sleep(0)
            events += [_event(change) for change in changes[i:i + SERIALIZE_BATCH]]
        pieces = list(_pieces(events))
        size = sum(map(len, pieces))
        for client in self.clients:
            client.pieces.extend(pieces)
            client.queued += size
            client.ready.set()


def _pieces(events: Iterable[bytes]) -> Iterable[bytes]:
    """Events joined into pieces of about ``STREAM_PIECE`` bytes (an event is never cut)."""
    batch: list[bytes] = []
    size = 0
    for event in events:
        if batch and size + len(event) > STREAM_PIECE:
            yield b"".join(batch)
            batch, size = [], 0
        batch.append(event)
        size += len(event)
    if batch:
        yield b"".join(batch)


class _EventStream(Response):
    """``/api/v1/alerts/stream`` for one client: joins the hub (or answers 503), writes
    what is queued for it, and leaves when the client goes, falls behind, or the server
    stops."""

    media_type = "text/event-stream"

    def __init__(self, hub: StreamHub) -> None:
        super().__init__(media_type=self.media_type)
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = scope.get(_TRANSPORT)
        client = self.hub.join(transport.abort if transport is not None else None)
        if client is None:
            await JSONResponse(
                {"detail": f"{self.hub.max_clients} event-stream clients are connected, the "
                           "most allowed (max_stream_clients): retry later"},
                status_code=503, headers={"Retry-After": "5"})(scope, receive, send)
            return
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream; charset=utf-8"),
                                    (b"cache-control", b"no-cache")]})
            async with anyio.create_task_group() as group:
                async def gone() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(gone)
                await self._pump(client, send)
                group.cancel_scope.cancel()
        finally:
            self.hub.leave(client)

    async def _pump(self, client: _Client, send: Send) -> None:
        await send({"type": "http.response.body", "body": b": retrywatch alert stream\n\n",
                    "more_body": True})
        while not client.closed:
            if not client.pieces:
                client.ready.clear()
                with anyio.move_on_after(KEEPALIVE) as waited:
                    await client.ready.wait()
                if waited.cancelled_caught:
                    await send({"type": "http.response.body", "body": b": keep-alive\n\n",
                                "more_body": True})
                continue
            await self.hub.pace(len(client.pieces[0]))
            if client.closed or not client.pieces:
                continue
            piece = client.pieces.popleft()
            client.writing_since = time.monotonic()
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            client.writing_since = None
            client.queued -= len(piece)
        if client.abort is None:  # dropped, but no transport to cut: end the response
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def _event(change: AlertChange) -> bytes:
    """The event of a change. Written without the engine's lock, as the figures are then
    (the JSON a list request made under it, when the alert has not changed since)."""
    alert = change.alert
    data = alert.json_made or orjson.dumps(alert.to_dict())
    return (b"event: " + change.kind.encode() + b"\nid: " + alert.id.encode()
            + b"\ndata: " + data + b"\n\n")


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
