"""``retrywatch run`` as a real process for the API's load and access tests, a generated
retry storm, and a crowd of raw event-stream clients (all on 127.0.0.1, every wait
bounded)."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from calendar import timegm
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from nginx_harness import free_port

__all__ = ["ROOT", "START", "Crowd", "Run", "clean_env", "poll", "running", "storm"]

ROOT = Path(__file__).parent.parent
WAIT = 30.0  # seconds: the default bound of a wait
STEP = 0.05
STOP_TIMEOUT = 10.0
START = timegm((2019, 9, 17, 3, 46, 20, 0, 0, 0))

T = TypeVar("T")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any RETRYWATCH_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYWATCH_")}
    env.update(extra)
    return env


def poll(what: str, probe: Callable[[], T | None], timeout: float = WAIT) -> T:
    """``probe()`` until it returns something other than None/False; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(STEP)


def storm(alerts: int, *, failures: int = 12, filler: int = 0, first_cid: int = 1000,
          start: int = START, per_second: int = 4000, query: str = "") -> tuple[bytes, int]:
    """An nginx error log of ``alerts`` runaway HTTP connections (``failures`` connect
    failures each, two peers in turn, eight at once) and ``filler`` other lines, in time
    order from ``start``; (the bytes, the number of lines). ``query``: the requests' query
    string (``?token=...``)."""
    out: list[str] = []
    active: list[list[int]] = []  # [cid, failures left], eight at once
    next_cid = first_cid
    total = alerts * failures + filler
    for n in range(total):
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(start + n // per_second))
        if (n * filler) // total != ((n + 1) * filler) // total:  # spread evenly
            out.append(f"{stamp} [info] 2455#2455: *{9_000_000 + n} client 10.0.3.{n % 250} "
                       "closed keepalive connection\n")
            continue
        while len(active) < 8 and next_cid < first_cid + alerts:
            active.append([next_cid, failures])
            next_cid += 1
        slot = active[n % len(active)]
        cid, left = slot
        peer = f"10.12.{cid % 200}.{left % 2 + 1}:5555"
        out.append(
            f"{stamp} [error] 2454#2454: *{cid} connect() failed (111: Connection refused) "
            f"while connecting to upstream, client: 10.10.{cid % 250}.9, server: shop.test, "
            f'request: "GET /cart{query} HTTP/1.1", upstream: "http://{peer}/cart{query}", '
            f'host: "shop.test", referrer: "https://shop.test/{query}"\n')
        slot[1] -= 1
        if slot[1] == 0:
            active.remove(slot)
    return "".join(out).encode(), total


class Run:
    """One ``retrywatch run`` subprocess on a free 127.0.0.1 port (``https``: with the
    client's ``verify`` context; ``token``: sent by :meth:`get` and :meth:`metric`)."""

    def __init__(self, args: list[str], workdir: Path, *, env: dict[str, str] | None = None,
                 token: str | None = None, verify: ssl.SSLContext | None = None,
                 wait: bool = True) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.output = workdir / f"retrywatch-{self.port}.out"
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "retrywatch", "run", *args,
                 "--listen", f"127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                env=env or clean_env())
        scheme = "https" if verify is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, timeout=5.0, headers=headers,
                                   verify=verify if verify is not None else True)
        if wait:
            poll("the service to answer /healthz", self.healthy)

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"retrywatch run exited with {self.process.returncode}:\n"
                        + self.log())
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response.json() if "json" in response.headers["content-type"] else response.text

    def metric(self, name: str) -> float:
        """The sum of every series of ``name`` on /metrics (0 when it is not there)."""
        return sum(float(m.group(1)) for m in re.finditer(
            rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", self.get("/metrics"), re.M))

    def lines_read(self) -> int:
        return int(self.metric("retrywatch_source_lines_read_total"))

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def peak_rss_mib(self) -> float:
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(r"^VmHWM:\s+(\d+) kB$", text, re.M)
        assert found is not None
        return int(found.group(1)) / 1024

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


@contextlib.contextmanager
def running(args: list[str], workdir: Path, **kwargs: Any) -> Iterator[Run]:
    service = Run(args, workdir, **kwargs)
    try:
        yield service
    finally:
        service.stop()


class Crowd:
    """``n`` clients of ``/api/v1/alerts/stream`` on raw sockets (HTTP/1.0: a body ends
    when the server closes), read by one thread, each counting its ``fired`` events."""

    def __init__(self, port: int, n: int, *, token: str | None = None) -> None:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        request = (f"GET /api/v1/alerts/stream HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n"
                   ).encode()
        self.n = n
        self.status: list[int | None] = [None] * n
        self.greeted = [False] * n  # the stream's first comment arrived
        self.fired = [0] * n
        self.closed = [False] * n  # by the server
        self.bytes = [0] * n
        self._head = [b""] * n
        self._carry = [b""] * n
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.sockets: list[socket.socket] = []
        for i in range(n):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request)
            sock.setblocking(False)
            self.sockets.append(sock)
            self._selector.register(sock, selectors.EVENT_READ, i)
        self._thread = threading.Thread(target=self._run, name="crowd", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.1):
                i = key.data
                try:
                    data = key.fileobj.recv(1 << 16)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                with self._lock:
                    if not data:
                        self.closed[i] = True
                        self._selector.unregister(key.fileobj)
                        continue
                    self._take(i, data)

    def _take(self, i: int, data: bytes) -> None:
        self.bytes[i] += len(data)
        if self.status[i] is None:
            self._head[i] += data
            head, sep, data = self._head[i].partition(b"\r\n\r\n")
            if not sep:
                return
            self.status[i] = int(head.split(b" ", 2)[1])
        buf = self._carry[i] + data
        cut = buf.rfind(b"\n") + 1
        whole, self._carry[i] = buf[:cut], buf[cut:]
        self.fired[i] += whole.count(b"event: fired\n")
        if b": retrywatch alert stream\n" in whole:
            self.greeted[i] = True

    def count(self, what: Callable[[int], bool]) -> int:
        with self._lock:
            return sum(what(i) for i in range(self.n))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.sockets:
            sock.close()
        self._selector.close()
