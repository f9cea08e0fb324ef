"""The Python half around the core, in one process: the settings and zone handed to the
core (a zone other than the machine's, fixed or with rules), the core's figures read field
by field, and the engine's bookkeeping: its sources, the bytes being fed, its counters,
idle flushes on its clock, the order its alerts are listed in, and a restore that keeps
the zone, the configuration and the idle delay. (Mutation testing found these reached but
their results unchecked: every machine here runs in UTC.)"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import http_refused, stamp, stream_refused
from service_harness import FakeClock, new_engine
from test_engine import lines
from test_engine_knowledge import failures, load_conf, quiet_after

import retrywatch.detect.engine as engine_module
from retrywatch.detect.alerts import AlertChange
from retrywatch.detect.core import Conn, DetectorConfig, new_core
from retrywatch.detect.engine import Engine

KATHMANDU = ZoneInfo("Asia/Kathmandu")  # +05:45: no machine's zone by accident
MINUS_3 = timezone(timedelta(hours=-3))  # a fixed offset: the core's other zone path


def engine_in(tz: timezone | ZoneInfo, clock: FakeClock | None = None,
              **kw: object) -> Engine:
    """An engine whose clock moves only when the test says so."""
    return new_engine(tz, clock=clock or FakeClock(), **kw)


def local(t: int, tz: timezone | ZoneInfo) -> str:
    """nginx's stamp of second ``t`` read as local time in ``tz``."""
    return datetime.strptime(stamp(t), "%Y/%m/%d %H:%M:%S").replace(tzinfo=tz).isoformat()


# -- the settings and the zone ------------------------------------------------------------

@pytest.mark.parametrize("name", ["window", "threshold", "min_repeat", "resolve_after",
                                  "max_tracked"])
def test_a_setting_below_one_is_refused_by_name(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be at least 1$"):
        DetectorConfig(**{name: 0})  # type: ignore[arg-type]


@pytest.mark.parametrize("tz", [KATHMANDU, MINUS_3], ids=["zone", "fixed offset"])
def test_nginx_local_times_are_read_in_the_engines_zone(tz: timezone | ZoneInfo) -> None:
    engine = engine_in(tz)
    engine.feed("nginx", failures(7, 10, "/a", t=5))
    (alert,) = engine.firing.values()
    d = alert.to_dict()
    assert (d["first_seen"], d["last_seen"], d["fired_at"]) == (local(5, tz),) * 3
    (hot,) = [c for c in engine.connections(10) if c["cid"] == 7]
    assert (hot["first_seen"], hot["last_seen"]) == (local(5, tz),) * 2
    # restored in the same zone, the core reads the next seconds the same way
    core, extra = engine.snapshot()
    back = Engine.restore(core, extra, DetectorConfig(), tz, clock=FakeClock())
    back.feed("nginx", failures(7, 3, "/a", t=9))
    (again,) = back.firing.values()
    assert again.to_dict()["last_seen"] == local(9, tz)
    assert back.tz is tz
    resolved = back.feed("nginx", quiet_after(80))
    assert [c.kind for c in resolved] == ["resolved"]
    # resolved when it had been quiet resolve_after (60 s) since its last failure
    assert resolved[0].alert.to_dict()["resolved_at"] == local(69, tz)


def test_a_core_is_made_without_aggregates_or_rows_unless_asked() -> None:
    data = failures(7, 10, "/a")
    plain = new_core(DetectorConfig(), ZoneInfo("UTC"))
    plain.add_source("nginx")
    plain.feed("nginx", data)
    with pytest.raises(KeyError, match="made without aggregates"):
        plain.aggregates()
    counted = new_core(DetectorConfig(), ZoneInfo("UTC"), aggregates=True)
    counted.add_source("nginx")
    counted.feed("nginx", data)
    assert sum(n for _, _, n in counted.aggregates()["by_kind"]) == 10  # 999's still held
    assert counted.take_rows()["time"] == []  # no rows unless asked
    rows = new_core(DetectorConfig(), ZoneInfo("UTC"), aggregates=True, rows=True)
    rows.add_source("nginx")
    rows.feed("nginx", data)
    assert sum(rows.take_rows()["count"]) == 10


def test_conn_reads_every_figure_of_the_core() -> None:
    T = 1_795_000_000  # 2026: Kathmandu at +05:45 (it was +05:30 before 1986)
    figures = {
        "source": "nginx", "pid": 12, "cid": 34, "failures": 50, "failures_in_window": 40,
        "window_span": 3, "first": T, "last": T + 2, "peak": 30, "peak_ts": T + 1,
        "max_repeat": 25, "upstreams": {"10.0.0.2:80": 25}, "errnos": {"111: x": 50},
        "kinds": {"connect_failed": 50}, "requests": {"GET / HTTP/1.1": 50},
        "distinct_requests": 1, "client": "10.0.0.1", "server": "h", "host": "h.test",
        "upstream_url": "http://10.0.0.2:80/", "subsystem": "http", "sample": "line",
    }
    conn = Conn.of(figures, KATHMANDU)
    assert conn == Conn(
        ("nginx", 12, 34), 50, 40, 3, T, T + 2,
        datetime.fromtimestamp(T, KATHMANDU), datetime.fromtimestamp(T + 2, KATHMANDU),
        30, T + 1, 25, {"10.0.0.2:80": 25}, {"111: x": 50}, {"connect_failed": 50},
        {"GET / HTTP/1.1": 50}, 1, "10.0.0.1", "h", "h.test", "http://10.0.0.2:80/", "http",
        "line")
    assert conn.first_seen.utcoffset() == timedelta(hours=5, minutes=45)


def test_connections_list_upstreams_most_failures_first() -> None:
    engine = engine_in(ZoneInfo("UTC"))
    engine.feed("nginx", lines(*(http_refused(0, 7, peer="10.0.0.2:80") for _ in range(4)),
                               *(http_refused(0, 7, peer="10.0.0.9:80") for _ in range(8)),
                               http_refused(0, 8)))
    (hot,) = [c for c in engine.connections(10) if c["cid"] == 7]
    assert list(hot["upstreams"].items()) == [("10.0.0.9:80", 8), ("10.0.0.2:80", 4)]


# -- the engine's bookkeeping -------------------------------------------------------------

def test_a_source_added_again_keeps_its_info() -> None:
    engine = engine_in(ZoneInfo("UTC"))
    info = engine.info["nginx"]
    info.rotations = 3
    assert engine.add_source("nginx", "file") is info
    assert engine.info["nginx"].rotations == 3


def test_the_bytes_being_fed_are_said_during_a_feed_only() -> None:
    engine = engine_in(ZoneInfo("UTC"))
    assert engine.feeding == 0
    during: list[int] = []
    engine.subscribe(lambda change: during.append(engine.feeding))
    data = failures(7, 10, "/a")
    engine.feed("nginx", data)
    assert during == [len(data)]  # the fired alert, published inside the feed
    assert engine.feeding == 0


def test_started_at_is_the_engines_clock() -> None:
    clock = FakeClock()
    clock.now = 4321.5
    assert engine_in(ZoneInfo("UTC"), clock).started_at == 4321.5


def test_published_counts_each_kind_of_change() -> None:
    engine = engine_in(ZoneInfo("UTC"))
    engine.feed("nginx", failures(7, 10, "/a"))
    engine.feed("nginx", failures(7, 2, "/a", t=1))
    engine.feed("nginx", failures(7, 2, "/a", t=2))
    engine.feed("nginx", quiet_after(70))
    assert engine.published == {"fired": 1, "updated": 2, "resolved": 1}
    assert engine.changes_total == 4


def test_detector_stats_count_failures_by_source_and_kind() -> None:
    engine = engine_in(ZoneInfo("UTC"))
    engine.feed("nginx", failures(7, 10, "/a") + lines(stream_refused(0, 8)))
    stats = engine.detector_stats()
    assert stats.connect_failures == 11  # the last line is held
    assert stats.by_source_kind == {("nginx", "connect_failed", "http"): 10,
                                    ("nginx", "connect_failed", "stream"): 1}


def test_source_stats_are_named_by_their_source() -> None:
    engine = engine_in(ZoneInfo("UTC"))
    engine.add_source("other", "syslog")
    engine.feed("nginx", failures(7, 3, "/a"))
    stats = {info.name: (info.kind, s.name, s.lines_read) for info, s in engine.source_stats()}
    assert stats == {"nginx": ("file", "nginx", 4), "other": ("syslog", "other", 0)}


def test_end_releases_the_held_line() -> None:
    engine = engine_in(ZoneInfo("UTC"))
    assert engine.feed("nginx", lines(*(http_refused(0, 7) for _ in range(10)))) == []
    assert [c.kind for c in engine.end("nginx")] == ["fired"]


def test_a_quiet_source_is_flushed_after_idle_flush_seconds_of_the_engines_clock() -> None:
    clock = FakeClock()
    engine = engine_in(ZoneInfo("UTC"), clock)  # idle_flush: 1 s by default
    assert engine.idle_flush == 1.0
    engine.feed("nginx", lines(*(http_refused(0, 7) for _ in range(10))))
    clock.now += 0.999
    assert engine.tick() == []  # not quiet long enough
    clock.now += 0.001
    assert [c.kind for c in engine.tick()] == ["fired"]


def test_an_idle_flush_keeps_an_over_long_line_dropped_to_its_end() -> None:
    """A line longer than max_line, quiet in the middle: the idle flush releases what the
    source holds but the rest of that line, when it comes, is still the same line (one
    line unparsed, too_long), not a new one."""
    clock = FakeClock()
    engine = engine_in(ZoneInfo("UTC"), clock)
    engine.feed("nginx", b"x" * 70_000)
    clock.now += 2
    engine.tick()
    engine.feed("nginx", b"rest of it\n" + lines(http_refused(0, 7), http_refused(0, 8)))
    (stats,) = [s for _, s in engine.source_stats()]
    assert dict(stats.unparsed) == {"too_long": 1}
    assert stats.lines_read == 3  # the long line, 7's and 8's (its event held)
    assert stats.lines_parsed == 1


def test_a_removed_source_is_not_flushed_again() -> None:
    clock = FakeClock()
    engine = engine_in(ZoneInfo("UTC"), clock)
    engine.feed("nginx", lines(*(http_refused(0, 7) for _ in range(10))))
    changes = engine.remove_source("nginx")
    assert changes == [] and engine.info == {}
    clock.now += 5
    assert engine.tick() == []
    assert [s.name for _, s in engine.source_stats()] == []
    # nothing of it kept (sources come and go with rotation globs: memory stays bounded)
    assert "nginx" not in engine._fed_at and "nginx" not in engine._pending
    assert engine.remove_source("never added") == []  # nothing to forget: no error


# -- the alerts' order: kept as alerts fire and go, not rebuilt on every read -------------

def test_the_alert_order_is_kept_without_rebuilding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "RESOLVED_KEPT", 3)
    engine = engine_in(ZoneInfo("UTC"))
    engine.add_source("late", "file")
    for cid, t in ((1, 0), (2, 2), (3, 4)):
        engine.feed("nginx", failures(cid, 10, "/a", t=t))
    engine.feed("late", lines(*(http_refused(1, 9) for _ in range(10)), http_refused(1, 98)))
    order = engine._order
    listed = engine.alert_list()
    assert engine._order is order  # read: not rebuilt
    assert [a.cid for a in listed] == [3, 2, 9, 1]  # newest first; the late one in its place
    engine.feed("nginx", quiet_after(70))  # 1, 2, 3 resolve; 9 fires on
    engine.feed("nginx", failures(4, 10, "/a", t=71))
    engine.feed("late", quiet_after(75))  # 9 resolves: 4 resolved kept, 3 at most
    assert len(engine.resolved) == 3 and 1 not in {a.cid for a in engine.resolved.values()}
    assert [a.cid for a in engine.alert_list()] == [4, 3, 2, 9]  # by time fired
    assert engine._order is order
    assert engine._order == sorted([*engine.firing.values(), *engine.resolved.values()],
                                   key=lambda a: (a.fired_at, a.id))


def test_a_resolved_alert_resolved_again_is_listed_as_the_newest() -> None:
    engine = engine_in(ZoneInfo("UTC"))
    for cid in (1, 2):
        engine.feed("nginx", failures(cid, 10, "/a", t=cid))
    engine.feed("nginx", quiet_after(70))
    first, second = engine.resolved.values()
    engine._publish([AlertChange("resolved", first)])
    assert list(engine.resolved.values()) == [second, first]


# -- restore keeps what the engine was made with ---------------------------------------------

def test_restore_keeps_the_configuration_and_the_idle_delay(tmp_path: Path) -> None:
    known = load_conf(tmp_path)
    engine = engine_in(ZoneInfo("UTC"))
    core, extra = engine.snapshot()
    clock = FakeClock()
    back = Engine.restore(core, extra, DetectorConfig(), ZoneInfo("UTC"), clock=clock,
                          knowledge=known, idle_flush=5.0)
    assert back.knowledge is known and back.idle_flush == 5.0
    assert back.feed("nginx", failures(7, 10, "/api")) == []  # bounded: ruled out
    assert back.ruled_out.now == {("nginx", 2454, 7)}
    default = Engine.restore(core, extra, DetectorConfig(), ZoneInfo("UTC"), clock=clock)
    assert default.idle_flush == engine.idle_flush == 1.0


def test_a_state_of_another_version_is_refused_by_name() -> None:
    core, _ = engine_in(ZoneInfo("UTC")).snapshot()
    with pytest.raises(ValueError, match=r"^unknown engine state version$"):
        Engine.restore(core, b'{"version": 99}', DetectorConfig(), ZoneInfo("UTC"))


def test_tick_judges_with_the_configuration_and_forgets_ruled_out_keys(
        tmp_path: Path) -> None:
    """Event time moved on by the engine's clock (a quiet log): the alert resolves with
    its configuration still said, the ruled-out connection is forgotten."""
    clock = FakeClock()
    engine = engine_in(ZoneInfo("UTC"), clock, knowledge=load_conf(tmp_path))
    engine.feed("nginx", failures(7, 20, "/api") + failures(7, 40, "/api", t=1)
                + failures(8, 10, "/api", t=1))
    assert engine.ruled_out.now == {("nginx", 2454, 8)}
    (alert,) = engine.firing.values()
    clock.now += 2
    engine.tick()  # the held line released
    clock.now += 70
    changes = engine.tick()
    assert [(c.kind, c.alert.cid) for c in changes] == [("resolved", 7)]
    assert alert.to_dict()["configuration"] is not None
    assert "is it the configuration nginx runs?" in alert.to_dict()["evidence"][-1]
    assert engine.ruled_out.now == set()
