"""A real nginx proxies a steady load of new connections to three real backends, and
``retrywatch run`` follows its error log: one backend stopped mid-run fires the upstream
alert within a minute and resolves when it is back; a rolling restart of the backends
(each down a few seconds, in turn) fires nothing.

nginx runs with ``max_fails=0`` (as ingress-nginx's Lua balancer does: no passive health
check takes a dead peer out), so every request round-robined to a stopped backend fails
once (``connect() failed (111: Connection refused)``) and is retried on the next: one
failure per connection, never a runaway. All traffic is on 127.0.0.1; the backends are
the test's own servers on ports it holds; the load is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from nginx_harness import free_port, http_temp_paths, running_nginx
from run_harness import Run, poll, started

pytestmark = pytest.mark.slow

RATE = 30  # new connections a second
MAX_REQUESTS = 6_000  # the load's bound (about 200 s at RATE)
WARMUP = 5  # --upstream-warmup: the test's quiet seconds before any backend stops

CONF = """
worker_processes 2;
error_log {prefix}/logs/app.error.log error;
events { worker_connections 512; }
http {
    %(temp)s
    access_log off;
    upstream app {
        server 127.0.0.1:%(a)d max_fails=0;
        server 127.0.0.1:%(b)d max_fails=0;
        server 127.0.0.1:%(c)d max_fails=0;
    }
    server {
        listen 127.0.0.1:%(listen)d;
        server_name app.test;
        keepalive_timeout 0;
        location / {
            proxy_pass http://app;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
        }
    }
}
"""


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Backend:
    """An HTTP server on a fixed loopback port that can be stopped (its port refuses
    connections) and started again on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), _Ok)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name=f"backend-{self.port}",
                         daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class Load:
    """GET requests at RATE a second, each on a new connection, until stopped (or
    MAX_REQUESTS): every answer is counted by its status."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stopped = threading.Event()
        self.answers: dict[int, int] = {}
        self.errors = 0
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        for i in range(MAX_REQUESTS):
            if self.stopped.is_set():
                return
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                c.request("GET", f"/item/{i}", headers={"Host": "app.test"})
                status = c.getresponse().status
                self.answers[status] = self.answers.get(status, 0) + 1
            except OSError:
                self.errors += 1
            finally:
                c.close()
            pause = start + (i + 1) / RATE - time.monotonic()
            if pause > 0:
                self.stopped.wait(pause)


@contextlib.contextmanager
def proxied(tmp_path: Path) -> Iterator[tuple[list[Backend], Path, Load]]:
    """Three backends, nginx in front, and the load running."""
    backends = [Backend(free_port()) for _ in range(3)]
    for b in backends:
        b.start()
    listen = free_port()
    conf = CONF % {"temp": http_temp_paths(tmp_path / "nginx"), "listen": listen,
                   "a": backends[0].port, "b": backends[1].port, "c": backends[2].port}
    load = Load(listen)
    try:
        with running_nginx(tmp_path / "nginx", conf, ports=[listen]) as ngx:
            log = ngx.prefix / "logs" / "app.error.log"
            load.thread.start()
            try:
                yield backends, log, load
            finally:
                load.stopped.set()
                load.thread.join(10)
    finally:
        for b in backends:
            b.stop()


def watching(log: Path) -> contextlib.AbstractContextManager[Run]:
    log.touch()
    # (nginx writes this machine's local time: retrywatch's default zone)
    return started(["--log", str(log), "--from", "beginning", "--upstream-warmup", str(WARMUP)])


def upstreams(run: Run) -> dict[str, Any]:
    return dict(run.get("/api/v1/upstreams"))


def peer_of(b: Backend) -> str:
    return f"127.0.0.1:{b.port}"


def test_a_stopped_backend_fires_within_a_minute_and_resolves_when_back(
        tmp_path: Path) -> None:
    with proxied(tmp_path) as (backends, log, load), watching(log) as run:
        time.sleep(WARMUP + 3)  # the warm-up passes with nothing failing
        assert upstreams(run)["peers"] == []
        dead = backends[1]
        dead.stop()
        stopped_at = time.monotonic()

        def fired() -> dict[str, Any] | None:
            firing = [a for a in upstreams(run)["alerts"] if a["state"] == "firing"]
            return firing[0] if firing else None

        alert = poll("the upstream alert", fired, timeout=60, context=run.tail)
        took = time.monotonic() - stopped_at
        print(f"fired {took:.1f} s after the backend stopped: {alert['figures']}")
        assert took < 60, took
        assert alert["peer"] == peer_of(dead)
        figures = alert["figures"]
        assert figures["anomalous"] and figures["warm"]
        assert figures["failing_seconds"] >= 15
        assert figures["connections"] >= 20
        # one failure per connection: as many failing connections as failures (the
        # sketch's estimate, within its error)
        assert abs(figures["connections"] - figures["failures"]) <= 0.1 * figures["failures"]
        assert figures["baseline_per_second"] < 1
        assert f"{peer_of(dead)} failed" in alert["diagnosis"]["cause"]
        assert alert["diagnosis"]["code"] == "upstream_failing"
        # no connection loops: no runaway alert, and the upstream alert links none
        assert run.alerts() == []
        assert alert["runaway_alerts"] == []
        # the other two peers never failed
        assert {p["peer"] for p in upstreams(run)["peers"]} == {peer_of(dead)}
        assert run.metric("retrywatch_upstream_alerts_firing") == 1

        dead.start()
        back_at = time.monotonic()

        def resolved() -> dict[str, Any] | None:
            done = [a for a in upstreams(run)["alerts"] if a["state"] == "resolved"]
            return done[0] if done else None

        ended = poll("the upstream alert to resolve", resolved, timeout=60, context=run.tail)
        assert ended["id"] == alert["id"]
        assert ended["resolved_reason"] == "back_to_baseline"
        assert time.monotonic() - back_at < 40
        assert run.metric("retrywatch_upstream_alerts_fired_total") == 1
    assert load.answers.get(200, 0) > 0 and set(load.answers) == {200}, load.answers


def test_a_rolling_restart_of_the_backends_fires_nothing(tmp_path: Path) -> None:
    down_for, between = 4.0, 6.0
    with proxied(tmp_path) as (backends, log, load), watching(log) as run:
        time.sleep(WARMUP + 3)
        for b in backends:  # one at a time, each down a few seconds
            b.stop()
            time.sleep(down_for)
            b.start()
            time.sleep(between)
        time.sleep(5)
        seen = upstreams(run)
        # every backend failed, for many connections: only the seconds it was down for
        # (a few of the window's 60) keep it from alerting
        peers = {p["peer"]: p for p in seen["peers"]}
        print("after the rolling restart:", peers)
        assert set(peers) == {peer_of(b) for b in backends}, peers
        assert sum(p["connections"] >= 20 for p in peers.values()) >= 2, peers
        assert all(p["failing_seconds"] <= down_for + 3 for p in peers.values()), peers
        assert not any(p["anomalous"] for p in peers.values())
        assert seen["alerts"] == []
        assert run.alerts() == []
        assert run.metric("retrywatch_upstream_alerts_fired_total") == 0
    assert set(load.answers) == {200}, load.answers
