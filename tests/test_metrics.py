"""/metrics: every declared metric reaches the endpoint, the per-alert series lives only
while its alert fires, connection ids are labels nowhere else, the process and runtime
families of prometheus_client's standard collectors are there, and promtool agrees."""

from __future__ import annotations

import platform
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from service_harness import STORM_FIRING_CID, FakeClock, feed_storm, new_engine

from retrywatch.detect.disk import DiskWatch
from retrywatch.detect.engine import Engine
from retrywatch.detect.upstreams import UpstreamWatch
from retrywatch.serve.api import create_app
from retrywatch.serve.metrics import METRIC_NAMES, RUNTIME_METRIC_NAMES
from retrywatch.sources.growth import Filesystem

HTTPX_WARNING = ("ignore:Using `httpx` with `starlette.testclient` is deprecated"
                 ":starlette.exceptions.StarletteDeprecationWarning")
pytestmark = pytest.mark.filterwarnings(HTTPX_WARNING)

PER_ALERT = "retrywatch_runaway_connection_failures"
#: Labels whose values are unbounded (one per connection): only the per-alert series.
CONNECTION_LABELS = {"cid", "pid", "upstream"}
SYSLOG = "udp://127.0.0.1:5514"
SYSLOG_TCP = "tcp://127.0.0.1:5514"
PROMTOOL = shutil.which("promtool") or "promtool"  # the name alone when missing: a skip




def scrape(engine: Engine) -> str:
    from fastapi.testclient import TestClient  # late: it warns at import (HTTPX_WARNING)

    with TestClient(create_app(engine)) as client:
        r = client.get("/metrics")
    assert r.status_code == 200
    text: str = r.text
    return text


def samples(text: str) -> Iterator[Sample]:
    for family in text_string_to_metric_families(text):
        yield from family.samples


def values(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in samples(text) if s.name == name}


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def engine(clock: FakeClock) -> Engine:
    """The storm, a line that is no nginx event, and a syslog listener with drops: every
    family has a series."""
    engine = new_engine(clock=clock)
    engine.count_upstreams(256, 0)
    engine.upstreams = UpstreamWatch()
    feed_storm(engine)
    engine.upstreams.evaluate(engine.upstream_figures(), engine.runaway_upstreams)
    engine.feed("other", b"not an nginx line\n")
    engine.end("other")
    engine.add_source(SYSLOG, "syslog").extra["drops"] = 3
    engine.add_source(SYSLOG_TCP, "syslog").extra["syslog"] = {
        "transport": "tcp", "clients": 448, "refused": 652, "timed_out": 9,
        "frames_too_long": 2, "accept_errors": 1}
    # the storm's file on a 64 MiB filesystem with 16 MiB free, growing 32 KiB a second
    # for 20 s: full in 512 s, within the horizon for longer than the hold (an alert)
    engine.disk = disk = DiskWatch(clock=clock, wall=lambda: 1.7e9)
    for i in range(21):
        disk.observe("nginx", i * 32768, i * 100,
                     Filesystem(1, "/var/log", 16 << 20, 64 << 20))
        disk.evaluate()
        clock.advance(1.0)
    return engine


@pytest.fixture(scope="module")
def text(engine: Engine) -> str:
    return scrape(engine)


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_every_declared_metric_is_on_the_endpoint(text: str, name: str) -> None:
    assert f"# TYPE {name} " in text
    assert any(s.name == name for s in samples(text)), f"{name} has no series"


def test_nothing_undeclared_is_exported(text: str) -> None:
    exported = {s.name for s in samples(text)}
    declared = set(METRIC_NAMES) | set(RUNTIME_METRIC_NAMES)
    assert exported <= declared, exported - declared


def test_the_disk_figures(text: str) -> None:
    assert values(text, "retrywatch_source_growth_bytes_per_second") == {
        (("source", "nginx"),): 32768.0}
    assert values(text, "retrywatch_source_growth_lines_per_second") == {
        (("source", "nginx"),): 100.0}
    mount = (("mount", "/var/log"),)
    assert values(text, "retrywatch_filesystem_free_bytes") == {mount: 16 << 20}
    assert values(text, "retrywatch_filesystem_size_bytes") == {mount: 64 << 20}
    assert values(text, "retrywatch_filesystem_full_in_seconds") == {mount: 512.0}
    assert values(text, "retrywatch_disk_alerts_firing") == {(): 1.0}
    assert values(text, "retrywatch_disk_alerts_fired_total") == {(): 1.0}


def test_no_forecast_series_while_nothing_grows(clock: FakeClock) -> None:
    engine = new_engine(clock=clock)
    engine.disk = disk = DiskWatch(clock=clock)
    for _ in range(10):
        disk.observe("nginx", 4096, 10, Filesystem(1, "/var/log", 1 << 20, 8 << 20))
        disk.evaluate()
        clock.advance(1.0)
    text = scrape(engine)
    assert values(text, "retrywatch_source_growth_bytes_per_second") == {
        (("source", "nginx"),): 0.0}
    assert values(text, "retrywatch_filesystem_free_bytes") == {(("mount", "/var/log"),): 1 << 20}
    assert values(text, "retrywatch_filesystem_full_in_seconds") == {}
    assert values(text, "retrywatch_disk_alerts_firing") == {(): 0.0}


def test_the_upstream_figures(text: str) -> None:
    """The storm's two peers by name, and "other" (nothing else fails): per second over
    the window, exactly; the peers that fail and their connections in the sketch."""
    peer, sock = "127.0.0.1:17939", "unix:/tmp/retrywatch-real-nginx.PJCwCC/stale-upstream.sock"
    assert values(text, "retrywatch_upstream_failures_per_second") == {
        (("peer", peer),): 821.28, (("peer", sock),): 133.33, (("peer", "other"),): 0.0}
    assert values(text, "retrywatch_upstream_failing_connections") == {
        (("peer", peer),): 23.0, (("peer", sock),): 1.0}
    assert values(text, "retrywatch_upstream_anomalous") == {
        (("peer", peer),): 0.0, (("peer", sock),): 0.0}
    assert values(text, "retrywatch_upstream_peer_failures_total") == {(): 49_277 + 8_000}
    assert values(text, "retrywatch_upstream_peers") == {(): 2.0}
    assert values(text, "retrywatch_upstream_peers_evicted_total") == {(): 0.0}
    assert values(text, "retrywatch_upstream_alerts_firing") == {(): 0.0}
    assert values(text, "retrywatch_upstream_alerts_fired_total") == {(): 0.0}


@pytest.mark.parametrize("name", RUNTIME_METRIC_NAMES)
def test_process_and_runtime_metrics_are_on_the_endpoint(text: str, name: str) -> None:
    assert f"# TYPE {name} " in text
    assert any(s.name == name for s in samples(text)), f"{name} has no series"


def test_process_and_runtime_values(text: str) -> None:
    (info,) = values(text, "python_info")
    assert dict(info)["implementation"] == platform.python_implementation()
    assert dict(info)["version"] == platform.python_version()
    assert values(text, "process_resident_memory_bytes")[()] > 1_000_000
    assert 0 < values(text, "process_open_fds")[()] <= values(text, "process_max_fds")[()]
    assert values(text, "process_start_time_seconds")[()] > 1_600_000_000
    assert values(text, "process_cpu_seconds_total")[()] > 0
    assert {dict(k)["generation"] for k in values(text, "python_gc_collections_total")} == {
        "0", "1", "2"}


def test_each_registry_has_its_own_runtime_collectors() -> None:
    """Two services in one process (the tests do it) each export the families once."""
    first, second = scrape(new_engine()), scrape(new_engine())
    for text in (first, second):
        assert text.count("# TYPE process_cpu_seconds_total ") == 1
        assert text.count("# TYPE python_info ") == 1


def test_values_after_the_storm(text: str) -> None:
    assert values(text, "retrywatch_runaway_connections") == {(): 1}
    assert values(text, "retrywatch_alerts_fired_total") == {(): 5}
    assert values(text, "retrywatch_alerts_resolved_total") == {(): 4}
    lines = values(text, "retrywatch_source_lines_read_total")
    assert lines[(("source", "nginx"),)] == 57_522
    assert values(text, "retrywatch_source_lines_unparsed_total") == {
        (("reason", "no_timestamp"), ("source", "other")): 1}
    tcp = (("source", SYSLOG_TCP),)
    assert values(text, "retrywatch_syslog_receive_drops_total") == {(("source", SYSLOG),): 3,
                                                                     tcp: 0}
    assert values(text, "retrywatch_syslog_clients") == {tcp: 448}
    assert values(text, "retrywatch_syslog_clients_refused_total") == {tcp: 652}
    assert values(text, "retrywatch_syslog_clients_timed_out_total") == {tcp: 9}
    assert values(text, "retrywatch_syslog_frames_too_long_total") == {tcp: 2}
    assert values(text, "retrywatch_syslog_accept_errors_total") == {tcp: 1}
    failures = values(text, "retrywatch_upstream_connect_failures_total")
    assert sum(failures.values()) == 49_277 + 8_000
    assert {dict(k)["subsystem"] for k in failures} == {"http"}
    (build,) = values(text, "retrywatch_build_info")
    assert dict(build)["version"]


def test_per_alert_series_while_firing(text: str, engine: Engine) -> None:
    series = values(text, PER_ALERT)
    (key,) = series
    labels = dict(key)
    ((alert_id, alert),) = engine.firing.items()
    assert labels["cid"] == str(STORM_FIRING_CID) == str(alert.cid)
    assert labels["pid"] == str(alert.pid)
    assert labels["upstream"] == next(iter(alert.snapshot["upstreams"]))
    assert labels["upstream"].startswith("unix:")
    assert series[key] == engine.alert(alert_id)["failures"] == 8000  # type: ignore[index]


def test_no_connection_label_on_any_other_series(text: str) -> None:
    for s in samples(text):
        if s.name != PER_ALERT:
            assert not CONNECTION_LABELS & set(s.labels), s


def test_per_alert_series_goes_when_the_alert_resolves() -> None:
    clock = FakeClock()
    engine = new_engine(clock=clock)
    feed_storm(engine)
    assert len(values(scrape(engine), PER_ALERT)) == 1
    clock.now += engine.config.resolve_after + 1
    changes = engine.tick()
    assert [(c.kind, c.alert.cid) for c in changes] == [("resolved", STORM_FIRING_CID)]
    text = scrape(engine)
    assert values(text, PER_ALERT) == {}
    assert f'cid="{STORM_FIRING_CID}"' not in text
    assert values(text, "retrywatch_runaway_connections") == {(): 0}
    assert values(text, "retrywatch_alerts_resolved_total") == {(): 5}


def test_an_empty_engine_scrapes(text: str) -> None:
    empty = scrape(new_engine())
    assert values(empty, "retrywatch_runaway_connections") == {(): 0}
    assert values(empty, PER_ALERT) == {}
    promtool(empty)


def promtool(text: str) -> None:
    if not shutil.which(PROMTOOL):
        pytest.skip(f"{PROMTOOL} missing: install the Debian package 'prometheus'")
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=60, check=False)
    out = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, f"promtool check metrics failed:\n{out}\n--- input:\n{text}"
    assert out.strip() == "", out  # lint warnings (naming, units) are problems too


def test_promtool_check_metrics(text: str) -> None:
    promtool(text)


def test_promtool_after_resolution() -> None:
    clock = FakeClock()
    engine = new_engine(clock=clock)
    feed_storm(engine)
    clock.now += 3600
    engine.tick()
    promtool(scrape(engine))


def test_scrape_reads_the_engine_at_scrape_time(engine: Engine) -> None:
    before = values(scrape(engine), "retrywatch_source_lines_read_total")
    engine.feed("other", b"one more\n")
    engine.end("other")
    after = values(scrape(engine), "retrywatch_source_lines_read_total")
    key = (("source", "other"),)
    assert after[key] == before[key] + 1
