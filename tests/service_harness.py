"""The HTTP service under a real uvicorn server on 127.0.0.1, in a background thread.

The listening socket is bound (port 0: the kernel picks a free one) and listening before
the server thread starts, so a client may connect at once: the kernel queues the
connection until uvicorn accepts it. No sleeping, no port race.
"""

from __future__ import annotations

import gzip
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from nginx_harness import free_port

from retrywatch.delivery.notifier import Notifier
from retrywatch.detect.core import DetectorConfig
from retrywatch.detect.engine import Engine
from retrywatch.serve.api import create_app

__all__ = ["STORM", "STORM_FIRING_CID", "FakeClock", "LiveServer", "feed_storm", "free_port",
           "new_engine", "serving", "stop_process", "wait_until"]

STORM = Path(__file__).parent.parent / "sample_logs" / "scenario-http-lua-storm.error.log.gz"
#: The unix-socket storm of that sample: its alert is still firing at the end of the file.
STORM_FIRING_CID = 49447
SOURCE = "nginx"
CHUNK = 1 << 20
STOP_TIMEOUT = 10.0  # seconds: the bound on a server's shutdown


UTC = ZoneInfo("UTC")


def new_engine(tz: tzinfo = UTC, **kwargs: object) -> Engine:
    """An engine with one file source named ``nginx`` (UTC, like the samples, unless
    ``tz`` says otherwise)."""
    engine = Engine(DetectorConfig(), tz, **kwargs)  # type: ignore[arg-type]
    engine.add_source(SOURCE, "file")
    return engine


def storm_bytes() -> bytes:
    return gzip.decompress(STORM.read_bytes())


def feed_storm(engine: Engine, *, chunk: int = CHUNK, end: bool = True) -> None:
    """The real storm sample into ``engine`` a chunk at a time, then its end."""
    data = storm_bytes()
    for i in range(0, len(data), chunk):
        engine.feed(SOURCE, data[i:i + chunk])
    if end:
        engine.end(SOURCE)


@dataclass(slots=True)
class LiveServer:
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread
    url: str

    def client(self, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@contextmanager
def serving(engine: Engine, *, timeout: float = 10.0,
            notifier: Notifier | None = None) -> Iterator[LiveServer]:
    """``create_app(engine, notifier)`` served by uvicorn on 127.0.0.1 (a free port) until exit.

    On entry the server has answered ``/healthz`` (bounded by ``timeout``); on exit it is
    asked to stop, with open streams cut after one second, and its thread joined.
    """
    app = create_app(engine, notifier)
    sock = _listening_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name=f"uvicorn-{port}", daemon=True)
    thread.start()
    live = LiveServer(app, server, thread, f"http://127.0.0.1:{port}")
    try:
        # The socket already listens: this request waits in the backlog until uvicorn runs.
        response = httpx.get(f"{live.url}/healthz", timeout=timeout)
        response.raise_for_status()
        yield live
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        sock.close()
        if thread.is_alive():
            raise RuntimeError(f"uvicorn on port {port} did not stop in {STOP_TIMEOUT}s")


def wait_until(what: str, check: Callable[[], bool], process: subprocess.Popen[bytes],
               log: Path, *, wait: float, poll: float,
               context: Callable[[], str] = lambda: "") -> None:
    """Ask ``check`` until it holds, for a server ``process`` writing to ``log``: fail at
    once if the process exits, and after ``wait`` seconds with the end of its log (and
    ``context()``). A refused connection counts as not yet."""
    pause = threading.Event()
    deadline = time.monotonic() + wait
    name = Path(str(process.args[0] if isinstance(process.args, list) else process.args)).name
    while True:
        if process.poll() is not None:
            pytest.fail(f"{name} exited ({process.returncode}):\n"
                        f"{log.read_text(errors='replace')}")
        try:
            if check():
                return
        except httpx.TransportError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {wait}s\n{context()}"
                        f"log:\n{log.read_text(errors='replace')[-4000:]}")
        pause.wait(poll)


class FakeClock:
    """Wall time that moves only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate a server the test started; kill it if it does not stop in 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
