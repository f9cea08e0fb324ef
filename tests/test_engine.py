"""The live engine: bytes and datagrams in, the same alerts as replay, changes to
subscribers, wall-clock housekeeping driven by an injected clock."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest
from helpers import http_refused, stream_refused
from service_harness import STORM, STORM_FIRING_CID, FakeClock, feed_storm, new_engine, storm_bytes

import retrywatch.detect.engine as engine_module
from retrywatch.detect.alerts import AlertChange
from retrywatch.detect.core import DetectorConfig
from retrywatch.detect.engine import Engine
from retrywatch.forensics.replay import replay

STORM_CIDS = {73, 20137, 20302, 41557, 49447}




def replayed() -> list[dict[str, Any]]:
    result = replay([str(STORM)], tz=ZoneInfo("UTC"), names=["nginx"])
    return sorted((a.to_dict() for a in result.alerts), key=lambda a: a["id"])


@pytest.fixture(scope="module")
def expected() -> list[dict[str, Any]]:
    return replayed()


def test_replay_of_the_storm_is_what_the_sample_says(expected: list[dict[str, Any]]) -> None:
    assert {a["cid"] for a in expected} == STORM_CIDS
    assert [a["cid"] for a in expected if a["state"] == "firing"] == [STORM_FIRING_CID]


@pytest.mark.parametrize("chunk", [1 << 20, 65536, 4093, 1000_003])
def test_chunks_give_the_alerts_of_replay(chunk: int, expected: list[dict[str, Any]]) -> None:
    engine = new_engine()
    feed_storm(engine, chunk=chunk)
    got = sorted(engine.alerts(), key=lambda a: a["id"])
    assert got == expected
    for alert in expected:
        assert engine.alert(alert["id"]) == alert


def test_alerts_are_newest_first() -> None:
    engine = new_engine()
    feed_storm(engine)
    fired = [a["fired_at"] for a in engine.alerts()]
    assert fired == sorted(fired, reverse=True)
    assert engine.alert("no-such-id") is None


def test_subscribers_see_every_change() -> None:
    result = replay([str(STORM)], tz=ZoneInfo("UTC"), names=["nginx"])
    engine = new_engine()
    seen: list[AlertChange] = []
    engine.subscribe(seen.append)
    feed_storm(engine)
    assert len(seen) == engine.changes_total
    # "updated" comes once per batch that touches a firing alert: it depends on the chunk
    # size; fired and resolved do not.
    assert result.detector.fired == sum(c.kind == "fired" for c in seen)
    assert result.detector.resolved == sum(c.kind == "resolved" for c in seen)
    kinds = {c.kind for c in seen}
    assert kinds - {"confirmed"} == {"fired", "updated", "resolved"}, kinds
    # the storms of the sample are as strong as loops get: every alert ends confirmed
    assert {c.alert.confidence for c in seen} == {"confirmed"}
    fired = [c.alert.cid for c in seen if c.kind == "fired"]
    resolved = [c.alert.cid for c in seen if c.kind == "resolved"]
    assert sorted(fired) == sorted(STORM_CIDS)
    assert sorted(resolved) == sorted(STORM_CIDS - {STORM_FIRING_CID})
    # Each alert fires before it is updated or resolved.
    for cid in STORM_CIDS:
        of_cid = [c.kind for c in seen if c.alert.cid == cid]
        assert of_cid[0] == "fired"
        assert "fired" not in of_cid[1:]


def test_unsubscribe_stops_the_calls() -> None:
    engine = new_engine()
    seen: list[AlertChange] = []
    unsubscribe = engine.subscribe(seen.append)
    unsubscribe()
    unsubscribe()  # twice is harmless
    feed_storm(engine)
    assert seen == []
    assert engine.changes_total > 0


def lines(*texts: str) -> bytes:
    return "".join(t + "\n" for t in texts).encode()


def storm_of(cid: int, n: int, t: int = 0) -> list[str]:
    """``n`` failures of one stream session in second ``t`` (a retry loop)."""
    return [stream_refused(t, cid) for _ in range(n)]


def test_tick_releases_a_held_line_after_idle_flush() -> None:
    clock = FakeClock()
    engine = new_engine(clock=clock, idle_flush=1.0)
    threshold = engine.config.threshold
    # The last line is held (an event ends only when the next one starts).
    assert engine.feed("nginx", lines(*storm_of(7, threshold))) == []
    assert engine.firing == {}
    clock.advance(0.5)
    assert engine.tick() == []
    clock.advance(0.5)
    changes = engine.tick()
    assert [(c.kind, c.alert.cid) for c in changes] == [("fired", 7)]
    assert engine.alerts()[0]["failures"] == threshold
    assert engine.tick() == []  # released once


def test_tick_moves_event_time_on_so_a_quiet_alert_resolves() -> None:
    clock = FakeClock()
    engine = new_engine(clock=clock, idle_flush=1.0)
    resolve_after = engine.config.resolve_after
    engine.feed("nginx", lines(*storm_of(7, 20)))
    engine.end("nginx")
    (alert,) = engine.alerts()
    assert alert["state"] == "firing"
    resolved: list[AlertChange] = []
    engine.subscribe(lambda c: resolved.append(c) if c.kind == "resolved" else None)
    clock.advance(resolve_after - 1)
    assert engine.tick() == []
    assert engine.alert(alert["id"])["state"] == "firing"  # type: ignore[index]
    clock.advance(1)
    changes = engine.tick()
    assert [(c.kind, c.alert.cid) for c in changes] == [("resolved", 7)]
    assert [c.alert.id for c in resolved] == [alert["id"]]
    after = engine.alert(alert["id"])
    assert after is not None
    assert after["state"] == "resolved"
    assert after["resolved_reason"] == "quiet"
    assert engine.firing == {}
    assert engine.watermark is not None


def test_tick_with_nothing_fed_does_nothing() -> None:
    clock = FakeClock()
    engine = new_engine(clock=clock)
    clock.advance(1000)
    assert engine.tick() == []
    assert engine.alerts() == []


def test_lines_after_idle_keep_event_time_from_the_lines() -> None:
    clock = FakeClock()
    engine = new_engine(clock=clock)
    engine.feed("nginx", lines(*storm_of(7, 20, t=0)))
    engine.end("nginx")
    clock.advance(10)
    engine.tick()
    # A new line from the log at t=5 (written earlier, read late) does not move time back.
    engine.feed("nginx", lines(stream_refused(5, 7)))
    engine.end("nginx")
    assert engine.firing
    clock.advance(60)
    engine.tick()
    assert engine.firing == {}


def syslog(line: str) -> bytes:
    return b"<187>Nov 25 17:00:00 nginx: " + line.encode()


def test_feed_records_takes_each_datagram_as_one_line() -> None:
    engine = Engine(DetectorConfig(), ZoneInfo("UTC"))
    engine.add_source("udp://127.0.0.1:5514", "syslog")
    threshold = engine.config.threshold
    records = [syslog(http_refused(0, 11)) for _ in range(threshold)]
    changes = engine.feed_records("udp://127.0.0.1:5514", records)
    # No held line: a datagram is complete, so the alert fires with the last one.
    assert [(c.kind, c.alert.cid) for c in changes] == [("fired", 11)]
    (alert,) = engine.alerts()
    assert alert["source"] == "udp://127.0.0.1:5514"
    assert alert["failures"] == threshold
    ((info, stats),) = engine.source_stats()
    assert info.kind == "syslog"
    assert stats.lines_read == threshold
    assert stats.bytes_read == sum(map(len, records))


def test_sources_are_listed_with_their_counters() -> None:
    engine = new_engine()
    engine.feed("other", lines(stream_refused(0, 1)))  # a source not added is created
    feed_storm(engine)
    by_name = {info.name: (info, stats) for info, stats in engine.source_stats()}
    assert set(by_name) == {"nginx", "other"}
    assert by_name["other"][0].kind == "unknown"
    info, stats = by_name["nginx"]
    assert info.kind == "file"
    assert stats.bytes_read == len(storm_bytes())
    assert stats.lines_read == 57_522


def test_connections_are_the_hottest_first() -> None:
    engine = new_engine()
    feed_storm(engine, end=False)
    conns = engine.connections(3)
    assert 1 <= len(conns) <= 3
    in_window = [c["failures_in_window"] for c in conns]
    assert in_window == sorted(in_window, reverse=True)
    assert conns[0]["cid"] in STORM_CIDS
    assert set(conns[0]) >= {"source", "pid", "cid", "failures_in_window", "rate_per_second",
                             "upstreams", "first_seen", "last_seen"}


def test_resolved_alerts_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "RESOLVED_KEPT", 3)
    clock = FakeClock()
    engine = new_engine(clock=clock)
    ids: list[str] = []
    for n in range(6):
        cid = 100 + n
        t = n * 100  # each storm resolves (quiet) before the next begins
        changes = engine.feed("nginx", lines(*storm_of(cid, 20, t=t), stream_refused(t + 90, 1)))
        ids += [c.alert.id for c in changes if c.kind == "fired"]
    engine.end("nginx")
    clock.advance(120)
    engine.tick()
    assert len(ids) == 6
    assert engine.firing == {}
    assert list(engine.resolved) == ids[-3:]  # the oldest dropped first
    assert [a["id"] for a in engine.alerts()] == ids[-3:][::-1]
    assert engine.alert(ids[0]) is None
