"""``retrywatch run`` as a real process for the state and lifecycle tests: on a free
127.0.0.1 port, its output (stdout and stderr) read line by line by a thread through a
pipe (never a file: a test may limit the sizes of the files it writes), every wait a
bounded poll."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from nginx_harness import free_port

__all__ = ["ROOT", "STATE_FILE", "STORM", "WAIT", "Run", "append", "clean_env", "poll",
           "replay_alerts", "saved", "started", "storm_lines"]

ROOT = Path(__file__).parent.parent
STORM = ROOT / "sample_logs" / "scenario-http-lua-storm.error.log.gz"
STATE_FILE = "retrywatch.sqlite3"
WAIT = 30.0  # seconds: the bound of every wait
STEP = 0.05
STOP_TIMEOUT = 20.0

T = TypeVar("T")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYWATCH_")}
    env.update(extra)
    return env


def poll(what: str, probe: Callable[[], T | None], timeout: float = WAIT,
         context: Callable[[], str] = lambda: "") -> T:
    """``probe()`` until it returns something other than None/False (a refused or
    timed-out request counts as not yet), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = probe()
        except httpx.TransportError:
            found = None
        if found is not None and found is not False:
            return found
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{context()}")
        time.sleep(STEP)


class Run:
    """One ``retrywatch run`` subprocess. ``prefix``: a command it runs under (unshare);
    ``healthy``: wait for /healthz (else the caller waits for its exit)."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None,
                 prefix: Sequence[str] = (), healthy: bool = True,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.port = free_port()
        self.spawned = time.monotonic()
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "retrywatch", "run", *args,
             "--listen", f"127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=ROOT, env=env or clean_env(), preexec_fn=preexec_fn)  # noqa: PLW1509
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="run-output", daemon=True)
        self._reader.start()
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5.0)
        if healthy:
            poll("the service to answer /healthz", self._healthy, context=self.tail)

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as out:  # closed when the process ends
            for raw in out:
                self.lines.append(raw.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def tail(self) -> str:
        return "output:\n" + self.output[-4000:]

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            self._reader.join(5)
            pytest.fail(f"retrywatch run exited with {self.process.returncode}:\n{self.output}")
        return self.client.get("/healthz").status_code == 200

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response.json() if "json" in response.headers["content-type"] else response.text

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/alerts", limit=1000)["alerts"])

    def file_source(self) -> dict[str, Any] | None:
        found = [s for s in self.get("/api/v1/sources")["sources"] if s["kind"] == "file"]
        return found[0] if found else None

    def metric(self, name: str) -> float:
        """The sum of every series of ``name`` on /metrics."""
        text = self.get("/metrics")
        return sum(float(m.group(1)) for m in re.finditer(
            rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))

    def wait_caught_up(self, path: Path) -> dict[str, Any]:
        size = path.stat().st_size

        def probe() -> dict[str, Any] | None:
            src = self.file_source()
            return src if src and src["position"] == size and src["caught_up"] else None

        return poll(f"{path} read to its end", probe, context=self.tail)

    def wait_alerts(self, expected: list[dict[str, Any]],
                    fields: tuple[str, ...] = ("cid", "failures", "state")
                    ) -> list[dict[str, Any]]:
        want = sorted(tuple(a[f] for f in fields) for a in expected)
        live: list[dict[str, Any]] = []

        def probe() -> bool:
            nonlocal live
            live = self.alerts()
            return sorted(tuple(a[f] for f in fields) for a in live) == want

        with contextlib.suppress(pytest.fail.Exception):
            poll("the live alerts to equal replay's", probe, timeout=15.0)
        assert sorted(tuple(a[f] for f in fields) for a in live) == want
        return live

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        self.client.close()
        return code

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not end in time (a test's cleanup)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        self._reader.join(5)
        self.client.close()


@contextlib.contextmanager
def started(args: Sequence[str], **kwargs: Any) -> Iterator[Run]:
    run = Run(args, **kwargs)
    try:
        yield run
    finally:
        run.stop()


def storm_lines() -> list[bytes]:
    return gzip.decompress(STORM.read_bytes()).splitlines(keepends=True)


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def replay_alerts(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "retrywatch", "replay", "--format", "json", "--timezone", "UTC",
         str(path)], capture_output=True, check=True, cwd=ROOT, env=clean_env(), timeout=120)
    return list(json.loads(out.stdout)["alerts"])


def saved(state_dir: Path) -> tuple[float, dict[str, int], bytes | None] | None:
    """The last checkpoint in ``state_dir`` (read-only): when its engine snapshot was
    taken, the positions saved with it and the deliveries' state; None: none yet."""
    db = state_dir / STATE_FILE
    if not db.is_file():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
        try:
            row = conn.execute("SELECT taken FROM engine_state WHERE id = 1").fetchone()
            positions = dict(conn.execute("SELECT path, offset FROM file_positions"))
            delivery = conn.execute("SELECT state FROM delivery_state WHERE id = 1").fetchone()
        except sqlite3.OperationalError:
            return None
    if row is None:
        return None
    return float(row[0]), positions, bytes(delivery[0]) if delivery else None
