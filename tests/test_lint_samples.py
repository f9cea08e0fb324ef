"""``retrywatch lint`` on the configurations of the real-nginx scenarios (sample_logs/configs,
reconstructed from the scenarios' descriptions), checked against what the same nginx did:
every location whose requests went runaway in the scenario's log (the truth file) is an
error, and the locations lint leaves alone never went runaway.

Each configuration also passes ``nginx -t`` of the real nginx (Debian's, with the Lua and
stream modules), so lint is judged on configurations nginx accepts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_lint_real_nginx import nginx_t
from test_recorded_nginx_logs import SAMPLE_LOGS, truth

from retrywatch.lint import Severity, lint

CONFIGS = SAMPLE_LOGS / "configs"
SCENARIOS = ("stream-plain", "stream-multi", "http-lua-storm", "http-normal")
LINT = [sys.executable, "-m", "retrywatch", "lint"]


def conf(scenario: str) -> Path:
    return CONFIGS / f"scenario-{scenario}.conf"


def findings_by_scope(scenario: str) -> dict[str, list[tuple[str, Severity]]]:
    result = lint([str(conf(scenario))])
    by: dict[str, list[tuple[str, Severity]]] = {}
    for f in result.findings:
        by.setdefault(f.facts.get("scope", "?"), []).append((f.code, f.severity))
    return by


def location_of(request: str, locations: list[str]) -> str:
    """The location (longest prefix) that served ``GET /storm1?cid=x HTTP/1.1``."""
    path = request.split()[1].split("?", maxsplit=1)[0]
    return max((loc for loc in locations if path.startswith(loc)), key=len)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_nginx_accepts_the_configuration(scenario: str, tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()  # the configurations' own error_log
    done = nginx_t(conf(scenario).read_text(), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_storm_configuration_findings() -> None:
    """Each location of the storm scenario, as lint judges it."""
    by = findings_by_scope("http-lua-storm")
    error = Severity.ERROR
    assert by == {
        "location /storm1": [("http_retry_loop", error)],  # set_more_tries(1) every try
        "location /storm5": [("http_retry_loop", error)],  # set_more_tries(5) every try
        "location /storm20k": [("http_retry_loop", error)],  # 20,000 tries at once
        "location /unixstorm": [("http_retry_loop", error)],  # capped only by its Lua
        "location /ok-lua": [("http_retry_loop", error)],  # latent: its peer was up
        "location /once1": [("http_retry_loop", Severity.WARNING)],  # once, conditional
    }


def test_storm_findings_point_at_the_directive_to_fix() -> None:
    result = lint([str(conf("http-lua-storm"))])
    lines = conf("http-lua-storm").read_text().splitlines()
    for f in result.findings:
        assert f.location.line is not None
        assert lines[f.location.line - 1].strip() == "proxy_next_upstream_tries 0;"
        assert any(r.what.startswith("set_more_tries(") for r in f.related)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_agrees_with_what_nginx_did(scenario: str) -> None:
    """Runaway connections in the log come from locations lint calls errors; locations
    without any finding had no runaway."""
    by = findings_by_scope(scenario)
    text = conf(scenario).read_text()
    locations = [line.split()[1] for line in text.splitlines()
                 if line.strip().startswith("location ")]
    data = truth(scenario)
    for rec in data["runaway_connections"]:
        where = f"location {location_of(rec['request'], locations)}"
        assert ("http_retry_loop", Severity.ERROR) in by.get(where, []), (rec["id"], where)
    clean = {f"location {loc}" for loc in locations} - set(by)
    for rec in data["normal_connections"]:
        if rec.get("request"):
            where = f"location {location_of(rec['request'], locations)}"
            if where in clean:
                assert rec["failures"] <= 3, rec
    if not data["runaway_connections"]:
        assert not [f for f in lint([str(conf(scenario))]).findings
                    if f.severity >= Severity.WARNING]


def test_cli_exit_status_on_the_samples() -> None:
    clean = [str(conf(s)) for s in ("stream-plain", "stream-multi", "http-normal")]
    ok = subprocess.run([*LINT, *clean], capture_output=True, text=True, timeout=60,
                        check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().endswith("0 error(s), 0 warning(s), 0 note(s) in 3 file(s).")
    bad = subprocess.run([*LINT, str(CONFIGS)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert bad.returncode == 1
    assert "5 error(s), 1 warning(s)" in bad.stdout
