"""``/api/v1/alerts/stream``: Server-Sent Events of the alerts' changes, for many clients.

One engine subscriber for all the clients (:class:`StreamHub`): each change is encoded
once and the same bytes are queued for every client, in pieces of ``STREAM_PIECE`` bytes
at most, paced behind ingest. Each event has an id: a sequence number of this process
(see :class:`StreamHub`), kept with the event in a bounded history, so that a client that
reconnects with ``Last-Event-ID`` (or ``?last_event_id=``) gets what it missed.

The events are encoded by sse-starlette's :class:`~sse_starlette.ServerSentEvent`, but
written by :class:`EventStream`, not its ``EventSourceResponse``: that one encodes what a
client's generator yields, per client, with a ping task and a shutdown watcher each;
here hundreds of clients share one encoding per change, and a client that does not read
is cut by its transport (see ``SLOW_AFTER``). The headers are those it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

import anyio
import orjson
from sse_starlette import ServerSentEvent
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from retrywatch.detect.alerts import AlertChange
from retrywatch.detect.disk import DiskChange
from retrywatch.detect.engine import Engine
from retrywatch.detect.upstreams import UpstreamChange
from retrywatch.serve.problems import problem_response

#: A change the stream tells: a runaway connection's alert, a disk alert (``disk_`` and
#: its kind: ``disk_fired``, ``disk_resolved``) or an upstream alert (``upstream_fired``,
#: ``upstream_resolved``).
Change = AlertChange | DiskChange | UpstreamChange

__all__ = ["HEADERS", "HISTORY", "KEEPALIVE", "RESUME_GRACE", "RETRY_MS", "EventStream",
           "StreamHub", "ingest_behind"]

log = logging.getLogger("retrywatch")

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
#: Events kept for clients that reconnect (``Last-Event-ID``), and their bytes at most.
HISTORY = 10_000
HISTORY_BYTES = 32 << 20
#: Seconds the hub stays subscribed after its last client left: a client reconnecting
#: within them resumes where it was (later, the changes in between were not seen: reset).
RESUME_GRACE = 30.0
#: Milliseconds a browser waits before it reconnects (the ``retry:`` field).
RETRY_MS = 3000
#: Bytes a file source may have unread before ingest counts as behind (a 16th of what one
#: poll reads; a writer at 10 MB/s that is kept up with stays below): then event streams
#: wait for it (``MAX_PAUSE`` at most).
BEHIND_BYTES = 256 * 1024
#: Seconds between two log lines about dropped stream clients.
DROP_LOG_EVERY = 10.0
#: The response's headers, as sse-starlette's (``X-Accel-Buffering``: nginx in front does
#: not buffer the stream), but ``no-cache`` as the SSE specification has it.
HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"),
           (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
GREETING = "retrywatch alert stream"
#: Where the app's ``__call__`` leaves the connection's transport in the scope (uvicorn).
TRANSPORT = "retrywatch.transport"


def ingest_behind(engine: Engine, margin: int = BEHIND_BYTES) -> bool:
    """A file source has more than ``margin`` bytes not read yet, or a feed of more is
    under way (what a poll has read before it tells its lag): ingest is catching up on a
    backlog (a storm), and readers give it the processor first."""
    return engine.feeding > margin or any(info.open and (info.lag_bytes or 0) > margin
                                          for info in list(engine.info.values()))


class _Client:
    """One event-stream client: the pieces of events not written to it yet."""

    __slots__ = ("abort", "closed", "pieces", "preamble", "queued", "ready", "writing_since")

    def __init__(self, abort: Callable[[], None] | None) -> None:
        self.preamble = b""  # written first, at once: the greeting (and a reset)
        self.pieces: deque[bytes] = deque()
        self.queued = 0  # bytes in pieces
        self.ready = asyncio.Event()
        self.closed = False
        self.abort = abort  # cuts the connection (None: not under uvicorn)
        #: when the write in progress began: a write waits only while the client's socket
        #: is full (it does not read); None between writes
        self.writing_since: float | None = None

    def queue(self, pieces: list[bytes]) -> None:
        self.pieces.extend(pieces)
        self.queued += sum(map(len, pieces))
        self.ready.set()


class StreamHub:
    """The event stream's one engine subscriber, for every client.

    Under the engine's lock, a change is only noted (O(1)) and the event loop woken once.
    There, the changes noted are serialized once and the same bytes queued for every
    client (shared: memory does not grow with clients). Changes noted together are
    coalesced, per alert: its ``updated`` changes are one event (its newest figures), none
    at all when another of its events goes out (each event carries the figures of when it
    is written), and ``confirmed`` is left out when its ``fired`` is there (which then
    says ``confirmed``), as deliveries coalesce them.

    Event ids: one sequence for the process, each event the last id plus one; the first
    is the time the hub was made, in microseconds since the epoch, so that the ids of an
    earlier run are below those of this one (unless the clock went back). The last
    ``history`` events are kept (``HISTORY_BYTES`` at most): a client that gives the id
    of the last event it had gets every later one first, if they are all kept; otherwise
    (an id too old, of another run, or from before a time when the hub had no client for
    ``resume_grace`` seconds and so saw no change) a ``reset`` event: read the alerts
    again. A client that gives no id gets the last id issued in its greeting (a browser
    that reconnects then resumes from there).

    Readers never take the processor from ingest: while ingest is behind (a backlog, see
    :func:`ingest_behind`) nothing is written (``MAX_PAUSE`` at most), and writes to all
    clients together are paced to ``fanout_rate`` bytes a second: with many clients in a
    storm, events arrive later, and ingest keeps its pace.

    A client whose write has waited ``SLOW_AFTER`` seconds (its socket is full: it does
    not read) with more than ``backlog`` bytes still queued is disconnected and counted.
    At most ``max_clients`` at once: more are refused (503) and counted.
    """

    def __init__(self, engine: Engine, max_clients: int = MAX_STREAM_CLIENTS, *,
                 backlog: int = STREAM_BACKLOG, interval: float = STREAM_INTERVAL,
                 fanout_rate: float = FANOUT_RATE, history: int = HISTORY,
                 resume_grace: float = RESUME_GRACE, keepalive: float = KEEPALIVE) -> None:
        self.engine = engine
        self.max_clients = max_clients
        self.backlog = backlog
        self.interval = interval
        self.fanout_rate = fanout_rate
        self.resume_grace = resume_grace
        self.keepalive = keepalive
        self.clients: set[_Client] = set()
        self.dropped = 0  # clients cut for falling behind
        self.refused = 0  # clients refused at max_clients
        self.last_id = time.time_ns() // 1000  # the id of the last event
        self._first_id = self.last_id + 1
        self._history: deque[tuple[int, bytes]] = deque()
        self._history_max = history
        self._history_bytes = 0
        self._complete_after = self.last_id  # every event after this id is in _history
        self._missed = False  # unsubscribed a while: changes went unseen
        self._mutex = threading.Lock()  # the engine's thread notes, the loop takes
        self._ordered: list[Change] = []  # fired, confirmed, resolved, in order
        self._listed: dict[str, str] = {}  # alert id -> the first kind it has in _ordered
        self._updates: dict[str, Change] = {}  # the newest update of the others
        self._woken = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._owed = 0.0  # bytes written beyond the pace (a token bucket, in debt)
        self._owed_at = 0.0
        self._drops_unlogged = 0
        self._drop_logged_at = -DROP_LOG_EVERY

    @property
    def connected(self) -> int:
        return len(self.clients)

    # -- clients (the event loop) ------------------------------------------------------
    def join(self, abort: Callable[[], None] | None,
             last_event_id: str | None = None) -> _Client | None:
        """A new client, subscribed from now on, with what it missed after
        ``last_event_id`` queued first (or a reset); None at ``max_clients``."""
        if len(self.clients) >= self.max_clients:
            self.refused += 1
            return None
        self._subscribe()
        client = _Client(abort)
        self.clients.add(client)
        if last_event_id is None:
            client.preamble = _encode(comment=GREETING, id=str(self.last_id), retry=RETRY_MS)
            return client
        after = _event_id(last_event_id)
        if after is None or not self._complete_after <= after <= self.last_id:
            why = ("not an event id of this run of the service"
                   if after is None or not self._first_id - 1 <= after <= self.last_id
                   else "the events after it are no longer kept")
            client.preamble = (_encode(comment=GREETING, retry=RETRY_MS) + _encode(
                orjson.dumps({"reason": why, "read": "/api/v1/alerts"}).decode(),
                event="reset", id=str(self.last_id)))
            return client
        client.preamble = _encode(comment=GREETING, retry=RETRY_MS)
        first = self._history[0][0] if self._history else self.last_id + 1
        missed = itertools.islice(self._history, after + 1 - first, None)
        client.queue(list(_pieces(event for _, event in missed)))
        return client

    def leave(self, client: _Client) -> None:
        """The client is gone: ``resume_grace`` seconds after the last one is out, the hub
        unsubscribes."""
        client.closed = True
        self.clients.discard(client)
        if self.clients or self._unsubscribe is None or self._idle is not None:
            return
        if self.resume_grace > 0 and self._loop is not None:
            self._idle = self._loop.call_later(self.resume_grace, self._stop)
        else:
            self._stop()

    def _subscribe(self) -> None:
        loop = asyncio.get_running_loop()
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._unsubscribe is not None and self._loop is not loop:
            self._stop()  # subscribed from an event loop that is gone (tests)
        if self._unsubscribe is not None:
            return
        if self._missed:  # the changes since were not seen: no id before is resumable
            self.last_id += 1
            self._history.clear()
            self._history_bytes = 0
            self._complete_after = self.last_id
            self._missed = False
        self._loop = loop
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run(self._wake))
        self._unsubscribe = self.engine.subscribe(self._note)

    def _stop(self) -> None:
        """Unsubscribe, unless a client came back meanwhile."""
        self._idle = None
        if self.clients or self._unsubscribe is None:
            return
        self._unsubscribe()
        self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._take()
        self._missed = True

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
    def _note(self, change: Change) -> None:
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

    def _take(self) -> list[Change]:
        with self._mutex:
            changes = [*self._ordered, *self._updates.values()]
            self._ordered, self._listed, self._updates, self._woken = [], {}, {}, False
        return changes

    async def flush(self) -> None:
        """The changes noted, as events, kept and queued for every client. Serialized a
        batch at a time: the event loop answers other requests in between (a storm's
        thousands of alerts take tens of milliseconds); a client that joins in between
        has the batches before from the history."""
        changes = self._take()
        for i in range(0, len(changes), SERIALIZE_BATCH):
            if i:
                await asyncio.sleep(0)
            events = [self._keep(change) for change in changes[i:i + SERIALIZE_BATCH]]
            if self.clients:
                pieces = list(_pieces(events))
                for client in self.clients:
                    client.queue(pieces)

    def _keep(self, change: Change) -> bytes:
        """The change's event, with the next id, kept in the history."""
        self.last_id += 1
        event = _event(change, self.last_id)
        self._history.append((self.last_id, event))
        self._history_bytes += len(event)
        while len(self._history) > self._history_max or self._history_bytes > HISTORY_BYTES:
            gone, old = self._history.popleft()
            self._history_bytes -= len(old)
            self._complete_after = gone
        return event


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


def _encode(data: str | None = None, *, event: str | None = None, id: str | None = None,
            retry: int | None = None, comment: str | None = None) -> bytes:
    """One event (or comment) as SSE has it, with LF line ends (shorter than CRLF)."""
    return ServerSentEvent(data, event=event, id=id, retry=retry, comment=comment,
                           sep="\n").encode()


def _event(change: Change, event_id: int) -> bytes:
    """The event of a change. Written without the engine's lock, as the figures are then
    (the JSON a list request made under it, when the alert has not changed since)."""
    if isinstance(change, DiskChange | UpstreamChange):  # (its data as of the change)
        return _encode(orjson.dumps(change.data).decode(),
                       event=f"{change.EVENT}_{change.kind}", id=str(event_id))
    alert = change.alert
    data = alert.json_made or orjson.dumps(alert.to_dict())
    return _encode(data.decode(), event=change.kind, id=str(event_id))


def _event_id(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 20 else None


class EventStream(Response):
    """``/api/v1/alerts/stream`` for one client: joins the hub (or answers 503), writes
    what is queued for it, and leaves when the client goes, falls behind, or the server
    stops."""

    media_type = "text/event-stream"

    def __init__(self, hub: StreamHub, last_event_id: str | None = None) -> None:
        super().__init__(media_type=self.media_type)
        self.hub = hub
        self.last_event_id = last_event_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = scope.get(TRANSPORT)
        client = self.hub.join(transport.abort if transport is not None else None,
                               self.last_event_id)
        if client is None:
            await problem_response(
                503, f"{self.hub.max_clients} event-stream clients are connected, the most "
                     "allowed (max_stream_clients): retry later", scope["path"],
                headers={"Retry-After": "5"})(scope, receive, send)
            return
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
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
        await send({"type": "http.response.body", "body": client.preamble, "more_body": True})
        while not client.closed:
            if not client.pieces:
                client.ready.clear()
                with anyio.move_on_after(self.hub.keepalive) as waited:
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
