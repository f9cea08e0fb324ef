"""End to end: a real nginx reproduces the incident's retry storm (a Lua balancer calling
``set_more_tries(1)`` on every try, ``proxy_next_upstream_tries 0``) and ``retrywatch run``,
following its error log, puts the alert on the REST API; with the fix
(``proxy_next_upstream_tries 3``) the same request fails exactly three times and no alert
appears. See shared/real-nginx/notes.md. All traffic is loopback; every peer is a closed
127.0.0.1 port held by the test.

The storm writes ~10 MB of log a second until the client gives up, so there is exactly one
request, with a 1.5 s client timeout.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest
from nginx_harness import closed_port, free_port, http_temp_paths, running_nginx
from test_service import WAIT, poll, running

CLIENT_TIMEOUT = 1.5  # seconds: the storm runs until the client gives up
ALERT_DEADLINE = 20.0
FAILED = re.compile(rb"^\S+ \S+ \[error\] (\d+)#\d+: \*(\d+) connect\(\) failed ", re.M)

CONF = """
worker_processes 2;
error_log {prefix}/logs/storm.error.log %(level)s;
events { worker_connections 256; }
http {
    %(temp)s
    access_log off;
    lua_package_path "/usr/share/lua/5.1/?.lua;;";
    upstream storm {
        server 127.0.0.1:%(placeholder)d;  # a placeholder: closed, ours
        balancer_by_lua_block {
            local b = require "ngx.balancer"
            b.set_more_tries(1)
            assert(b.set_current_peer("127.0.0.1", %(dead)d))
        }
    }
    server {
        listen 127.0.0.1:%(listen)d;
        server_name storm.test;
        location / {
            proxy_pass http://storm;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries %(tries)d;
        }
    }
}
"""


def one_request(port: int) -> bytes:
    """GET /storm and wait for the answer at most CLIENT_TIMEOUT seconds, then go away."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as c:
        c.sendall(b"GET /storm?cid=e2e HTTP/1.1\r\nHost: storm.test\r\nConnection: close\r\n\r\n")
        reply = b""
        deadline = time.monotonic() + CLIENT_TIMEOUT
        try:
            while time.monotonic() < deadline:
                data = c.recv(65536)
                if not data:
                    break
                reply += data
        except TimeoutError:
            pass
        return reply


def wait_log_quiet(path: Path) -> int:
    """The log's size once it stopped growing (nginx went back to idle), bounded."""
    previous = -1

    def probe() -> int | None:
        nonlocal previous
        size = path.stat().st_size
        if size == previous:
            return size
        previous = size
        time.sleep(0.2)  # the interval two sizes are compared over
        return None

    return poll(f"{path} to stop growing", probe, timeout=WAIT)


def storm_setup(tmp_path: Path, tries: int, placeholder: int, dead: int,
                level: str = "error") -> tuple[str, int]:
    listen = free_port()
    prefix = tmp_path / "nginx"
    conf = CONF % {"temp": http_temp_paths(prefix), "placeholder": placeholder, "dead": dead,
                   "listen": listen, "tries": tries, "level": level}
    return conf, listen


#: nginx logs the client's going away ("client prematurely closed connection") at info
#: only: at level error nothing marks the end, and the alert resolves when the connection
#: has been quiet for --resolve-after seconds (event time, moved on by the wall clock).
@pytest.mark.parametrize(("level", "reason"), [("error", "quiet"), ("info", "connection_ended")])
def test_storm_alert_on_the_rest_api(tmp_path: Path, level: str, reason: str) -> None:
    with closed_port() as placeholder, closed_port() as dead:
        conf, listen = storm_setup(tmp_path, 0, placeholder, dead, level)
        prefix = tmp_path / "nginx"
        log = prefix / "logs" / "storm.error.log"
        args = ["--log", str(log), "--from", "beginning", "--resolve-after", "3"]
        with running_nginx(prefix, conf, ports=[listen], modules=["ndk_http", "http_lua"]) as ngx, \
                running(args, tmp_path) as svc:
            workers = set(ngx.workers())
            assert svc.alerts() == []
            reply = one_request(listen)
            assert reply == b"", f"no storm: nginx answered {reply[:200]!r}"

            alert = poll("an alert on /api/v1/alerts",
                         lambda: next(iter(svc.alerts()), None), timeout=ALERT_DEADLINE)
            size = wait_log_quiet(log)
            failed = FAILED.findall(log.read_bytes()[:size])
            assert len(failed) > 1000, "no storm: is the Lua balancer loaded?"
            [(pid, cid)] = {(int(p), int(c)) for p, c in failed}  # one connection, one worker
            assert alert["cid"] == cid
            assert alert["pid"] == pid and pid in workers
            assert f"127.0.0.1:{dead}" in alert["upstreams"]
            assert f"127.0.0.1:{placeholder}" not in alert["upstreams"]
            assert alert["diagnosis"]["code"] == "http_retry_loop"
            assert alert["subsystem"] == "http"
            assert alert["request"] == "GET /storm?cid=… HTTP/1.1"  # query values redacted

            # The client went away: the storm ended, and so does the alert.
            resolved = poll("the alert to resolve", lambda: next(
                (a for a in svc.alerts(state="resolved") if a["id"] == alert["id"]), None),
                timeout=ALERT_DEADLINE)
            assert resolved["resolved_reason"] == reason
            src = poll("the service to catch up", lambda: (
                (s := svc.source("file")) is not None and s["position"] == size
                and s["caught_up"] and s))
            assert svc.alerts(state="firing") == []
            assert len(svc.alerts()) == 1
            assert resolved["failures"] == len(failed)
            assert src["lines_unparsed"] == 0


def test_fixed_config_fails_three_times_and_no_alert(tmp_path: Path) -> None:
    with closed_port() as placeholder, closed_port() as dead:
        conf, listen = storm_setup(tmp_path, 3, placeholder, dead)
        prefix = tmp_path / "nginx"
        log = prefix / "logs" / "storm.error.log"
        with running_nginx(prefix, conf, ports=[listen], modules=["ndk_http", "http_lua"]), \
                running(["--log", str(log), "--from", "beginning"], tmp_path) as svc:
            reply = one_request(listen)
            assert reply.startswith(b"HTTP/1.1 502 "), reply[:200]
            size = wait_log_quiet(log)
            failed = FAILED.findall(log.read_bytes()[:size])
            assert len(failed) == 3
            assert len(set(failed)) == 1

            def caught_up() -> bool:
                assert svc.alerts() == []  # at no moment while catching up
                src = svc.source("file")
                return src is not None and src["position"] == size and src["caught_up"]

            poll("the service to catch up", caught_up)
            # The last line is held until the idle flush: wait until all 3 are counted.
            poll("3 connect failures counted", lambda: caught_up() and svc.metric(
                "retrywatch_upstream_connect_failures_total") == 3)
            assert svc.alerts() == []
            assert svc.get("/api/v1/alerts", state="firing")["total"] == 0

