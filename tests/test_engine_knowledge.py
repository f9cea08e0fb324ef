"""The engine with the nginx configuration given (``--nginx-config``), in one process: the
configuration's verdict for a connection's route is used when an alert fires, when it is
updated and when it resolves; a route the configuration bounds gets no alert (ruled out,
counted once) until the log contradicts it; a ruled-out connection in a batch does not hide
the next one; alert times are in the engine's zone. (Mutation testing found the lifecycle's
use of the configuration reached only through the real-nginx scenarios, which run
``retrywatch`` in a subprocess.)"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import http_refused, stream_refused
from service_harness import new_engine
from test_engine import lines
from test_judge import LUA

from retrywatch.detect.alerts import AlertChange
from retrywatch.detect.engine import Engine
from retrywatch.detect.knowledge import Knowledge

#: Server ``h`` (the helpers' lines): /loop goes to test_judge's Lua balancer, which adds
#: a try on every try (a loop); /maybe to a balancer whose code cannot be read (a loop it
#: cannot be sure of: the log must show one too); every other path to two plain servers
#: (bounded: 2 tries a request); a connection carries at most 25 requests (so 50 failures
#: of one are more than it can make).
CONF = """events {}
http {
    keepalive_requests 25;""" + LUA + """
    upstream unread {
        server 127.0.0.1:9;
        balancer_by_lua_file /nonexistent/retrywatch-test/balancer.lua;
    }
    server {
        listen 127.0.0.1:8080;
        server_name h;
        location / { proxy_pass http://plain; }
        location /loop { proxy_pass http://lua; }
        location /maybe { proxy_pass http://unread; }
    }
}
"""


def load_conf(tmp_path: Path) -> Knowledge:
    """:data:`CONF` as ``--nginx-config`` reads it."""
    path = tmp_path / "nginx.conf"
    path.write_text(CONF)
    return Knowledge.load([str(path)])


@pytest.fixture
def known(tmp_path: Path) -> Knowledge:
    return load_conf(tmp_path)


def engine_with(knowledge: Knowledge | None, zone: str = "UTC") -> Engine:
    return new_engine(ZoneInfo(zone), knowledge=knowledge)


def failures(cid: int, n: int, uri: str, t: int = 0) -> bytes:
    """``n`` failures of connection ``cid`` in second ``t``, then one of connection 999:
    the engine holds a source's last line until the next one shows it ended."""
    return lines(*(http_refused(t, cid, uri=uri) for _ in range(n)), stream_refused(t, 999))


def quiet_after(t: int) -> bytes:
    """A line of another connection, ``t`` seconds on: event time moves past
    resolve_after (60 s) for every connection quiet since second 0 (and one more: the
    engine holds a source's last line)."""
    return lines(stream_refused(t, 999), stream_refused(t, 998))


def kinds(changes: list[AlertChange]) -> list[tuple[str, int]]:
    return [(c.kind, c.alert.cid) for c in changes]


def test_the_log_alone_only_suspects_these_connections() -> None:
    engine = engine_with(None)
    assert kinds(engine.feed("nginx", failures(7, 10, "/loop"))) == [("fired", 7)]
    (alert,) = engine.firing.values()
    assert alert.confidence == "suspected"
    assert alert.to_dict()["configuration"] is None


def test_a_looping_route_fires_confirmed_and_keeps_its_configuration(known: Knowledge) -> None:
    engine = engine_with(known)
    assert kinds(engine.feed("nginx", failures(7, 10, "/loop"))) == [("fired", 7)]
    (alert,) = engine.firing.values()
    configuration = {"loop": True, "bound": None, "why": alert.evidence["configuration"]["why"]}
    assert alert.confidence == "confirmed"
    assert alert.to_dict()["configuration"] == configuration
    assert "/loop" in configuration["why"] or "lua" in configuration["why"]
    assert alert.diagnosis is not None and "The configuration shows it" in alert.diagnosis.cause
    # more of the same: an update (it fired confirmed: nothing to confirm again)
    assert kinds(engine.feed("nginx", failures(7, 5, "/loop", t=1))) == [("updated", 7)]
    changes = engine.feed("nginx", quiet_after(70))
    assert kinds(changes) == [("resolved", 7)]
    resolved = changes[0].alert
    assert (resolved.state, resolved.resolved_reason) == ("resolved", "quiet")
    assert resolved.snapshot["failures"] == 15
    assert resolved.to_dict()["configuration"] == configuration


def test_a_bounded_route_is_ruled_out_counted_once_and_forgotten_at_resolve(
        known: Knowledge) -> None:
    engine = engine_with(known)
    assert engine.feed("nginx", failures(7, 10, "/api")) == []
    assert engine.firing == {}
    assert (engine.ruled_out.now, engine.ruled_out.total) == ({("nginx", 2454, 7)}, 1)
    assert engine.feed("nginx", failures(7, 3, "/api", t=1)) == []  # still bounded
    assert engine.ruled_out.total == 1  # one connection, counted once
    assert engine.feed("nginx", quiet_after(70)) == []  # nothing to resolve: no alert
    assert (engine.ruled_out.now, engine.ruled_out.total) == (set(), 1)


def test_a_bounded_route_the_log_contradicts_alerts_with_both_said(known: Knowledge) -> None:
    """25 requests, 2 tries each at most, 1 peer seen: 50 is past what the route can make.
    The alert is suspected (a stale configuration never hides a loop), its evidence says
    the contradiction and the configuration, at fire and again when it resolves."""
    engine = engine_with(known)
    assert engine.feed("nginx", failures(7, 20, "/api")) == []
    assert engine.ruled_out.total == 1
    assert kinds(engine.feed("nginx", failures(7, 40, "/api", t=1))) == [("fired", 7)]
    assert (engine.ruled_out.now, engine.ruled_out.total) == (set(), 0)  # alerted after all
    (alert,) = engine.firing.values()
    bounded = {"loop": False, "bound": 2, "why": alert.evidence["configuration"]["why"]}
    for seen in (alert, engine.feed("nginx", quiet_after(70))[0].alert):
        d = seen.to_dict()
        assert d["confidence"] == "suspected"
        assert d["configuration"] == bounded
        assert "is it the configuration nginx runs?" in d["evidence"][-1]
        assert "more than its requests can make" in d["evidence"][0]
    assert alert.state == "resolved"


def test_an_uncertain_loop_is_confirmed_when_the_log_shows_more_than_requests_make(
        known: Knowledge) -> None:
    """Past 25 failures (the route's keepalive_requests, one peer) the log shows the loop
    the configuration could only suspect: one ``confirmed`` change (the log alone would
    need 1,000)."""
    engine = engine_with(known)
    assert kinds(engine.feed("nginx", failures(7, 10, "/maybe"))) == [("fired", 7)]
    (alert,) = engine.firing.values()
    assert alert.confidence == "suspected"
    assert alert.to_dict()["configuration"]["loop"] is True  # type: ignore[index]
    assert kinds(engine.feed("nginx", failures(7, 10, "/maybe", t=1))) == [("updated", 7)]
    assert kinds(engine.feed("nginx", failures(7, 10, "/maybe", t=2))) == [("confirmed", 7)]
    assert alert.confidence == "confirmed"
    assert kinds(engine.feed("nginx", failures(7, 10, "/maybe", t=3))) == [("updated", 7)]
    plain = engine_with(None)
    for t in range(4):
        plain.feed("nginx", failures(7, 10, "/maybe", t=t))
    assert next(iter(plain.firing.values())).confidence == "suspected"


@pytest.mark.parametrize("order", ["ruled out first", "ruled out last"])
def test_a_ruled_out_connection_does_not_hide_the_next_in_its_batch(
        known: Knowledge, order: str) -> None:
    engine = engine_with(known)
    bounded, looping = failures(7, 10, "/api"), failures(8, 10, "/loop")
    data = bounded + looping if order == "ruled out first" else looping + bounded
    changes = engine.feed("nginx", data)
    assert kinds(changes) == [("fired", 8)]
    assert engine.ruled_out.now == {("nginx", 2454, 7)}
    # and both resolve in one batch: the ruled-out one forgotten, the alert resolved
    assert kinds(engine.feed("nginx", quiet_after(70))) == [("resolved", 8)]
    assert engine.ruled_out.now == set()


def test_alert_times_are_in_the_engines_zone() -> None:
    """Asia/Kathmandu (+05:45): not the machine's zone, whatever it is (a time made in the
    wrong zone shows)."""
    engine = engine_with(None, "Asia/Kathmandu")
    engine.feed("nginx", failures(7, 10, "/loop"))
    (alert,) = engine.firing.values()
    d = alert.to_dict()
    for field in ("fired_at", "first_seen", "last_seen"):
        assert str(d[field]).endswith("+05:45"), (field, d[field])
    changes = engine.feed("nginx", quiet_after(70))
    assert str(changes[0].alert.to_dict()["resolved_at"]).endswith("+05:45")


def test_a_fired_alert_is_redacted_from_its_first_change() -> None:
    """Its own batch (one change, fired): the snapshot made at fire is already redacted."""
    engine = new_engine(keep_query_strings=False)
    seen: list[bytes] = []
    engine.subscribe(lambda change: seen.append(change.alert.to_json()))
    changes = engine.feed("nginx", failures(7, 10, "/pay?card=4111"))
    assert kinds(changes) == [("fired", 7)]
    assert b"4111" not in seen[0]
    assert changes[0].alert.snapshot["request"] == "GET /pay?card=\u2026 HTTP/1.1"
