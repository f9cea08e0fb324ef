"""dashboards/mixin.py: the committed rules, dashboard and PrometheusRule are its output
with the defaults; another selector reaches every series of the rules and the dashboard
(promtool checks and unit-tests the rendering); a selector or runbook URL that does not
fit is refused, never rendered wrong."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from test_dashboards import substitute, targets, variable_selectors
from test_rules import PROMTOOL, check_exprs, metric_names, needs_promtool, promtool_check

from retrywatch.delivery.receivers import RUNBOOK

ROOT = Path(__file__).parent.parent
MIXIN = ROOT / "dashboards" / "mixin.py"
PROMETHEUSRULE = ROOT / "deploy" / "kubernetes" / "monitoring" / "prometheusrule.yaml"
SELECTOR = 'job="retrywatch",namespace="ingress"'
RUNBOOK_URL = "https://wiki.example.com/retrywatch/runbook"
PROMTOOL_FOUND = shutil.which(PROMTOOL) is not None


def load_mixin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("retrywatch_dashboards_mixin", MIXIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


mixin = load_mixin()


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(MIXIN), *map(str, args)], capture_output=True,
                          text=True, timeout=60, check=False)


# -- the committed files ------------------------------------------------------------------
def test_the_committed_files_are_up_to_date() -> None:
    command = f"python dashboards/mixin.py --prometheusrule {PROMETHEUSRULE.relative_to(ROOT)}"
    hint = f"stale: run `{command}`"
    for name, text in mixin.render().items():
        assert (ROOT / "dashboards" / name).read_text() == text, f"dashboards/{name} {hint}"
    assert PROMETHEUSRULE.read_text() == mixin.render_prometheusrule(), hint
    assert run("--check", "--prometheusrule", PROMETHEUSRULE).returncode == 0


def test_the_defaults() -> None:
    assert mixin.DEFAULT_SELECTOR == 'job="retrywatch"'
    assert mixin.DEFAULT_RUNBOOK_URL == RUNBOOK  # the rules and the pushed alerts agree


def test_the_script_writes_and_checks(tmp_path: Path) -> None:
    done = run("--selector", SELECTOR, "--runbook-url", RUNBOOK_URL, "--out", tmp_path,
               "--prometheusrule", tmp_path / "k8s" / "rule.yaml")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k8s", "retrywatch.json", "rules.yml"]
    assert f"{{{SELECTOR}}}" in (tmp_path / "rules.yml").read_text()
    rule = yaml.safe_load((tmp_path / "k8s" / "rule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load((tmp_path / "rules.yml").read_text())
    check: list[str | Path] = ["--selector", SELECTOR, "--runbook-url", RUNBOOK_URL,
                               "--out", tmp_path, "--check"]
    assert run(*check).returncode == 0
    (tmp_path / "retrywatch.json").write_text("{}\n")
    stale = run(*check)
    assert stale.returncode == 1 and "retrywatch.json" in stale.stderr
    assert run("--check", "--out", tmp_path).returncode == 1  # rendered for another selector


# -- another selector ----------------------------------------------------------------------
def rendered_rules(selector: str = SELECTOR) -> list[dict[str, Any]]:
    text = mixin.render_rules(mixin.Config(selector, RUNBOOK_URL))
    return [r for g in yaml.safe_load(text)["groups"] for r in g["rules"]]


def selections(name: str, expr: str) -> list[str]:
    """The matchers (``{…}``, or "") after each occurrence of metric ``name``."""
    pattern = rf"(?<![\w:]){re.escape(name)}(?![\w:])(\{{[^}}]*\}})?"
    return re.findall(pattern, expr)


def test_every_series_of_the_rules_is_selected() -> None:
    rules = rendered_rules()
    recorded = {r["record"] for r in rules if "record" in r}
    for rule in rules:
        expr = rule["expr"]
        for name in metric_names(expr) - recorded:
            occurrences = selections(name, expr)
            assert occurrences, (name, expr)
            for matchers in occurrences:
                assert matchers.startswith(f"{{{SELECTOR}"), (name, expr)
        if "alert" in rule:
            url = rule["annotations"]["runbook_url"]
            assert url == f"{RUNBOOK_URL}#{rule['alert'].lower()}"
        assert 'job="retrywatch"' not in expr.replace(SELECTOR, ""), expr  # nothing fixed


@needs_promtool
def test_the_rendered_rules_check_and_select(tmp_path: Path) -> None:
    """promtool checks the rendering, and its unit tests show the selector at work: the
    namespace selected records and pages, another namespace does not, and the target's
    labels (namespace) stay on what is recorded."""
    (tmp_path / "rules.yml").write_text(mixin.render_rules(mixin.Config(SELECTOR, RUNBOOK_URL)))
    done = promtool_check(tmp_path / "rules.yml")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    ours = 'job="retrywatch",namespace="ingress",instance="rw:8734"'
    theirs = 'job="retrywatch",namespace="other",instance="rw:8734"'
    tests = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": f'retrywatch_source_lines_read_total{{{ours},source="nginx"}}',
             "values": "0+60x10"},
            {"series": f'retrywatch_source_lines_read_total{{{theirs},source="nginx"}}',
             "values": "0+60x10"},
            {"series": f"up{{{ours}}}", "values": "0x10"},
            {"series": f"up{{{theirs}}}", "values": "0x10"},
        ],
        "promql_expr_test": [{
            "expr": "instance_source:retrywatch_source_lines_read:rate5m",
            "eval_time": "10m",
            "exp_samples": [{"labels": "instance_source:retrywatch_source_lines_read:rate5m"
                                       f'{{{ours},source="nginx"}}', "value": 1}]}],
        "alert_rule_test": [{
            "eval_time": "5m", "alertname": "RetrywatchDown",
            "exp_alerts": [{
                "exp_labels": {"severity": "critical", "job": "retrywatch",
                               "namespace": "ingress", "instance": "rw:8734"},
                "exp_annotations": {
                    "summary": "retrywatch rw:8734 is down",
                    "description": "Prometheus cannot scrape retrywatch on rw:8734: retry "
                                   "loops on that nginx are not being watched.",
                    "runbook_url": f"{RUNBOOK_URL}#retrywatchdown"}}]}],
    }]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(tests))
    done = subprocess.run([PROMTOOL, "test", "rules", "test.yml"], capture_output=True,
                          text=True, timeout=120, check=False, cwd=tmp_path)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"


def test_every_query_of_the_dashboard_is_selected(tmp_path: Path) -> None:
    dashboard = json.loads(mixin.render_dashboard(mixin.Config(SELECTOR)))
    exprs = [t["expr"] for t in targets(dashboard)]
    assert len(exprs) >= 15
    for expr in exprs:
        for name in metric_names(expr):
            for matchers in selections(name, expr):
                assert matchers.startswith(f'{{{SELECTOR}, job=~"$job"'), (name, expr)
    for selector in variable_selectors(dashboard):
        assert selector.startswith(f"retrywatch_build_info{{{SELECTOR}"), selector
    default = json.loads(mixin.render_dashboard())
    assert dashboard["uid"] == default["uid"]  # one dashboard, whatever the labels
    if PROMTOOL_FOUND:
        check_exprs(tmp_path, [substitute(e) for e in exprs]
                    + [substitute(s) for s in variable_selectors(dashboard)])



# -- what does not fit ---------------------------------------------------------------------
@needs_promtool
def test_yaml_special_characters_in_a_selector(tmp_path: Path) -> None:
    selector = 'job="retrywatch",team="a: b #c",quote="it\\"s"'
    (tmp_path / "rules.yml").write_text(mixin.render_rules(mixin.Config(selector)))
    done = promtool_check(tmp_path / "rules.yml")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    default = [mixin.DEFAULT_SELECTOR in r["expr"] for r in rendered_rules(mixin.DEFAULT_SELECTOR)]
    assert [selector in r["expr"] for r in rendered_rules(selector)] == default
    assert sum(default) >= 10


@pytest.mark.parametrize("selector", [
    "", "job=retrywatch", '{job="retrywatch"}', 'job="retrywatch"}', "job='retrywatch'",
    'job="a\nb"', 'job="retrywatch",,x="y"', 'job="retrywatch" or vector(1)',
])
def test_a_selector_that_is_no_matchers_is_refused(selector: str) -> None:
    with pytest.raises(ValueError, match="selector"):
        mixin.Config(selector)
    done = run("--selector", selector, "--out", "/nonexistent")
    assert done.returncode == 2 and "selector" in done.stderr


@pytest.mark.parametrize("url", ["ftp://x/runbook.md", "https://x/runbook.md#here",
                                 "https://x/run book.md", "runbook.md"])
def test_a_runbook_url_that_does_not_fit_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="runbook"):
        mixin.Config(runbook_url=url)
