"""A real HTTP receiver on 127.0.0.1 in a thread, scripted to fail and recover.

Each request takes the next action of ``script`` (then ``default``): an HTTP status to
answer, a status with response headers (``(429, {"Retry-After": "2"})``) and a body
(``(400, {}, b"why")``), or ``"hang"``
(answer nothing until the test ends: the client times out). What was received is kept,
stamped with ``clock`` (a test's fake clock, or ``time.monotonic``); ``wait_for`` blocks
on a condition with a deadline, no sleeping.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Action = int | str | tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes]

__all__ = ["Received", "WebhookReceiver", "closed_port", "receiving"]


@dataclass(slots=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = 0.0  #: the receiver's clock when the request arrived

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    script: list[Action] = field(default_factory=list)
    default: Action = 200
    requests: list[Received] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    release: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], float] = time.monotonic
    url: str = ""

    def next_action(self) -> Action:
        with self.cond:
            return self.script.pop(0) if self.script else self.default

    def record(self, received: Received) -> None:
        with self.cond:
            self.requests.append(received)
            self.cond.notify_all()

    @property
    def ok(self) -> list[Received]:
        with self.cond:
            return [r for r in self.requests if 200 <= r.status < 300]

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{what}: not within {timeout}s; "
                                         f"received {len(self.requests)} request(s)")
                self.cond.wait(min(left, 0.05))


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            action = receiver.next_action()
            at = receiver.clock()
            if action == "hang":
                receiver.record(Received(self.path, dict(self.headers), body, 0, at))
                receiver.release.wait(30)
                return
            status, headers, *answer = action if isinstance(action, tuple) else (int(action), {})
            receiver.record(Received(self.path, dict(self.headers), body, status, at))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            payload = answer[0] if answer else b""
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def closed_port() -> int:
    """A port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def receiving(receiver: WebhookReceiver | None = None, port: int = 0) -> Iterator[WebhookReceiver]:
    receiver = receiver or WebhookReceiver()
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(receiver))
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
