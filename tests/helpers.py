"""Builders for the detector and diagnosis tests: real nginx error-line shapes, formatted.

The shapes are those written by a real nginx 1.22.1 (shared/real-nginx/notes.md) and by
ingress-nginx 0.25 (DESIGN.md). Times are seconds after :data:`BASE` (UTC).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from reference.detector import Detector, DetectorConfig
from reference.parser import EventHead, Parser

from retrywatch.detect.alerts import Alert, AlertChange
from retrywatch.detect.core import new_core
from retrywatch.detect.engine import DetectorStats, apply_changes

ZONE = ZoneInfo("UTC")
BASE = datetime(2026, 11, 25, 17, 0, 0, tzinfo=UTC)
BASE_TS = int(BASE.timestamp())
PID = 2454
SOURCE = "nginx"

PARSER = Parser(ZONE)

Batch = list[tuple[EventHead, int]]


def stamp(t: int) -> str:
    """The nginx timestamp ``t`` seconds after BASE."""
    return (BASE + timedelta(seconds=t)).strftime("%Y/%m/%d %H:%M:%S")


def when(t: int) -> datetime:
    return BASE + timedelta(seconds=t)


def _prefix(t: int, pid: int, cid: int, level: str = "error") -> str:
    return f"{stamp(t)} [{level}] {pid}#{pid}: *{cid} "


def _http_tail(upstream: str, request: str, host: str, client: str, server: str) -> str:
    return (f', client: {client}, server: {server}, request: "{request}", '
            f'upstream: "{upstream}", host: "{host}"')


def stream_refused(t: int, cid: int, *, pid: int = PID, upstream: str = "10.0.0.2:5555",
                   client: str = "10.0.0.1", server: str = "0.0.0.0:5555") -> str:
    """The ingress-nginx 0.25 incident line: a stream session's async refusal."""
    return (f"{_prefix(t, pid, cid)}connect() failed (111: Connection refused) while "
            f'connecting to upstream, client: {client}, server: {server}, upstream: '
            f'"{upstream}", bytes from/to client:0/0, bytes from/to upstream:0/0')


def stream_timeout(t: int, cid: int, *, pid: int = PID, upstream: str = "10.0.0.2:5555",
                   client: str = "10.0.0.1", server: str = "0.0.0.0:5555") -> str:
    return (f"{_prefix(t, pid, cid)}upstream timed out (110: Connection timed out) while "
            f'connecting to upstream, client: {client}, server: {server}, upstream: '
            f'"{upstream}", bytes from/to client:0/0, bytes from/to upstream:0/0')


def http_refused(t: int, cid: int, *, pid: int = PID, peer: str = "10.0.0.2:80",
                 uri: str = "/", scheme: str = "http", host: str = "h",
                 client: str = "10.0.0.1", server: str = "h",
                 method: str = "GET") -> str:
    """An HTTP async refusal; ``upstream:`` is ``scheme://peer`` + the request URI."""
    request = f"{method} {uri} HTTP/1.1"
    return (f"{_prefix(t, pid, cid)}connect() failed (111: Connection refused) while "
            f"connecting to upstream"
            + _http_tail(f"{scheme}://{peer}{uri}", request, host, client, server))


def grpc_refused(t: int, cid: int, *, pid: int = PID, peer: str = "10.0.0.2:50051",
                 uri: str = "/pkg.Svc/Call") -> str:
    """A gRPC proxy failure: nginx prints ``upstream: "grpc://addr"`` with no URI."""
    return (f"{_prefix(t, pid, cid)}connect() failed (111: Connection refused) while "
            f"connecting to upstream"
            + _http_tail(f"grpc://{peer}", f"POST {uri} HTTP/2.0", "h", "10.0.0.1", "h"))


def http_timeout(t: int, cid: int, *, pid: int = PID, peer: str = "10.0.0.2:80",
                 uri: str = "/", action: str = "connecting to upstream") -> str:
    return (f"{_prefix(t, pid, cid)}upstream timed out (110: Connection timed out) while "
            f"{action}"
            + _http_tail(f"http://{peer}{uri}", f"GET {uri} HTTP/1.1", "h", "10.0.0.1", "h"))


def unix_refused(t: int, cid: int, *, pid: int = PID, path: str = "/run/x.sock",
                 uri: str = "/x") -> str:
    """An immediate failure: ``connect() to unix:... failed`` (note nginx's extra ':')."""
    return (f"{_prefix(t, pid, cid)}connect() to unix:{path} failed (111: Connection refused) "
            f"while connecting to upstream"
            + _http_tail(f"http://unix:{path}:{uri}", f"GET {uri} HTTP/1.1", "h",
                         "10.0.0.1", "h"))


def premature_close(t: int, cid: int, *, pid: int = PID, peer: str = "10.0.0.2:80",
                    uri: str = "/") -> str:
    """The end of a stuck HTTP request when the client aborts (info)."""
    return (f"{_prefix(t, pid, cid, 'info')}epoll_wait() reported that client prematurely "
            "closed connection, so upstream connection is closed too while connecting to "
            "upstream"
            + _http_tail(f"http://{peer}{uri}", f"GET {uri} HTTP/1.1", "h", "10.0.0.1", "h"))


def stream_connected(t: int, cid: int, *, pid: int = PID) -> str:
    """An unrelated info line (a new stream session), to move event time."""
    return f"{_prefix(t, pid, cid, 'info')}client 10.9.9.9:40000 connected to 0.0.0.0:5555"


def head(line: str, source: str = SOURCE) -> EventHead:
    h = PARSER.head(line, source)
    assert isinstance(h, EventHead), h
    return h


def ones(lines: Iterable[str], source: str = SOURCE) -> Batch:
    """One ``(head, 1)`` per line."""
    return [(head(line, source), 1) for line in lines]


def aggregated(lines: Iterable[str], source: str = SOURCE) -> Batch:
    """Identical lines of a batch as one ``(head, n)``, in order of first appearance
    (identical lines share their second, so event time stays nondecreasing)."""
    counts: dict[str, int] = {}
    for line in lines:
        counts[line] = counts.get(line, 0) + 1
    return [(head(line, source), n) for line, n in counts.items()]


def feed(detector: Detector, batches: Iterable[Batch]) -> list[AlertChange]:
    changes: list[AlertChange] = []
    for batch in batches:
        changes += detector.process(batch)
    return changes


def chunks(batch: Sequence[tuple[EventHead, int]], size: int) -> list[Batch]:
    return [list(batch[i : i + size]) for i in range(0, len(batch), size)]


def alerts_of(changes: Iterable[AlertChange]) -> dict[str, Alert]:
    """Every alert seen in the changes, by id (alerts are mutated in place: the last state)."""
    out: dict[str, Alert] = {}
    for change in changes:
        out[change.alert.id] = change.alert
    return out


def fired(changes: Iterable[AlertChange]) -> list[Alert]:
    return [c.alert for c in changes if c.kind == "fired"]


class CoreDetector:
    """The compiled core behind the reference detector's interface: each ``(head, n)`` is
    the event's text ``n`` times, a batch is one call (one batch of the core's)."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        cfg = config or DetectorConfig()
        self.config = cfg
        self.core = new_core(cfg, ZONE)
        self._by_key: dict[tuple[str, int, int], Alert] = {}

    def process(self, batch: Iterable[tuple[EventHead, int]]) -> list[AlertChange]:
        changes: list[AlertChange] = []
        runs: list[tuple[str, list[bytes]]] = []
        for h, n in batch:
            if not runs or runs[-1][0] != h.source:
                runs.append((h.source, []))
            runs[-1][1].extend([h.text.encode("utf-8", "surrogateescape")] * n)
        # A core call is one batch; a batch that mixes sources takes one call per run.
        for source, events in runs:
            changes += apply_changes(self.core.feed_events(source, events), self._by_key, ZONE)
        return changes

    def advance(self, ts: int, _when: Any = None) -> list[AlertChange]:
        return apply_changes(self.core.advance(ts), self._by_key, ZONE)

    @property
    def stats(self) -> DetectorStats:
        return DetectorStats.of(self.core)

    @property
    def tracked_keys(self) -> int:
        return self.core.tracked_keys

    @property
    def watermark(self) -> int | None:
        return self.core.watermark

    @property
    def firing(self) -> dict[tuple[str, int, int], Alert]:
        return dict(self._by_key)

    def firing_alerts(self) -> list[Alert]:
        return list(self._by_key.values())


#: Both detectors, for tests that must hold for the reference model and the core alike.
DETECTORS = {"reference": Detector, "core": CoreDetector}


def each_detector(module: str) -> Any:
    """A module-scoped autouse fixture that runs every test of ``module`` against the
    reference model and against the compiled core: it sets the module's ``Detector``.
    Use as ``implementation = each_detector(__name__)``."""

    @pytest.fixture(autouse=True, scope="module", params=sorted(DETECTORS))
    def implementation(request: pytest.FixtureRequest) -> Iterator[str]:
        tests = sys.modules[module]
        tests.Detector = DETECTORS[request.param]  # type: ignore[attr-defined]
        yield request.param
        tests.Detector = None  # type: ignore[attr-defined]

    return implementation
