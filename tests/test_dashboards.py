"""dashboards/retrywatch.json: the structure Grafana's import and provisioning need (no
Grafana server installs from the registries here, so the JSON is checked against the
rules of Grafana's dashboard schema that matter), every panel query parses (promtool),
and every metric name it uses is exported by a running retrywatch after a storm."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_rules import (
    assert_all_exported,
    check_exprs,
    metric_names,
    needs_promtool,
    recorded,
    scraped,
)

DASHBOARD = Path(__file__).parent.parent / "dashboards" / "retrywatch.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: dashboards/mixin.py's default selector (tests/test_mixin.py renders others).
SELECTOR = 'job="retrywatch"'
PANEL_TYPES = {"row", "stat", "table", "timeseries", "bargauge", "gauge", "text"}
#: Grafana's built-in variables and ours, replaced by valid PromQL for promtool.
SUBSTITUTIONS = {
    "$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h",
    "$job": ".+", "$instance": ".+", "${job}": ".+", "${instance}": ".+",
}
__all__ = ["scraped"]  # the module-scoped fixture, shared with test_rules


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for p in panels(dashboard) for t in p.get("targets", [])]


def substitute(expr: str) -> str:
    for var, value in sorted(SUBSTITUTIONS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown variable in {expr!r}"
    return expr


def variable_selectors(dashboard: dict[str, Any]) -> list[str]:
    """The series selectors inside the query variables' label_values(SELECTOR, label)."""
    selectors = []
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"]["query"])
            assert m, var["query"]
            assert var["definition"] == var["query"]["query"]
            selectors.append(m.group(1))
    return selectors


def test_top_level(dashboard: dict[str, Any]) -> None:
    assert dashboard["id"] is None
    assert dashboard["uid"] == "retrywatch-overview"  # stable: links and provisioning
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"])
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["title"]
    assert isinstance(dashboard["version"], int)
    assert {"from", "to"} <= dashboard["time"].keys()
    (inp,) = dashboard["__inputs"]
    assert inp == {"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                   "pluginId": "prometheus", "pluginName": "Prometheus",
                   "description": inp["description"]}
    required = {(r["type"], r["id"]) for r in dashboard["__requires"]}
    assert ("datasource", "prometheus") in required
    assert ("grafana", "grafana") in required
    used_types = {p["type"] for p in panels(dashboard)} - {"row"}
    assert used_types <= {r["id"] for r in dashboard["__requires"] if r["type"] == "panel"}


def test_template_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance"]
    ds = variables["datasource"]
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"
    # no current value: Grafana takes the default Prometheus, whether the file is imported
    # (the __inputs prompt) or provisioned (where an import placeholder would stay literal)
    assert ds["current"] == {}
    assert "${DS_PROMETHEUS}" not in json.dumps(dashboard["templating"])
    for name in ("job", "instance"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"] == DATASOURCE
        assert var["includeAll"] is True and var["multi"] is True
        assert var["allValue"] == ".+"
    assert "$job" in variables["instance"]["query"]["query"]  # instance follows job
    for selector in variable_selectors(dashboard):
        assert selector.startswith(f"retrywatch_build_info{{{SELECTOR}"), selector


def test_panels(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        assert panel["type"] in PANEL_TYPES, panel["type"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] >= 1 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert grid["h"] >= 1 and grid["y"] >= 0
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["description"], panel["id"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            # the selector first: "All" (.+) in a variable stays within it
            assert f'{SELECTOR}, job=~"$job"' in target["expr"], target["expr"]
            assert 'instance=~"$instance"' in target["expr"], target["expr"]


def test_on_call_panels(dashboard: dict[str, Any]) -> None:
    """What the person on call needs is there."""
    by_title = {p["title"]: p for p in panels(dashboard)}
    stat = by_title["Runaway connections firing now"]
    assert stat["type"] == "stat"
    assert "retrywatch_runaway_connections" in stat["targets"][0]["expr"]
    table = by_title["Connections in a retry loop"]
    assert table["type"] == "table"
    (target,) = table["targets"]
    assert target["format"] == "table" and target["instant"] is True
    assert target["expr"].startswith("retrywatch_runaway_connection_failures{")
    order = table["transformations"][0]["options"]["indexByName"]
    assert {"source", "pid", "cid", "upstream", "diagnosis"} <= order.keys()
    assert "topk(" in by_title["Top upstreams of runaway connections"]["targets"][0]["expr"]
    exprs = " ".join(t["expr"] for t in targets(dashboard))
    for name in ("retrywatch_upstream_connect_failures_total", "retrywatch_source_lines_read_total",
                 "retrywatch_source_lines_unparsed_total", "retrywatch_source_lag_bytes",
                 "retrywatch_source_lag_seconds", "retrywatch_syslog_receive_drops_total"):
        assert name in exprs, name


@needs_promtool
def test_every_query_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    exprs = [substitute(t["expr"]) for t in targets(dashboard)]
    exprs += [substitute(s) for s in variable_selectors(dashboard)]
    check_exprs(tmp_path, exprs)


def test_every_metric_is_exported(dashboard: dict[str, Any], scraped: set[str]) -> None:
    used: set[str] = set()
    for expr in [t["expr"] for t in targets(dashboard)] + variable_selectors(dashboard):
        used |= metric_names(expr)
    # The dashboard works without the recording rules loaded.
    assert not used & recorded()
    assert_all_exported(used, scraped)
