"""A real Alertmanager on 127.0.0.1 receives retrywatch's alerts for a replayed real-nginx
storm, keeps the runaway one active while it fires (re-sent well within resolve_timeout),
resolves it after the storm ends, and its own webhook delivers both to a local receiver:
end to end through Alertmanager's routing.

With the rule alerts too, the inhibit rule of dashboards/README.md ("Rules and pushed
alerts: which to use") makes one incident page once: the pushed alert of an instance
suppresses that instance's rule alert of the same confidence, and the rule pages again
once retrywatch stops pushing."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from helpers import BASE_TS
from service_harness import (
    STORM_FIRING_CID,
    FakeClock,
    feed_storm,
    free_port,
    new_engine,
    stop_process,
    wait_until,
)
from test_disk_delivery import LOG, QUIET, MiB, fired
from test_upstream_delivery import PEER as UPSTREAM_PEER
from test_upstream_delivery import QUIET as UPSTREAM_QUIET
from test_upstream_delivery import fired as fired_upstream
from test_upstream_watch import figures_of
from webhook_receiver import WebhookReceiver, receiving

from retrywatch.delivery import Notifier, Receiver
from retrywatch.detect.disk import DiskWatch
from retrywatch.detect.upstreams import UpstreamWatch
from retrywatch.sources.growth import Filesystem

# On PATH; the name alone when missing (a skip).
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "prometheus-alertmanager"
WAIT = 30.0  # seconds: the bound on Alertmanager starting, routing and notifying
POLL = 0.1
RESOLVE_TIMEOUT = 3  # seconds: short, so a lapse in re-sending would show within the test
README = Path(__file__).parent.parent / "dashboards" / "README.md"

pytestmark = pytest.mark.skipif(
    shutil.which(ALERTMANAGER) is None,
    reason=f"{ALERTMANAGER} missing: install the Debian package 'prometheus-alertmanager'")






@dataclass(slots=True)
class Alertmanager:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def alerts(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v2/alerts", timeout=5)
        r.raise_for_status()
        result: list[dict[str, Any]] = r.json()
        return result

    def ours(self) -> list[dict[str, Any]]:
        return [a for a in self.alerts() if a["annotations"].get("cid") == str(STORM_FIRING_CID)]

    def until(self, what: str, check: Callable[[], bool]) -> None:
        """Ask ``check`` until it holds (bounded by ``WAIT``)."""
        wait_until(what, check, self.process, self.log, wait=WAIT, poll=POLL)


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with receiving() as receiver:
        yield receiver


@contextmanager
def running(tmp_path: Path, hook: WebhookReceiver, *,
            group_by: Sequence[str] = ("alertname", "alert_id"),
            inhibit_rules: list[dict[str, Any]] | None = None) -> Iterator[Alertmanager]:
    """A real Alertmanager routing everything to ``hook`` (1 s group wait and interval)."""
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump({
        "global": {"resolve_timeout": f"{RESOLVE_TIMEOUT}s"},
        "route": {"receiver": "test", "group_by": list(group_by), "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "test", "webhook_configs": [
            {"url": f"{hook.url}/alertmanager", "send_resolved": True}]}],
        "inhibit_rules": inhibit_rules or [],
    }))
    port = free_port()
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
             "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    am = Alertmanager(process, f"http://127.0.0.1:{port}", log)
    try:
        am.until("alertmanager ready",
                 lambda: httpx.get(f"{am.url}/-/ready", timeout=5).status_code == 200)
        yield am
    finally:
        stop_process(process)


@pytest.fixture
def alertmanager(tmp_path: Path, hook: WebhookReceiver) -> Iterator[Alertmanager]:
    with running(tmp_path, hook) as am:
        yield am


def webhook_alerts(hook: WebhookReceiver, status: str) -> list[dict[str, Any]]:
    """Alerts of ``status`` in what Alertmanager's webhook delivered for our cid."""
    return [a for r in hook.ok for a in r.json()["alerts"]
            if a["status"] == status and a["annotations"].get("cid") == str(STORM_FIRING_CID)]


def pushing_to(alertmanager: Alertmanager) -> Receiver:
    """An alertmanager receiver re-sending every 0.5 s, quick to retry."""
    return Receiver(name="am", url=alertmanager.url, format="alertmanager", group_wait=0.2,
                    resend_interval=0.5, instance="edge-1",
                    external_url="http://retrywatch.test:8734", backoff_initial=0.05,
                    backoff_max=0.5, timeout=5)


def test_storm_alert_through_alertmanager(alertmanager: Alertmanager,
                                          hook: WebhookReceiver) -> None:
    clock = FakeClock()
    engine = new_engine(clock=clock)
    notifier = Notifier([pushing_to(alertmanager)])
    engine.subscribe(notifier.offer)
    notifier.start()
    try:
        feed_storm(engine)  # cid 49447's storm is still firing at the end of the sample
        (firing,) = engine.firing.values()
        assert firing.cid == STORM_FIRING_CID

        alertmanager.until("the runaway alert in /api/v2/alerts", lambda: bool(alertmanager.ours()))
        (alert,) = alertmanager.ours()
        assert alert["labels"] == {
            "alertname": "RetrywatchRunawayConnection", "severity": "critical",
            "instance": "edge-1", "source": "nginx", "subsystem": "http",
            "confidence": "confirmed", "alert_id": firing.id}
        notes = alert["annotations"]
        assert f"pid={firing.pid}" in notes["description"]
        assert "unix:" in notes["description"]
        assert firing.diagnosis is not None and firing.diagnosis.code in notes["description"]
        assert notes["summary"]
        assert notes["runbook_url"].endswith(f"docs/runbook.md#{firing.diagnosis.code}")
        assert alert["generatorURL"] == f"http://retrywatch.test:8734/api/v1/alerts/{firing.id}"
        assert alert["status"]["state"] == "active"

        # Alertmanager's own routing delivers it to its webhook receiver.
        hook.wait_for("alertmanager's firing webhook",
                      lambda: bool(webhook_alerts(hook, "firing")), timeout=WAIT)

        # Longer than resolve_timeout: still active, because retrywatch re-sends it.
        first_update = alert["updatedAt"]
        pause = threading.Event()
        pause.wait(RESOLVE_TIMEOUT + 1.5)
        (alert,) = alertmanager.ours()
        assert alert["status"]["state"] == "active"
        assert alert["updatedAt"] > first_update

        # The storm is over: quiet for resolve_after seconds, the alert resolves.
        clock.now += engine.config.resolve_after + 1
        assert [c.kind for c in engine.tick()] == ["resolved"]
        alertmanager.until("the alert resolved in alertmanager",
                           lambda: alertmanager.ours() == [])
        hook.wait_for("alertmanager's resolved webhook",
                      lambda: bool(webhook_alerts(hook, "resolved")), timeout=WAIT)
        (resolved,) = webhook_alerts(hook, "resolved")[:1]
        assert resolved["labels"]["alert_id"] == firing.id
        assert resolved["endsAt"] >= resolved["startsAt"]
        stats = notifier.stats()["am"]
        assert stats.deliveries["dropped"] == 0 and stats.deliveries["success"] >= 3
    finally:
        notifier.stop()


def test_a_disk_alert_through_alertmanager(alertmanager: Alertmanager,
                                          hook: WebhookReceiver) -> None:
    """A disk alert (detect/disk.py) as Alertmanager takes it: RetrywatchDiskFilling with
    its mount, kept active while it fires, routed to the webhook, resolved."""
    clock = FakeClock(0.0)
    watch = DiskWatch(clock=clock)
    notifier = Notifier([pushing_to(alertmanager)])
    notifier.start()

    def disk_alerts() -> list[dict[str, Any]]:
        return [a for a in alertmanager.alerts()
                if a["labels"]["alertname"] == "RetrywatchDiskFilling"]

    try:
        (change,) = fired(watch, clock)
        notifier.offer(change)
        alertmanager.until("the disk alert in /api/v2/alerts", lambda: bool(disk_alerts()))
        (alert,) = disk_alerts()
        assert alert["labels"] == {"alertname": "RetrywatchDiskFilling", "severity": "critical",
                                   "instance": "edge-1", "mount": "/var/log",
                                   "alert_id": change.alert.id}
        assert alert["annotations"]["summary"].startswith("nginx's logs will fill /var/log")
        assert alert["annotations"]["runbook_url"].endswith("docs/runbook.md#log_fills_disk")
        assert alert["generatorURL"] == "http://retrywatch.test:8734/api/v1/disk"
        hook.wait_for("alertmanager's webhook", lambda: any(
            a["labels"]["alertname"] == "RetrywatchDiskFilling" and a["status"] == "firing"
            for r in hook.ok for a in r.json()["alerts"]), timeout=WAIT)
        # longer than resolve_timeout: still active (re-sent)
        threading.Event().wait(RESOLVE_TIMEOUT + 1.5)
        assert [a["status"]["state"] for a in disk_alerts()] == ["active"]
        # the log stops growing: resolved, and gone from Alertmanager
        for _ in range(QUIET):
            watch.observe(LOG, 19 * 128 * 1024, 19_000,
                          Filesystem(1, "/var/log", 10 * MiB, 64 * MiB))
            for c in watch.evaluate():
                notifier.offer(c)
            clock.advance(1.0)
        assert watch.firing == {}
        alertmanager.until("the disk alert resolved", lambda: disk_alerts() == [])
        hook.wait_for("alertmanager's resolved webhook", lambda: any(
            a["labels"]["alertname"] == "RetrywatchDiskFilling" and a["status"] == "resolved"
            for r in hook.ok for a in r.json()["alerts"]), timeout=WAIT)
    finally:
        notifier.stop()


# -- rules and pushed alerts together: one incident pages once --------------------------
def documented_inhibit_rules() -> list[dict[str, Any]]:
    """The inhibit_rules of dashboards/README.md, as the user copies them."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if "inhibit_rules:" in b]
    rules: list[dict[str, Any]] = yaml.safe_load(block)["inhibit_rules"]
    return rules


def rule_alert(name: str, instance: str, confidence: str, severity: str) -> dict[str, Any]:
    """An alert as Prometheus sends it for a rule of dashboards/rules.yml (its endsAt
    a while ahead: Prometheus re-sends it every evaluation)."""
    now = datetime.now(UTC)
    return {"labels": {"alertname": name, "job": "retrywatch", "instance": instance,
                       "severity": severity, "confidence": confidence},
            "annotations": {"summary": f"{name} on {instance}"},
            "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=10)).isoformat(),
            "generatorURL": "http://prometheus.test/graph"}


def notified(hook: WebhookReceiver, name: str, instance: str) -> bool:
    return any(a["labels"]["alertname"] == name and a["labels"]["instance"] == instance
               and a["status"] == "firing" for r in hook.ok for a in r.json()["alerts"])


def test_the_pushed_alert_inhibits_the_rule_alert_of_its_instance(
        tmp_path: Path, hook: WebhookReceiver) -> None:
    rules = documented_inhibit_rules()
    receiver = Receiver(name="am", url="http://127.0.0.1:9", format="alertmanager",
                        group_wait=0.2, resend_interval=0.5, instance="edge-1:8734",
                        backoff_initial=0.05, backoff_max=0.5, timeout=5)
    with running(tmp_path, hook, group_by=("alertname", "instance", "alert_id"),
                 inhibit_rules=rules) as am:
        engine = new_engine(clock=FakeClock())
        notifier = Notifier([receiver.model_copy(update={"url": am.url})])
        engine.subscribe(notifier.offer)
        notifier.start()
        try:
            feed_storm(engine)  # the pushed alert first, as Alertmanager's group_wait lets it
            am.until("the pushed alert active", lambda: [
                a["status"]["state"] for a in am.ours()
                if a["labels"]["alertname"] == "RetrywatchRunawayConnection"] == ["active"])
            response = httpx.post(f"{am.url}/api/v2/alerts", timeout=5, json=[
                rule_alert("RetrywatchRunawayConnections", "edge-1:8734", "confirmed",
                           "critical"),
                rule_alert("RetrywatchRunawayConnections", "edge-2:8734", "confirmed",
                           "critical"),
                rule_alert("RetrywatchSuspectedRunawayConnections", "edge-1:8734",
                           "suspected", "warning")])
            response.raise_for_status()

            def state(name: str, instance: str) -> str:
                found = [a["status"]["state"] for a in am.alerts()
                         if a["labels"]["alertname"] == name
                         and a["labels"]["instance"] == instance]
                return found[0] if len(found) == 1 else f"{len(found)} alerts"

            am.until("the rule alert of edge-1 suppressed",
                     lambda: state("RetrywatchRunawayConnections", "edge-1:8734")
                     == "suppressed")
            (page,) = [a for a in am.alerts()
                       if a["labels"]["alertname"] == "RetrywatchRunawayConnections"
                       and a["labels"]["instance"] == "edge-1:8734"]
            (pushed,) = [a for a in am.ours() if a["status"]["state"] == "active"]
            assert page["status"]["inhibitedBy"] == [pushed["fingerprint"]]
            # another instance, and another confidence, are not this incident
            assert state("RetrywatchRunawayConnections", "edge-2:8734") == "active"
            assert state("RetrywatchSuspectedRunawayConnections", "edge-1:8734") == "active"

            # What pages: the pushed alert, and the alerts nothing pushed stands for.
            hook.wait_for("the notifications", lambda: all((
                notified(hook, "RetrywatchRunawayConnection", "edge-1:8734"),
                notified(hook, "RetrywatchRunawayConnections", "edge-2:8734"),
                notified(hook, "RetrywatchSuspectedRunawayConnections", "edge-1:8734"))),
                timeout=WAIT)
            assert not notified(hook, "RetrywatchRunawayConnections", "edge-1:8734")
        finally:
            notifier.stop()

        # retrywatch stops pushing: its alert ends after resolve_timeout, the rule pages.
        hook.wait_for("the rule alert of edge-1 paged once the push stopped",
                      lambda: notified(hook, "RetrywatchRunawayConnections", "edge-1:8734"),
                      timeout=WAIT)
        assert state("RetrywatchRunawayConnections", "edge-1:8734") == "active"


def test_the_pushed_disk_alert_inhibits_the_rule_alert_of_its_mount(
        tmp_path: Path, hook: WebhookReceiver) -> None:
    """The documented second inhibit rule: RetrywatchDiskFilling suppresses the rule's
    RetrywatchLogFillsDisk of its instance and mount, not another mount's."""
    receiver = Receiver(name="am", url="http://127.0.0.1:9", format="alertmanager",
                        group_wait=0.2, resend_interval=0.5, instance="edge-1:8734",
                        backoff_initial=0.05, backoff_max=0.5, timeout=5)
    with running(tmp_path, hook, group_by=("alertname", "instance", "mount"),
                 inhibit_rules=documented_inhibit_rules()) as am:
        notifier = Notifier([receiver.model_copy(update={"url": am.url})])
        notifier.start()
        try:
            for change in fired():  # /var/log
                notifier.offer(change)
            am.until("the pushed disk alert active", lambda: [
                a["status"]["state"] for a in am.alerts()
                if a["labels"]["alertname"] == "RetrywatchDiskFilling"] == ["active"])
            rules = []
            for mount in ("/var/log", "/"):
                rule = rule_alert("RetrywatchLogFillsDisk", "edge-1:8734", "", "critical")
                del rule["labels"]["confidence"]
                rule["labels"]["mount"] = mount
                rules.append(rule)
            httpx.post(f"{am.url}/api/v2/alerts", timeout=5, json=rules).raise_for_status()

            def state(mount: str) -> str:
                found = [a["status"]["state"] for a in am.alerts()
                         if a["labels"]["alertname"] == "RetrywatchLogFillsDisk"
                         and a["labels"]["mount"] == mount]
                return found[0] if len(found) == 1 else f"{len(found)} alerts"

            am.until("the rule alert of /var/log suppressed",
                     lambda: state("/var/log") == "suppressed")
            assert state("/") == "active"
            hook.wait_for("the notifications", lambda: any(
                a["labels"]["alertname"] == "RetrywatchLogFillsDisk"
                and a["labels"]["mount"] == "/" for r in hook.ok for a in r.json()["alerts"]),
                timeout=WAIT)
            assert not any(a["labels"]["alertname"] == "RetrywatchLogFillsDisk"
                           and a["labels"]["mount"] == "/var/log"
                           for r in hook.ok for a in r.json()["alerts"])
        finally:
            notifier.stop()


def test_the_pushed_upstream_alert_through_alertmanager_inhibits_the_rule_of_its_peer(
        tmp_path: Path, hook: WebhookReceiver) -> None:
    """An upstream alert (detect/upstreams.py) as Alertmanager takes it:
    RetrywatchUpstreamFailing with its peer, active while it fires; the documented third
    inhibit rule suppresses the rule's RetrywatchUpstreamAnomalous of that instance and
    peer (not another peer's); resolved, it leaves Alertmanager."""
    receiver = Receiver(name="am", url="http://127.0.0.1:9", format="alertmanager",
                        group_wait=0.2, resend_interval=0.5, instance="edge-1:8734",
                        backoff_initial=0.05, backoff_max=0.5, timeout=5)
    watch = UpstreamWatch(hold=0)
    with running(tmp_path, hook, group_by=("alertname", "instance", "peer"),
                 inhibit_rules=documented_inhibit_rules()) as am:
        notifier = Notifier([receiver.model_copy(update={"url": am.url})])
        notifier.start()

        def pushed() -> list[dict[str, Any]]:
            return [a for a in am.alerts()
                    if a["labels"]["alertname"] == "RetrywatchUpstreamFailing"]

        try:
            for change in fired_upstream(watch):
                notifier.offer(change)
            am.until("the pushed upstream alert active",
                     lambda: [a["status"]["state"] for a in pushed()] == ["active"])
            (alert,) = pushed()
            assert alert["labels"] == {
                "alertname": "RetrywatchUpstreamFailing", "severity": "critical",
                "instance": "edge-1:8734", "peer": UPSTREAM_PEER,
                "alert_id": watch.alerts()[0]["id"]}
            assert alert["annotations"]["runbook_url"].endswith(
                "docs/runbook.md#upstream_failing")
            rules = []
            for peer in (UPSTREAM_PEER, "10.12.39.133:5555"):
                rule = rule_alert("RetrywatchUpstreamAnomalous", "edge-1:8734", "", "critical")
                del rule["labels"]["confidence"]
                rule["labels"]["peer"] = peer
                rules.append(rule)
            httpx.post(f"{am.url}/api/v2/alerts", timeout=5, json=rules).raise_for_status()

            def state(peer: str) -> str:
                found = [a["status"]["state"] for a in am.alerts()
                         if a["labels"]["alertname"] == "RetrywatchUpstreamAnomalous"
                         and a["labels"]["peer"] == peer]
                return found[0] if len(found) == 1 else f"{len(found)} alerts"

            am.until("the rule alert of the peer suppressed",
                     lambda: state(UPSTREAM_PEER) == "suppressed")
            assert state("10.12.39.133:5555") == "active"
            # back to its baseline: resolved, and gone from Alertmanager
            for change in watch.evaluate(figures_of(UPSTREAM_QUIET, now=BASE_TS + 101)):
                notifier.offer(change)
            assert watch.firing == {}
            am.until("the upstream alert resolved", lambda: pushed() == [])
            hook.wait_for("alertmanager's resolved webhook", lambda: any(
                a["labels"]["alertname"] == "RetrywatchUpstreamFailing"
                and a["status"] == "resolved" for r in hook.ok for a in r.json()["alerts"]),
                timeout=WAIT)
        finally:
            notifier.stop()
