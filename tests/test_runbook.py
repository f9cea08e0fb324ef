"""docs/runbook.md: every alert of dashboards/rules.yml and every alert retrywatch pushes
(one section per diagnosis code) has a section, every runbook_url lands on an anchor that
exists (GitHub's heading slugs), and the options the page names exist."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
from test_delivery import alert
from test_disk_delivery import disk_alert
from test_rules import rules

from retrywatch.cli import main as cli
from retrywatch.delivery import Receiver
from retrywatch.delivery.formats import ALERTNAME, alertmanager_alert, runbook_url
from retrywatch.delivery.receivers import RUNBOOK
from retrywatch.serve.settings import Settings

ROOT = Path(__file__).parent.parent
RUNBOOK_MD = ROOT / "docs" / "runbook.md"
DIAGNOSIS = ROOT / "retrywatch" / "detect" / "diagnosis.py"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (code and links as their text), lower
    case, punctuation but hyphens and underscores removed, spaces as hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def test_slug() -> None:
    assert slug("RetrywatchSourceLagging") == "retrywatchsourcelagging"
    assert slug("`synchronous_loop`") == "synchronous_loop"
    assert slug("Alerts of the Prometheus rules") == "alerts-of-the-prometheus-rules"
    assert slug("Rules and pushed alerts: which to use") == "rules-and-pushed-alerts-which-to-use"


def headings() -> list[str]:
    text = re.sub(r"```.*?```", "", RUNBOOK_MD.read_text(), flags=re.S)
    return re.findall(r"^#{1,6} (.+?)\s*$", text, flags=re.M)


def anchors() -> set[str]:
    found = [slug(h) for h in headings()]
    assert len(found) == len(set(found)), "duplicate headings get -1 suffixes: avoid them"
    return set(found)


def live_diagnosis_codes() -> set[str]:
    """Every code ``diagnose`` can give (each a ``Diagnosis("code", …)`` in diagnosis.py)."""
    codes = set(re.findall(r'Diagnosis\(\s*"(\w+)"', DIAGNOSIS.read_text()))
    assert len(codes) >= 7, codes
    return codes


def test_every_rule_links_to_its_section() -> None:
    alerts = [rule for rule in rules() if "alert" in rule]
    assert len(alerts) >= 9
    for rule in alerts:
        name = rule["alert"]
        assert name in headings(), f"docs/runbook.md has no section '### {name}'"
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert base == RUNBOOK
        assert anchor == slug(name) and anchor in anchors(), name


def test_the_pushed_alert_and_every_diagnosis_have_a_section() -> None:
    assert ALERTNAME in headings()
    assert ALERTNAME != "RetrywatchRunawayConnections"  # the rule's name: distinct
    missing = live_diagnosis_codes() - anchors()
    assert not missing, f"docs/runbook.md has no section for {sorted(missing)}"


@pytest.mark.parametrize("code", sorted(live_diagnosis_codes()))
def test_a_pushed_alert_links_to_its_diagnosis(code: str) -> None:
    a = alert()
    a["diagnosis"] = {**a["diagnosis"], "code": code}
    r = Receiver(name="am", url="http://127.0.0.1:9093", format="alertmanager")
    url = alertmanager_alert(a, r, "edge-1", datetime.now(UTC))["annotations"]["runbook_url"]
    assert url == f"{RUNBOOK}#{code}"
    assert url.partition("#")[2] in anchors()


def test_the_pushed_disk_alert_has_its_section_and_links_to_its_diagnosis() -> None:
    assert "RetrywatchDiskFilling" in headings()
    r = Receiver(name="am", url="http://127.0.0.1:9093", format="alertmanager")
    url = alertmanager_alert(disk_alert(), r, "edge-1", datetime.now(UTC))["annotations"][
        "runbook_url"]
    assert url == f"{RUNBOOK}#log_fills_disk"
    assert "log_fills_disk" in anchors()


def test_pushed_alert_links_without_a_diagnosis_or_with_an_own_page() -> None:
    a = alert()
    a["diagnosis"] = None
    assert runbook_url(RUNBOOK, a) == f"{RUNBOOK}#{ALERTNAME.lower()}"
    assert ALERTNAME.lower() in anchors()
    a["diagnosis"] = {"code": "Not a code!", "cause": "", "fix": "", "docs": ""}
    assert runbook_url(RUNBOOK, a) == f"{RUNBOOK}#{ALERTNAME.lower()}"
    own = "https://wiki.example.com/runbooks#retrywatch"
    assert runbook_url(own, alert()) == own
    assert runbook_url("https://wiki.example.com/rb", alert()).endswith("/rb#synchronous_loop")


def test_links_of_the_page_resolve() -> None:
    text = RUNBOOK_MD.read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links
    for link in links:
        path, _, anchor = link.partition("#")
        if path.startswith(("http://", "https://")):
            continue
        if path:
            assert (RUNBOOK_MD.parent / path).is_file(), link
        else:
            assert anchor in anchors(), link


def cli_options() -> set[str]:
    options: set[str] = set()
    assert isinstance(cli, click.Group)
    for command in cli.commands.values():
        for param in command.params:
            options.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    return options


#: The settings (and receiver options) the page tells to look at or change.
SETTINGS_NAMED = ("poll_interval", "resolve_after", "stall_timeout", "api_token",
                  "nginx_config", "log", "max_attempts", "max_age", "queue_size", "headers",
                  "instance", "runbook_url")


def test_the_options_named_exist() -> None:
    """Every --flag the page names is an option of a retrywatch command or of
    dashboards/mixin.py, and the settings it names are settings."""
    text = RUNBOOK_MD.read_text()
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", text))
    mixin_flags = set(re.findall(r'"(--[a-z-]+)"', (ROOT / "dashboards" / "mixin.py").read_text()))
    assert {"--from", "--state-dir", "--nginx-config", "--selector"} <= flags
    assert flags <= cli_options() | mixin_flags, sorted(flags - cli_options() - mixin_flags)
    known = set(Settings.model_fields) | set(Receiver.model_fields)
    for name in SETTINGS_NAMED:
        assert name in known, name
        assert f"`{name}`" in text, name
    assert "RETRYWATCH_POLL_INTERVAL" in text and "--poll-interval" not in text
