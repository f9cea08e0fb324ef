"""Render retrywatch's Prometheus rules and Grafana dashboard for your labels (a mixin).

    python dashboards/mixin.py --selector 'job="retrywatch",namespace="ingress"' --out DIR

writes ``DIR/rules.yml`` and ``DIR/retrywatch.json`` from the templates in
``dashboards/src/``, with every series selected by ``--selector`` and every alert's
``runbook_url`` under ``--runbook-url``; ``--prometheusrule FILE`` also writes the rules
as a Prometheus Operator PrometheusRule. The committed ``dashboards/rules.yml``,
``dashboards/retrywatch.json`` and ``deploy/kubernetes/monitoring/prometheusrule.yaml``
are its output with the defaults (tests/test_mixin.py checks they are up to date):
edit ``dashboards/src/``, then run ``python dashboards/mixin.py``.

The templates are Python %-format strings: ``%(selector)s`` and ``%(runbook_url)s``,
and ``%%`` for a literal ``%``. Pure Python and PyYAML: no jsonnet.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULT_RUNBOOK_URL", "DEFAULT_SELECTOR", "Config", "main", "render",
           "render_dashboard", "render_prometheusrule", "render_rules"]

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
DEFAULT_SELECTOR = 'job="retrywatch"'
#: docs/runbook.md; the pushed alerts' default too (retrywatch/delivery/receivers.py).
DEFAULT_RUNBOOK_URL = "https://github.com/retrywatch/retrywatch/blob/main/docs/runbook.md"
PROMETHEUSRULE = HERE.parent / "deploy" / "kubernetes" / "monitoring" / "prometheusrule.yaml"

_MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\\n]|\\.)*"\s*'
_SELECTOR = re.compile(rf"{_MATCHER}(?:,{_MATCHER})*,?\s*")


@dataclass(frozen=True, slots=True)
class Config:
    #: PromQL label matchers, without braces: ``job="retrywatch",namespace="ingress"``.
    selector: str = DEFAULT_SELECTOR
    #: The runbook page; each alert appends ``#<its anchor>``.
    runbook_url: str = DEFAULT_RUNBOOK_URL

    def __post_init__(self) -> None:
        if not _SELECTOR.fullmatch(self.selector):
            raise ValueError(f"selector must be label matchers such as {DEFAULT_SELECTOR!r} "
                             f"(double-quoted values, comma-separated), got {self.selector!r}")
        if not re.fullmatch(r"https?://[^\s#'\"]+", self.runbook_url):
            raise ValueError("runbook URL must be an http(s) URL without a fragment, got "
                             f"{self.runbook_url!r}")

    def values(self) -> dict[str, str]:
        return {"selector": self.selector.strip().rstrip(",").strip(),
                "runbook_url": self.runbook_url}


def _fill(data: Any, values: dict[str, str]) -> Any:
    """Every string of ``data`` with the template's fields filled."""
    if isinstance(data, str):
        return data % values
    if isinstance(data, list):
        return [_fill(item, values) for item in data]
    if isinstance(data, dict):
        return {key: _fill(value, values) for key, value in data.items()}
    return data


def render_rules(config: Config = Config()) -> str:
    """rules.yml: the template filled as text (its comments kept), then checked to read
    back as the template filled field by field (a selector cannot break the YAML)."""
    template = (SRC / "rules.yml").read_text()
    values = config.values()
    text = ("# Rendered by dashboards/mixin.py from dashboards/src/rules.yml: edit that, "
            "then run it.\n" + template % values)
    if yaml.safe_load(text) != _fill(yaml.safe_load(template), values):
        raise ValueError(f"selector {config.selector!r} does not fit in the rules' YAML")
    return text


def render_dashboard(config: Config = Config()) -> str:
    """retrywatch.json: every string of the template filled (JSON escaping is json's)."""
    template = json.loads((SRC / "retrywatch.json").read_text())
    return json.dumps(_fill(template, config.values()), indent=2) + "\n"


def render_prometheusrule(config: Config = Config()) -> str:
    """The rules as a Prometheus Operator PrometheusRule (its spec is rules.yml)."""
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "retrywatch",
                         "labels": {"app.kubernetes.io/name": "retrywatch"}},
            "spec": yaml.safe_load(render_rules(config))}
    return ("# dashboards/rules.yml for Prometheus Operator: spec.groups is that file's groups,\n"
            "# rendered by dashboards/mixin.py (tests/test_mixin.py and tests/test_deploy.py\n"
            "# keep them equal). Regenerate after changing dashboards/src/rules.yml:\n"
            "#   python dashboards/mixin.py --prometheusrule "
            "deploy/kubernetes/monitoring/prometheusrule.yaml\n"
            "# Its labels must match your Prometheus' ruleSelector.\n"
            + yaml.safe_dump(rule, sort_keys=False, width=100))


def render(config: Config = Config()) -> dict[str, str]:
    """File name → content, for ``--out``."""
    return {"rules.yml": render_rules(config), "retrywatch.json": render_dashboard(config)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python dashboards/mixin.py",
        description="Render retrywatch's Prometheus rules and Grafana dashboard.")
    parser.add_argument("--selector", default=DEFAULT_SELECTOR,
                        help="label matchers that select retrywatch's series "
                             f"(default: {DEFAULT_SELECTOR})")
    parser.add_argument("--runbook-url", default=DEFAULT_RUNBOOK_URL,
                        help="the runbook page the alerts link to (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=HERE,
                        help="directory for rules.yml and retrywatch.json (default: %(default)s)")
    parser.add_argument("--prometheusrule", type=Path, default=None, metavar="FILE",
                        help="also write the rules as a PrometheusRule to FILE")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a file differs from its rendering")
    args = parser.parse_args(argv)
    try:
        config = Config(args.selector, args.runbook_url)
        files = {args.out / name: text for name, text in render(config).items()}
        if args.prometheusrule is not None:
            files[args.prometheusrule] = render_prometheusrule(config)
    except ValueError as exc:
        parser.error(str(exc))
    stale = []
    for path, text in files.items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for path in stale:
        print(f"{path}: differs from its rendering (run dashboards/mixin.py)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
