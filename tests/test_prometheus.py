"""A real Prometheus scrapes the service's /metrics and answers queries on the firing
gauge, the per-alert series and the process's own families (all on 127.0.0.1)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_harness import (
    STORM_FIRING_CID,
    FakeClock,
    LiveServer,
    feed_storm,
    free_port,
    new_engine,
    serving,
    stop_process,
    wait_until,
)

from retrywatch.detect.engine import Engine

PROMETHEUS = shutil.which("prometheus") or "prometheus"  # the name alone when missing: a skip
WAIT = 60.0  # seconds: the bound on Prometheus starting and scraping (1 s interval)
POLL = 0.2  # seconds between two questions to Prometheus

pytestmark = pytest.mark.skipif(
    shutil.which(PROMETHEUS) is None,
    reason=f"{PROMETHEUS} missing: install the Debian package 'prometheus'")




@dataclass(slots=True)
class Prometheus:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def ready(self) -> bool:
        return httpx.get(f"{self.url}/-/ready", timeout=5).status_code == 200

    def targets(self) -> str:
        try:
            return httpx.get(f"{self.url}/api/v1/targets", timeout=5).text
        except httpx.HTTPError as e:
            return f"(targets unavailable: {e})"

    def until(self, what: str, check: Callable[[], bool]) -> None:
        """Ask ``check`` until it holds (bounded by ``WAIT``)."""
        wait_until(what, check, self.process, self.log, wait=WAIT, poll=POLL,
                   context=lambda: f"targets: {self.targets()}\n")




@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(clock: FakeClock) -> Engine:
    return new_engine(clock=clock)


@pytest.fixture
def live(engine: Engine) -> Iterator[LiveServer]:
    with serving(engine) as server:
        yield server


@pytest.fixture
def prometheus(tmp_path: Path, live: LiveServer) -> Iterator[Prometheus]:
    target = live.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: retrywatch\n"
        "    metrics_path: /metrics\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n")
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    prom = Prometheus(process, f"http://127.0.0.1:{port}", log)
    try:
        yield prom
    finally:
        stop_process(process)


def value(result: list[dict[str, Any]]) -> float | None:
    return float(result[0]["value"][1]) if len(result) == 1 else None


def test_prometheus_scrapes_the_firing_alert(prometheus: Prometheus, engine: Engine,
                                             live: LiveServer, clock: FakeClock) -> None:
    prometheus.until("prometheus ready", prometheus.ready)
    prometheus.until("target up", lambda: value(prometheus.query('up{job="retrywatch"}')) == 1)
    assert value(prometheus.query("retrywatch_runaway_connections")) == 0
    # the process and runtime families any exporter has (process_*, python_*)
    memory = value(prometheus.query('process_resident_memory_bytes{job="retrywatch"}'))
    assert memory is not None and memory > 1_000_000
    assert value(prometheus.query('count(python_info{job="retrywatch"})')) == 1
    assert value(prometheus.query(
        'count(python_gc_collections_total{job="retrywatch"})')) == 3

    feed_storm(engine)  # *49447's storm is still firing at the end of the sample
    prometheus.until("retrywatch_runaway_connections == 1",
                     lambda: value(prometheus.query("retrywatch_runaway_connections")) == 1)
    per_alert = f'retrywatch_runaway_connection_failures{{cid="{STORM_FIRING_CID}"}}'
    (series,) = prometheus.query(per_alert)
    (alert,) = engine.firing.values()
    assert series["metric"]["pid"] == str(alert.pid)
    assert series["metric"]["upstream"].startswith("unix:")
    assert series["metric"]["job"] == "retrywatch"
    assert float(series["value"][1]) == 8000
    assert value(prometheus.query("retrywatch_alerts_fired_total")) == 5
    assert value(prometheus.query(
        'retrywatch_source_lines_read_total{source="nginx"}')) == 57_522

    # Quiet for resolve_after seconds of wall time: the alert resolves, its series goes
    # stale in Prometheus at the next scrape.
    clock.now += engine.config.resolve_after + 1
    assert [c.kind for c in engine.tick()] == ["resolved"]
    prometheus.until("retrywatch_runaway_connections == 0",
                     lambda: value(prometheus.query("retrywatch_runaway_connections")) == 0)
    prometheus.until("the per-alert series gone", lambda: prometheus.query(per_alert) == [])
