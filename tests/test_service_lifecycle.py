"""``retrywatch run``'s life: SIGTERM and SIGINT stop it in order (sources closed, last
checkpoint, deliveries drained within --shutdown-timeout, exit 0); /healthz fails when
the ingest loop stalls; and half-open HTTP requests, 1,100 of them under
``ulimit -n 1024``, neither take it down nor make it spin or flood its log.

Real processes on 127.0.0.1 (the stall: in process); every wait a bounded poll."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from run_harness import ROOT, clean_env, poll, replay_alerts, saved, started, storm_lines
from webhook_receiver import WebhookReceiver, receiving

from retrywatch.serve.api import create_app
from retrywatch.serve.service import Service
from retrywatch.serve.settings import Settings
from retrywatch.sources.follow import ManualWaker

HTTPX_WARNING = ("ignore:Using `httpx` with `starlette.testclient` is deprecated"
                 ":starlette.exceptions.StarletteDeprecationWarning")


@pytest.fixture(scope="module")
def storm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    path = tmp_path_factory.mktemp("storm") / "storm.log"
    path.write_bytes(b"".join(storm_lines()))
    return path, replay_alerts(path)


def with_receiver(tmp_path: Path, url: str, **options: Any) -> Path:
    config = tmp_path / "retrywatch.yaml"
    config.write_text(yaml.safe_dump({"receivers": [{"name": "hook", "url": url, **options}]}))
    return config


def notified(hook: WebhookReceiver) -> list[tuple[int, str]]:
    return sorted((a["cid"], a["state"]) for r in hook.ok for a in r.json()["alerts"])


# -- signals ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_in_order_and_exits_0(tmp_path: Path, storm: tuple[Path, Any],
                                           sig: signal.Signals) -> None:
    """The alerts wait in the receiver's queue (group_wait 60 s) when the signal comes:
    they are delivered before the exit, the last checkpoint is at the file's end and
    holds nothing pending."""
    log, expected = storm
    state = tmp_path / "state"
    with receiving() as hook:
        config = with_receiver(tmp_path, hook.url, group_wait=60)
        with started(["--log", str(log), "--from", "beginning", "--timezone", "UTC",
                      "--state-dir", str(state), "--config", str(config)]) as run:
            run.wait_caught_up(log)
            run.wait_alerts(expected)
            assert hook.requests == []  # queued: group_wait has not passed
            signalled = time.time()
            run.signal(sig)
            assert run.wait(20) == 0, run.output
            took = time.time() - signalled
        want = sorted((a["cid"], a["state"]) for a in expected)
        assert notified(hook) == want  # drained: each alert once, as it is now
    assert took < 10, run.output
    found = saved(state)
    assert found is not None
    taken, positions, delivery = found
    assert taken >= signalled  # the last checkpoint: after the signal
    assert positions == {str(log): log.stat().st_size}
    assert delivery is not None and json.loads(delivery)["receivers"]["hook"]["pending"] == []
    assert f"{sig.name}: stopping" in run.output
    assert "Traceback" not in run.output, run.output


def test_shutdown_timeout_bounds_the_drain(tmp_path: Path, storm: tuple[Path, Any]) -> None:
    """A receiver that never answers: the drain gives up after --shutdown-timeout, the
    exit is still 0, and what was not delivered stays pending in the last checkpoint."""
    log, expected = storm
    state = tmp_path / "state"
    with receiving(WebhookReceiver(default="hang")) as hook:
        config = with_receiver(tmp_path, hook.url, group_wait=60, timeout=30)
        with started(["--log", str(log), "--from", "beginning", "--timezone", "UTC",
                      "--state-dir", str(state), "--config", str(config),
                      "--shutdown-timeout", "1"]) as run:
            run.wait_caught_up(log)
            run.wait_alerts(expected)
            signalled = time.monotonic()
            run.signal(signal.SIGTERM)
            assert run.wait(20) == 0, run.output
            took = time.monotonic() - signalled
        assert len(hook.requests) == 1  # the drain tried, the receiver hung
    assert took < 1 + 1 + 3, run.output  # drain, the request in flight, the rest
    found = saved(state)
    assert found is not None and found[2] is not None
    pending = json.loads(found[2])["receivers"]["hook"]["pending"]
    assert len(pending) == len(expected)  # sent after the restart
    assert "not delivered within --shutdown-timeout" in run.output
    assert "Traceback" not in run.output, run.output


# -- liveness -----------------------------------------------------------------------------------
@pytest.mark.filterwarnings(HTTPX_WARNING)
def test_healthz_fails_while_the_ingest_loop_stalls(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient  # late: it warns at import (HTTPX_WARNING)

    log = tmp_path / "error.log"
    log.write_bytes(b"")
    settings = Settings.model_validate({"log": [str(log)], "timezone": "UTC",
                                        "stall_timeout": 0.5, "poll_interval": 0.05})
    svc = Service(settings, waker=ManualWaker())
    gate = threading.Event()
    gate.set()
    run_once = svc.run_once

    def stuck() -> bool:  # a read, a lock or a bug that never returns
        gate.wait(30)
        return run_once()

    monkeypatch.setattr(svc, "run_once", stuck)
    svc.start()
    try:
        with TestClient(create_app(svc.engine)) as client:
            assert client.get("/healthz").status_code == 200
            gate.clear()
            poll("/healthz failing", lambda: (r := client.get("/healthz")).status_code == 503
                 and r.json(), timeout=10)
            body = client.get("/healthz").json()
            assert body["status"] == "stalled" and "ingest loop stalled" in body["detail"][0]
            assert client.get("/readyz").status_code == 503
            gate.set()
            poll("/healthz ok again", lambda: client.get("/healthz").status_code == 200,
                 timeout=10)
    finally:
        gate.set()
        svc.stop()


# -- half-open HTTP requests ----------------------------------------------------------------------
HALF_OPEN = 1100
NOFILE = 1024


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _half_open(port: int, n: int) -> list[socket.socket]:
    """``n`` connections, each with a request head that never ends."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        socks.append(s)
    # The handshakes done (the kernel's, whatever the server does): each socket writable.
    with selectors.DefaultSelector() as sel:  # epoll: descriptors past FD_SETSIZE
        for s in socks:
            sel.register(s, selectors.EVENT_WRITE)
        deadline = time.monotonic() + 10
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(0.1):
                sel.unregister(key.fileobj)
        left = len(sel.get_map())
    assert not left, f"{left} of {n} connections not established in 10 s"
    for s in socks:
        with contextlib.suppress(OSError):  # closed by the server already
            s.send(b"GET /api/v1/alerts HTTP/1.1\r\nHost: retrywatch\r\nX-Slow: ")
    return socks


def test_1100_half_open_requests_under_ulimit_1024(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = HALF_OPEN + 200
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"this test needs {need} descriptors (ulimit -Hn is {hard})")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    log = tmp_path / "error.log"
    log.write_bytes(b"")
    with started(["--log", str(log), "--timezone", "UTC"], preexec_fn=_low_nofile) as run:
        pid = run.process.pid
        socks = _half_open(run.port, HALF_OPEN)
        try:
            cpu, wall = _cpu_seconds(pid), time.monotonic()
            answered = []
            for _ in range(6):  # each probe on a new connection, as a kubelet's
                started_at = time.monotonic()
                response = httpx.get(f"http://127.0.0.1:{run.port}/healthz", timeout=3)
                answered.append((response.status_code, time.monotonic() - started_at))
                time.sleep(0.5)
            cpu_share = (_cpu_seconds(pid) - cpu) / (time.monotonic() - wall)
            assert [code for code, _ in answered] == [200] * 6, answered
            assert max(took for _, took in answered) < 1.0, answered
            assert cpu_share < 0.5, f"{cpu_share:.0%} of a CPU"
            closed = run.metric("retrywatch_http_connections_closed_total")
            assert closed >= HALF_OPEN - 1000, run.output  # over the cap: the oldest closed
        finally:
            for s in socks:
                s.close()
        assert len(run.output) < 4096, run.output  # no flood: a line or two at most
        assert "Traceback" not in run.output
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.output


def test_a_request_head_that_never_ends_is_closed(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(b"")
    with started(["--log", str(log), "--timezone", "UTC", "--http-header-timeout", "1"]) as run:
        with socket.create_connection(("127.0.0.1", run.port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: retrywatch\r\n")  # no blank line
            began = time.monotonic()
            assert s.recv(1024) == b""  # closed by the server, nothing answered
            assert 0.5 < time.monotonic() - began < 4
        with socket.create_connection(("127.0.0.1", run.port), timeout=5) as s:  # idle
            began = time.monotonic()
            assert s.recv(1024) == b""
            assert time.monotonic() - began < 4
        # (and the harness's kept-alive connection, idle past the timeout too)
        assert run.metric("retrywatch_http_connections_closed_total") >= 2
        assert run.client.get("/healthz").status_code == 200


def test_cannot_listen_is_one_line_exit_3(tmp_path: Path) -> None:
    """(As before the HTTP server got a socket of its own: uvicorn's exit status.)"""
    log = tmp_path / "error.log"
    log.write_bytes(b"")
    with started(["--log", str(log), "--timezone", "UTC"]) as first:
        done = subprocess.run(
            [sys.executable, "-m", "retrywatch", "run", "--log", str(log), "--timezone",
             "UTC", "--listen", f"127.0.0.1:{first.port}"],
            capture_output=True, text=True, cwd=ROOT, env=clean_env(), timeout=60, check=False)
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot listen" in lines[0], done.stderr
