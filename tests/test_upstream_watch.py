"""The upstream anomalies (detect/upstreams.py, core/src/upstreams.rs): the core's figures
per peer against an exact model for generated streams (hypothesis), the decision's bounds,
the recorded http-normal scenario played for minutes (nothing fires; ten times its
failover traffic does), the alert's lifecycle, its link to runaway alerts, its shape and
its way through a restart."""

from __future__ import annotations

import gzip
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from helpers import BASE_TS, SOURCE, http_refused
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from service_harness import STORM_FIRING_CID, FakeClock, feed_storm, new_engine

from retrywatch._core import Core
from retrywatch.detect.core import DetectorConfig, new_core
from retrywatch.detect.engine import Engine
from retrywatch.detect.schema import UpstreamAlertData, saved_alert
from retrywatch.detect.upstreams import (
    RATIO,
    SIGMAS,
    Peer,
    UpstreamAlert,
    UpstreamWatch,
    upstream_alert_id,
)

ROOT = Path(__file__).resolve().parent.parent
NORMAL = ROOT / "sample_logs" / "scenario-http-normal.error.log.gz"


def core(capacity: int = 256, warmup: int = 0) -> Core:
    c = new_core(DetectorConfig(threshold=1000), UTC)
    c.set_upstreams(capacity, warmup)
    return c


def lines(events: list[tuple[int, str, int]]) -> bytes:
    """(second after BASE, peer, connection id) → HTTP refusals, one line each."""
    return "".join(http_refused(t, cid, peer=peer) + "\n" for t, peer, cid in events).encode()


# -- the core's figures against an exact model ---------------------------------------------

events = st.lists(st.tuples(st.integers(0, 150), st.sampled_from(["a:1", "b:2", "c:3", "d:4"]),
                            st.integers(1, 400)), max_size=300)


@settings(max_examples=150, deadline=None)
@given(evs=events, now_after=st.integers(0, 70))
def test_window_counts_are_exact_and_connections_close(evs: list[tuple[int, str, int]],
                                                       now_after: int) -> None:
    """Failures in the window and failing seconds exactly as counted by hand (event time
    only moving forward, as the ring keeps the last 64 seconds); distinct connections
    within the sketch's error; totals exact whatever the order."""
    evs = sorted(evs)
    c = core()
    c.feed("s", lines(evs))
    c.flush("s")
    if not evs:
        assert c.upstreams()["peers"] == []  # type: ignore[index]
        return
    now = BASE_TS + evs[-1][0] + now_after
    figures = c.upstreams(now)
    assert figures is not None
    got = {p["peer"]: p for p in figures["peers"]}
    totals = Counter(peer for _, peer, _ in evs)
    assert {k: v["total"] for k, v in got.items()} == dict(totals)
    assert figures["failures_total"] == len(evs)
    in_window = [(t, peer, cid) for t, peer, cid in evs if BASE_TS + t > now - 60]
    assert figures["window_failures"] == len(in_window)
    for peer, row in got.items():
        mine = [(t, cid) for t, p, cid in in_window if p == peer]
        assert row["failures"] == len(mine)
        assert row["failing_seconds"] == len({t for t, _ in mine})
        assert row["recent"] == sum(BASE_TS + t > now - 10 for t, _ in mine)
        # the sketches cover the window and up to 9 s more (whole 10 s slices)
        edge = (now - 59) // 10 * 10
        wide = {cid for t, p, cid in evs if p == peer and BASE_TS + t >= edge}
        narrow = {cid for t, cid in mine}
        assert len(narrow) * 0.95 - 1 <= row["connections"] <= len(wide) * 1.05 + 1
    rates = [p["failures"] for p in figures["peers"]]
    assert rates == sorted(rates, reverse=True)


@settings(max_examples=40, deadline=None)
@given(capacity=st.integers(2, 12), peers=st.integers(20, 400), heavy=st.integers(50, 200))
def test_the_named_peers_are_bounded_and_keep_the_heavy_hitter(capacity: int, peers: int,
                                                               heavy: int) -> None:
    """However many peers fail, at most ``capacity`` are named; one failing far more often
    than the others is always among them (with room for two at least: one slot is taken
    by each newcomer in turn); every failure is in the total."""
    c = core(capacity)
    evs = []
    for i in range(peers):
        evs.append((i % 50, f"one-off-{i}:80", i))
        if i % max(1, peers // heavy) == 0:
            evs.append((i % 50, "heavy:80", 10_000 + i))
    evs.sort()
    c.feed("s", lines(evs))
    c.flush("s")
    figures = c.upstreams()
    assert figures is not None
    assert figures["named"] == len(figures["peers"]) <= capacity
    assert figures["failures_total"] == len(evs)
    names = {p["peer"] for p in figures["peers"]}
    assert "heavy:80" in names
    distinct = peers + 1
    assert figures["evicted_total"] == max(0, distinct - capacity)


# -- the decision's bounds ------------------------------------------------------------------

def peer(**kw: Any) -> Peer:
    base: dict[str, Any] = {"peer": "p:1", "failures": 0, "failing_seconds": 0, "recent": 0,
                            "connections": 0, "baseline_mean": 0.0, "baseline_sd": 0.0,
                            "seconds_learnt": 100, "warm": True, "total": 0, "first": BASE_TS,
                            "last": BASE_TS}
    return Peer(**(base | kw))


def _row(p: Peer) -> dict[str, Any]:
    return {f: getattr(p, f) for f in Peer.__slots__}


def test_peer_rows_round_trip() -> None:
    p = peer(failures=5, connections=4)
    assert Peer.of(_row(p)) == p


@settings(max_examples=500, deadline=None)
@given(failures=st.integers(0, 20_000), seconds=st.integers(0, 60),
       connections=st.integers(0, 5_000), mean=st.floats(0, 500), sd=st.floats(0, 100),
       warm=st.booleans(), min_connections=st.integers(1, 100),
       min_seconds=st.integers(1, 60))
def test_an_alert_fires_only_far_above_the_baseline_for_many_connections(
        failures: int, seconds: int, connections: int, mean: float, sd: float, warm: bool,
        min_connections: int, min_seconds: int) -> None:
    p = peer(failures=failures, failing_seconds=seconds, connections=connections,
             baseline_mean=mean, baseline_sd=sd, warm=warm, recent=failures // 6)
    watch = UpstreamWatch(min_connections=min_connections, min_seconds=min_seconds)
    changes = watch.evaluate(figures_of(p))
    rate = failures / 60
    should = (warm and connections >= min_connections and seconds >= min_seconds
              and rate > mean + SIGMAS * sd and rate >= RATIO * mean)
    assert [c.kind for c in changes] == (["fired"] if should else [])
    assert watch.peers()[0]["anomalous"] is should


def figures_of(*rows: Peer, now: int = BASE_TS + 100) -> dict[str, Any]:
    return {"now": now, "window": 60, "recent_seconds": 10, "capacity": 256,
            "named": len(rows), "failures_total": sum(r.total for r in rows),
            "without_peer_total": 0, "evicted_total": 0, "warm_from": BASE_TS,
            "window_failures": sum(r.failures for r in rows),
            "peers": [_row(r) for r in rows]}


# -- the recorded http-normal scenario, for minutes ---------------------------------------

def normal_lines() -> list[bytes]:
    return gzip.decompress(NORMAL.read_bytes()).splitlines(keepends=True)


def shifted(line: bytes, seconds: int, cid_offset: int) -> bytes:
    """A recorded line moved ``seconds`` later, its connection id made new."""
    stamp_ = datetime.strptime(line[:19].decode(), "%Y/%m/%d %H:%M:%S")
    head = (stamp_ + timedelta(seconds=seconds)).strftime("%Y/%m/%d %H:%M:%S").encode()
    rest = line[19:]
    star = rest.find(b": *")
    if star >= 0:
        end = rest.index(b" ", star + 3)
        rest = rest[:star + 3] + str(int(rest[star + 3:end]) + cid_offset).encode() + rest[end:]
    return head + rest


def test_http_normal_played_for_six_minutes_fires_nothing_ten_times_its_failover_does(
        ) -> None:
    """The scenario's two seconds of traffic (failover to a closed peer, a stale unix
    socket, no live upstreams, timeouts) played again every two seconds for six minutes:
    its dead failover peer fails for many connections in every second, learnt as usual in
    the warm-up, and nothing fires. Then that peer's failures ten times over (the pods
    behind it dying) fire its alert within a minute."""
    recorded = normal_lines()
    base = int(datetime.strptime(recorded[0][:19].decode(), "%Y/%m/%d %H:%M:%S")
               .replace(tzinfo=UTC).timestamp())
    c = core(warmup=60)
    watch = UpstreamWatch()
    fired: list[tuple[int, str]] = []
    second = 0
    for rep in range(180):
        c.feed("n", b"".join(shifted(line, 2 * rep, 1_000 * rep) for line in recorded))
        for _ in range(2):
            fired += [(second, ch.alert.peer) for ch in watch.evaluate(c.upstreams(base + second))]
            second += 1
    assert fired == []
    rows = {p["peer"]: p for p in watch.peers()}
    failover = "127.0.0.1:17941"
    assert rows[failover]["connections"] >= 20 and rows[failover]["failing_seconds"] >= 20
    assert rows[failover]["warm"] and not rows[failover]["anomalous"]
    # ten times the failover traffic
    failing = [line for line in recorded if failover.encode() in line]
    for rep in range(180, 240):
        batch = [shifted(line, 2 * rep, 1_000 * rep) for line in recorded]
        batch += [shifted(line, 2 * rep, 1_000 * rep + 100 * k)
                  for k in range(1, 10) for line in failing]
        c.feed("n", b"".join(sorted(batch)))
        for _ in range(2):
            fired += [(second, ch.alert.peer) for ch in watch.evaluate(c.upstreams(base + second))]
            second += 1
    assert [p for _, p in fired] == [failover]
    assert fired[0][0] - 360 < 60


# -- the lifecycle ------------------------------------------------------------------------

def test_fire_update_resolve_after_the_hold_and_peer_gone() -> None:
    watch = UpstreamWatch(hold=10)
    bad = peer(failures=600, failing_seconds=60, connections=500, recent=100)
    [fired] = watch.evaluate(figures_of(bad))
    assert fired.kind == "fired"
    assert fired.alert.id == upstream_alert_id("p:1", BASE_TS + 100)
    worse = peer(failures=900, failing_seconds=60, connections=700, recent=150)
    assert watch.evaluate(figures_of(worse, now=BASE_TS + 101)) == []
    alert = watch.firing["p:1"]
    assert (alert.peak_failures, alert.peak_connections) == (900, 700)
    quiet = peer(failures=500, failing_seconds=50, connections=400, recent=0)
    assert watch.evaluate(figures_of(quiet, now=BASE_TS + 110)) == []  # the hold starts
    assert watch.evaluate(figures_of(worse, now=BASE_TS + 115)) == []  # and starts over
    assert watch.evaluate(figures_of(quiet, now=BASE_TS + 116)) == []
    assert watch.evaluate(figures_of(quiet, now=BASE_TS + 125)) == []  # 9 s
    [resolved] = watch.evaluate(figures_of(quiet, now=BASE_TS + 126))
    assert (resolved.kind, resolved.data["resolved_reason"]) == ("resolved", "back_to_baseline")
    assert resolved.data["resolved_at"] == _iso(BASE_TS + 126)
    assert watch.firing == {} and watch.fired_total == watch.resolved_total == 1
    # a peer no longer named (made room for others) resolves after the hold too
    watch.evaluate(figures_of(bad, now=BASE_TS + 200))
    assert watch.evaluate(figures_of(now=BASE_TS + 201)) == []
    [gone] = watch.evaluate(figures_of(now=BASE_TS + 211))
    assert gone.data["resolved_reason"] == "peer_gone"
    assert [a["state"] for a in watch.alerts()] == ["resolved", "resolved"]


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def test_a_peer_not_warm_neither_fires_nor_resolves() -> None:
    watch = UpstreamWatch()
    cold = peer(failures=600, failing_seconds=60, connections=500, warm=False)
    assert watch.evaluate(figures_of(cold)) == []
    restored = UpstreamAlert("x" * 16, "p:1", BASE_TS, watch.peers()[0])
    watch.restore([restored])
    quiet = peer(failures=0, failing_seconds=0, connections=0, warm=False)
    for t in range(30):
        assert watch.evaluate(figures_of(quiet, now=BASE_TS + 200 + t)) == []
    assert "p:1" in watch.firing


def test_the_alert_links_the_runaway_alerts_on_its_peer_and_says_so() -> None:
    watch = UpstreamWatch()
    bad = peer(failures=4_200, failing_seconds=60, connections=3_900, recent=700,
               baseline_mean=0.05, baseline_sd=0.02)
    runaway = [("aaaa", 17, ["p:1", "q:2"]), ("bbbb", 18, ["q:2"]), ("cccc", 19, ["p:1"])]
    [fired] = watch.evaluate(figures_of(bad), lambda: runaway)
    data = watch.alerts()[0]
    assert data["runaway_alerts"] == [{"id": "aaaa", "cid": 17}, {"id": "cccc", "cid": 19}]
    assert data["diagnosis"]["cause"] == (
        "p:1 failed 4,200 connects from 3,900 connections in the last minute (70.0/s in 60 "
        "of 60 s; its baseline is 0.05/s). 2 runaway connections (*17, *19) loop on it: "
        "their alerts say how to bound the retries.")
    assert "kubectl get endpoints" in data["diagnosis"]["fix"]
    assert data["diagnosis"]["docs"].endswith("upstream_failing.md")
    # its shape is the schema's, and the delivery state reads it back as one
    TypeAdapter(UpstreamAlertData).validate_python(data)
    assert saved_alert(dict(data)) == data
    assert fired.data["runaway_alerts"] == []  # linked after the change was made


def test_the_core_is_off_until_asked_and_forgets_when_stopped() -> None:
    c = new_core(DetectorConfig(), UTC)
    assert c.upstreams() is None
    c.set_upstreams(8, 0)
    c.feed("s", lines([(0, "a:1", 1)]))
    c.flush("s")
    assert c.upstreams()["failures_total"] == 1  # type: ignore[index]
    c.set_upstreams(8, 0)  # the same settings: kept
    assert c.upstreams()["failures_total"] == 1  # type: ignore[index]
    c.set_upstreams(0)
    assert c.upstreams() is None
    c.set_upstreams(8, 0)
    assert c.upstreams()["failures_total"] == 0  # type: ignore[index]


def test_baselines_carry_over_a_restart() -> None:
    c = core(warmup=0)
    evs = [(t, "a:1", t) for t in range(0, 300, 3)]
    c.feed("s", lines(evs))
    c.flush("s")
    [learnt] = c.upstreams(BASE_TS + 300)["peers"]  # type: ignore[index]
    saved = c.upstream_baselines()
    [(name, mean, var, seconds)] = saved
    assert (name, seconds) == ("a:1", 300)
    assert (mean, math.sqrt(var)) == (learnt["baseline_mean"], learnt["baseline_sd"])
    # a failure every 3 s, learnt for 300 s (one time constant): 1/3 (1 - 1/e) a second
    assert math.isclose(mean, (1 - (1 - 1 / 300) ** 300) / 3, rel_tol=0.1)
    again = core(warmup=600)
    again.seed_upstreams(saved, BASE_TS + 300)
    [row] = again.upstreams(BASE_TS + 300)["peers"]  # type: ignore[index]
    assert row["warm"] and row["baseline_mean"] == mean and row["total"] == 0


# -- each decision, exactly (mutation testing: tests/mutants.py) ------------------------------

FIX = ("The peer refuses or does not answer while nginx still sends it connections: check "
       "what listens there (`kubectl get endpoints` for the Service behind it; a pod that "
       "died or is not ready, a wrong targetPort, a NetworkPolicy). Take it out of the "
       "upstream until it answers: in plain nginx `max_fails` and `fail_timeout` on the "
       "server (passive checks), in ingress-nginx a readiness probe so the endpoint leaves "
       "the list. Bound the retries that reach it (`proxy_next_upstream_tries`), so one dead "
       "peer cannot start a loop.")


def test_the_alert_id_is_pinned() -> None:
    assert upstream_alert_id("10.12.39.132:5555", 1764000000) == "a948a3edfd6379f5"


def test_every_peer_is_judged_and_the_counts_add_up() -> None:
    watch = UpstreamWatch(hold=0)
    assert watch.peers() == [] and watch.alerts() == []
    fine = peer(peer="a:1", failures=6, failing_seconds=6, connections=6, recent=1)
    bad = [peer(peer=f"{name}:1", failures=600, failing_seconds=60, connections=500,
                recent=100) for name in "bc"]
    fired = watch.evaluate(figures_of(fine, *bad))
    assert [(c.kind, c.alert.peer) for c in fired] == [("fired", "b:1"), ("fired", "c:1")]
    assert watch.fired_total == 2
    quiet = [peer(peer=f"{name}:1", failures=600, failing_seconds=60, connections=500,
                  recent=0) for name in "bc"]
    resolved = watch.evaluate(figures_of(fine, *quiet, now=BASE_TS + 101))
    assert [c.kind for c in resolved] == ["resolved", "resolved"]
    assert watch.resolved_total == 2 and watch.fired_total == 2


def test_the_figures_are_rounded_as_said() -> None:
    p = peer(failures=7, recent=3, connections=5, failing_seconds=4, baseline_mean=0.123456,
             baseline_sd=0.067891, seconds_learnt=42, total=9, first=BASE_TS, last=BASE_TS + 3)
    assert p.to_dict(60, 10, False) == {
        "peer": "p:1", "failures": 7, "failures_per_second": 0.12, "recent_per_second": 0.3,
        "failing_seconds": 4, "connections": 5, "baseline_per_second": 0.123,
        "baseline_sd": 0.068, "seconds_learnt": 42, "warm": True, "total": 9,
        "first_seen": _iso(BASE_TS), "last_seen": _iso(BASE_TS + 3), "anomalous": False}


def test_far_above_is_inclusive_of_three_times_the_mean() -> None:
    # 3 a second against a mean of 1 with no spread: exactly RATIO times it
    assert peer(baseline_mean=1.0, baseline_sd=0.0).far_above(3.0, SIGMAS)
    assert not peer(baseline_mean=1.0, baseline_sd=0.0).far_above(2.99, SIGMAS)
    assert not peer(baseline_mean=1.0, baseline_sd=0.5).far_above(3.0, SIGMAS)  # 1 + 4 * 0.5


def test_back_to_baseline_reads_the_last_ten_seconds_per_second() -> None:
    """15 failures in the last 10 s are 1.5 a second: under 3 times a mean of 1, back."""
    watch = UpstreamWatch(hold=0)
    watch.evaluate(figures_of(peer(failures=600, failing_seconds=60, connections=500,
                                   baseline_mean=1.0, baseline_sd=0.1, recent=100)))
    calm = peer(failures=400, failing_seconds=60, connections=300, baseline_mean=1.0,
                baseline_sd=0.1, recent=15)
    [resolved] = watch.evaluate(figures_of(calm, now=BASE_TS + 101))
    assert resolved.data["resolved_reason"] == "back_to_baseline"


def test_each_gone_peer_is_held_on_its_own() -> None:
    watch = UpstreamWatch(hold=10)
    bad = [peer(peer=f"{name}:1", failures=600, failing_seconds=60, connections=500,
                recent=100) for name in "ab"]
    watch.evaluate(figures_of(*bad))
    watch.evaluate(figures_of(bad[1], now=BASE_TS + 101))  # a:1 gone
    assert watch.evaluate(figures_of(now=BASE_TS + 106)) == []  # b:1 gone too
    [gone] = watch.evaluate(figures_of(now=BASE_TS + 111))
    assert (gone.alert.peer, gone.data["resolved_at"]) == ("a:1", _iso(BASE_TS + 111))
    assert watch.evaluate(figures_of(now=BASE_TS + 115)) == []
    [gone] = watch.evaluate(figures_of(now=BASE_TS + 116))
    assert gone.alert.peer == "b:1"


def test_turned_off_resolves_at_the_second_given_and_no_event_keeps_the_summary() -> None:
    watch = UpstreamWatch()
    watch.evaluate(figures_of(peer(failures=600, failing_seconds=60, connections=500,
                                   recent=100)))
    [off] = watch.resolve_all("disabled", BASE_TS + 500)
    assert (off.data["resolved_reason"], off.data["resolved_at"]) == (
        "disabled", _iso(BASE_TS + 500))
    fresh = UpstreamWatch()
    assert fresh.evaluate(None) == [] and fresh.summary == {}
    before = {**figures_of(), "now": None}
    assert fresh.evaluate(before) == []
    assert fresh.summary["now"] is None and fresh.summary["capacity"] == 256


def test_one_runaway_connection_on_the_peer_and_the_first_three_of_many() -> None:
    alert = UpstreamAlert("x" * 16, "p:1", BASE_TS, peer(
        failures=120, connections=90, failing_seconds=30).to_dict(60, 10, True))
    alert.runaway_alerts = [{"id": "a", "cid": 17}]
    assert alert.diagnosis().cause.endswith(
        " 1 runaway connection (*17) loops on it: their alerts say how to bound the retries.")
    assert alert.diagnosis().fix == FIX
    alert.runaway_alerts = [{"id": str(c), "cid": c} for c in (1, 2, 3, 4)]
    assert " 4 runaway connections (*1, *2, *3) loop on it" in alert.diagnosis().cause
    alert.runaway_alerts = []
    assert alert.diagnosis().cause == (
        "p:1 failed 120 connects from 90 connections in the last minute (2.0/s in 30 of 60 s;"
        " its baseline is 0.00/s).")


# -- the engine's side: log time now, the figures, the saved state ------------------------------

def test_the_engines_log_second_now_moves_on_with_the_wall_clock() -> None:
    clock = FakeClock(1000.0)
    engine = new_engine(clock=clock)
    engine.count_upstreams(8, 0)
    assert engine.event_now() is None
    assert engine.upstream_figures(BASE_TS - 5)["now"] == BASE_TS - 5  # type: ignore[index]
    engine.feed(SOURCE, lines([(30, "a:1", 1)]))
    engine.end(SOURCE)
    assert engine.event_now() == BASE_TS + 30  # no wall second has passed
    clock.advance(2.7)
    assert engine.event_now() == BASE_TS + 32
    figures = engine.upstream_figures(BASE_TS - 5)  # an event was seen: its time, not this
    assert figures is not None and figures["now"] == BASE_TS + 32
    engine.count_upstreams(0)
    assert engine.upstream_figures(BASE_TS) is None


def test_saved_baselines_seed_the_restored_engine_from_its_log_second(caplog: Any) -> None:
    clock = FakeClock(1000.0)
    engine = new_engine(clock=clock)
    engine.count_upstreams(8, 0)
    engine.feed(SOURCE, lines([(t, "a:1", t) for t in range(0, 120, 2)]))
    engine.end(SOURCE)
    engine.upstream_figures()
    core_state, extra = engine.snapshot()
    state = orjson.loads(extra)
    (saved,) = state["upstream_baselines"]
    state["upstream_baselines"].append(["broken", "x"])
    good = upstream_alert_data()
    state["upstreams"] = [good, {**good, "figures": "?"}]
    restored = Engine.restore(core_state, orjson.dumps(state), DetectorConfig(), UTC,
                              clock=clock)
    said = [r.getMessage() for r in caplog.records]
    assert "a saved upstream baseline cannot be read: left out" in said
    (bad,) = [m for m in said if m.startswith("a saved upstream alert cannot be read (")]
    assert bad.endswith("): left out") and "figures" in bad
    assert [a.to_dict() for a in restored.restored_upstreams] == [good]
    restored.count_upstreams(8, 600)
    assert restored.core.upstream_baselines() == [tuple(saved)]
    (row,) = restored.upstream_figures()["peers"]  # type: ignore[index]
    assert row["warm"] and row["first"] == BASE_TS + 118  # seeded at the snapshot's second
    restored.count_upstreams(8, 0)  # other settings start afresh: nothing seeded twice
    assert restored.core.upstream_baselines() == []


def upstream_alert_data() -> UpstreamAlertData:
    watch = UpstreamWatch()
    watch.evaluate(figures_of(peer(failures=600, failing_seconds=60, connections=500,
                                   recent=100)))
    return watch.alerts()[0]


def test_each_firing_peer_back_to_its_baseline_is_held_on_its_own() -> None:
    watch = UpstreamWatch(hold=10)
    bad = [peer(peer=f"{name}:1", failures=600, failing_seconds=60, connections=500,
                recent=100) for name in "ab"]
    back = [peer(peer=f"{name}:1", failures=600, failing_seconds=60, connections=500,
                 recent=0) for name in "ab"]
    watch.evaluate(figures_of(*bad))
    watch.evaluate(figures_of(back[0], bad[1], now=BASE_TS + 101))  # a:1 back
    assert watch.evaluate(figures_of(*back, now=BASE_TS + 106)) == []  # b:1 back too
    [first] = watch.evaluate(figures_of(*back, now=BASE_TS + 111))
    assert first.alert.peer == "a:1"
    # (a:1 out of the figures from now on: still failing as much, it would fire again)
    assert watch.evaluate(figures_of(back[1], now=BASE_TS + 115)) == []
    [second] = watch.evaluate(figures_of(back[1], now=BASE_TS + 116))
    assert second.alert.peer == "b:1"


def test_the_engines_default_warm_up_is_a_minute() -> None:
    engine = new_engine(clock=FakeClock(1000.0))
    engine.count_upstreams(8)
    engine.feed(SOURCE, lines([(30, "a:1", 1)]))
    engine.end(SOURCE)
    assert engine.upstream_figures()["warm_from"] == BASE_TS + 30 + 60  # type: ignore[index]


def test_the_engine_names_the_runaway_alerts_firing_and_their_peers() -> None:
    engine = new_engine(clock=FakeClock(1000.0))
    feed_storm(engine, end=False)  # *49447 still firing
    firing = engine.alerts()
    got = engine.runaway_upstreams()
    assert got == [(a["id"], a["cid"], list(a["upstreams"])) for a in firing
                   if a["state"] == "firing"]
    (storm,) = [g for g in got if g[1] == STORM_FIRING_CID]
    assert storm[2] == ["unix:/tmp/retrywatch-real-nginx.PJCwCC/stale-upstream.sock"]
