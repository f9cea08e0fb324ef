"""The diagnosis of a firing alert, for the retry patterns nginx really writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from helpers import (
    aggregated,
    alerts_of,
    each_detector,
    grpc_refused,
    http_refused,
    http_timeout,
    premature_close,
    stream_refused,
    stream_timeout,
    unix_refused,
)
from reference.detector import DetectorConfig

from retrywatch.detect.diagnosis import Diagnosis

Detector: Any = None  # the implementation under test, set by the fixture below
implementation = each_detector(__name__)  # every test: the reference model, then the core



def diagnosis_of(lines: list[str], config: DetectorConfig | None = None,
                 batch: int = 2000) -> Diagnosis:
    """Run the lines through a detector; the one alert's latest diagnosis."""
    detector = Detector(config)
    changes = []
    for i in range(0, len(lines), batch):
        changes += detector.process(aggregated(lines[i : i + batch]))
    alerts = alerts_of(changes)
    assert len(alerts) == 1, [a.to_dict() for a in alerts.values()]
    diagnosis = next(iter(alerts.values())).diagnosis
    assert diagnosis is not None
    assert diagnosis.cause
    assert diagnosis.to_dict() == {"code": diagnosis.code, "cause": diagnosis.cause,
                                   "fix": diagnosis.fix,
                                   "docs": f"docs/lint/{diagnosis.code}.md"}
    return diagnosis


def test_stream_storm() -> None:
    """The ingress-nginx 0.25 incident: one stream session, two dead pods, ~3k/s."""
    lines = [stream_refused(t, 3584946, upstream=f"10.12.39.{132 + i % 2}:5555")
             for t in range(4) for i in range(3000)]
    d = diagnosis_of(lines)
    assert d.code == "stream_retry_loop"
    assert "proxy_next_upstream_tries" in d.fix
    assert "proxy-stream-next-upstream-tries" in d.fix


def test_http_lua_storm() -> None:
    """balancer_by_lua with set_more_tries(1) on every try: one request, one dead peer."""
    lines = [http_refused(t, 20137, peer="127.0.0.1:17939", uri="/storm1?cid=s1a",
                          host="storm.test", client="127.0.0.66", server="storm.test")
             for t in range(2) for _ in range(20_000)]
    lines.append(premature_close(1, 20137, peer="127.0.0.1:17939", uri="/storm1?cid=s1a"))
    d = diagnosis_of(lines)
    assert d.code == "http_retry_loop"
    assert "proxy_next_upstream_tries" in d.fix
    assert "set_more_tries" in d.fix


def test_grpc_storm_names_the_grpc_directive() -> None:
    """3,000 failures a second on one gRPC connection: past what its calls can make."""
    lines = [grpc_refused(t, 77, peer=f"10.0.0.{2 + i % 2}:50051")
             for t in range(3) for i in range(3000)]
    d = diagnosis_of(lines)
    assert d.code == "http_retry_loop"
    assert d.cause.startswith("One HTTP request retries its dead upstreams without end.")
    assert "grpc_next_upstream_tries" in d.fix
    assert "proxy_next_upstream_tries" not in d.fix


def test_busy_grpc_connection_is_not_called_a_loop() -> None:
    """500 a second on one HTTP/2 connection: its concurrent calls, each bounded, look the
    same as one slow loop; the diagnosis says what to check, not that it loops."""
    lines = [grpc_refused(t, 77, peer=f"10.0.0.{2 + i % 2}:50051")
             for t in range(3) for i in range(500)]
    d = diagnosis_of(lines)
    assert d.code == "multiplexed_failing_requests"
    assert "without end" not in d.cause
    assert "HTTP/2 connection" in d.cause and "if its location" in d.cause.lower()


def test_grpc_fix_names_no_proxy_directive() -> None:
    lines = [grpc_refused(t, 77, peer=f"10.0.0.{2 + i % 2}:50051")
             for t in range(3) for i in range(500)]
    d = diagnosis_of(lines)
    assert "proxy_next_upstream" not in d.fix
    assert "grpc_next_upstream_timeout" in d.fix


@pytest.mark.parametrize("scheme", ["fastcgi", "uwsgi", "scgi"])
def test_other_upstream_modules_name_their_directive(scheme: str) -> None:
    lines = [http_refused(t, 77, scheme=scheme, peer=f"10.0.0.{2 + i % 2}:9000",
                          uri="/index.php")
             for t in range(3) for i in range(500)]
    d = diagnosis_of(lines)
    assert d.code == "http_retry_loop"
    assert f"{scheme}_next_upstream_tries" in d.fix


def test_synchronous_loop_on_a_stale_unix_socket() -> None:
    """connect() fails at once, nginx retries inside one event: 8,000 lines in ONE second."""
    lines = [unix_refused(0, 49447, path="/run/x.sock")] * 8000
    d = diagnosis_of(lines)
    assert d.code == "synchronous_loop"
    assert "proxy_next_upstream_tries" in d.fix
    assert "unix socket" in d.fix


def test_immediate_failures_at_a_low_rate_are_not_synchronous() -> None:
    """The same immediate failure, 50 a second: a retry loop, but the worker is not stuck."""
    lines = [unix_refused(t, 49447, path="/run/x.sock") for t in range(10) for _ in range(50)]
    assert diagnosis_of(lines).code == "http_retry_loop"


@pytest.mark.parametrize("timeout", [http_timeout, stream_timeout])
def test_slow_timeout_loop(timeout: Callable[..., str]) -> None:
    """A SYN-dropping pair of peers: one timeout every 5 s for 2 minutes."""
    lines = []
    for t in range(0, 120, 5):
        peer = f"10.0.0.{2 + (t // 5) % 2}:80"
        lines.append(timeout(t, 42, upstream=peer) if timeout is stream_timeout
                     else timeout(t, 42, peer=peer))
    d = diagnosis_of(lines, batch=1)
    assert d.code == "slow_timeout_loop"
    assert "proxy_next_upstream_tries" in d.fix
    assert "proxy_connect_timeout" in d.fix


def keepalive(requests: int) -> list[str]:
    """One keep-alive connection; a different request every 2 s, each failing over from
    a dead peer to another dead peer (2 failures), then 502."""
    return [http_refused(2 * r, 1, peer=peer, uri=f"/api/items/{r}")
            for r in range(requests) for peer in ("10.0.0.2:80", "10.0.0.3:80")]


def test_keepalive_connection_with_failing_requests() -> None:
    d = diagnosis_of(keepalive(12), batch=1)
    assert d.code == "keepalive_failing_requests"
    assert "not a retry loop" in d.cause


def test_keepalive_requests_failing_once() -> None:
    """Every request fails once against one dead peer: it repeats across requests only."""
    lines = [http_refused(r, 1, uri=f"/r/{r}") for r in range(15)]
    assert diagnosis_of(lines, batch=1).code == "keepalive_failing_requests"


def test_long_keepalive_connection_stays_keepalive() -> None:
    d = diagnosis_of(keepalive(100), batch=1)
    assert d.code == "keepalive_failing_requests"


def test_keepalive_requests_that_time_out() -> None:
    """ingress-nginx defaults (proxy-connect-timeout 5s, proxy-next-upstream-tries 3):
    each request times out on 3 dead peers in 15 s and gets a 504; the client, on the
    same keep-alive connection, sends the next request."""
    peers = ("10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80")
    lines = [http_timeout(15 * r + 5 * (i + 1), 1, peer=peer, uri=f"/api/items/{r}")
             for r in range(8) for i, peer in enumerate(peers)]
    d = diagnosis_of(lines, batch=1)
    assert d.code == "keepalive_failing_requests"
