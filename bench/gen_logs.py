#!/usr/bin/env python3
"""Deterministic nginx error logs for retrywatch's benchmarks, with their ground truth.

Two workloads, each a seeded generator of nginx 1.22 error-log lines:

``storm``
    The 2019 incident: about 85 % of the lines are runaway stream-proxy retries (a few
    connection ids open at once, thousands of ``connect() failed (111: Connection
    refused)`` each, alternating two upstreams; when one ends, a new id takes its slot),
    about 10 % ordinary HTTP upstream errors from many connections (each fails once or
    twice, the second time against another peer), about 5 % other lines (other levels,
    ``[lua]`` lines, lines without a connection id). 2,000 to 6,000 lines per second of
    log time.
``flood``
    A busy ingress whose upstream pods died: every request fails once
    (``connect() failed`` in the HTTP shape, a new connection id each, ids increasing
    across 2 worker pids), ``--per-second`` (16,700) new connections per second of log
    time, for ``--seconds`` (180) by default; hidden in it, one slow runaway HTTP
    connection that fails 2 times a second against two peers in turn for the whole
    duration.

The log goes to ``-o FILE`` (default stdout), written in blocks of several MiB. The
ground truth is one JSON document, to ``--summary FILE`` or to stderr:

- ``lines``, ``bytes``, ``seconds``, ``first_ts``, ``last_ts``, ``mix`` (lines by class);
- ``connect_failures`` by kind, named as retrywatch names them (``connect_failed``,
  ``connect_to_failed``, ``upstream_timed_out`` while connecting, ``no_live_upstreams``),
  and ``connect_failures_total``;
- ``connect_failed_literal``: lines holding ``connect() failed`` (``grep -c -F``);
- ``cids_with_connect_failure`` and ``per_cid_sha256``: sha256 over ``"<cid> <count>\\n"``
  for every connection id with a connect failure (all kinds), in numeric order;
- ``runaway``: ``{cid: failures}`` of the connections retrywatch's default detector
  (window 60 s, threshold 10, min-repeat 2) must flag, ``runaway_detail`` their pid,
  peers and first and last time; ``max_ordinary_failures``: the most connect failures of
  any other connection (at most 2, each against another peer).

The benchmarks also import this module: ``Storm`` and ``Flood`` make lines for any time
stamp (the live benchmark stamps them with the current time), and ``ensure()`` generates
a file once into a cache directory and reuses it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from array import array
from calendar import timegm
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve()
THRESHOLD = 10  # retrywatch's default detector
WINDOW = 60
BLOCK_BYTES = 8 * 1024 * 1024  # written in blocks of about this size
KINDS = ("connect_failed", "connect_to_failed", "upstream_timed_out", "no_live_upstreams")
STORM_START = "2019/09/17 03:46:20"
FLOOD_START = "2024/03/05 14:07:00"
DEFAULT_SEED = 20190917

Crossing = tuple[int, int]  # (pid, cid) of a connection whose THRESHOLD-th failure it was


def stamp_of(epoch: int) -> str:
    """nginx's time stamp (local time, here UTC) for a Unix time."""
    return time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(epoch))


def parse_stamp(text: str) -> int:
    return timegm(time.strptime(text, "%Y/%m/%d %H:%M:%S"))


class Truth:
    """Ground truth gathered while lines are made."""

    def __init__(self, track: bool) -> None:
        self.track = track  # per-connection counts (off in the live benchmark)
        self.kinds = dict.fromkeys(KINDS, 0)
        self.literal = 0
        self.mix: dict[str, int] = {}
        self.counts: dict[int, int] = {}  # cid -> connect failures (connections that repeat)
        self.once = array("q")  # cids with exactly one failure, in increasing order
        self.max_ordinary = 0

    def fail(self, cid: int, kind: str) -> None:
        self.kinds[kind] += 1
        if kind == "connect_failed":
            self.literal += 1
        if self.track:
            self.counts[cid] = self.counts.get(cid, 0) + 1

    def per_cid_sha256(self) -> tuple[int, str]:
        h = hashlib.sha256()
        merged = dict(self.counts)
        for cid in self.once:
            merged[cid] = merged.get(cid, 0) + 1
        for cid in sorted(merged):
            h.update(f"{cid} {merged[cid]}\n".encode())
        return len(merged), h.hexdigest()


class _Runaway:
    """One runaway connection: the same id failing again and again, peers in turn."""

    __slots__ = (
        "cid", "cross_t", "first", "first_stamp", "last_stamp", "left", "lines", "n", "peers",
        "pid", "stamp", "tails",
    )  # fmt: skip

    def __init__(self, pid: int, cid: int, peers: list[str], tails: list[str], left: int) -> None:
        self.pid = pid
        self.cid = cid
        self.peers = peers
        self.tails = tails  # the line after the time stamp, one per peer
        self.left = left
        self.n = 0
        self.stamp = ""
        self.lines: list[str] = []
        self.first: float | None = None  # time of its first failure
        self.first_stamp = ""
        self.last_stamp = ""
        self.cross_t = float("inf")  # time of its threshold-th failure


class Workload:
    """What ``Storm`` and ``Flood`` share: a random source, a connection id counter, truth."""

    name = ""

    def __init__(self, seed: int, track: bool = True, threshold: int = THRESHOLD) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.truth = Truth(track)
        self.threshold = threshold
        self.runaways: list[_Runaway] = []  # every runaway connection ever started

    def _count(self, what: str, n: int = 1) -> None:
        self.truth.mix[what] = self.truth.mix.get(what, 0) + n

    def _fail_runaway(self, c: _Runaway, t: float, stamp: str, crossed: list[Crossing]) -> str:
        """The next line of runaway ``c`` at time ``t``; notes its threshold crossing."""
        if c.stamp is not stamp:  # its lines for this second, made once
            c.stamp = stamp
            c.lines = [stamp + tail for tail in c.tails]
        line = c.lines[c.n % len(c.lines)]
        c.n += 1
        if c.first is None:
            c.first = t
            c.first_stamp = stamp
        c.last_stamp = stamp
        if c.n == self.threshold:
            c.cross_t = t
            crossed.append((c.pid, c.cid))
        self.truth.fail(c.cid, "connect_failed")
        return line

    def due_count(self, t: float) -> int:
        """Lines that must be written by time ``t`` whatever the rate (none here)."""
        return 0

    def batch(self, n: int, t: float, stamp: str) -> tuple[list[str], list[Crossing]]:
        """``n`` lines stamped ``stamp`` at time ``t``, and the threshold crossings."""
        raise NotImplementedError

    def runaway_truth(self) -> tuple[dict[str, int], dict[str, Any], list[str]]:
        """The connections the default detector must flag: at least ``threshold``
        failures, the ``threshold``-th within the window of the first (peers alternate,
        so a peer repeats from the third failure). Others are listed as cut short."""
        flagged: dict[str, int] = {}
        detail: dict[str, Any] = {}
        short: list[str] = []
        for c in sorted(self.runaways, key=lambda r: r.cid):
            if c.n == 0:
                continue
            if c.first is not None and c.cross_t - c.first < WINDOW:
                flagged[str(c.cid)] = c.n
                detail[str(c.cid)] = {
                    "pid": c.pid,
                    "failures": c.n,
                    "peers": c.peers,
                    "first_ts": c.first_stamp,
                    "last_ts": c.last_stamp,
                }
            else:
                short.append(str(c.cid))
        return flagged, detail, short


# ------------------------------------------------------------------------- storm

STORM_WORKERS = (2454, 2455, 2456, 2457)
STORM_MASTER = 2453
SHOP_HOSTS = (
    "shop.example.com", "api.example.com", "www.example.com", "img.example.com",
    "login.example.com", "cdn.example.org", "m.example.com", "partners.example.net",
)  # fmt: skip
SHOP_PATHS = (
    "/", "/cart", "/api/v1/cart/items", "/api/v1/orders?page=2", "/api/v1/profile",
    "/session/new", "/search?q=winter+boots", "/p/88213", "/checkout/payment",
    "/status", "/assets/main.3f9c.js", "/assets/site.css", "/robots.txt",
    "/api/v2/stock?sku=XJ-2207", "/graphql", "/events/subscribe",
)  # fmt: skip
METHODS = ("GET",) * 7 + ("POST", "POST", "PUT", "DELETE", "HEAD", "OPTIONS")
GROUPS = ("shop_backend", "api_v1", "auth_pool", "img_resizer")


class Storm(Workload):
    """The incident's retry storm (module docstring). ``batch(n, t, stamp)`` makes ``n``
    lines; ``t`` (seconds) only dates the runaway connections for the truth."""

    name = "storm"

    def __init__(
        self,
        seed: int,
        *,
        active: int = 4,
        retries: tuple[int, int] = (5_000, 60_000),
        p_runaway: float = 0.85,
        p_http: float = 0.10,
        track: bool = True,
        threshold: int = THRESHOLD,
    ) -> None:
        super().__init__(seed, track, threshold)
        rng = self.rng
        self.retries = retries
        self.p_runaway = p_runaway
        self.p_http = p_runaway + p_http
        self.next_cid = 3_584_900
        self.backends = [
            f"10.1.{rng.randint(0, 7)}.{rng.randint(2, 250)}:{rng.choice((8080, 8080, 8000, 9000))}"
            for _ in range(20)
        ]
        self.slots = [self._new_runaway() for _ in range(active)]
        self.pending: list[dict[str, Any]] = []  # HTTP connections about to fail again

    def _cid(self) -> int:
        # Connections that log nothing (and upstream connections) take ids too.
        self.next_cid += self.rng.randint(1, 20)
        return self.next_cid

    def _ip(self, prefix: str) -> str:
        return f"{prefix}.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"

    def _new_runaway(self) -> _Runaway:
        rng = self.rng
        port = rng.choice((5555, 5555, 6379, 9092, 3306))
        a = f"{self._ip('10.12')}:{port}"
        b = a
        while b == a:
            b = f"{self._ip('10.12')}:{port}"
        pid = rng.choice(STORM_WORKERS)
        cid = self._cid()
        client = self._ip("10.10")
        server = f"0.0.0.0:{rng.choice((55556, 55557, 55558, 16379, 19092))}"
        tails = [
            f" [error] {pid}#{pid}: *{cid} connect() failed (111: Connection refused) while "
            f"connecting to upstream, client: {client}, server: {server}, upstream: "
            f'"{peer}", bytes from/to client:0/0, bytes from/to upstream:0/0\n'
            for peer in (a, b)
        ]
        c = _Runaway(pid, cid, [a, b], tails, rng.randint(*self.retries))
        self.runaways.append(c)
        return c

    # HTTP requests ---------------------------------------------------------

    def _request(self) -> dict[str, Any]:
        rng = self.rng
        host = rng.choice(SHOP_HOSTS)
        path = rng.choice(SHOP_PATHS)
        version = "HTTP/2.0" if rng.random() < 0.3 else "HTTP/1.1"
        client = f"{rng.choice(('10.0', '172.16', '192.168', '198.51'))}.{rng.randint(0, 255)}."
        client += str(rng.randint(1, 254))
        tail = (
            f'client: {client}, server: {host}, request: "{rng.choice(METHODS)} {path} {version}"'
        )
        referrer = f', referrer: "https://{host}/"' if rng.random() < 0.2 else ""
        pid = rng.choice(STORM_WORKERS)
        return {
            "pid": pid, "cid": self._cid(), "tail": tail, "host": host, "path": path,
            "ref": referrer, "peers": [], "client": client,
        }  # fmt: skip

    def _http_failure(self, r: dict[str, Any], stamp: str) -> tuple[str, str]:
        """One failure of request ``r`` against a peer it has not tried; (kind, line)."""
        rng = self.rng
        peer = rng.choice(self.backends)
        while peer in r["peers"]:
            peer = rng.choice(self.backends)
        r["peers"].append(peer)
        k = rng.random()
        if k < 0.55:
            kind, msg = "connect_failed", "connect() failed (111: Connection refused)"
        elif k < 0.70:
            err = rng.choice(("113: No route to host", "101: Network is unreachable"))
            kind, msg = "connect_to_failed", f"connect() to {peer} failed ({err})"
        elif k < 0.88:
            kind, msg = "upstream_timed_out", "upstream timed out (110: Connection timed out)"
        else:
            kind, msg = "no_live_upstreams", "no live upstreams"
            peer = rng.choice(GROUPS)
        pid, path = r["pid"], r["path"]
        line = (
            f"{stamp} [error] {pid}#{pid}: *{r['cid']} {msg} while connecting to upstream, "
            f'{r["tail"]}, upstream: "http://{peer}{path}", host: "{r["host"]}"{r["ref"]}\n'
        )
        return kind, line

    def _http(self, stamp: str) -> str:
        rng = self.rng
        if self.pending and rng.random() < 0.5:  # the retry of an earlier failure
            r = self.pending.pop(rng.randrange(len(self.pending)))
        else:
            r = self._request()
            r["again"] = rng.random() < 0.35 and len(self.pending) < 64
        kind, line = self._http_failure(r, stamp)
        self.truth.fail(r["cid"], kind)
        n = len(r["peers"])
        self.truth.max_ordinary = max(self.truth.max_ordinary, n)
        if n == 1 and r.get("again") and kind != "no_live_upstreams":
            self.pending.append(r)
        return line

    # other lines -------------------------------------------------------------

    def _other(self, stamp: str) -> str:
        rng = self.rng
        k = rng.random()
        w = rng.choice(STORM_WORKERS)
        head = f"{stamp} [%s] {w}#{w}: "
        if k < 0.40:
            r = self._request()
            cid, tail = r["cid"], f'{r["tail"]}, upstream: "http://{rng.choice(self.backends)}'
            tail += f'{r["path"]}", host: "{r["host"]}"'
            if k < 0.10:
                return (
                    head
                    % "warn"
                    + f"*{cid} upstream server temporarily disabled while connecting to "
                    f"upstream, {tail}\n"
                )
            if k < 0.18:
                return (
                    head % "warn" + f"*{cid} an upstream response is buffered to a temporary file "
                    f"/var/cache/nginx/proxy_temp/{rng.randint(1, 9)}/{rng.randint(10, 99)}/"
                    f"00000{rng.randint(10000, 99999)} while reading upstream, {tail}\n"
                )
            if k < 0.26:
                return (
                    head
                    % "error"
                    + f"*{cid} upstream timed out (110: Connection timed out) while reading "
                    f"response header from upstream, {tail}\n"
                )
            if k < 0.32:
                return (
                    head
                    % "error"
                    + f"*{cid} recv() failed (104: Connection reset by peer) while reading "
                    f"response header from upstream, {tail}\n"
                )
            return (
                head
                % "info"
                + f"*{cid} epoll_wait() reported that client prematurely closed connection, "
                f"so upstream connection is closed too while sending request to upstream, "
                f"{tail}\n"
            )
        if k < 0.55:
            r = self._request()
            return head % "info" + f"*{r['cid']} client {r['client']} closed keepalive connection\n"
        if k < 0.62:
            r = self._request()
            return (
                head
                % "info"
                + f"*{r['cid']} client closed connection while waiting for request, client: "
                f"{r['client']}, server: 0.0.0.0:443\n"
            )
        if k < 0.72:
            r = self._request()
            return (
                head
                % "error"
                + f"*{r['cid']} [lua] rate_limit.lua:{rng.randint(30, 180)}: incoming(): could "
                f"not connect to redis: connection refused, {r['tail']}, host: "
                f'"{r["host"]}"\n'
            )
        if k < 0.76:
            return (
                head
                % "error"
                + f"*{self._cid()} stream [lua] tcp_udp_balancer.lua:{rng.randint(90, 200)}: "
                "could not parse backends data: Expected value but found invalid token at "
                "character 1, context: ngx.timer\n"
            )
        if k < 0.82:
            return (
                head
                % "warn"
                + f"[lua] healthcheck.lua:{rng.randint(900, 1100)}: log(): healthcheck: "
                f"{rng.choice(self.backends)} unhealthy TCP increment (1/2) for "
                f"'{rng.choice(GROUPS)}', context: ngx.timer\n"
            )
        if k < 0.85:
            return (
                head
                % "notice"
                + f"[lua] init_worker.lua:{rng.randint(5, 60)}: worker {w} started, "
                "context: init_worker_by_lua*\n"
            )
        if k < 0.88:
            r = self._request()
            return (
                head
                % "crit"
                + f"*{r['cid']} SSL_do_handshake() failed (SSL: error:0A00006C:SSL routines::"
                f"bad key share) while SSL handshaking, client: {r['client']}, server: "
                "0.0.0.0:443\n"
            )
        m = STORM_MASTER
        mhead = f"{stamp} [notice] {m}#{m}: "
        if k < 0.90:
            sp = rng.randint(3000, 30000)
            return f"{stamp} [notice] {sp}#{sp}: signal process started\n"
        if k < 0.92:
            sender = rng.randint(3000, 30000)
            return mhead + f"signal 1 (SIGHUP) received from {sender}, reconfiguring\n"
        if k < 0.94:
            return mhead + "reconfiguring\n"
        if k < 0.96:
            return mhead + f"signal 17 (SIGCHLD) received from {w}\n"
        if k < 0.98:
            return mhead + f"worker process {w} exited with code 0\n"
        return head % "notice" + "gracefully shutting down\n"

    # lines -----------------------------------------------------------------

    def batch(self, n: int, t: float, stamp: str) -> tuple[list[str], list[Crossing]]:
        rng = self.rng
        rnd = rng.random
        slots = self.slots
        nslots = len(slots)
        p_run, p_http = self.p_runaway, self.p_http
        out: list[str] = []
        crossed: list[Crossing] = []
        runaway = http = 0
        for _ in range(n):
            r = rnd()
            if r < p_run:
                runaway += 1
                i = int(rnd() * nslots)
                c = slots[i]
                out.append(self._fail_runaway(c, t, stamp, crossed))
                if c.n >= c.left:
                    slots[i] = self._new_runaway()
            elif r < p_http:
                http += 1
                out.append(self._http(stamp))
            else:
                out.append(self._other(stamp))
        self._count("runaway", runaway)
        self._count("http_error", http)
        self._count("other", n - runaway - http)
        return out, crossed


# ------------------------------------------------------------------------- flood

FLOOD_WORKERS = (38, 39)
FLOOD_HOSTS = ("shop.example.com", "api.example.com", "checkout.example.com", "www.example.com")
FLOOD_PATHS = (
    "/", "/api/v1/cart", "/api/v1/products?category=shoes&page=3", "/api/v1/orders/latest",
    "/api/v1/session", "/checkout/summary", "/static/js/app.7b1e.js", "/img/p/55102.webp",
    "/search?q=rain+jacket", "/healthz", "/api/v2/recommendations?user=8812", "/favicon.ico",
)  # fmt: skip
FLOOD_FIRST_CID = 48_210_000


class _Hidden(_Runaway):
    """A slow runaway: one failure every ``1/rate`` seconds from ``due`` until ``end``."""

    __slots__ = ("due", "end", "step")

    def __init__(self, *args: Any, due: float, end: float, step: float) -> None:
        super().__init__(*args)
        self.due = due
        self.end = end
        self.step = step


class Flood(Workload):
    """Every request fails once (module docstring). ``batch(n, t, stamp)`` makes ``n``
    lines: first the hidden runaways' failures due by time ``t`` (seconds), then one-off
    failures of new connections; ``due_count(t)`` says how many of the former there are."""

    name = "flood"

    def __init__(
        self,
        seed: int,
        *,
        hidden: int = 1,
        hidden_every: float = 0.0,
        hidden_rate: float = 2.0,
        hidden_life: float = float("inf"),
        track: bool = True,
        threshold: int = THRESHOLD,
    ) -> None:
        super().__init__(seed, track, threshold)
        rng = self.rng
        dead = [f"10.244.{rng.randint(1, 9)}.{rng.randint(2, 250)}:8080" for _ in range(3)]
        pool = []
        for _ in range(8192):  # the part after the connection id, chosen per line
            host, path = rng.choice(FLOOD_HOSTS), rng.choice(FLOOD_PATHS)
            err = "113: No route to host" if rng.random() < 0.15 else "111: Connection refused"
            client = f"{rng.choice(('10.0', '172.20', '100.64'))}.{rng.randint(0, 255)}."
            client += str(rng.randint(1, 254))
            ver = "HTTP/2.0" if rng.random() < 0.4 else "HTTP/1.1"
            ref = f', referrer: "https://{host}/"' if rng.random() < 0.25 else ""
            pool.append(
                f"connect() failed ({err}) while connecting to upstream, client: {client}, "
                f'server: {host}, request: "{rng.choice(METHODS)} {path} {ver}", upstream: '
                f'"http://{rng.choice(dead)}{path}", host: "{host}"{ref}\n'
            )
        self.pool = pool
        self.next_cid = FLOOD_FIRST_CID
        self.hidden: list[_Hidden] = []
        cids = sorted(rng.sample(range(FLOOD_FIRST_CID - 200_000, FLOOD_FIRST_CID), hidden))
        for i, cid in enumerate(cids):  # opened before the flood: lower ids
            pid = rng.choice(FLOOD_WORKERS)
            peers = [f"10.244.{rng.randint(10, 19)}.{rng.randint(2, 250)}:9000" for _ in "ab"]
            while peers[1] == peers[0]:
                peers[1] = f"10.244.{rng.randint(10, 19)}.{rng.randint(2, 250)}:9000"
            client = f"100.64.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            path = "/api/v1/notifications/stream"
            tails = [
                f" [error] {pid}#{pid}: *{cid} connect() failed (111: Connection refused) "
                f"while connecting to upstream, client: {client}, server: app.example.com, "
                f'request: "GET {path} HTTP/1.1", upstream: "http://{peer}{path}", '
                'host: "app.example.com"\n'
                for peer in peers
            ]
            start = i * hidden_every + rng.random() / hidden_rate
            h = _Hidden(
                pid, cid, peers, tails, 0,
                due=start, end=start + hidden_life, step=1 / hidden_rate,
            )  # fmt: skip
            self.hidden.append(h)
            self.runaways.append(h)

    def due_count(self, t: float) -> int:
        n = 0
        for h in self.hidden:
            if h.due <= t:
                last = min(t, h.end)
                n += max(0, int((last - h.due) / h.step) + 1) if h.due < h.end else 0
        return n

    def batch(self, n: int, t: float, stamp: str) -> tuple[list[str], list[Crossing]]:
        out: list[str] = []
        crossed: list[Crossing] = []
        for h in self.hidden:
            while h.due <= t and h.due < h.end and len(out) < n:
                out.append(self._fail_runaway(h, h.due, stamp, crossed))
                h.due += h.step
        hidden = len(out)
        rng = self.rng
        pick = rng.getrandbits
        pool = self.pool
        cid = self.next_cid
        w0, w1 = (f"{stamp} [error] {p}#{p}: *" for p in FLOOD_WORKERS)
        cids = array("q")
        for _ in range(n - hidden):
            cid += 1 + pick(2)  # ids taken by requests that did not fail, upstream connections
            out.append(f"{w1 if pick(1) else w0}{cid} {pool[pick(13)]}")
            cids.append(cid)
        self.next_cid = cid
        if hidden:  # the hidden lines somewhere in the batch, not first
            for i in range(hidden):
                j = rng.randrange(len(out))
                out[i], out[j] = out[j], out[i]
        truth = self.truth
        ordinary = n - hidden
        truth.kinds["connect_failed"] += ordinary
        truth.literal += ordinary
        truth.max_ordinary = max(truth.max_ordinary, 1 if ordinary else 0)
        if truth.track:
            truth.once.extend(cids)
        self._count("runaway", hidden)
        self._count("one_off", ordinary)
        return out, crossed


# --------------------------------------------------------------------- the file


def generator_digest() -> str:
    """Names this generator's version in the summary (cached files are keyed on it)."""
    return hashlib.sha256(HERE.read_bytes()).hexdigest()[:16]


def write_log(
    gen: Workload,
    out: IO[bytes],
    *,
    lines: int | None,
    seconds: int | None,
    start: int,
    per_second: Callable[[], int],
    chunks: int,
) -> dict[str, Any]:
    """Write ``lines`` lines (or ``seconds`` seconds) in blocks; return the summary."""
    total = written = sec = 0
    buf: list[str] = []
    size = 0
    while (lines is None or total < lines) and (seconds is None or sec < seconds):
        stamp = stamp_of(start + sec)
        m = per_second()
        for k in range(chunks):
            t = sec + (k + 1) / chunks
            want = m * (k + 1) // chunks - m * k // chunks + gen.due_count(t)
            if lines is not None:
                want = min(want, lines - total)
            if want <= 0:
                continue
            part, _ = gen.batch(want, t, stamp)
            text = "".join(part)
            buf.append(text)
            size += len(text)
            total += len(part)
            if size >= BLOCK_BYTES:
                written += out.write("".join(buf).encode("ascii"))
                buf.clear()
                size = 0
        sec += 1
    if buf:
        written += out.write("".join(buf).encode("ascii"))
    truth = gen.truth
    cids, digest = truth.per_cid_sha256()
    runaway, detail, short = gen.runaway_truth()
    return {
        "workload": gen.name,
        "seed": gen.seed,
        "generator_sha256": generator_digest(),
        "lines": total,
        "bytes": written,
        "seconds": sec,
        "first_ts": stamp_of(start),
        "last_ts": stamp_of(start + max(0, sec - 1)),
        "mix": truth.mix,
        "connect_failures": truth.kinds,
        "connect_failures_total": sum(truth.kinds.values()),
        "connect_failed_literal": truth.literal,
        "cids_with_connect_failure": cids,
        "per_cid_sha256": digest,
        "detector": {"window": WINDOW, "threshold": gen.threshold, "min_repeat": 2},
        "max_ordinary_failures": truth.max_ordinary,
        "runaway": runaway,
        "runaway_detail": detail,
        "runaway_cut_short": short,
    }


def generate(args: argparse.Namespace) -> dict[str, Any]:
    if args.workload == "storm":
        gen: Workload = Storm(
            args.seed, active=args.active, retries=(args.retries_min, args.retries_max)
        )
        rng = gen.rng
        per_second: Callable[[], int] = lambda: rng.randint(2000, 6000)  # noqa: E731
        chunks = 1
        start = args.start or STORM_START
    else:
        gen = Flood(args.seed, hidden=args.hidden, hidden_every=args.hidden_every)
        rate = args.per_second
        per_second = lambda: rate  # noqa: E731
        chunks = 16
        start = args.start or FLOOD_START
    lines, seconds = args.lines, args.seconds
    if lines is None and seconds is None:
        lines, seconds = (2_000_000, None) if args.workload == "storm" else (None, 180)
    kw = {"lines": lines, "seconds": seconds, "start": parse_stamp(start)}
    if args.out == "-":
        summary = write_log(gen, sys.stdout.buffer, per_second=per_second, chunks=chunks, **kw)
    else:
        with open(args.out, "wb", buffering=0) as out:
            summary = write_log(gen, out, per_second=per_second, chunks=chunks, **kw)
    if args.workload == "flood":
        summary["per_second"] = args.per_second
    return summary


# -------------------------------------------------------------- cached files


def count_lines(path: Path) -> int:
    """Count newlines; the read also puts the file in the page cache."""
    buf = bytearray(4 * 1024 * 1024)
    n = 0
    with path.open("rb", buffering=0) as f:
        while got := f.readinto(buf):
            n += buf.count(b"\n", 0, got)
    return n


def ensure(
    data_dir: Path,
    workload: str,
    *,
    seed: int = DEFAULT_SEED,
    lines: int | None = None,
    seconds: int | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Path, dict[str, Any]]:
    """The log and summary of ``workload`` in ``data_dir``, generated (in a child
    process, so the caller's memory does not grow) unless a file made by this very
    generator with the same parameters is there and complete."""
    size = f"{lines}l" if lines is not None else f"{seconds}s" if seconds is not None else "default"
    stem = f"{workload}-{size}-s{seed}"
    path, summary_path = data_dir / f"{stem}.log", data_dir / f"{stem}.summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        summary = None
    if (
        isinstance(summary, dict)
        and summary.get("generator_sha256") == generator_digest()
        and path.is_file()
        and path.stat().st_size == summary.get("bytes")
        and count_lines(path) == summary.get("lines")  # also warms the page cache
    ):
        log(f"reusing {path}")
        return path, summary
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(HERE), workload, "--seed", str(seed)]
    if lines is not None:
        cmd += ["-n", str(lines)]
    if seconds is not None:
        cmd += ["--seconds", str(seconds)]
    tmp, tmp_summary = path.with_suffix(".log.tmp"), summary_path.with_suffix(".tmp")
    log(f"generating {path} ...")
    t0 = time.perf_counter()
    subprocess.run([*cmd, "-o", str(tmp), "--summary", str(tmp_summary)], check=True)
    os.replace(tmp, path)
    os.replace(tmp_summary, summary_path)
    summary = json.loads(summary_path.read_text())
    log(f"generated {summary['lines']:,} lines in {time.perf_counter() - t0:.1f} s")
    count_lines(path)  # into the page cache, as the reuse path does
    return path, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("workload", choices=("storm", "flood"))
    size = ap.add_mutually_exclusive_group()
    size.add_argument("-n", "--lines", type=int, help="lines (storm default 2,000,000)")
    size.add_argument("--seconds", type=int, help="seconds of log time (flood default 180)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("-o", "--out", default="-", help="the log (default stdout)")
    ap.add_argument("--summary", help="the ground truth JSON (default stderr)")
    ap.add_argument("--start", help="first time stamp, 'YYYY/MM/DD HH:MM:SS' (UTC)")
    storm = ap.add_argument_group("storm")
    storm.add_argument("--active", type=int, default=4, help="runaway connections at once (4)")
    storm.add_argument("--retries-min", type=int, default=5_000)
    storm.add_argument("--retries-max", type=int, default=60_000)
    flood = ap.add_argument_group("flood")
    flood.add_argument("--per-second", type=int, default=16_700, help="new connections/s")
    flood.add_argument("--hidden", type=int, default=1, help="slow runaway connections (1)")
    flood.add_argument(
        "--hidden-every", type=float, default=0.0, help="seconds between their starts (0)"
    )
    args = ap.parse_args(argv)
    if min(args.lines or 0, args.seconds or 0) < 0:
        ap.error("--lines and --seconds must not be negative")
    if args.retries_min < THRESHOLD or args.retries_max < args.retries_min or args.active < 1:
        ap.error("storm: --active >= 1 and --threshold <= --retries-min <= --retries-max")
    summary = generate(args)
    text = json.dumps(summary, indent=1) + "\n"
    if args.summary:
        Path(args.summary).write_text(text)
    else:
        sys.stderr.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
