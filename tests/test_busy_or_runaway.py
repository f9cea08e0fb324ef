"""Runaway or just busy, against a real nginx: a connection id is not a request.

HTTP/2 multiplexes many requests on one connection and an HTTP/1.1 keep-alive client sends
one after another; when an upstream group is down each request fails its bounded tries and
the connection's count passes the threshold. Only a request that keeps trying (a Lua
balancer calling ``set_more_tries(1)`` on every try with ``proxy_next_upstream_tries 0``) is
a retry loop. Each row of ``SCENARIOS`` runs in a private nginx 1.22 on loopback (HTTP/2 as
cleartext h2c with prior knowledge, driven by ``h2load``; HTTP/1.1 from Python sockets), and
its error log (level ``info``) is replayed twice: without and with the scenario's own
nginx.conf as knowledge (``--nginx-config``):

- benign: no confirmed alert without the configuration (suspected at most); with it no alert
  at all, each connection past the threshold ruled out;
- loop: exactly one alert, confirmed, on the connection that looped, with the diagnosis
  http_retry_loop or synchronous_loop, both without and with the configuration.

Every address is 127.0.0.1: each upstream server and Lua placeholder is a closed port held by
the test (``closed_port``) or one whose accept queue is full (``full_backlog_port``, a
timed-out peer), and ``/ok`` goes to the test's own live backend. Every run is bounded: a
fixed count of requests, benign clients that finish within seconds, and loops that end
when their client goes away after ``LOOP_HOLD`` s (a Lua loop writes ~10 MB of log a second).

The results (what nginx did, what retrywatch said, and why) are collected into a Markdown
table, printed at the end of the session (``-s``) and written to the path in
``RETRYWATCH_SCENARIO_TABLE`` when it is set (the README table is regenerated from it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal, Protocol

import pytest
from nginx_harness import (
    closed_port,
    free_port,
    full_backlog_port,
    http_temp_paths,
    running_nginx,
    wait_quiet,
)

from retrywatch.detect.alerts import Alert
from retrywatch.detect.core import Conn
from retrywatch.detect.judge import judge
from retrywatch.detect.knowledge import Knowledge, Verdict
from retrywatch.forensics.replay import ReplayResult, replay

LOOP_HOLD = 1.0  # seconds a looping request's client waits before it goes away
CLIENT_TIMEOUT = 1.5  # seconds: socket timeout of the HTTP/1.1 clients
BENIGN_DEADLINE = 10.0  # seconds a bounded client may take at most
QUIET_TIMEOUT = 10.0  # seconds for the error log to stop growing once the client is done
LOOP_CODES = {"http_retry_loop", "synchronous_loop"}
SERVER_NAME = "scenario.test"

Outcome = Literal["confirmed", "suspected", "ruled out"]


class Misjudged(AssertionError):
    """A benign scenario confirmed (or alerted with its configuration), or a loop not
    confirmed: the judgement is wrong."""


class NotCounted(AssertionError):
    """The connections ruled out and ``stats()["ruled_out_by_configuration"]`` disagree."""


@dataclass(frozen=True)
class Bug:
    """A known bug of retrywatch a scenario shows: xfail(strict=True), for that failure only."""

    raises: type[AssertionError]
    reason: str


#: One upstream connect failure, as nginx logs it (the kinds the detector counts).
FAILURE = re.compile(
    rb"^\d{4}/\d\d/\d\d (\d\d:\d\d:\d\d) \[(?:error|warn|crit)\] (\d+)#\d+: \*(\d+) "
    rb"(?:connect\(\) (?:to \S+ )?failed |no live upstreams |"
    rb"upstream timed out \(110: Connection timed out\) while connecting)", re.M)
#: The access log: one line per request (``log_format scenario``).
ACCESS = re.compile(r'^(\d+) (\d{3}) "([^"]*)"$', re.M)


# -- the clients -----------------------------------------------------------------------------

class Client(Protocol):
    def run(self, port: int, workdir: Path) -> None: ...

    def describe(self) -> str: ...


def h2load() -> str:
    found = shutil.which("h2load")
    if found is None:
        pytest.skip("no h2load (Debian: apt-get install nghttp2-client)")
    return found


@dataclass(frozen=True)
class H2:
    """``h2load``: ``requests`` requests on ``connections`` HTTP/2 connections, ``streams``
    at once on each, cycling through ``paths``; gRPC-style POSTs when ``grpc``."""

    paths: Sequence[str]
    requests: int
    connections: int = 1
    streams: int = 100
    grpc: bool = False
    loops: bool = False  # one of them retries without end: the client goes after LOOP_HOLD

    def run(self, port: int, workdir: Path) -> None:
        args = [h2load(), "-n", str(self.requests), "-c", str(self.connections),
                "-m", str(self.streams), "-t", "1"]
        if self.grpc:
            message = workdir / "grpc-message.bin"
            payload = b"\x0a\x05hello"  # a protobuf string field
            message.write_bytes(b"\x00" + len(payload).to_bytes(4, "big") + payload)
            args += ["-H", "content-type: application/grpc", "-H", "te: trailers",
                     "-d", str(message)]
        args += [f"http://127.0.0.1:{port}{path}" for path in self.paths]
        with subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) as client:
            try:
                client.wait(LOOP_HOLD if self.loops else BENIGN_DEADLINE)
            except subprocess.TimeoutExpired:
                client.kill()  # the connection closes: nginx ends its requests (499)
                client.wait()
                if not self.loops:
                    pytest.fail(f"h2load did not finish within {BENIGN_DEADLINE} s")

    def describe(self) -> str:
        kind = "gRPC-style calls" if self.grpc else "requests"
        paths = Counter(self.paths)
        where = ", ".join(f"{p}" + (f" x{n}" if n > 1 else "") for p, n in paths.items())
        at_once = min(self.streams, self.requests)
        kind = kind if self.requests > 1 else kind[:-1]
        return (f"h2load: {self.requests:,} {kind} on {self.connections} HTTP/2 connection"
                f"{'s' if self.connections > 1 else ''}, {at_once} at once ({where})")


def _read_response(sock: socket.socket) -> int:
    """One HTTP/1.1 response (nginx's error pages have a Content-Length): its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"nginx closed the connection: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    assert length is not None, head
    while len(body) < int(length.group(1)):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("nginx closed the connection inside a body")
        body += chunk
    return int(head.split(b" ", 2)[1])


@dataclass(frozen=True)
class KeepAlive:
    """An HTTP/1.1 keep-alive client polling ``path`` ``polls`` times, every ``every`` s,
    on one connection."""

    path: str
    polls: int
    every: float = 0.2

    def run(self, port: int, workdir: Path) -> None:
        request = (f"GET {self.path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\n"
                   "Connection: keep-alive\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as sock:
            for i in range(self.polls):
                if i:
                    time.sleep(self.every)
                sock.sendall(request)
                _read_response(sock)

    def describe(self) -> str:
        return (f"HTTP/1.1 keep-alive: GET {self.path} {self.polls} times, "
                f"{1 / self.every:g} a second, on one connection")


@dataclass(frozen=True)
class OneRequest:
    """One HTTP/1.1 request; the client waits ``LOOP_HOLD`` s for an answer, then goes."""

    path: str

    def run(self, port: int, workdir: Path) -> None:
        request = (f"GET {self.path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\n"
                   "Connection: close\r\n\r\n").encode()
        deadline = time.monotonic() + LOOP_HOLD
        with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as sock:
            sock.sendall(request)
            with contextlib.suppress(TimeoutError):
                while (left := deadline - time.monotonic()) > 0:
                    sock.settimeout(left)
                    if not sock.recv(65536):
                        break

    def describe(self) -> str:
        return f"HTTP/1.1: one GET {self.path}, the client gives up after {LOOP_HOLD:g} s"


# -- the scenarios ---------------------------------------------------------------------------

#: A Lua balancer that adds a try on every try (the ingress-nginx incident's shape); its
#: placeholder server is a closed port of ours, its peer a dead one.
LUA_STORM = """
    upstream storm {
        server 127.0.0.1:%(placeholder)d;  # never used: the balancer sets the peer
        balancer_by_lua_block {
            local b = require "ngx.balancer"
            b.set_more_tries(1)
            assert(b.set_current_peer("127.0.0.1", %(dead0)d))
        }
    }
"""
#: The scenario's dead servers (``Scenario.dead`` refused, ``Scenario.slow`` timed out),
#: each with ``Scenario.params``.
DEAD = """
    upstream dead {
%(servers)s    }
"""
OK = "location = /ok { proxy_pass http://127.0.0.1:%(live)d; }"


def conf(upstreams: str, *locations: str) -> str:
    """The scenario's part of the http block: a %-template (``%(listen)s`` is the listen
    directive, ``%(servers)s`` the dead group's server lines, ``%(deadN)d`` a dead port,
    ``%(placeholder)d`` a closed port, ``%(live)d`` the live backend)."""
    return (upstreams + "    server {\n        %(listen)s\n"
            f"        server_name {SERVER_NAME};\n"
            + "".join(f"        {location}\n" for location in locations) + "    }\n")


def plain(location: str, *directives: str, server: Sequence[str] = ()) -> str:
    """A location passing to the dead group, with ``directives`` (and ``server``'s at the
    server level)."""
    body = " ".join(["proxy_pass http://dead;", *directives])
    return conf(DEAD, *server, f"location {location} {{ {body} }}")


#: nginx ends an HTTP/2 connection after 1,000 requests (keepalive_requests) by default
BUSY = ["keepalive_requests 10000;"]


def lua(tries: int, *more: str) -> str:
    """``/storm`` through the Lua balancer that adds a try on every try."""
    return conf(LUA_STORM, f"location /storm {{ proxy_pass http://storm; "
                           f"proxy_next_upstream_tries {tries}; }}", *more)


@dataclass(frozen=True)
class Scenario:
    name: str
    conf: str  # the http block's upstreams and server (see conf())
    client: Client
    without: Outcome  # retrywatch replay without --nginx-config
    with_config: Outcome  # with the scenario's own nginx.conf
    http2: bool = True  # listen ... http2 (cleartext, prior knowledge)
    dead: int = 0  # refused peers in the dead group
    slow: int = 0  # timed-out peers (accept queue full) in the dead group
    params: str = ""  # on each server line of the dead group
    bug: Bug | None = None  # a known bug it shows (xfail, strict)

    @property
    def loop(self) -> bool:
        return self.with_config == "confirmed"

    @property
    def lua(self) -> bool:
        return "balancer_by_lua" in self.conf


#: nginx logs the end of a keep-alive connection at info ("closed keepalive connection"):
#: the connection, ruled out, ends within the same 4 MiB chunk of the replay.
ENDED_UNCOUNTED = Bug(NotCounted, "BUG replay: a connection ruled out by the configuration "
                      "whose end is logged within the same chunk is not counted in "
                      "ruled_out_by_configuration (0, not 1): "
                      "test_ruled_out_connection_that_ended_is_counted")

SCENARIOS: list[Scenario] = [
    # -- the five of the issue --
    Scenario("issue 1: HTTP/2, 200 concurrent requests, tries 3, 3 dead (max_fails=0)",
             plain("/api/", "proxy_next_upstream_tries 3;"),
             H2(["/api/items"], 200, streams=200), "suspected", "ruled out",
             dead=3, params="max_fails=0"),
    Scenario("issue 2: HTTP/2, 2 connections x 100 requests, plain defaults (max_fails=1)",
             plain("/api/"),
             H2(["/api/items"], 200, connections=2, streams=100), "suspected", "ruled out",
             dead=3),
    Scenario("issue 3: gRPC-style, 6 HTTP/2 connections x 120 calls, tries 3",
             conf(DEAD, "location /pkg.Service/ { grpc_pass grpc://dead; "
                        "grpc_next_upstream_tries 3; }"),
             H2(["/pkg.Service/Method"], 720, connections=6, streams=120, grpc=True),
             "suspected", "ruled out", dead=3, params="max_fails=0"),
    Scenario("issue 4: HTTP/1.1 keep-alive polling /healthz 5/s, 12 dead, default tries",
             plain("/healthz"), KeepAlive("/healthz", 8), "suspected", "ruled out",
             http2=False, dead=12),
    Scenario("issue 5: HTTP/2, one request, Lua set_more_tries(1), tries 0",
             lua(0), H2(["/storm"], 1, streams=1, loops=True), "confirmed", "confirmed",
             dead=1),
    # -- bounded, busy --
    Scenario("HTTP/1.1 keep-alive polling /healthz 5/s, 12 dead, max_fails=0",
             plain("/healthz"), KeepAlive("/healthz", 8), "suspected", "ruled out",
             http2=False, dead=12, params="max_fails=0"),
    Scenario("HTTP/2, 20 requests, 4 dead (max_fails=0), tries unset",
             plain("/api/"), H2(["/api/items"], 20), "suspected", "ruled out",
             dead=4, params="max_fails=0"),
    Scenario("HTTP/2, 20 requests, 4 dead (max_fails=0), tries 3",
             plain("/api/", "proxy_next_upstream_tries 3;"), H2(["/api/items"], 20),
             "suspected", "ruled out", dead=4, params="max_fails=0"),
    Scenario("HTTP/2, 20 requests, 4 dead (max_fails=0), tries 0",
             plain("/api/", "proxy_next_upstream_tries 0;"), H2(["/api/items"], 20),
             "suspected", "ruled out", dead=4, params="max_fails=0"),
    Scenario("HTTP/2, 10 requests, 2 timed-out + 2 refused peers, connect timeout 200ms",
             plain("/api/", "proxy_connect_timeout 200ms;"), H2(["/api/items"], 10),
             "suspected", "ruled out", dead=2, slow=2, params="max_fails=0"),
    Scenario("HTTP/2, 50 requests, Lua set_more_tries(1), tries 3",
             lua(3), H2(["/storm"], 50), "suspected", "ruled out", dead=1),
    # 1,000 requests is nginx's default keepalive_requests: the most one connection
    # carries, so 3 dead peers make at most 3,000 failures on it
    Scenario("busy HTTP/2: 1,000 requests, tries 3, 3 dead (max_fails=0)",
             plain("/api/", "proxy_next_upstream_tries 3;"),
             H2(["/api/items"], 1000), "suspected", "ruled out", dead=3, params="max_fails=0"),
    # keepalive_requests 10000: 6,000 failures on one connection. Without the configuration
    # that is more than nginx's default allows, so it reads as a loop (a known limit, the
    # README's table says so); the configuration tells.
    Scenario("busy HTTP/2: 2,000 requests, keepalive_requests 10000, tries 3, 3 dead",
             plain("/api/", "proxy_next_upstream_tries 3;", server=BUSY),
             H2(["/api/items"], 2000), "confirmed", "ruled out", dead=3, params="max_fails=0"),
    Scenario("busy HTTP/2: 2,000 requests, plain defaults (max_fails=1): no live upstreams",
             plain("/api/", server=BUSY), H2(["/api/items"], 2000), "suspected", "ruled out",
             dead=3),
    # -- loops --
    Scenario("Lua loop on HTTP/1.1: one request, set_more_tries(1), tries 0",
             lua(0), OneRequest("/storm"), "confirmed", "confirmed", http2=False, dead=1),
    Scenario("Lua loop on an HTTP/2 connection that also carries 19 healthy requests",
             lua(0, OK), H2(["/storm", *["/ok"] * 19], 20, streams=20, loops=True),
             "confirmed", "confirmed", dead=1),
]


def ids(scenario: Scenario) -> str:
    return re.sub(r"[^a-z0-9]+", "-", scenario.name.lower()).strip("-")[:60]


def params() -> list[object]:
    return [pytest.param(s, id=ids(s), marks=[pytest.mark.xfail(
        strict=True, raises=s.bug.raises, reason=s.bug.reason)] if s.bug else [])
        for s in SCENARIOS]


# -- running one ------------------------------------------------------------------------------

CONF = """
worker_processes 1;
error_log {prefix}/logs/scenario.error.log info;
events { worker_connections 2048; }
http {
    %(temp)s
    log_format scenario '$connection $status "$request"';
    access_log {prefix}/logs/access.log scenario;
    %(lua)s
"""


class _Backend(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # nginx opens a connection per request, all at once
    daemon_threads = True


@contextlib.contextmanager
def live_backend() -> Iterator[int]:
    """A tiny HTTP server on 127.0.0.1 answering 200 to every GET."""
    server = _Server(("127.0.0.1", 0), _Backend)
    thread = threading.Thread(target=server.serve_forever, name="live backend", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def render(scenario: Scenario, prefix: Path, ports: dict[str, int], dead: list[int],
           slow: list[int]) -> str:
    """The whole nginx.conf of ``scenario`` (the harness adds pid and load_module)."""
    params = f" {scenario.params}" if scenario.params else ""
    servers = "".join(f"        server 127.0.0.1:{p}{params};  # refuses\n" for p in dead) \
        + "".join(f"        server 127.0.0.1:{p}{params};  # drops SYNs\n" for p in slow)
    values: dict[str, object] = {
        **ports, **{f"dead{i}": p for i, p in enumerate(dead)}, "servers": servers,
        "listen": f"listen 127.0.0.1:{ports['listen']}{' http2' if scenario.http2 else ''};",
    }
    head = CONF % {
        "temp": http_temp_paths(prefix),
        "lua": 'lua_package_path "/usr/share/lua/5.1/?.lua;;";' if scenario.lua else "",
    }
    return head + scenario.conf % values + "}\n"




class RecordingKnowledge(Knowledge):
    """The configuration's verdicts, and the connection each was last given for (so the
    judgement of a ruled-out connection, which gets no alert, can be read)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[tuple[str, int, int], tuple[Conn, Verdict | None]] = {}

    def verdict(self, conn: Conn) -> Verdict | None:
        found = super().verdict(conn)
        self.seen[conn.key] = (conn, found)
        return found

    def ruled_out(self, alerts: list[Alert]) -> dict[tuple[str, int, int], str]:
        """The connections judged ``ruled_out`` that have no alert: their evidence."""
        alerted = {(a.source, a.pid, a.cid) for a in alerts}
        out = {}
        for key, (conn, verdict) in self.seen.items():
            judgement = judge(conn, verdict)
            if key not in alerted and judgement.confidence == "ruled_out":
                out[key] = judgement.evidence[0]
        return out


@dataclass
class Run:
    scenario: Scenario
    prefix: Path
    failures: Counter[tuple[int, int]]  # (worker pid, connection id) → failure lines
    peak: int  # most failures of one connection in one log second
    requests: Counter[tuple[str, int]]  # the access log: (path, status) → requests
    plain: ReplayResult  # replayed without the configuration
    known: ReplayResult  # with it
    knowledge: RecordingKnowledge

    @property
    def ruled_out(self) -> dict[tuple[str, int, int], str]:
        return self.knowledge.ruled_out(self.known.alerts)

    def looping(self) -> tuple[int, int]:
        """The connection that looped: the one with by far the most failures."""
        key, count = self.failures.most_common(1)[0]
        assert count > 2000, f"no loop: at most {count} failures on one connection"
        return key


def run_scenario(scenario: Scenario, tmp_path: Path) -> Run:
    """Run nginx with the scenario, drive its client, wait for the log to go quiet, stop
    nginx, read what it did, and replay its error log without and with its nginx.conf."""
    prefix = tmp_path / "nginx"
    log = prefix / "logs" / "scenario.error.log"
    modules = ["ndk_http", "http_lua"] if scenario.lua else []
    with contextlib.ExitStack() as stack:
        dead = [stack.enter_context(closed_port()) for _ in range(scenario.dead)]
        slow = [stack.enter_context(full_backlog_port()) for _ in range(scenario.slow)]
        ports = {"listen": free_port(), "placeholder": stack.enter_context(closed_port())}
        if "%(live)" in scenario.conf:
            ports["live"] = stack.enter_context(live_backend())
        text = render(scenario, prefix, ports, dead, slow)
        with running_nginx(prefix, text, ports=[ports["listen"]], modules=modules):
            scenario.client.run(ports["listen"], tmp_path)
            wait_quiet(log, QUIET_TIMEOUT)
    # nginx stopped (SIGQUIT): every line is on disk
    data = log.read_bytes()
    failures: Counter[tuple[int, int]] = Counter()
    per_second: Counter[tuple[int, int, bytes]] = Counter()
    for second, pid, cid in FAILURE.findall(data):
        failures[int(pid), int(cid)] += 1
        per_second[int(pid), int(cid), second] += 1
    access = (prefix / "logs" / "access.log").read_text(errors="replace")
    requests = Counter((request.split(" ")[1] if " " in request else request, int(status))
                       for _conn, status, request in ACCESS.findall(access))
    known = RecordingKnowledge.load([str(prefix / "nginx.conf")])
    assert isinstance(known, RecordingKnowledge)
    return Run(scenario, prefix, failures, max(per_second.values(), default=0), requests,
               replay([str(log)], tz=UTC, threads=1),
               replay([str(log)], tz=UTC, threads=1, knowledge=known), known)


# -- the results table -------------------------------------------------------------------------

def _said(result: ReplayResult, ruled_out: int = 0) -> str:
    """``**confirmed** (http_retry_loop)``, ``suspected x2 (…)``, ``ruled out``…"""
    parts = []
    for confidence in ("confirmed", "suspected"):
        these = [a for a in result.alerts if a.confidence == confidence]
        if these:
            codes = ", ".join(sorted({a.diagnosis.code for a in these if a.diagnosis}))
            count = f" x{len(these)}" if len(these) > 1 else ""
            shown = f"**{confidence}**" if confidence == "confirmed" else confidence
            parts.append(f"{shown}{count} ({codes})")
    if ruled_out:
        parts.append(f"ruled out{f' x{ruled_out}' if ruled_out > 1 else ''}")
        if result.ruled_out != ruled_out:
            parts.append(f"counted as ruled out: {result.ruled_out}")
    return "; ".join(parts) or "no alert"


def _first_evidence(alerts: list[Alert], about: str = "") -> str | None:
    for alert in alerts:
        for line in alert.to_dict()["evidence"]:
            if about in line:
                return str(line)
    return None


def table_row(run: Run) -> str:
    s = run.scenario
    total = sum(run.failures.values())
    conns = len(run.failures)
    statuses = ", ".join(f"{n:,} {path} → {status}" for (path, status), n in sorted(
        run.requests.items(), key=lambda kv: (-kv[1], kv[0])))
    did = (f"{statuses}; {total:,} connect failures on {conns} "
           f"connection{'s' if conns != 1 else ''}, peak {run.peak:,}/s")
    ruled_out = run.ruled_out
    why = f"log: {_first_evidence(run.plain.alerts) or 'below the threshold'}"
    config = _first_evidence(run.known.alerts, "configuration") or next(
        iter(ruled_out.values()), None)
    if config:
        why += f"; with the configuration: {config}"
    why = why.replace(f"{run.prefix}/", "").replace("|", "\\|")
    return (f"| {s.name} | {s.client.describe()}: {did} | {_said(run.plain)} | "
            f"{_said(run.known, len(ruled_out))} | {why} |")


TABLE_HEAD = ("| scenario | what nginx did | retrywatch, log only | with --nginx-config | why |\n"
              "| --- | --- | --- | --- | --- |\n")


@pytest.fixture(scope="session")
def results() -> Iterator[dict[str, str]]:
    """Each scenario's row of the results table; printed (``-s``) and written to
    ``$RETRYWATCH_SCENARIO_TABLE`` at the end of the session."""
    rows: dict[str, str] = {}
    yield rows
    if not rows:
        return
    table = TABLE_HEAD + "".join(rows[s.name] + "\n" for s in SCENARIOS if s.name in rows)
    print("\n" + table)
    target = os.environ.get("RETRYWATCH_SCENARIO_TABLE")
    if target:
        Path(target).write_text(table, encoding="utf-8")


# -- the tests --------------------------------------------------------------------------------

def check_loop(result: ReplayResult, run: Run, *, with_config: bool) -> None:
    """Exactly one alert, confirmed, on the connection that looped, with a loop diagnosis."""
    pid, cid = run.looping()
    said = [(a.pid, a.cid, a.confidence, a.to_dict()["failures"]) for a in result.alerts]
    if [(a.pid, a.cid, a.confidence) for a in result.alerts] != [(pid, cid, "confirmed")]:
        raise Misjudged(f"a loop on *{cid} ({run.failures[pid, cid]:,} failures), yet: {said}")
    [alert] = result.alerts
    assert alert.diagnosis is not None and alert.diagnosis.code in LOOP_CODES, alert.diagnosis
    assert alert.to_dict()["failures"] == run.failures[pid, cid]
    assert result.stats()["alerts_confirmed"] == 1
    configuration = alert.to_dict()["configuration"]
    if with_config:
        assert configuration is not None and configuration["loop"] is True, configuration
    else:
        assert configuration is None


def check_benign(result: ReplayResult, run: Run, expected: Outcome, *,
                 with_config: bool) -> None:
    """No confirmed alert; without the configuration suspected ones, with it none at all,
    and each connection alerted without it ruled out."""
    said = {(a.pid, a.cid): (a.confidence, a.to_dict()["failures"]) for a in result.alerts}
    if expected == "confirmed":  # the known limit: more requests than nginx's default
        assert not with_config
        assert [a.confidence for a in result.alerts] == ["confirmed"], said
        return
    if any(a.confidence == "confirmed" for a in result.alerts):
        raise Misjudged(f"benign, yet confirmed: {said} (peak {run.peak:,}/s)")
    assert result.stats()["alerts_confirmed"] == 0
    if expected == "suspected":
        assert result.alerts, f"no alert: nothing crossed the threshold ({run.failures})"
        assert result.stats()["alerts_suspected"] == len(result.alerts)
        return
    assert with_config and expected == "ruled out"
    if result.alerts:
        raise Misjudged(f"benign, yet alerted with its configuration: {said}")
    alerted = {(a.source, a.pid, a.cid) for a in run.plain.alerts}
    assert alerted, "nothing crossed the threshold: nothing to rule out"
    assert set(run.ruled_out) == alerted, (run.ruled_out, alerted)
    if result.stats()["ruled_out_by_configuration"] != len(alerted):
        raise NotCounted(f"{len(alerted)} connections ruled out, counted "
                         f"{result.stats()['ruled_out_by_configuration']}")


@pytest.mark.parametrize("scenario", params())
def test_busy_or_runaway(scenario: Scenario, tmp_path: Path, results: dict[str, str]) -> None:
    run = run_scenario(scenario, tmp_path)
    results[scenario.name] = table_row(run)
    assert run.failures, "no connect failure: are the dead ports closed?"
    assert run.plain.stats()["connect_failures"] == sum(run.failures.values())
    assert run.known.stats()["connect_failures"] == sum(run.failures.values())
    healthy = {status for (path, status) in run.requests if path == "/ok"}
    assert healthy <= {200}, run.requests  # the live location answers throughout
    if scenario.loop:
        abandoned = sum(n for (path, status), n in run.requests.items() if status == 499)
        assert abandoned == 1, run.requests  # the looping request, its client gone
        check_loop(run.plain, run, with_config=False)
        check_loop(run.known, run, with_config=True)
    else:
        check_benign(run.plain, run, scenario.without, with_config=False)
        check_benign(run.known, run, scenario.with_config, with_config=True)


# -- the bug the keep-alive scenarios show, without nginx ---------------------------------------

REPRO_CONF = """
events {}
http {
    upstream dead {
%s    }
    server {
        listen 127.0.0.1:8080;
        server_name scenario.test;
        location /healthz { proxy_pass http://dead; }
    }
}
"""
REPRO_FAILED = (
    '2026/12/02 15:44:46 [error] 10#10: *1 connect() failed (111: Connection refused) while '
    'connecting to upstream, client: 127.0.0.1, server: scenario.test, request: "GET /healthz '
    'HTTP/1.1", upstream: "http://127.0.0.1:%d/healthz", host: "scenario.test"\n')
REPRO_ENDED = (  # and a line after it (the last line is held until the end of the file)
    "2026/12/02 15:44:48 [info] 10#10: *1 client 127.0.0.1 closed keepalive connection\n"
    "2026/12/02 15:44:49 [notice] 10#10: gracefully shutting down\n")


def test_ruled_out_connection_that_ended_is_counted(tmp_path: Path) -> None:
    """Two keep-alive requests fail against each of 12 dead servers (max_fails=0), then the
    connection ends: the configuration bounds the route, so no alert and one connection
    ruled out, whichever chunk the end is read in."""
    ports = range(9001, 9013)
    conf = tmp_path / "nginx.conf"
    conf.write_text(REPRO_CONF % "".join(f"        server 127.0.0.1:{p} max_fails=0;\n"
                                         for p in ports))
    log = tmp_path / "error.log"
    log.write_text("".join(REPRO_FAILED % p for p in [*ports, *ports]) + REPRO_ENDED)
    knowledge = Knowledge.load([str(conf)])
    assert [a.confidence for a in replay([str(log)], tz=UTC, threads=1).alerts] == ["suspected"]
    counted = []
    for chunk_size in (4096, 1 << 22):  # the end in a later chunk; in the same chunk
        result = replay([str(log)], tz=UTC, threads=1, knowledge=knowledge,
                        chunk_size=chunk_size)
        assert result.alerts == []
        counted.append(result.stats()["ruled_out_by_configuration"])
    if counted != [1, 1]:
        raise NotCounted(f"ruled_out_by_configuration by chunk size (4 KiB, 4 MiB): {counted}")
