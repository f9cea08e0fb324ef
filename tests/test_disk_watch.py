"""The disk forecast's parts on fake clocks: a file's growth (sources/growth.py) through
rotation, truncation and silence, with hypothesis for its bounds; the forecast of each
filesystem and the disk alert's lifecycle (detect/disk.py); the filesystem read by a file
input, against findmnt and df."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from service_harness import FakeClock

from retrywatch.detect.disk import (
    DEFAULT_HOLD,
    FIRE_IF_GREW_WITHIN,
    NAMED,
    RESOLVE_MARGIN,
    DiskAlert,
    DiskWatch,
    Forecast,
    _iso,
    _writers,
    disk_alert_id,
    human_bytes,
    human_seconds,
)
from retrywatch.detect.schema import ConnectionData
from retrywatch.sources.follow import FileFollower
from retrywatch.sources.growth import (
    IDLE_AFTER,
    MIN_SPAN,
    RATE_SPAN,
    Filesystem,
    Growth,
    filesystem_of,
    mount_point,
)
from retrywatch.sources.source import FileInput

MiB = 1 << 20
LOG = "/var/log/nginx/error.log"
DEVICES = {"/var/log": 1, "/": 2}


# -- one file's growth -------------------------------------------------------------------

def test_a_steady_writer_grows_at_its_rate_and_none_is_said_before_min_span() -> None:
    g = Growth()
    for t in range(int(MIN_SPAN)):
        g.observe(float(t), 1000 * t, 10 * t)
        assert g.bytes_per_second is None and g.lines_per_second is None
    g.observe(MIN_SPAN, int(1000 * MIN_SPAN), int(10 * MIN_SPAN))
    assert g.bytes_per_second == 1000.0
    assert g.lines_per_second == 10.0


def test_the_rate_is_over_the_last_minute_only() -> None:
    g = Growth()
    size = 0
    for t in range(200):  # 100 s at 10 kB/s, then 100 s at 1 kB/s
        size += 10_000 if t < 100 else 1000
        g.observe(float(t), size, 0)
    assert g.bytes_per_second == pytest.approx(1000.0)


def test_rotation_and_truncation_count_the_new_files_bytes() -> None:
    g = Growth()
    g.observe(0.0, 5000, 0)
    g.observe(1.0, 9000, 0)  # +4000
    g.observe(2.0, 300, 0)  # rotated: a new file of 300 bytes
    g.observe(3.0, 0, 0)  # truncated: nothing new
    g.observe(4.0, 700, 0)  # +700
    assert g.bytes_total == 4000 + 300 + 700


def test_a_file_that_stopped_growing_is_idle_after_idle_after() -> None:
    g = Growth()
    for t in range(30):
        g.observe(float(t), 1000 * t, 0)
    last = 29.0
    g.observe(last + IDLE_AFTER - 1, 29_000, 0)
    assert g.growing and g.idle_for == IDLE_AFTER - 1
    g.observe(last + IDLE_AFTER, 29_000, 0)
    assert not g.growing
    assert g.bytes_per_second is not None and g.bytes_per_second > 0  # the minute's rate


def test_polled_twenty_times_a_second_it_keeps_one_sample_a_second() -> None:
    g = Growth()
    for i in range(20 * 600):  # ten minutes
        g.observe(i / 20, 50 * i, i)
    assert len(g._samples) <= RATE_SPAN + 3
    assert g.bytes_per_second == pytest.approx(1000.0)
    assert g.lines_per_second == pytest.approx(20.0)


def test_kept_samples_are_one_second_apart_the_newest_moving_until_then() -> None:
    """The newest sample follows the polls until it is SAMPLE_EVERY past the one before
    it (exactly 1 s: kept), then a new one starts; the second sample moves too."""
    g = Growth()
    times = []
    for t in (0.0, 0.5, 0.7, 1.0, 1.5, 2.0, 2.5, 2.7):
        g.observe(t, int(t * 10), 0)
        times.append([s[0] for s in g._samples])
    assert times == [[0.0], [0.0, 0.5], [0.0, 0.7], [0.0, 1.0], [0.0, 1.0, 1.5],
                     [0.0, 1.0, 2.0], [0.0, 1.0, 2.0, 2.5], [0.0, 1.0, 2.0, 2.7]]


def test_the_oldest_sample_goes_once_the_next_is_a_span_old() -> None:
    """The first sample is dropped when the second is RATE_SPAN old (exactly: dropped),
    down to two samples; not while the second is younger."""
    g = Growth()
    for t in (0.0, 1.0, 61.0):
        g.observe(t, int(t) * 100, int(t))
    assert list(g._samples) == [(1.0, 100, 1), (61.0, 6100, 61)]
    assert g.bytes_per_second == 100.0
    g = Growth()
    for t in (0.0, 1.0, 2.0, 61.5):
        g.observe(t, int(t * 100), int(t))
    assert [s[0] for s in g._samples] == [1.0, 2.0, 61.5]
    g = Growth()
    for t in (0.0, 1.0, 60.5):
        g.observe(t, int(t * 100), int(t))
    assert [s[0] for s in g._samples] == [0.0, 1.0, 60.5]


def test_a_file_never_observed_is_not_growing() -> None:
    g = Growth()
    assert not g.growing
    g.observe(0.0, 100, 0)  # one size: nothing seen to grow yet
    assert g.idle_for == float("inf") and not g.growing


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 30.0, allow_nan=False),
                          st.integers(0, 1 << 40), st.integers(0, 1 << 20)),
                max_size=400))
def test_any_sequence_keeps_bounded_and_sane(steps: list[tuple[float, int, int]]) -> None:
    """Whatever the sizes (growing, shrinking, jumping) and the gaps between polls: the
    samples stay bounded, growth is never negative, and the rate is what the kept samples
    say over their span."""
    g = Growth()
    now, grown, last = 0.0, 0, None
    for gap, size, lines in steps:
        now += gap
        g.observe(now, size, lines)
        if last is not None:
            grown += size - last if size >= last else size
        last = size
        assert len(g._samples) <= RATE_SPAN + 3
        assert g.bytes_total == grown
        for rate in (g.bytes_per_second, g.lines_per_second):
            assert rate is None or rate >= 0
        (t0, b0, _), (t1, b1, _) = g._samples[0], g._samples[-1]
        if t1 - t0 < MIN_SPAN:
            assert g.bytes_per_second is None
        else:
            assert g.bytes_per_second == pytest.approx((b1 - b0) / (t1 - t0))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 1 << 30), st.integers(1, 1 << 24), st.integers(10, 400))
def test_a_steady_rate_forecasts_free_over_rate(free: int, rate: int, seconds: int) -> None:
    clock = FakeClock(0.0)
    watch = DiskWatch(clock=clock, wall=lambda: 0.0)
    for t in range(seconds + 1):
        clock.now = float(t)
        watch.observe(LOG, rate * t, 0, Filesystem(1, "/var/log", free, 2 * free))
    watch.evaluate()
    (f,) = watch.forecasts()
    assert f["bytes_per_second"] == pytest.approx(rate, abs=0.05)
    assert f["seconds_to_full"] == pytest.approx(free / rate, rel=1e-6, abs=0.05)


# -- the forecast and the alert -------------------------------------------------------------

class Disk:
    """A DiskWatch fed one file (or more) a second on a fake clock."""

    def __init__(self, horizon: float = 1800.0, **kwargs: Any) -> None:
        self.clock = FakeClock(0.0)
        self.wall = FakeClock(1_700_000_000.0)
        self.watch = DiskWatch(horizon, clock=self.clock, wall=self.wall, **kwargs)
        self.sizes: dict[str, int] = {}

    def second(self, grow: dict[str, int], free: int, *, mount: str = "/var/log",
               size: int = 64 * MiB, hottest: list[ConnectionData] | None = None
               ) -> list[tuple[str, str]]:
        for name, n in grow.items():
            self.sizes[name] = self.sizes.get(name, 0) + n
            self.watch.observe(name, self.sizes[name], self.sizes[name] // 100,
                               Filesystem(DEVICES.get(mount, 9), mount, free, size,
                                          self.clock()))
        changes = self.watch.evaluate(lambda: hottest or [])
        self.clock.advance(1.0)
        self.wall.advance(1.0)
        return [(c.kind, c.alert.mount) for c in changes]

    def run(self, seconds: int, grow: dict[str, int], free: int, **kwargs: Any
            ) -> list[tuple[int, str, str]]:
        out = []
        for i in range(seconds):
            out += [(i, *c) for c in self.second(grow, free, **kwargs)]
        return out


def test_fires_after_the_hold_and_not_for_a_short_burst() -> None:
    d = Disk()
    # 10 MiB free, 100 KiB/s: full in 102 s, well within 30 minutes.
    d.run(int(MIN_SPAN), {LOG: 100 << 10}, 10 * MiB)  # the rate is not known yet
    assert not d.watch.firing
    # Kept up: fired once, DEFAULT_HOLD seconds after the forecast came within the horizon.
    events = d.run(30, {LOG: 100 << 10}, 10 * MiB)
    assert events == [(int(DEFAULT_HOLD), "fired", "/var/log")]


def test_a_burst_that_stopped_does_not_fire_though_its_minute_is_within() -> None:
    """A few seconds of a fast writer, then nothing: the minute's average says full within
    the horizon for a while, but nothing is written any more."""
    d = Disk()
    events = d.run(int(MIN_SPAN) + 3, {LOG: 100 << 10}, 10 * MiB)
    events += d.run(int(IDLE_AFTER) + 30, {LOG: 0}, 10 * MiB)
    assert events == []
    assert d.watch.forecasts()[0]["seconds_to_full"] is None  # not growing


def test_a_writer_that_pauses_between_bursts_fires() -> None:
    """8 MiB every 6 s (1.3 MiB/s, 64 MiB free: full in under a minute): each pause is
    shorter than IDLE_AFTER, and a write comes within FIRE_IF_GREW_WITHIN of the hold."""
    d = Disk()
    events = []
    for i in range(60):
        events += [(i, *c) for c in d.second({LOG: 8 * MiB if i % 6 == 0 else 0}, 64 * MiB)]
    assert [e[1:] for e in events] == [("fired", "/var/log")]
    assert events[0][0] <= MIN_SPAN + DEFAULT_HOLD + 6
    (alert,) = d.watch.alerts()
    assert alert["forecast"]["bytes_per_second"] == pytest.approx(8 * MiB / 6, rel=0.2)


def test_a_slow_log_on_a_big_disk_does_not_fire() -> None:
    d = Disk()
    # 1 KiB/s with 10 GiB free: 121 days.
    assert d.run(120, {LOG: 1024}, 10 << 30) == []
    (f,) = d.watch.forecasts()
    assert f["seconds_to_full"] == pytest.approx((10 << 30) / 1024)


def test_files_on_one_filesystem_add_up_and_others_are_apart() -> None:
    d = Disk(horizon=600)
    # two logs of 512 KiB/s each on /var/log with 500 MiB free: 500 s together (each
    # alone: 1000 s, past the horizon); a third on / grows as fast with 500 MiB free.
    for _ in range(30):
        d.second({"a.log": 512 << 10, "b.log": 512 << 10}, 500 * MiB)
        d.watch.observe("c.log", d.sizes.setdefault("c.log", 0), 0,
                        Filesystem(2, "/", 500 * MiB, 8 << 30))
        d.sizes["c.log"] += 512 << 10
    forecasts = {f["mount"]: f for f in d.watch.forecasts()}
    assert forecasts["/var/log"]["sources"] == ["a.log", "b.log"]
    assert forecasts["/var/log"]["seconds_to_full"] == pytest.approx(500, rel=0.01)
    assert forecasts["/"]["seconds_to_full"] == pytest.approx(1000, rel=0.01)
    assert list(d.watch.firing) == ["/var/log"]


def test_resolves_past_the_margin_after_the_hold_and_not_while_it_wavers() -> None:
    d = Disk(horizon=100)
    # 10 MiB free: 128 KiB/s is 80 s to full (fires); 80 KiB/s is 128 s, past the horizon
    # but within 1.5 horizons (stays firing); 32 KiB/s is 320 s, past them (resolves).
    d.run(20, {LOG: 128 << 10}, 10 * MiB)
    assert d.watch.firing
    assert d.run(120, {LOG: 80 << 10}, 10 * MiB) == []
    assert 100 < d.watch.forecasts()[0]["seconds_to_full"] < 100 * RESOLVE_MARGIN
    events = d.run(120, {LOG: 32 << 10}, 10 * MiB)
    assert [e[1:] for e in events] == [("resolved", "/var/log")]
    (alert,) = d.watch.alerts()
    assert alert["resolved_reason"] == "forecast_past_horizon"
    # the rate of the last minute passes 150 s after the change begins, then the hold
    assert DEFAULT_HOLD < events[0][0] <= RATE_SPAN + DEFAULT_HOLD + 1


def test_a_full_disk_keeps_firing_though_the_log_no_longer_grows() -> None:
    d = Disk()
    d.run(20, {LOG: 1 * MiB}, 10 * MiB)
    assert d.watch.firing
    assert d.run(120, {LOG: 0}, 0) == []  # full: the writes fail, nothing grows
    (alert,) = d.watch.alerts()
    assert alert["state"] == "firing"
    assert alert["forecast"]["seconds_to_full"] == 0
    assert "it is full now" in alert["diagnosis"]["cause"]
    # truncated: the space is back, nothing grows: resolved after the hold
    events = d.run(30, {LOG: 0}, 60 * MiB)
    assert [e[1:] for e in events] == [("resolved", "/var/log")]
    assert events[0][0] == DEFAULT_HOLD
    assert d.watch.alerts()[0]["resolved_reason"] == "not_growing"


def test_a_storm_that_stops_resolves_idle_after_and_the_hold_later() -> None:
    d = Disk()
    d.run(30, {LOG: 1 * MiB}, 500 * MiB)
    assert d.watch.firing
    events = d.run(60, {LOG: 0}, 500 * MiB)
    assert [e[1:] for e in events] == [("resolved", "/var/log")]
    assert events[0][0] == IDLE_AFTER + DEFAULT_HOLD - 1


def test_the_newest_reading_of_a_filesystem_is_its_free_space() -> None:
    """Two files on one device: the one closed (no reading) no longer counts; the other's
    fresh reading is the free space, not the smaller stale one."""
    d = Disk()
    d.run(20, {"a.log": 1 * MiB, "b.log": 1}, 0)  # a.log filled it
    assert d.watch.alerts()[0]["forecast"]["seconds_to_full"] == 0
    for _ in range(30):  # a.log deleted (its path closed): b.log sees 60 MiB free
        d.watch.observe("a.log", 0, 0, None)
        d.second({"b.log": 1}, 60 * MiB)
    (f,) = d.watch.forecasts()
    assert (f["sources"], f["free_bytes"]) == (["b.log"], 60 * MiB)
    assert d.watch.alerts()[0]["state"] == "resolved"


def test_one_device_is_one_forecast_under_any_mount_name() -> None:
    """A bind mount (or a symbolic link) shows one filesystem under two paths: one
    forecast, named by the smaller, with both files' growth."""
    clock = FakeClock(0.0)
    watch = DiskWatch(clock=clock)
    for t in range(30):
        clock.now = float(t)
        watch.observe("x.log", t * MiB, 0, Filesystem(7, "/srv/logs", 100 * MiB, 1 << 30, t))
        watch.observe("y.log", t * MiB, 0, Filesystem(7, "/mnt/bind", 100 * MiB, 1 << 30, t))
        watch.evaluate()
    (f,) = watch.forecasts()
    assert f["mount"] == "/mnt/bind" and f["sources"] == ["x.log", "y.log"]
    assert f["bytes_per_second"] == pytest.approx(2 * MiB)
    assert f["seconds_to_full"] == pytest.approx(50)
    # each file's growth carries that forecast, whichever name its own path gave it
    for source in ("x.log", "y.log"):
        growth = watch.growth(source)
        assert growth is not None and growth["filesystem"] == f, source


def test_a_filesystem_whose_files_are_gone_resolves_its_alert_after_the_hold() -> None:
    d = Disk()
    d.run(20, {LOG: 1 * MiB}, 10 * MiB)
    d.watch.forget([LOG])
    resolved = []
    for i in range(20):
        resolved += [(i, c.kind, c.alert.resolved_reason) for c in d.watch.evaluate()]
        d.clock.advance(1.0)
    assert resolved == [(DEFAULT_HOLD, "resolved", "source_gone")]
    assert d.watch.alerts()[0]["resolved_at"] == _iso(1_700_000_020.0)
    assert d.watch.forecasts() == []
    assert d.watch.sources() == []


def test_resolve_all_says_why_and_each_change_carries_the_alert_as_it_was() -> None:
    d = Disk()
    d.run(20, {LOG: 1 * MiB}, 10 * MiB)
    (change,) = d.watch.resolve_all("disabled")
    assert change.kind == "resolved" and change.data["resolved_reason"] == "disabled"
    assert change.data["resolved_at"] == _iso(1_700_000_020.0)
    change.alert.mount = "/changed later"
    assert change.data["mount"] == "/var/log"
    assert d.watch.firing == {} and d.watch.resolved_total == 1


def test_horizon_zero_never_fires_even_when_full() -> None:
    d = Disk(horizon=0)
    assert d.run(60, {LOG: 1 * MiB}, 0) == []
    assert d.watch.forecasts()[0]["seconds_to_full"] == 0


def test_resolved_alerts_kept_are_bounded() -> None:
    d = Disk(horizon=100, hold=1.0)
    for _ in range(130):  # fire and resolve, over and over
        d.run(8, {LOG: 1 * MiB}, 10 * MiB)
        d.run(int(IDLE_AFTER) + 5, {LOG: 0}, 10 * MiB)
    assert d.watch.fired_total == d.watch.resolved_total == 130
    assert len(d.watch.resolved) == 100


def conn(cid: int, rate: float, upstreams: dict[str, int], source: str = LOG
         ) -> ConnectionData:
    return {"source": source, "pid": 2454, "cid": cid, "failures_in_window": int(rate * 60),
            "rate_per_second": rate, "failures": int(rate * 60), "upstreams": upstreams,
            "client": None, "server": None, "first_seen": "", "last_seen": ""}


def test_the_alert_names_the_connections_writing_most_and_their_upstreams() -> None:
    d = Disk()
    hottest = [
        conn(7, 50.0, {"10.0.0.9:80": 3000}),
        conn(49447, 900.0, {"unix:/run/app.sock": 50_000, "10.0.0.9:80": 4000}),
        conn(3, 2000.0, {"10.0.0.1:80": 99}, source="/elsewhere/error.log"),  # not on it
    ]
    # 1,000 lines a second of 200 bytes (sizes // 100 lines: 200_000 bytes is 2,000 lines)
    d.run(20, {LOG: 100_000}, 10 * MiB, hottest=hottest)
    (alert,) = d.watch.alerts()
    assert [(c["cid"], c["share"]) for c in alert["connections"]] == [(49447, 0.9), (7, 0.05)]
    assert alert["connections"][0]["upstreams"] == {"unix:/run/app.sock": 50_000,
                                                    "10.0.0.9:80": 4000}
    assert alert["upstreams"] == {"unix:/run/app.sock": 50_000, "10.0.0.9:80": 7000}
    cause = alert["diagnosis"]["cause"]
    assert cause.startswith("/var/log has 10.0 MiB free of 64.0 MiB; "
                            "/var/log/nginx/error.log grows by 97.7 KiB/s: full in about "
                            "2 min at this rate."), cause
    assert ("nginx connection *49447 (pid 2454) writes 90% of the lines, 900 connect() "
            "failures a second against unix:/run/app.sock, 10.0.0.9:80.") in cause
    assert alert["diagnosis"]["fix"].startswith("Stop the writer first")
    assert alert["diagnosis"]["docs"] == "docs/lint/log_fills_disk.md"
    assert Path(alert["diagnosis"]["docs"]).exists()


def test_without_a_writing_connection_the_fix_says_to_find_the_writer() -> None:
    d = Disk()
    d.run(20, {LOG: 1 * MiB}, 10 * MiB)
    alert = d.watch.alerts()[0]
    assert alert["connections"] == [] and alert["upstreams"] == {}
    assert alert["diagnosis"]["fix"].startswith("Find what writes")


def test_the_alert_id_is_pinned() -> None:
    assert disk_alert_id("/var/log", 1_700_000_000.5) == disk_alert_id("/var/log", 1.7e9)
    assert disk_alert_id("/var/log", 1.7e9) == "3698a257d804d2eb"
    assert disk_alert_id("/", 1.7e9) != disk_alert_id("/var/log", 1.7e9)


def test_human_units() -> None:
    assert [human_bytes(n) for n in (512, 1536, 10 * MiB, 3 << 40)] == [
        "512 B", "1.5 KiB", "10.0 MiB", "3.0 TiB"]
    assert [human_seconds(s) for s in (45, 720, 12_600)] == ["45 s", "12 min", "3.5 h"]


def test_human_units_at_their_boundaries() -> None:
    """1024 of a unit is one of the next; GiB between MiB and TiB; TiB the last unit,
    however large. Seconds up to 89, minutes from 90 s up to 89.98 min, then hours."""
    assert [human_bytes(n) for n in (1023, 1024, 1025, 3 << 30, 2048 << 40)] == [
        "1023 B", "1.0 KiB", "1.0 KiB", "3.0 GiB", "2048.0 TiB"]
    assert [human_seconds(s) for s in (89, 90, 5399, 5400, 720_000)] == [
        "89 s", "2 min", "90 min", "1.5 h", "200.0 h"]


# -- figures, diagnosis and writers, on forecasts made by hand ------------------------------

FIX_FREE = ("Then free space: `truncate -s 0 FILE` (nginx writes on at the new end; a "
            "deleted log keeps its space until `nginx -s reopen`). Keep the log on a volume "
            "of its own, rotated by size (logrotate `maxsize`), so a storm cannot take the "
            "node's disk.")
FIX_STOP = ("Stop the writer first: the runaway connection's alert says how to bound its "
            "retries (until then each failure is another line). ")
FIX_FIND = ("Find what writes (the log's most repeated lines); no tracked connection writes "
            "a large share of them. ")


def hand_alert(sources: list[str], free: int = 10 * MiB, rate: float | None = 100 << 10,
               idle_for: float = 0.0, **kwargs: Any) -> DiskAlert:
    f = Forecast("/var/log", free, 64 * MiB, sources, rate, 50.0, idle_for=idle_for)
    return DiskAlert("id", "/var/log", 1.7e9, f, 1800.0, **kwargs)


def test_a_forecasts_figures_are_rounded_to_a_tenth_and_its_full_at_is_ahead() -> None:
    f = Forecast("/var/log", 1000, 4000, ["a.log"], 1000 / 3, 10 / 3)
    assert f.to_dict(1.7e9) == {
        "mount": "/var/log", "free_bytes": 1000, "size_bytes": 4000, "sources": ["a.log"],
        "bytes_per_second": 333.3, "lines_per_second": 3.3, "seconds_to_full": 3.0,
        "full_at": "2023-11-14T22:13:23+00:00"}
    stopped = Forecast("/var/log", 1000, 4000, ["a.log"], 10.0, 1.0, idle_for=IDLE_AFTER)
    assert stopped.to_dict(1.7e9)["full_at"] is None


def test_the_diagnosis_names_up_to_three_files_and_counts_the_others() -> None:
    causes = {n: hand_alert([f"{c}.log" for c in "abcde"[:n]]).diagnosis().cause
              for n in (1, 2, 3, 4, 5)}
    when = " by 100.0 KiB/s: full in about 2 min at this rate."
    assert causes == {
        1: "/var/log has 10.0 MiB free of 64.0 MiB; a.log grows" + when,
        2: "/var/log has 10.0 MiB free of 64.0 MiB; a.log, b.log grow" + when,
        3: "/var/log has 10.0 MiB free of 64.0 MiB; a.log, b.log, c.log grow" + when,
        4: "/var/log has 10.0 MiB free of 64.0 MiB; a.log, b.log, c.log and 1 more grow"
           + when,
        5: "/var/log has 10.0 MiB free of 64.0 MiB; a.log, b.log, c.log and 2 more grow"
           + when,
    }


def test_the_diagnosis_of_a_full_disk_and_of_one_that_stopped_filling() -> None:
    """Exact cause and fix without a named writer: full now; stopped (no rate: 0 B/s)."""
    full = hand_alert(["a.log"], free=0).diagnosis()
    assert full.cause == ("/var/log has 0 B free of 64.0 MiB; a.log grows by 100.0 KiB/s: "
                          "it is full now.")
    assert full.fix == FIX_FIND + FIX_FREE
    stopped = hand_alert(["a.log"], rate=None).diagnosis()
    assert stopped.cause == ("/var/log has 10.0 MiB free of 64.0 MiB; a.log grows by "
                             "0 B/s: it has stopped filling.")
    assert stopped.fix == FIX_FIND + FIX_FREE


def test_the_diagnosis_with_a_writer_names_three_upstreams_and_says_to_stop_it() -> None:
    top: Any = {"source": "a.log", "pid": 7, "cid": 12, "rate_per_second": 1234.4,
                "share": 0.456, "upstreams": {}}
    alert = hand_alert(["a.log"], connections=[top],
                       upstreams={"u1": 4, "u2": 3, "u3": 2, "u4": 1})
    d = alert.diagnosis()
    assert d.cause.endswith(": full in about 2 min at this rate. nginx connection *12 "
                            "(pid 7) writes 46% of the lines, 1,234 connect() failures a "
                            "second against u1, u2, u3."), d.cause
    assert d.fix == FIX_STOP + FIX_FREE
    alert.upstreams = {}
    assert alert.diagnosis().cause.endswith("1,234 connect() failures a second.")


def test_a_resolved_alerts_dict_says_when_it_resolved() -> None:
    alert = hand_alert(["a.log"], state="resolved", resolved_at=1.7e9 + 10,
                       resolved_reason="not_growing")
    data = alert.to_dict()
    assert (data["resolved_at"], data["fired_at"]) == ("2023-11-14T22:13:30+00:00",
                                                       "2023-11-14T22:13:20+00:00")
    assert hand_alert(["a.log"]).to_dict()["resolved_at"] is None


def row(cid: int, rate: float, upstreams: dict[str, int], source: str = "a.log"
        ) -> ConnectionData:
    return {**conn(cid, rate, upstreams), "source": source}


def test_writers_shares_are_capped_rounded_and_zero_without_a_line_rate() -> None:
    """share: rate over the files' lines per second, at most 1, to 3 decimals; 0 when the
    files' line rate is unknown or 0; under 1 line a second it is still a share."""
    rows = [row(1, 100.0, {}), row(2, 1.0, {}), row(3, 0.25, {})]

    def shares(lines: float | None) -> list[float]:
        f = Forecast("/var/log", 1, 2, ["a.log"], 1.0, lines)
        return [c["share"] for c in _writers(f, rows)[0]]

    assert shares(3.0) == [1.0, 0.333, 0.083]
    assert shares(0.5) == [1.0, 1.0, 0.5]
    assert shares(None) == [0.0, 0.0, 0.0]
    assert shares(0.0) == [0.0, 0.0, 0.0]


def test_writers_are_the_fastest_on_the_files_with_their_first_three_upstreams() -> None:
    """NAMED connections, fastest first, each with its first three upstreams; the
    upstreams of all of them summed, the NAMED most failed against."""
    ups = {f"u{i}": 10 - i for i in range(7)}  # u0: 10, ..., u6: 4
    rows = [row(cid, float(cid), ups) for cid in range(1, 8)]
    rows.append(row(99, 1000.0, {"elsewhere": 1}, source="other.log"))
    f = Forecast("/var/log", 1, 2, ["a.log"], 1.0, 100.0)
    named, upstreams = _writers(f, rows)
    assert [c["cid"] for c in named] == [7, 6, 5, 4, 3] and len(named) == NAMED
    assert named[0] == {"source": "a.log", "pid": 2454, "cid": 7, "rate_per_second": 7.0,
                        "share": 0.07, "upstreams": {"u0": 10, "u1": 9, "u2": 8}}
    assert upstreams == {"u0": 70, "u1": 63, "u2": 56, "u3": 49, "u4": 42}


# -- the watch's boundaries ---------------------------------------------------------------

def test_what_the_watch_says_before_any_evaluation_and_of_unknown_files() -> None:
    clock = FakeClock(0.0)
    watch = DiskWatch(clock=clock, wall=lambda: 1.7e9)
    watch.observe(LOG, 100, 1, Filesystem(1, "/var/log", MiB, 2 * MiB))
    assert watch.forecasts() == []
    assert watch.growth(LOG) == {"bytes_per_second": None, "lines_per_second": None,
                                 "filesystem": None}
    assert watch.growth("/not/followed.log") is None
    watch.forget(["/not/followed.log", LOG])  # one never followed: nothing to do
    assert watch.sources() == []
    assert watch.growth(LOG) is None


def test_a_files_growth_carries_its_filesystems_forecast() -> None:
    """growth(): the file's own rates (to a tenth) and its filesystem's forecast, at the
    wall clock now; a file closed (no filesystem) has none."""
    clock = FakeClock(0.0)
    watch = DiskWatch(clock=clock, wall=lambda: 1.7e9)
    for t in range(7):
        clock.now = float(t)
        watch.observe("a.log", 1000 * t, 10 * t, Filesystem(1, "/var/log", 60_000, 10**6, t))
        watch.observe("b.log", 2000 * t // 3, t // 3, Filesystem(1, "/var/log", 60_000,
                                                                   10**6, t))
        watch.observe("c.log", 0, 0, None)
    watch.evaluate()
    forecast = {"mount": "/var/log", "free_bytes": 60_000, "size_bytes": 10**6,
                "sources": ["a.log", "b.log"], "bytes_per_second": 1666.7,
                "lines_per_second": 10.3, "seconds_to_full": 36.0,
                "full_at": "2023-11-14T22:13:56+00:00"}
    assert watch.growth("a.log") == {"bytes_per_second": 1000.0, "lines_per_second": 10.0,
                                     "filesystem": forecast}
    assert watch.growth("b.log") == {"bytes_per_second": 666.7, "lines_per_second": 0.3,
                                     "filesystem": forecast}
    assert watch.growth("c.log") == {"bytes_per_second": 0.0, "lines_per_second": 0.0,
                                     "filesystem": None}
    assert watch.forecasts() == [forecast]


def test_a_file_without_a_rate_yet_adds_nothing_to_its_filesystems() -> None:
    clock = FakeClock(0.0)
    watch = DiskWatch(clock=clock)
    for t in range(10):
        clock.now = float(t)
        watch.observe("a.log", 1000 * t, 10 * t, Filesystem(1, "/var/log", MiB, 2 * MiB, t))
    watch.observe("b.log", 5000, 50, Filesystem(1, "/var/log", MiB, 2 * MiB, 9))
    watch.evaluate()
    (f,) = watch.forecasts()
    assert (f["bytes_per_second"], f["lines_per_second"]) == (1000.0, 10.0)


def test_the_free_space_is_the_newest_reading_whichever_file_gave_it() -> None:
    """Of two files on one device, the reading with the latest read_at is the free space,
    whether it comes first or last; on a tie the first file's stands."""
    def free(readings: list[tuple[int, float]]) -> tuple[int, int]:
        watch = DiskWatch(clock=FakeClock(0.0))
        for i, (free_bytes, read_at) in enumerate(readings):
            watch.observe(f"{i}.log", 0, 0, Filesystem(1, "/var/log", free_bytes,
                                                      10 * free_bytes, read_at))
        watch.evaluate()
        (f,) = watch.forecasts()
        return f["free_bytes"], f["size_bytes"]

    assert free([(100, 5.0), (200, 4.0)]) == (100, 1000)
    assert free([(100, 4.0), (200, 5.0)]) == (200, 2000)
    assert free([(100, 5.0), (200, 5.0)]) == (100, 1000)


def test_the_hold_starts_again_when_the_forecast_leaves_the_horizon() -> None:
    """Within the horizon for 5 s, past it for one second, within again: it fires a whole
    hold after it came back, not a hold after it first came within."""
    d = Disk()
    events = []
    for t in range(40):  # 100 KiB/s; the rate is known from t = 5
        free = 10 << 30 if t == 10 else 10 * MiB
        events += [(t, *c) for c in d.second({LOG: 100 << 10}, free)]
    assert events == [(11 + int(DEFAULT_HOLD), "fired", "/var/log")]
    (alert,) = d.watch.alerts()
    assert alert["id"] == disk_alert_id("/var/log", 1_700_000_000.0 + 21)
    assert alert["fired_at"] == _iso(1_700_000_000.0 + 21)


def test_the_resolving_hold_starts_again_when_the_forecast_comes_back() -> None:
    """Firing; past 1.5 horizons for 5 s, within for one second, past again: it resolves
    a whole hold after the second time, at that wall clock."""
    d = Disk()
    d.run(20, {LOG: 100 << 10}, 10 * MiB)
    assert d.watch.firing
    events = []
    for t in range(20, 60):
        free = 10 * MiB if t == 25 else 10 << 30
        events += [(t, *c) for c in d.second({LOG: 100 << 10}, free)]
    assert events == [(26 + int(DEFAULT_HOLD), "resolved", "/var/log")]
    (alert,) = d.watch.alerts()
    assert alert["resolved_reason"] == "forecast_past_horizon"
    assert alert["resolved_at"] == _iso(1_700_000_000.0 + 36)


def test_it_fires_at_exactly_the_horizon_and_resolves_only_past_the_margin() -> None:
    """1 KiB/s: 1 MiB free is 1024 s to full, a horizon of 1024 s: within, fires.
    1.5 horizons exactly (1536 KiB free) is not past the margin; 1537 KiB is."""
    d = Disk(horizon=1024)
    events = d.run(20, {LOG: 1024}, MiB)
    assert [e[1:] for e in events] == [("fired", "/var/log")]
    assert d.run(60, {LOG: 1024}, int(1024 * 1024 * RESOLVE_MARGIN)) == []
    events = d.run(20, {LOG: 1024}, int(1024 * 1024 * RESOLVE_MARGIN) + 1024)
    assert events == [(int(DEFAULT_HOLD), "resolved", "/var/log")]


def test_a_horizon_under_a_second_fires_on_a_full_disk() -> None:
    d = Disk(horizon=0.5)
    assert d.run(20, {LOG: 1 * MiB}, 0) == [(int(DEFAULT_HOLD), "fired", "/var/log")]


def test_a_forecast_held_fires_only_if_written_within_fire_if_grew_within() -> None:
    """Written for 10 s (t 0-9) on a big disk, then nothing, the free space falling to
    10 MiB at t = 10: held within the horizon from t = 10. With a hold of 4 s the files
    last grew FIRE_IF_GREW_WITHIN (5) s before: it waits, and never fires; with a hold
    of 3 s, 4 s before: it fires."""
    for hold, expected in ((4.0, []), (3.0, [(13, "fired", "/var/log")])):
        d = Disk(hold=hold)
        events = d.run(10, {LOG: 100 << 10}, 10 << 30)
        events += [(10 + i, kind, mount)
                   for i, kind, mount in d.run(30, {LOG: 0}, 10 * MiB)]
        assert events == expected, hold
    assert FIRE_IF_GREW_WITHIN == 5.0


def test_a_full_disk_fires_though_nothing_is_written_any_more() -> None:
    """Written for 10 s, then nothing, then the disk full (another writer): it fires a
    hold later, however long ago the files grew."""
    d = Disk()
    d.run(10, {LOG: 100 << 10}, 10 << 30)
    events = d.run(20, {LOG: 0}, 0)
    assert events == [(int(DEFAULT_HOLD), "fired", "/var/log")]


def test_a_quiet_filesystem_before_a_filling_one_does_not_stop_its_alert() -> None:
    """The forecasts are looked at one by one: a quiet filesystem met first does not
    stop the one after it from firing, nor from resolving."""
    d = Disk()
    events = []
    for t in range(60):
        d.watch.observe("quiet.log", 0, 0, Filesystem(2, "/", 10 << 30, 20 << 30, t))
        events += [(t, *c) for c in d.second({LOG: (100 << 10) if t < 20 else 0},
                                             10 * MiB)]
    assert events == [(15, "fired", "/var/log"),
                      (19 + int(IDLE_AFTER) + int(DEFAULT_HOLD), "resolved", "/var/log")]
    assert d.watch.alerts()[0]["resolved_at"] == _iso(1_700_000_000.0 + 59)


# -- the filesystem a file input reads ------------------------------------------------------

def test_the_filesystem_of_a_file_is_what_findmnt_and_df_say(tmp_path: Path) -> None:
    findmnt, df = shutil.which("findmnt"), shutil.which("df")
    assert findmnt and df, "findmnt and df (util-linux, coreutils)"
    log = tmp_path / "error.log"
    log.write_bytes(b"x" * 100)
    target = subprocess.run([findmnt, "-n", "-o", "TARGET", "-T", str(log)], check=True,
                            capture_output=True, text=True).stdout.strip()
    assert mount_point(str(log)) == target
    fs = filesystem_of(str(log))
    size, avail = subprocess.run([df, "-B1", "--output=size,avail", str(log)], check=True,
                                 capture_output=True, text=True).stdout.split()[-2:]
    assert fs.mount == target and fs.size_bytes == int(size)
    assert abs(fs.free_bytes - int(avail)) < 64 * MiB  # others write meanwhile
    assert mount_point("/") == "/"


def test_a_file_inputs_reports_carry_size_and_filesystem(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(b"2026/12/03 10:00:00 [error] 1#1: *1 something\n")
    source = FileInput(FileFollower(str(log), from_end=False))
    try:
        source.poll()
        (report,) = source.reports()
        assert report.size == log.stat().st_size
        assert report.filesystem is not None
        assert report.filesystem.mount == mount_point(str(log))
        assert report.filesystem.size_bytes == os.statvfs(log).f_blocks * os.statvfs(
            log).f_frsize
    finally:
        source.close()
