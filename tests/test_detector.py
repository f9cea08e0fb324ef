"""The detector on real nginx line shapes: a brute-force model, batching, floods, lifecycle."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest
from helpers import (
    BASE_TS,
    Batch,
    aggregated,
    alerts_of,
    chunks,
    each_detector,
    feed,
    fired,
    head,
    http_refused,
    http_timeout,
    ones,
    premature_close,
    stream_connected,
    stream_refused,
    stream_timeout,
    when,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.detector import DetectorConfig

from retrywatch.detect.alerts import Alert, AlertChange, alert_id

Detector: Any = None  # the implementation under test, set by the fixture below
implementation = each_detector(__name__)  # every test: the reference model, then the core

# ---------------------------------------------------------------------------
# The brute-force model

KEYS = [("a", 100, 7), ("a", 101, 7), ("b", 100, 7), ("a", 100, 8)]  # (source, pid, cid)
UPSTREAMS = ["10.0.0.2:5555", "10.0.0.3:5555", "10.0.0.4:5555"]
KINDS = ["refused", "timeout", "noise"]  # noise: a read timeout, never a connect failure


@dataclass
class Step:
    ts: int
    key: tuple[str, int, int]
    upstream: str
    n: int
    kind: str

    def line(self) -> str:
        _, pid, cid = self.key
        if self.kind == "refused":
            return stream_refused(self.ts, cid, pid=pid, upstream=self.upstream)
        if self.kind == "timeout":
            return stream_timeout(self.ts, cid, pid=pid, upstream=self.upstream)
        return http_timeout(self.ts, cid, pid=pid, peer=self.upstream,
                            action="reading response header from upstream")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[DetectorConfig, list[Step], list[int]]:
    config = DetectorConfig(
        window=draw(st.integers(2, 8)),
        threshold=draw(st.integers(2, 8)),
        min_repeat=draw(st.integers(1, 4)),
        resolve_after=draw(st.integers(1, 10)),
        max_tracked=10_000,  # no eviction here: see the flood tests
    )
    # Event time stepping back, as several workers write it: each worker's lines carry its
    # own cached time, which never goes back but may lag the newest line by a few
    # seconds. Less than the window (a worker a whole window behind would have its lines
    # idle as they come, and identical ones counted together would differ from the same
    # one by one) and less than resolve_after (it could start a new alert in the second
    # the last one started, under the same id): seconds, against 60 by default.
    lag = draw(st.integers(0, min(4, config.window - 1, config.resolve_after - 1)))
    raw = draw(st.lists(
        st.tuples(
            st.sampled_from([0, 0, 0, 0, 1, 1, 2, 3, 5, 8, 12]),  # gaps; some exceed
            st.integers(0, len(KEYS) - 1),  # the window and resolve_after
            st.integers(0, len(UPSTREAMS) - 1),
            st.integers(1, 4),
            st.sampled_from(KINDS),
            st.integers(0, lag),  # how far this line's worker is behind
        ),
        min_size=1, max_size=70,
    ))
    steps: list[Step] = []
    clock = 0
    worker_clock: dict[tuple[str, int], int] = {}
    for gap, k, u, n, kind, behind in raw:
        clock += gap
        source, pid, _ = key = KEYS[k]
        ts = max(worker_clock.get((source, pid), 0), clock - behind)
        worker_clock[source, pid] = ts
        steps.append(Step(ts, key, UPSTREAMS[u], n, kind))
    cuts = draw(st.lists(st.integers(0, len(steps)), max_size=6))
    return config, steps, sorted(set(cuts))


@dataclass
class Session:
    first: int
    last: int
    id_first: int  # the first second when it fired: the alert's id
    events: list[tuple[int, int]] = field(default_factory=list)  # (second, n), as they came
    upstreams: Counter[str] = field(default_factory=Counter)
    peak: int = 0
    firing: bool = False


def model(config: DetectorConfig, steps: list[Step]) -> list[dict[str, Any]]:
    """The alerts the detector should raise, computed per key from scratch.

    Exact model of the state lifetime (not a simplified input). Event time is the
    *watermark*: the newest second of any line so far (read timeouts included); a line
    may be older than it (several workers, one file). A key's state is a *session* of
    failures. A session that has not fired ends when the watermark is ``window`` or more
    seconds past its newest failure (the detector drops idle keys); a firing session
    ends when it is ``resolve_after`` or more past it (the alert resolves "quiet", at
    newest + resolve_after). The key's next failure then starts a fresh session (fresh
    window, fresh per-upstream counts). A session fires at the first failure at which
    its failures in (newest - window, newest] reach ``threshold`` and its most failures
    against one upstream reach ``min_repeat``. A failure already older than the window
    (of its session's newest second) counts in the totals, not in the window. The peak
    second is the most failures counted in one second of the window as they came.
    """
    sessions: dict[tuple[str, int, int], Session] = {}
    fired_sessions: list[tuple[tuple[str, int, int], Session]] = []
    watermark: int | None = None
    for step in steps:
        watermark = step.ts if watermark is None else max(watermark, step.ts)
        if step.kind == "noise":
            continue
        s = sessions.get(step.key)
        if s is not None:
            limit = config.resolve_after if s.firing else config.window
            if watermark - s.last >= limit:
                s = None
        if s is None:
            s = sessions[step.key] = Session(step.ts, step.ts, step.ts)
        if step.ts > s.last - config.window:  # a second the window still keeps
            in_second = step.n + sum(n for t, n in s.events if t == step.ts)
        else:
            in_second = step.n
        s.peak = max(s.peak, in_second)
        s.events.append((step.ts, step.n))
        s.upstreams[step.upstream] += step.n
        s.first, s.last = min(s.first, step.ts), max(s.last, step.ts)
        if not s.firing:
            in_window = sum(n for t, n in s.events if t > s.last - config.window)
            if (in_window >= config.threshold
                    and max(s.upstreams.values()) >= config.min_repeat):
                s.firing = True
                s.id_first = s.first
                fired_sessions.append((step.key, s))
    assert watermark is not None
    out = []
    for (source, pid, cid), s in fired_sessions:
        resolved = watermark - s.last >= config.resolve_after
        out.append({
            "id": alert_id(source, pid, cid, BASE_TS + s.id_first),
            "source": source, "pid": pid, "cid": cid,
            "failures": sum(n for _, n in s.events),
            "failures_in_window": sum(n for t, n in s.events if t > s.last - config.window),
            "first_seen": when(s.first).isoformat(),
            "last_seen": when(s.last).isoformat(),
            "peak_per_second": s.peak,
            "upstreams": dict(s.upstreams),
            "state": "resolved" if resolved else "firing",
            "resolved_reason": "quiet" if resolved else None,
            "resolved_at": (when(s.last + config.resolve_after).isoformat()
                            if resolved else None),
        })
    return sorted(out, key=lambda a: a["id"])


def observed(alerts: list[Alert], fields: list[str]) -> list[dict[str, Any]]:
    return sorted(({f: a.to_dict()[f] for f in fields} for a in alerts),
                  key=lambda a: a["id"])


def batches_of(steps: list[Step], cuts: list[int]) -> list[list[Step]]:
    edges = [0, *cuts, len(steps)]
    return [steps[a:b] for a, b in pairwise(edges) if b > a]


@settings(max_examples=250, deadline=None)
@given(scenarios())
def test_detector_matches_brute_force_model(
        scenario: tuple[DetectorConfig, list[Step], list[int]]) -> None:
    config, steps, cuts = scenario
    detector = Detector(config)
    changes = feed(detector, (
        [(head(s.line(), s.key[0]), s.n) for s in part] for part in batches_of(steps, cuts)
    ))
    expected = model(config, steps)
    got = list(alerts_of(changes).values())
    assert observed(got, list(expected[0]) if expected else ["id"]) == expected
    for alert in got:  # each alert fires once, and resolves at most once
        kinds = [c.kind for c in changes if c.alert is alert]
        assert kinds[0] == "fired"
        assert kinds.count("fired") == 1
        assert kinds.count("resolved") == (alert.state == "resolved")
    assert detector.stats.fired == len(expected)
    assert detector.stats.resolved == sum(a["state"] == "resolved" for a in expected)
    assert detector.stats.connect_failures == sum(s.n for s in steps if s.kind != "noise")
    assert len(detector.firing) == sum(a["state"] == "firing" for a in expected)


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_one_by_one_equals_aggregated(
        scenario: tuple[DetectorConfig, list[Step], list[int]]) -> None:
    """Each line once, or identical lines of a batch counted as one (head, n)."""
    config, steps, cuts = scenario
    parts = [[(s.line(), s.key[0]) for s in part for _ in range(s.n)]
             for part in batches_of(steps, cuts)]

    def counted(part: list[tuple[str, str]]) -> Batch:
        return [(head(line, source), n) for (line, source), n in Counter(part).items()]

    one = feed(Detector(config), ([(head(line, src), 1) for line, src in p] for p in parts))
    agg = feed(Detector(config), (counted(p) for p in parts))
    assert {k: a.to_dict() for k, a in alerts_of(one).items()} == {
        k: a.to_dict() for k, a in alerts_of(agg).items()}
    assert lifecycles(one) == lifecycles(agg)


def lifecycles(changes: list[AlertChange]) -> dict[str, list[str]]:
    """Each alert's fired/resolved changes, in order (the order across keys that share a
    second may differ when identical lines are counted together)."""
    out: dict[str, list[str]] = {}
    for c in changes:
        if c.kind != "updated":
            out.setdefault(c.alert.id, []).append(c.kind)
    return out


def test_one_by_one_equals_aggregated_storm() -> None:
    """A two-peer stream storm at 3,000/s for 5 s, with a bounded connection beside it."""
    lines = []
    for t in range(5):
        for i in range(3000):
            lines.append(stream_refused(t, 3584946, upstream=f"10.12.39.{132 + i % 2}:5555"))
        lines += [stream_refused(t, 11 + t, upstream="10.12.39.132:5555")] * 2
    lines.append(stream_refused(100, 99))
    config = DetectorConfig()
    one = feed(Detector(config), (ones(b) for b in chunks_of_lines(lines, 1000)))
    agg = feed(Detector(config), (aggregated(b) for b in chunks_of_lines(lines, 1000)))
    keys = ["id", "failures", "first_seen", "last_seen", "peak_per_second", "upstreams",
            "state", "resolved_at", "resolved_reason", "failures_in_window", "fired_at"]
    a1, a2 = alerts_of(one), alerts_of(agg)
    assert len(a1) == 1
    assert observed(list(a1.values()), keys) == observed(list(a2.values()), keys)
    alert = next(iter(a1.values())).to_dict()
    assert alert["cid"] == 3584946
    assert alert["failures"] == 15_000
    assert alert["peak_per_second"] == 3000
    assert alert["upstreams"] == {"10.12.39.132:5555": 7500, "10.12.39.133:5555": 7500}
    assert alert["state"] == "resolved"
    assert alert["resolved_reason"] == "quiet"


def chunks_of_lines(lines: list[str], size: int) -> list[list[str]]:
    return [lines[i : i + size] for i in range(0, len(lines), size)]


# ---------------------------------------------------------------------------
# Floods: bounded memory, and the runaway is still found


FLOOD = 200_000
CAP = 1000


def flood_lines(runaway_every: int, flood: int = FLOOD) -> tuple[list[str], int]:
    """``flood`` distinct connections failing once each, all in one second, with one runaway
    connection (cid 1, two peers) failing once every ``runaway_every`` flood lines."""
    pre = stream_refused(0, 0).split("*0 ", 1)[0]
    rest = stream_refused(0, 0).split("*0 ", 1)[1]
    lines = []
    runaway = 0
    for i in range(flood):
        lines.append(f"{pre}*{1_000_000 + i} {rest}")
        if i % runaway_every == 0:
            lines.append(stream_refused(0, 1, upstream=f"10.0.0.{2 + runaway % 2}:5555"))
            runaway += 1
    return lines, runaway


@pytest.mark.slow
def test_flood_is_bounded_and_the_runaway_still_fires() -> None:
    lines, runaway = flood_lines(runaway_every=50)
    assert runaway == 4000
    detector = Detector(DetectorConfig(max_tracked=CAP))
    changes = []
    for batch in chunks(ones(lines), 500):
        changes += detector.process(batch)
        assert detector.tracked_keys <= CAP
    alerts = alerts_of(changes)
    assert len(alerts) == 1
    alert = next(iter(alerts.values())).to_dict()
    assert (alert["pid"], alert["cid"]) == (2454, 1)
    assert alert["failures"] == runaway  # never evicted, so every failure counted
    assert alert["upstreams"] == {"10.0.0.2:5555": 2000, "10.0.0.3:5555": 2000}
    stats = detector.stats
    assert stats.connect_failures == FLOOD + runaway
    assert stats.evictions == FLOOD + 1 - detector.tracked_keys
    assert stats.evictions >= FLOOD - CAP
    assert stats.untracked == 0
    assert stats.fired == 1


def test_flood_aggregated_batches_are_bounded() -> None:
    """The same flood, smaller, fed as (head, n) batches of 5,000 lines."""
    lines, _ = flood_lines(runaway_every=20, flood=40_000)
    detector = Detector(DetectorConfig(max_tracked=CAP))
    changes = []
    for i in range(0, len(lines), 5000):
        changes += detector.process(aggregated(lines[i : i + 5000]))
        assert detector.tracked_keys <= CAP
    assert len(fired(changes)) == 1
    assert fired(changes)[0].cid == 1
    assert detector.stats.evictions > 0


def test_cap_full_of_firing_keys_counts_untracked() -> None:
    detector = Detector(DetectorConfig(threshold=3, min_repeat=1, max_tracked=2))
    changes = detector.process(ones([stream_refused(0, c) for c in (1, 2) for _ in range(3)]))
    assert len(fired(changes)) == 2
    assert detector.process(ones([stream_refused(0, 3)] * 2)) == []
    assert detector.tracked_keys == 2
    assert detector.stats.untracked == 2
    assert detector.stats.evictions == 0


def test_untracked_counts_failures_not_entries() -> None:
    counts = []
    for batch in (ones, aggregated):
        detector = Detector(DetectorConfig(threshold=3, min_repeat=1, max_tracked=1))
        detector.process(ones([stream_refused(0, 1)] * 3))  # fires: the only slot
        detector.process(batch([stream_refused(0, 2)] * 50))
        counts.append(detector.stats.untracked)
    assert counts == [50, 50]


# ---------------------------------------------------------------------------
# What counts, and what fires (default configuration)


def test_slow_timeout_loop_fires() -> None:
    """One connect timeout every 5 s for 2 minutes, alternating two dead peers."""
    lines = [http_timeout(t, 42, peer=f"10.0.0.{2 + (t // 5) % 2}:80")
             for t in range(0, 120, 5)]
    changes = feed(Detector(), [ones(lines)])
    alerts = alerts_of(changes)
    assert len(alerts) == 1
    alert = next(iter(alerts.values()))
    # The 10th timeout (t = 45 s) puts 10 failures in the 60 s window.
    assert alert.fired_at == when(45)
    assert alert.to_dict()["failures"] == 24
    assert alert.state == "firing"


def test_bounded_request_does_not_fire() -> None:
    """Three failures in a few seconds (e.g. proxy_next_upstream_tries 3)."""
    lines = [http_refused(t, 5, peer=p) for t, p in
             [(0, "10.0.0.2:80"), (1, "10.0.0.3:80"), (2, "10.0.0.2:80")]]
    detector = Detector()
    assert feed(detector, [ones(lines)]) == []
    assert detector.stats.connect_failures == 3


def test_failover_across_distinct_peers_does_not_fire() -> None:
    """One request tries 12 distinct servers once each, in one second: no repetition."""
    lines = [http_refused(0, 5, peer=f"10.0.1.{i}:80") for i in range(12)]
    detector = Detector()
    assert feed(detector, [ones(lines)]) == []
    assert detector.stats.connect_failures == 12
    # A 13th failure against a peer it already tried is repetition: now it fires.
    changes = detector.process(ones([http_refused(0, 5, peer="10.0.1.0:80")]))
    assert [c.kind for c in changes] == ["fired"]
    assert changes[0].alert.to_dict()["failures"] == 13


def test_read_timeouts_never_count() -> None:
    lines = [http_timeout(t // 100, 9, action="reading response header from upstream")
             for t in range(1000)]
    detector = Detector(DetectorConfig(threshold=1, min_repeat=1))
    assert feed(detector, [ones(lines), aggregated(lines)]) == []
    assert detector.stats.connect_failures == 0
    assert detector.tracked_keys == 0


def test_stream_timeout_while_connecting_counts() -> None:
    detector = Detector(DetectorConfig(threshold=2, min_repeat=2))
    changes = detector.process(ones([stream_timeout(0, 3), stream_timeout(4, 3)]))
    assert [c.kind for c in changes] == ["fired"]


# ---------------------------------------------------------------------------
# Lifecycle


def storm(cid: int, seconds: range, per_second: int = 20, *, pid: int = 2454) -> list[str]:
    return [http_refused(t, cid, pid=pid, peer=f"10.0.0.{2 + i % 2}:80", uri="/storm")
            for t in seconds for i in range(per_second)]


def test_resolves_quiet_on_later_unrelated_events() -> None:
    detector = Detector()  # resolve_after = 60
    changes = detector.process(ones(storm(1, range(3))))  # last failure at t = 2
    assert [c.kind for c in changes] == ["fired", "updated"]
    alert = changes[0].alert
    assert detector.process(ones([stream_connected(61, 500)])) == []
    assert alert.state == "firing"
    changes = detector.process(ones([stream_connected(62, 501)]))
    assert [(c.kind, c.alert.id) for c in changes] == [("resolved", alert.id)]
    assert alert.resolved_reason == "quiet"
    assert alert.resolved_at == when(62)
    assert alert.to_dict()["failures"] == 60
    assert detector.firing_alerts() == []
    assert detector.tracked_keys == 0  # the info lines are not tracked


def test_resolves_quiet_on_advance_at_last_plus_resolve_after() -> None:
    detector = Detector(DetectorConfig(resolve_after=30))
    alert = fired(detector.process(ones(storm(1, range(3)))))[0]
    assert detector.advance(BASE_TS + 31, when(31)) == []
    changes = detector.advance(BASE_TS + 500, when(500))  # a long idle period
    assert [(c.kind, c.alert.id) for c in changes] == [("resolved", alert.id)]
    assert alert.resolved_reason == "quiet"
    assert alert.resolved_at == when(32)  # when it went quiet, not when we noticed
    assert detector.advance(BASE_TS + 400, when(400)) == []  # time never goes back


def test_a_failure_after_resolving_is_a_new_alert() -> None:
    detector = Detector(DetectorConfig(resolve_after=30))
    first = fired(detector.process(ones(storm(1, range(3)))))[0]
    detector.advance(BASE_TS + 100, when(100))
    assert first.state == "resolved"
    second = fired(detector.process(ones(storm(1, range(200, 202)))))
    assert len(second) == 1
    assert second[0].id != first.id
    assert second[0].to_dict()["failures"] == 40


def test_resolves_when_the_connection_ends() -> None:
    detector = Detector()
    alert = fired(detector.process(ones(storm(20302, range(3)))))[0]
    # The same cid under another pid ending does not end this one.
    assert detector.process(ones([premature_close(3, 20302, pid=9999, uri="/storm")])) == []
    assert alert.state == "firing"
    changes = detector.process(ones([premature_close(3, 20302, uri="/storm")]))
    assert [(c.kind, c.alert.id) for c in changes] == [("resolved", alert.id)]
    assert alert.resolved_reason == "connection_ended"
    assert alert.resolved_at == when(3)
    assert detector.tracked_keys == 0


def test_end_in_the_same_batch_as_the_storm() -> None:
    lines = [*storm(7, range(2)), premature_close(1, 7, uri="/storm")]
    changes = Detector().process(ones(lines))
    assert [c.kind for c in changes] == ["fired", "resolved"]
    assert changes[-1].alert.resolved_reason == "connection_ended"
    assert changes[-1].alert.to_dict()["failures"] == 40


def test_end_drops_a_tracked_key() -> None:
    detector = Detector()
    lines = [*[http_refused(0, 7)] * 5, premature_close(1, 7)]
    assert detector.process(ones(lines)) == []
    assert detector.stats.ended == 1
    assert detector.tracked_keys == 0
    # The next failures on that id start from scratch (5 + 5 would have fired).
    assert detector.process(ones([http_refused(2, 7)] * 5)) == []


def test_ids_are_stable() -> None:
    lines = storm(1, range(3)) + storm(2, range(100, 103)) + [stream_connected(400, 3)]

    def run() -> list[tuple[str, str]]:
        return [(c.kind, c.alert.id) for c in feed(Detector(), chunks_of_lines_batches(lines))]

    first, again = run(), run()
    assert first == again
    assert len({i for _, i in first}) == 2
    assert {i for _, i in first} == {alert_id("nginx", 2454, 1, BASE_TS),
                                     alert_id("nginx", 2454, 2, BASE_TS + 100)}


def chunks_of_lines_batches(lines: list[str]) -> list[Batch]:
    return [ones(part) for part in chunks_of_lines(lines, 37)]


@pytest.mark.parametrize("other", [{"pid": 2455}, {"source": "other-nginx"}])
def test_same_cid_under_another_pid_or_source_is_another_key(other: dict[str, Any]) -> None:
    pid = other.get("pid", 2454)
    source = other.get("source", "nginx")
    # 6 + 6 failures of cid 7: 12 >= threshold if they were one key, but they are not.
    mine = [http_refused(0, 7)] * 6
    theirs = [http_refused(0, 7, pid=pid)] * 6
    detector = Detector()
    assert detector.process(ones(mine) + ones(theirs, source)) == []
    assert detector.tracked_keys == 2
    # Both storming: two alerts with their own counts.
    changes = detector.process(ones(mine * 2) + ones(theirs * 3, source))
    alerts = sorted((a.to_dict() for a in alerts_of(changes).values()),
                    key=lambda a: a["failures"])
    assert [(a["source"], a["pid"], a["cid"], a["failures"]) for a in alerts] == [
        ("nginx", 2454, 7, 18), (source, pid, 7, 24)]
    assert alerts[0]["id"] != alerts[1]["id"]


def test_idle_key_starts_fresh_after_the_window() -> None:
    detector = Detector()  # window 60, threshold 10
    assert detector.process(ones([http_refused(0, 7)] * 9)) == []
    # 9 + 9 failures, but the first nine are 60 s old: dropped, not counted.
    assert detector.process(ones([http_refused(60, 7)] * 9)) == []
    assert detector.stats.expired == 1
    changes = detector.process(ones([http_refused(61, 7)]))
    assert [c.kind for c in changes] == ["fired"]
    assert changes[0].alert.to_dict()["failures"] == 10
    assert changes[0].alert.to_dict()["first_seen"] == when(60).isoformat()


def test_a_late_line_does_not_revive_an_idle_key() -> None:
    """Idle is measured on event time (the newest line of any worker), not on the late
    line's own time: nine failures a window (60 s) ago and one now, in a line that worker
    wrote with its time 3 s behind, are one failure, not a runaway. The key sits behind a fresher
    one (not swept): only the check on its own next failure drops it."""
    detector = Detector()  # window 60, threshold 10
    assert detector.process(ones([http_refused(5, 8, pid=2)])) == []  # the fresher key, first
    assert detector.process(ones([http_refused(0, 7, pid=1)] * 9)) == []  # pid 1 behind
    read_timeout = http_timeout(60, 9, pid=3, action="reading response header from upstream")
    assert detector.process(ones([read_timeout])) == []  # not a failure; event time: 60
    assert detector.tracked_keys == 2  # the sweep stopped at the fresher key
    assert detector.process(ones([http_refused(57, 7, pid=1)])) == []  # no false alert
    assert detector.stats.expired == 1  # pid 1's old failures dropped
    changes = detector.process(ones([http_refused(57, 7, pid=1)] * 9))
    assert [c.kind for c in changes] == ["fired"]  # ten failures in the window: it fires
    assert changes[0].alert.to_dict()["failures"] == 10
    assert changes[0].alert.to_dict()["first_seen"] == when(57).isoformat()


def test_confirmed_in_the_batch_it_fired_in_is_one_change() -> None:
    """One stream session retrying one peer ten times in one batch: it fires suspected at
    the second line and is confirmed by the tenth. One ``fired`` change, confirmed (a
    ``fired`` then a ``confirmed`` could page twice), as when the ten identical lines
    come counted together."""
    config = DetectorConfig(window=2, threshold=2, min_repeat=1, resolve_after=1)
    line = stream_refused(0, 7, upstream="10.0.0.2:5555")
    for batch in (ones([line] * 10), [(head(line), 10)]):
        changes = Detector(config).process(batch)
        assert [c.kind for c in changes if c.kind != "updated"] == ["fired"]
        assert changes[0].alert.confirmed
        assert changes[0].alert.to_dict()["failures"] == 10


# ---------------------------------------------------------------------------
# Fixed bugs, kept as regression tests


def test_no_update_after_resolve_in_one_batch() -> None:
    detector = Detector(DetectorConfig(window=10, threshold=3, min_repeat=1,
                                       resolve_after=5))
    lines = [stream_refused(0, 7)] * 4 + [stream_refused(20, 7)] * 3
    changes = detector.process(ones(lines))
    kinds: dict[str, list[str]] = {}
    for c in changes:
        kinds.setdefault(c.alert.id, []).append(c.kind)
    assert sorted(kinds.values()) == [["fired"], ["fired", "resolved"]]
