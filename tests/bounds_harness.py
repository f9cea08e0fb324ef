"""Real ``retrywatch`` processes for the bounds tests (tests/test_bounds.py,
tests/test_syslog_limits.py): what they use of memory and processor, read from /proc
and from the kernel's own accounting (``wait4``), never estimated. Every wait is a
bounded poll."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from nginx_harness import free_port

__all__ = ["ROOT", "Run", "clean_env", "free_udp_port", "poll", "raise_nofile", "replay_rss",
           "running"]

ROOT = Path(__file__).parent.parent
WAIT = 30.0  # seconds: the bound of every wait below
STEP = 0.05
STOP_TIMEOUT = 10.0
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")

T = TypeVar("T")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYWATCH_")}
    env.update(extra)
    return env


def poll(what: str, probe: Callable[[], T | None], timeout: float = WAIT) -> T:
    """``probe()`` until it returns something other than None/False, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(STEP)


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def raise_nofile(wanted: int) -> None:
    """This process's soft descriptor limit to at least ``wanted`` (skip if the hard
    limit does not allow it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB$", text, re.M)
    assert found is not None, field
    return int(found.group(1))


class Run:
    """One ``retrywatch run`` subprocess on a free 127.0.0.1 port; ``nofile``: its
    RLIMIT_NOFILE (soft and hard), set in the child before it starts."""

    def __init__(self, args: list[str], workdir: Path, *, nofile: int | None = None) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.output = workdir / f"retrywatch-{self.port}.out"

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "retrywatch", "run", *args,
                 "--listen", f"127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                # Only setrlimit runs between fork and exec (the brief's `ulimit -n`).
                env=clean_env(), preexec_fn=limit if nofile is not None else None)  # noqa: PLW1509
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5.0)
        poll("the service to answer /healthz", self.healthy)

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"retrywatch run exited with {self.process.returncode}:\n"
                        + self.output.read_text(errors="replace"))
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response.json() if "json" in response.headers["content-type"] else response.text

    def source(self, kind: str) -> dict[str, Any]:
        found = [s for s in self.get("/api/v1/sources")["sources"] if s["kind"] == kind]
        assert len(found) == 1, found
        return found[0]

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the series of ``name`` on /metrics whose labels include ``labels``."""
        total = 0.0
        for m in re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$",
                             self.get("/metrics"), re.M):
            have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def rss_mib(self) -> float:
        """Resident memory now (VmRSS)."""
        return _status_kib(self.process.pid, "VmRSS") / 1024

    def peak_rss_mib(self) -> float:
        """The most resident memory so far (VmHWM)."""
        return _status_kib(self.process.pid, "VmHWM") / 1024

    def cpu_seconds(self) -> float:
        """Processor time used so far, user and system, every thread."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def log_text(self) -> str:
        return self.output.read_text(errors="replace")

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


@contextlib.contextmanager
def running(args: list[str], workdir: Path, **kwargs: Any) -> Iterator[Run]:
    run = Run(args, workdir, **kwargs)
    try:
        yield run
    finally:
        run.stop()


@dataclass(frozen=True, slots=True)
class Replayed:
    stdout: bytes
    peak_rss_mib: float  # the child's own, from wait4: the kernel's ru_maxrss
    seconds: float


def replay_rss(args: list[str], stdin: Iterable[bytes] | None = None,
               timeout: float = WAIT) -> Replayed:
    """``retrywatch replay ARGS`` (``stdin``: chunks written to its standard input),
    its output and its own peak resident memory."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "retrywatch", "replay", *args], cwd=ROOT, env=clean_env(),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: list[bytes] = []
    readers = [threading.Thread(target=lambda: out.append(process.stdout.read()))]  # type: ignore[union-attr]
    readers.append(threading.Thread(target=process.stderr.read))  # type: ignore[union-attr]
    if stdin is not None:
        def write() -> None:
            assert process.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                for chunk in stdin:
                    process.stdin.write(chunk)
                process.stdin.close()
        readers.append(threading.Thread(target=write))
    for thread in readers:
        thread.start()
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    for thread in readers:
        thread.join(STOP_TIMEOUT)
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()
    assert process.returncode == 0, f"replay exited with {process.returncode}"
    return Replayed(b"".join(out), usage.ru_maxrss / 1024, time.monotonic() - started)
