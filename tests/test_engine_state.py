"""The engine's state and lifecycle in one process: snapshot and restore (every field back,
bad state refused), every alert resolved at once, a source removed, the connection
figures the API shows, and the connections ruled out. (The service tests check the same
across real restarts; mutation testing showed these paths were reached in-process but
their results not looked at.)"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pytest
from helpers import http_refused, stream_refused, when
from service_harness import FakeClock, feed_storm, new_engine
from test_engine import lines, storm_of

import retrywatch.detect.engine as engine_module
from retrywatch.detect.alerts import REDACTED
from retrywatch.detect.core import DetectorConfig
from retrywatch.detect.engine import STATE_VERSION, Engine, RuledOut

UTC = ZoneInfo("UTC")


def _restored(engine: Engine, **kwargs: object) -> Engine:
    core, extra = engine.snapshot()
    return Engine.restore(core, extra, engine.config, engine.tz, **kwargs)  # type: ignore[arg-type]


# -- snapshot and restore -------------------------------------------------------------
def test_restore_brings_back_every_alert_source_and_count() -> None:
    engine = new_engine()
    engine.add_source("relay", "syslog")
    feed_storm(engine, end=False)
    engine.published = {"hook": 7}
    before = engine.alerts()
    assert {a["state"] for a in before} == {"firing", "resolved"}
    again = _restored(engine)
    assert again.alerts() == before
    assert list(again.firing) == list(engine.firing)
    assert list(again.resolved) == list(engine.resolved)
    assert again.changes_total == engine.changes_total > 0
    assert again.published == {"hook": 7}
    # sources: a file is open again at once; the others wait for their listener
    assert {n: (i.kind, i.open) for n, i in again.info.items()} == {
        "nginx": ("file", True), "relay": ("syslog", False)}
    # the firing alert is still the one its connection updates: no second alert fires
    (firing,) = engine.firing.values()
    more = again.feed("nginx", lines(*[stream_refused(10**6, firing.cid, pid=firing.pid)
                                       for _ in range(3)]))
    assert "fired" not in {c.kind for c in more if c.alert.cid == firing.cid}


def test_restore_keeps_the_last_event_time() -> None:
    clock = FakeClock()
    engine = new_engine(clock=clock)
    engine.feed("nginx", lines(*storm_of(7, 3, t=50), stream_refused(51, 8)))
    core, extra = engine.snapshot()
    assert orjson.loads(extra)["last_ts"] is not None
    clock.advance(30)
    again = Engine.restore(core, extra, engine.config, UTC, clock=clock)
    assert again._last_ts == engine._last_ts
    assert again._last_ts_at == clock.now


@pytest.mark.parametrize("extra", [
    b"not json", b"[]", b'{"version": 0}', orjson.dumps({"version": STATE_VERSION}),
    orjson.dumps({"version": STATE_VERSION, "firing": [], "resolved": [], "by_key": [],
                  "info": [], "changes_total": None}),
])
def test_unreadable_state_is_a_value_error(extra: bytes) -> None:
    core, _ = new_engine().snapshot()
    with pytest.raises(ValueError, match="engine state"):
        Engine.restore(core, extra, DetectorConfig(), UTC)


def test_a_state_without_published_or_last_time_restores_empty() -> None:
    engine = new_engine()
    core, extra = engine.snapshot()
    d = orjson.loads(extra)
    del d["published"], d["last_ts"]
    again = Engine.restore(core, orjson.dumps(d), engine.config, UTC)
    assert again.published == {}
    assert again._last_ts is None and again._last_ts_at is None


# -- every alert at once, a source gone -------------------------------------------------
def test_resolve_all_resolves_every_firing_alert_and_forgets_the_time() -> None:
    engine = new_engine()
    threshold = engine.config.threshold
    engine.feed("nginx", lines(*storm_of(7, threshold + 2), *storm_of(8, threshold + 2),
                               stream_refused(0, 9)))
    assert sorted(a.cid for a in engine.firing.values()) == [7, 8]
    engine.ruled_out.add(("nginx", 1, 1))
    seen: list[str] = []
    engine.subscribe(lambda c: seen.append(c.kind))
    before = datetime.now(UTC)
    changes = engine.resolve_all("timezone_changed")
    assert [(c.kind, c.alert.cid) for c in changes] == [("resolved", 7), ("resolved", 8)]
    assert seen == ["resolved", "resolved"]  # published
    for c in changes:
        assert c.alert.state == "resolved"
        assert c.alert.resolved_reason == "timezone_changed"
        assert c.alert.resolved_at is not None and c.alert.resolved_at >= before
    assert engine.firing == {} and len(engine.resolved) == 2
    assert engine._by_key == {} and engine.ruled_out.now == set()
    assert engine._last_ts is None and engine._last_ts_at is None
    assert engine.resolve_all("again") == []


def test_remove_source_resolves_its_alert_and_forgets_it() -> None:
    engine = new_engine()
    engine.add_source("other", "file")
    threshold = engine.config.threshold
    engine.feed("nginx", lines(*storm_of(7, threshold + 2), stream_refused(0, 9)))
    engine.feed("other", lines(*storm_of(7, threshold + 2), stream_refused(0, 9)))
    engine.ruled_out.now |= {("nginx", 1, 2), ("other", 1, 3)}
    assert sorted(a.source for a in engine.firing.values()) == ["nginx", "other"]
    changes = engine.remove_source("nginx")
    assert [(c.kind, c.alert.source, c.alert.resolved_reason) for c in changes] == [
        ("resolved", "nginx", "source_removed")]
    assert [a.source for a in engine.firing.values()] == ["other"]
    assert set(engine.info) == {"other"}
    assert engine.ruled_out.now == {("other", 1, 3)}
    assert "nginx" not in {name for name, _ in
                           ((i.name, s) for i, s in engine.source_stats())}


# -- what the API shows of a connection ---------------------------------------------------
def test_a_connections_figures() -> None:
    engine = new_engine()
    # 6 failures in second 10, 4 in second 12 (two upstreams), then another connection
    # whose line ends the event
    text = [stream_refused(10, 7, upstream="10.0.0.2:5555") for _ in range(6)]
    text += [stream_refused(12, 7, upstream="10.0.0.3:5555") for _ in range(3)]
    text += [stream_refused(12, 7, upstream="10.0.0.2:5555"), stream_refused(12, 99)]
    engine.feed("nginx", lines(*text))
    (conn,) = [c for c in engine.connections(10) if c["cid"] == 7]
    assert conn["source"] == "nginx" and conn["pid"] == 2454
    assert conn["failures"] == 10 and conn["failures_in_window"] == 10
    assert conn["rate_per_second"] == round(10 / 3, 1)  # over the 3 seconds it spans
    assert list(conn["upstreams"].items()) == [("10.0.0.2:5555", 7), ("10.0.0.3:5555", 3)]
    assert conn["first_seen"] == when(10).isoformat()
    assert conn["last_seen"] == when(12).isoformat()
    assert conn["client"] and conn["server"]


def test_the_rate_is_over_the_window_when_the_span_is_longer() -> None:
    engine = Engine(DetectorConfig(window=2), UTC)
    engine.add_source("nginx", "file")
    text = [stream_refused(t, 7) for t in (10, 10, 11, 11, 12, 12, 13, 13)]
    engine.feed("nginx", lines(*text, stream_refused(13, 99)))
    (conn,) = [c for c in engine.connections(10) if c["cid"] == 7]
    assert conn["failures_in_window"] == 4  # seconds 12 and 13
    assert conn["rate_per_second"] == 2.0  # 4 over the window's 2 s


# -- ruled out ------------------------------------------------------------------------------
def test_ruled_out_counts_each_connection_once_until_it_alerts() -> None:
    r = RuledOut()
    r.add(("a", 1, 1))
    r.add(("a", 1, 1))
    r.add(("a", 1, 2))
    assert r.total == 2 and r.now == {("a", 1, 1), ("a", 1, 2)}
    r.alerted(("a", 1, 1))
    r.alerted(("a", 1, 1))
    r.alerted(("b", 1, 1))
    assert r.total == 1 and r.now == {("a", 1, 2)}


# -- wall-clock housekeeping (tick) ------------------------------------------------------------
def test_tick_flushes_every_quiet_source_and_forgets_them() -> None:
    clock = FakeClock()
    engine = new_engine(clock=clock, idle_flush=1.0)
    engine.add_source("other", "file")
    threshold = engine.config.threshold
    # each source's last line is held: the alert fires when it is released
    engine.feed("nginx", lines(*storm_of(7, threshold)))
    engine.feed("other", lines(*storm_of(8, threshold)))
    clock.advance(1.0)
    changes = engine.tick()
    assert sorted((c.kind, c.alert.source, c.alert.cid) for c in changes) == [
        ("fired", "nginx", 7), ("fired", "other", 8)]
    assert engine._pending == set()


def test_a_quiet_alert_resolves_after_whole_idle_seconds() -> None:
    clock = FakeClock()
    engine = Engine(DetectorConfig(resolve_after=1), UTC, clock=clock,
                    keep_query_strings=False)
    engine.add_source("nginx", "file")
    engine.ruled_out.add(("nginx", 1, 1))
    text = [http_refused(10, 7, uri="/pay?card=4111") for _ in range(40)]
    engine.feed("nginx", lines(*text, stream_refused(10, 99)))
    (alert,) = engine.firing.values()
    clock.advance(0.9)
    assert engine.tick() == []  # under a second: event time stays
    clock.advance(0.1)
    (change,) = engine.tick()  # one idle second is resolve_after
    assert (change.kind, change.alert.cid, change.alert.resolved_reason) == (
        "resolved", 7, "quiet")
    assert change.alert.resolved_at == when(11)  # in the engine's zone
    assert change.alert.resolved_at is not None
    assert change.alert.resolved_at.tzinfo is UTC
    assert change.alert.snapshot["request"] == f"GET /pay?card={REDACTED} HTTP/1.1"
    assert engine.ruled_out.now == {("nginx", 1, 1)}  # the engine's own, kept
    assert alert.id in engine.resolved


def test_resolved_alerts_beyond_the_bound_leave_an_order_not_built_yet(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Restored, the newest-first order is built when first read: an alert let go before
    that is not looked for in it."""
    monkeypatch.setattr(engine_module, "RESOLVED_KEPT", 2)
    engine = new_engine()
    threshold = engine.config.threshold

    def storm(cid: int, t: int) -> str:
        changes = engine.feed("nginx", lines(*storm_of(cid, threshold + 1, t=t),
                                             stream_refused(t, 1)))
        (fired,) = [c.alert.id for c in changes if c.kind == "fired"]
        return fired

    # each storm's start resolves the one before (quiet for far longer than resolve_after)
    ids = [storm(100, 0), storm(101, 200), storm(102, 400)]
    assert list(engine.resolved) == ids[:2] and list(engine.firing) == ids[2:]
    engine = _restored(engine)
    assert engine._order == []
    ids.append(storm(103, 600))  # 102 resolves: 100, the oldest kept, is let go
    assert engine._order == [engine.firing[ids[3]]]  # only what fired since
    assert list(engine.resolved) == ids[1:3]
    assert [a["id"] for a in engine.alerts()] == ids[:0:-1]  # 103, 102, 101
