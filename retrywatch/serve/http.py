"""The HTTP server: uvicorn, bounded so that idle, half-open or too many connections
cannot take the service down (``/healthz`` keeps answering, no CPU spin, no log flood).

uvicorn alone keeps a connection that never sends a whole request head open forever,
counts such connections against ``limit_concurrency`` (so a few hundred of them make it
answer 503 to everyone), and once the process is out of descriptors, asyncio's accept
loop logs a traceback per attempt and spins. Here:

- **a connection cap** (``http_max_connections``, lowered to half of what ``ulimit -n``
  leaves after :data:`FD_RESERVE` descriptors, TCP syslog having the other half): past
  it, the *oldest connection without a request in progress* is closed to make room (a
  probe's fresh connection is served);
- **a header timeout** (``http_header_timeout``): a connection that has not sent a whole
  request head in that time after it opened, or after its last response, is closed;
  kept-alive connections idle for :data:`KEEP_ALIVE` seconds are closed (uvicorn);
- **a bound on a request head** (:data:`MAX_HEAD`, h11's incomplete event size);
- **out of descriptors** (``EMFILE``, whatever holds them): the listening socket takes the
  waiting connection off the queue with a spare descriptor and closes it at once, so the
  event loop neither spins nor logs per attempt; one line every :data:`LOG_EVERY` seconds;
- uvicorn's own warnings (a bad request, the concurrency limit) are rate-limited likewise;
  its own answers (400 to a request it cannot read, 503 past the concurrency backstop)
  are problem documents, as the API's (serve/problems.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import time
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from retrywatch.errors import ListenError
from retrywatch.serve.problems import MEDIA_TYPE, problem_body, problem_response

__all__ = ["FD_RESERVE", "HTTP_CLOSE_REASONS", "KEEP_ALIVE", "LOG_EVERY", "MAX_HEAD",
           "BoundedServer", "bounded_server", "connection_cap", "listen_socket"]

log = logging.getLogger("retrywatch")

#: Descriptors kept for everything but HTTP clients (files, the state database, syslog).
FD_RESERVE = 128
#: Seconds a kept-alive connection may sit idle between requests.
KEEP_ALIVE = 5
#: The largest request head (request line and headers), bytes: a longer one gets 400.
MAX_HEAD = 16 * 1024
#: Seconds between two log lines of one kind of trouble.
LOG_EVERY = 10.0
#: Seconds open event streams may hold up the HTTP server's stop.
GRACEFUL_SHUTDOWN = 3
#: Why the server closes a connection itself: over the cap (the oldest without a request
#: in progress), no whole request head in time, out of descriptors at accept.
HTTP_CLOSE_REASONS = ("evicted", "header_timeout", "out_of_descriptors")


def connection_cap(wanted: int, reserve: int = FD_RESERVE) -> int:
    """``wanted``, lowered to half of what the soft ``RLIMIT_NOFILE`` leaves after
    ``reserve`` (the other half is TCP syslog's, which holds itself to the same)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, (soft - reserve) // 2))


class _RateLimit(logging.Filter):
    """Each message (by its template) at most once per ``every`` seconds; the next one
    says how many were left out."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        super().__init__()
        self.every = every
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) < self.every:
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return False
        self._last[key] = now
        left_out = self._left_out.pop(key, 0)
        if left_out:
            record.msg = f"{record.msg} ({left_out} more like it left out)"
        return True


class _Connections:
    """One server's connections without a request in progress, oldest first, and the
    bounds they are held to."""

    def __init__(self, cap: int, header_timeout: float) -> None:
        self.cap = cap
        self.header_timeout = header_timeout
        self.waiting: dict[H11Protocol, None] = {}
        self.evicted = 0
        self.timed_out = 0


def _protocol(connections: _Connections) -> type[H11Protocol]:
    class BoundedH11(H11Protocol):
        """h11 with the cap and the header timeout of ``connections``."""

        _armed: object = None
        _timer: asyncio.TimerHandle | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if self.limit_concurrency is not None:  # answered by _backstop instead
                self.app = _backstop(self.app, self.connections, self.tasks,
                                     self.limit_concurrency)
                self.limit_concurrency = None

        def send_400_response(self, msg: str) -> None:
            """A request that cannot be read (malformed, its head over ``MAX_HEAD``)."""
            body = problem_body(400, "the request could not be read: not HTTP/1.1, or its "
                                     f"head over {MAX_HEAD} bytes ({msg})")
            headers = [(b"content-type", MEDIA_TYPE.encode()), (b"connection", b"close")]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event) or b"")
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._wait_for_head()
            if len(self.connections) > connections.cap and connections.waiting:
                oldest = next(iter(connections.waiting))
                connections.evicted += 1
                oldest._close()  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not self._armed:  # a whole head arrived: a request is going
                self._stop_waiting()

        def on_response_complete(self) -> None:
            cycle = self.cycle
            super().on_response_complete()
            if self.cycle is cycle and not self.transport.is_closing():
                self._wait_for_head()  # kept alive: the next head has the same time

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def _wait_for_head(self) -> None:
            self._stop_waiting()
            self._armed = self.cycle
            connections.waiting[self] = None
            self._timer = self.loop.call_later(connections.header_timeout, self._timeout)

        def _stop_waiting(self) -> None:
            connections.waiting.pop(self, None)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _timeout(self) -> None:
            self._timer = None
            if self.cycle is self._armed and not self.transport.is_closing():
                connections.timed_out += 1
                self._close()

        def _close(self) -> None:
            self._stop_waiting()
            if not self.transport.is_closing():
                self.transport.close()

    return BoundedH11


def _backstop(app: ASGIApp, connections: set[Any], tasks: set[Any], limit: int) -> ASGIApp:
    """``app`` behind uvicorn's ``limit_concurrency`` (connections or requests at once),
    its 503 a problem document (the request's own task is among ``tasks`` here)."""

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (len(connections) >= limit or len(tasks) > limit):
            logging.getLogger("uvicorn.error").warning("Exceeded concurrency limit.")
            await problem_response(
                503, "too many connections at once: retry later", scope["path"],
                headers={"Retry-After": "5", "Connection": "close"})(scope, receive, send)
            return
        await app(scope, receive, send)

    return limited


class _ListeningSocket(socket.socket):
    """A listening socket whose ``accept`` survives running out of descriptors: the
    waiting connection is taken off the queue with a spare descriptor and closed (the
    client sees it closed), and asyncio is told there is nothing to accept, instead of
    an error it logs with a traceback and retries in a busy loop."""

    _spare: int | None = None
    refused = 0
    _logged_at = float("-inf")

    def keep_spare(self) -> None:
        self._spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def accept(self) -> tuple[socket.socket, Any]:
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE) or self._spare is None:
                raise
            self._shed(exc)
            raise BlockingIOError(errno.EAGAIN, "out of descriptors: connection shed") from exc

    def _shed(self, exc: OSError) -> None:
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
        try:
            fd, _ = self._accept()  # type: ignore[attr-defined]
            os.close(fd)
            self.refused += 1
        except OSError:
            pass
        finally:
            try:
                self.keep_spare()
            except OSError:  # taken meanwhile: asyncio's own back-off from now on
                self._spare = None
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            log.error("HTTP: out of descriptors (%s): new connections are closed at once "
                      "(%d so far); raise ulimit -n or lower http_max_connections",
                      exc.strerror, self.refused)


def listen_socket(host: str, port: int) -> _ListeningSocket:
    """The socket bound to ``host:port``; :class:`ListenError` when it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = _ListeningSocket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.keep_spare()
    except OSError as exc:
        sock.close()
        raise ListenError(f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}",
                          exc) from exc
    sock.set_inheritable(True)
    return sock


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's errors, rate-limited like every other line of trouble here."""
    message = str(context.get("message"))
    exc = context.get("exception")
    detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
    logging.getLogger("asyncio").error("%s%s", message, detail)


class BoundedServer(uvicorn.Server):
    """uvicorn on a socket of our own (bound at construction), with the bounds above.
    Signals are not its business: run it in a thread; stop it with ``should_exit``."""

    def __init__(self, config: uvicorn.Config, sock: _ListeningSocket,
                 connections: _Connections) -> None:
        super().__init__(config)
        self.socket = sock
        self.connections = connections

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def closed(self) -> dict[str, int]:
        """Connections closed by the bounds, by reason (HTTP_CLOSE_REASONS)."""
        c = self.connections
        return {"evicted": c.evicted, "header_timeout": c.timed_out,
                "out_of_descriptors": self.socket.refused}

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        super().run(sockets=sockets or [self.socket])

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().set_exception_handler(_loop_exception)
        await super().serve(sockets=sockets)

    def close(self) -> None:
        spare = self.socket._spare
        if spare is not None:
            self.socket._spare = None
            os.close(spare)
        self.socket.close()


def bounded_server(app: Any, host: str, port: int, *, max_connections: int,
                   header_timeout: float, **uvicorn_options: Any) -> BoundedServer:
    """The server for ``app`` on ``host:port`` (bound now: :class:`ListenError` when it
    cannot be); ``uvicorn_options`` go to ``uvicorn.Config`` (TLS files, for one)."""
    cap = connection_cap(max_connections)
    connections = _Connections(cap, header_timeout)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        http=_protocol(connections),
        # uvicorn counts connections, idle ones too, against limit_concurrency: the cap
        # keeps them under it (a closed one leaves a moment later), so it is a backstop.
        limit_concurrency=cap + 64,
        timeout_keep_alive=KEEP_ALIVE,
        h11_max_incomplete_event_size=MAX_HEAD,
        **uvicorn_options)
    for name in ("uvicorn.error", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RateLimit) for f in logger.filters):
            logger.addFilter(_RateLimit())
    sock = listen_socket(host, port)
    return BoundedServer(config, sock, connections)
