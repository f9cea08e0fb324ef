"""A real Alertmanager on 127.0.0.1 receives retrywatch's alerts for a replayed real-nginx
storm, keeps the runaway one active while it fires (re-sent well within resolve_timeout),
resolves it after the storm ends, and its own webhook delivers both to a local receiver:
end to end through Alertmanager's routing."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_harness import (
    STORM_FIRING_CID,
    FakeClock,
    feed_storm,
    free_port,
    new_engine,
    stop_process,
    wait_until,
)
from webhook_receiver import WebhookReceiver, receiving

from retrywatch.delivery import Notifier, Receiver

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
WAIT = 30.0  # seconds: the bound on Alertmanager starting, routing and notifying
POLL = 0.1
RESOLVE_TIMEOUT = 3  # seconds: short, so a lapse in re-sending would show within the test

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


@pytest.fixture
def alertmanager(tmp_path: Path, hook: WebhookReceiver) -> Iterator[Alertmanager]:
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "global:\n"
        f"  resolve_timeout: {RESOLVE_TIMEOUT}s\n"
        "route:\n"
        "  receiver: test\n"
        "  group_by: ['alertname', 'alert_id']\n"
        "  group_wait: 1s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: test\n"
        "    webhook_configs:\n"
        f"      - url: '{hook.url}/alertmanager'\n"
        "        send_resolved: true\n")
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


def webhook_alerts(hook: WebhookReceiver, status: str) -> list[dict[str, Any]]:
    """Alerts of ``status`` in what Alertmanager's webhook delivered for our cid."""
    return [a for r in hook.ok for a in r.json()["alerts"]
            if a["status"] == status and a["annotations"].get("cid") == str(STORM_FIRING_CID)]


def test_storm_alert_through_alertmanager(alertmanager: Alertmanager,
                                          hook: WebhookReceiver) -> None:
    clock = FakeClock()
    engine = new_engine(clock=clock)
    receiver = Receiver(name="am", url=alertmanager.url, format="alertmanager",
                        group_wait=0.2, resend_interval=0.5, instance="edge-1",
                        external_url="http://retrywatch.test:8734",
                        backoff_initial=0.05, backoff_max=0.5, timeout=5)
    notifier = Notifier([receiver])
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
        assert notes["summary"] and notes["runbook_url"]
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
