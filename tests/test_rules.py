"""dashboards/rules.yml: promtool checks it and runs its unit tests (dashboards/rules_test.yml),
every metric it names is exported by a running retrywatch after a storm, recording rules
are named level:metric:operations, and a real Prometheus evaluating it against a
retrywatch that read the real storm fires the runaway alert.

The PromQL helpers here are shared with test_dashboards.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from service_harness import (
    STORM_FIRING_CID,
    feed_storm,
    free_port,
    new_engine,
    serving,
    stop_process,
    wait_until,
)

from retrywatch.delivery.notifier import Notifier
from retrywatch.delivery.receivers import Receiver
from retrywatch.detect.engine import Engine
from retrywatch.serve.metrics import DELIVERY_METRIC_NAMES, METRIC_NAMES

ROOT = Path(__file__).parent.parent
DASHBOARDS = ROOT / "dashboards"
RULES = DASHBOARDS / "rules.yml"
RULES_TEST = DASHBOARDS / "rules_test.yml"
PROMTOOL = shutil.which("promtool") or "promtool"  # the name alone when missing: a skip
PROMETHEUS = shutil.which("prometheus") or "prometheus"  # the name alone when missing: a skip
WAIT = 60.0  # seconds: the bound on Prometheus starting, scraping and evaluating (1 s)
POLL = 0.2
#: Series that Prometheus makes itself, not retrywatch.
BUILTIN = {"up"}
#: (URL, the engine it scrapes, the process, its log)
PrometheusRun = tuple[str, Engine, "subprocess.Popen[bytes]", Path]

needs_promtool = pytest.mark.skipif(
    shutil.which(PROMTOOL) is None,
    reason=f"{PROMTOOL} missing: install the Debian package 'prometheus'")

# -- PromQL names ---------------------------------------------------------------------
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
             "group_right", "bool", "offset", "atan2", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are no function call,
    keyword, label name (in braces or a grouping), duration, string or Grafana variable."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)  # matchers: label names and values
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # ranges and subqueries' durations
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names = {m.group(1) for m in _IDENT.finditer(text)}
    return {n for n in names if n.lower() not in _KEYWORDS}


def test_metric_names_parser() -> None:
    expr = ('sum by (source, kind) (rate(retrywatch_upstream_connect_failures_total'
            '{job=~"$job", reason!="a b"}[$__rate_interval])) / on (job) '
            "group_left(x) (retrywatch:rec:rate5m > 0) and absent(up{job=\"retrywatch\"})"
            " or vector(0) unless topk(10, foo offset 5m) * -Inf")
    assert metric_names(expr) == {"retrywatch_upstream_connect_failures_total",
                                  "retrywatch:rec:rate5m", "up", "foo"}


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def rule_metric_names() -> set[str]:
    """Every metric name in the rules' expressions, and in their annotations' queries."""
    names: set[str] = set()
    for rule in rules():
        names |= metric_names(rule["expr"])
        for text in rule.get("annotations", {}).values():
            names |= set(re.findall(r"\bretrywatch_\w+", text))
    return names - recorded()


def promtool_check(rule_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, "check", "rules", str(rule_file)], capture_output=True,
                          text=True, timeout=60, check=False)


def check_exprs(tmp_path: Path, exprs: Iterable[str]) -> None:
    """Each expression parses: promtool checks them as recording rules."""
    exprs = list(exprs)
    file = tmp_path / "exprs.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": [
        {"record": f"check:expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]}))
    done = promtool_check(file)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout


# -- what a running retrywatch exports --------------------------------------------------
def exported_names(text: str) -> set[str]:
    """Metric family and sample names on a /metrics page (families without samples count:
    retrywatch declares each one on every scrape)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


@pytest.fixture(scope="module")
def scraped() -> set[str]:
    """The names on /metrics of a retrywatch under uvicorn that has read the storm."""
    engine = new_engine()
    feed_storm(engine)
    # A receiver too, so the delivery metrics are exported (never started: nothing is sent).
    notifier = Notifier([Receiver(name="am", url="http://127.0.0.1:9", format="alertmanager")])
    with serving(engine, notifier=notifier) as live, live.client() as client:
        response = client.get("/metrics")
        response.raise_for_status()
        return exported_names(response.text)


def assert_all_exported(used: set[str], scraped: set[str]) -> None:
    used = used - BUILTIN
    assert used, "no metric names found"
    declared = set(METRIC_NAMES) | set(DELIVERY_METRIC_NAMES)
    assert used <= declared, f"not declared in metrics.py: {sorted(used - declared)}"
    assert used <= scraped, f"not on /metrics: {sorted(used - scraped)}"


# -- the rules --------------------------------------------------------------------------
@needs_promtool
def test_promtool_check_rules() -> None:
    done = promtool_check(RULES)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


@needs_promtool
def test_promtool_unit_tests() -> None:
    done = subprocess.run([PROMTOOL, "test", "rules", str(RULES_TEST)], capture_output=True,
                          text=True, timeout=120, check=False, cwd=DASHBOARDS)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_runbook_url_and_unit_tests() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    expected: dict[str, list[bool]] = {}
    for test in tests:
        for case in test.get("alert_rule_test", []):
            expected.setdefault(case["alertname"], []).append(bool(case["exp_alerts"]))
    alerts = [rule for rule in rules() if "alert" in rule]
    assert len(alerts) >= 6
    for rule in alerts:
        name = rule["alert"]
        assert {"summary", "description", "runbook_url"} == rule["annotations"].keys(), name
        assert rule["annotations"]["runbook_url"].startswith("https://"), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert set(expected.get(name, [])) == {True, False}, (
            f"{name}: needs unit tests both firing and not firing")


def test_recording_rules_are_named_level_metric_operations() -> None:
    """Prometheus' practice: the level is the labels kept (besides the target's), the
    metric its name (``_total`` stripped under rate), the operations newest first."""
    records = [rule for rule in rules() if "record" in rule]
    assert len(records) >= 4
    for rule in records:
        name, expr = rule["record"], " ".join(rule["expr"].split())
        level, metric, operations = name.split(":")
        labels = set(level.split("_"))
        assert labels <= {"instance", "source", "kind", "subsystem"}, name
        assert "instance" in labels, name
        assert metric.startswith("retrywatch_") and not metric.endswith("_total"), name
        assert metric.split("_per_")[0] in expr, name
        assert re.fullmatch(r"(ratio_)?rate\d+m", operations), name
        window = operations.rsplit("rate", 1)[1]
        if operations.startswith("ratio_"):
            assert " / " in expr, name
        else:
            assert f"[{window}])" in expr, name
        for dropped in re.findall(r"without \(([^)]*)\)", expr):
            assert not labels & {x.strip() for x in dropped.split(",")}, name
        assert " by (" not in expr, f"{name}: aggregate without, keeping target labels"


def test_rules_use_only_exported_metrics(scraped: set[str]) -> None:
    used = rule_metric_names()
    assert {"retrywatch_runaway_connections", "retrywatch_runaway_connection_failures",
            "retrywatch_source_lines_unparsed_total", "up"} <= used
    assert_all_exported(used, scraped)


# -- a real Prometheus evaluating the rules ---------------------------------------------


def _until(what: str, process: subprocess.Popen[bytes], log: Path,
           check: Callable[[], bool]) -> None:
    wait_until(what, check, process, log, wait=WAIT, poll=POLL)


@pytest.fixture
def prometheus_with_rules(tmp_path: Path) -> Iterator[PrometheusRun]:
    """A real Prometheus (1 s scrape and evaluation) loading rules.yml, scraping a
    retrywatch under uvicorn; yields (Prometheus URL, the engine)."""
    if shutil.which(PROMETHEUS) is None:
        pytest.skip(f"{PROMETHEUS} missing: install the Debian package 'prometheus'")
    engine = new_engine()
    with serving(engine) as live:
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "retrywatch", "static_configs": [
                {"targets": [live.url.removeprefix("http://")]}]}]}))
        port = free_port()
        log = tmp_path / "prometheus.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            _until("prometheus ready", process, log,
                   lambda: httpx.get(f"{url}/-/ready", timeout=5).status_code == 200)
            _until("rules loaded", process, log, lambda: len(_get(url, "rules")["groups"]) == 2)
            yield url, engine, process, log
        finally:
            stop_process(process)


def _get(url: str, what: str) -> Any:
    r = httpx.get(f"{url}/api/v1/{what}", timeout=5)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]


def _alerts(url: str, name: str) -> list[dict[str, Any]]:
    return [a for a in _get(url, "alerts")["alerts"] if a["labels"]["alertname"] == name]


def test_real_prometheus_fires_the_runaway_alert(prometheus_with_rules: PrometheusRun) -> None:
    url, engine, process, log = prometheus_with_rules

    def up() -> bool:
        result = _get(url, "query?query=up")["result"]
        return [r["value"][1] for r in result] == ["1"]

    _until("target up", process, log, up)
    assert _alerts(url, "RetrywatchRunawayConnections") == []

    feed_storm(engine)  # *49447's storm is still firing at the end of the sample
    _until("RetrywatchRunawayConnections firing", process, log, lambda: any(
        a["state"] == "firing" for a in _alerts(url, "RetrywatchRunawayConnections")))
    (alert,) = _alerts(url, "RetrywatchRunawayConnections")
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["confidence"] == "confirmed"
    assert alert["annotations"]["runbook_url"].endswith(
        "docs/runbook.md#retrywatchrunawayconnections")
    assert alert["labels"]["job"] == "retrywatch"
    assert float(alert["value"]) == 1
    description = alert["annotations"]["description"]
    assert f"cid={STORM_FIRING_CID}" in description
    assert "upstream=unix:" in description
    assert "diagnosis=" in description
    assert _alerts(url, "RetrywatchDown") == []
    health = {r["name"]: r["health"] for g in _get(url, "rules")["groups"] for r in g["rules"]}
    assert set(health.values()) == {"ok"}, health
