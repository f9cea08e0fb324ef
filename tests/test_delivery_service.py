"""The live service delivers alerts, keeps delivery state in its checkpoint across a
restart (no re-notification; a resolve still sent), and exports delivery metrics."""

from __future__ import annotations

import gzip
from pathlib import Path

from service_harness import STORM, STORM_FIRING_CID, FakeClock
from webhook_receiver import WebhookReceiver, receiving

from retrywatch.delivery import Receiver
from retrywatch.serve.metrics import DELIVERY_METRIC_NAMES, new_registry, render
from retrywatch.serve.service import Service
from retrywatch.serve.settings import Settings
from retrywatch.sources.follow import ManualWaker


def alerts(hook: WebhookReceiver) -> list[tuple[int, str, str]]:
    return [(a["cid"], a["change"], a["state"]) for r in hook.ok for a in r.json()["alerts"]]


def settings(tmp_path: Path, url: str) -> Settings:
    log = tmp_path / "error.log"
    if not log.exists():
        log.write_bytes(gzip.decompress(STORM.read_bytes()))
    hook = Receiver(name="hook", url=url, group_wait=0.05, backoff_initial=0.02)
    return Settings.model_validate({"log": [str(log)], "state_dir": tmp_path / "state",
                                    "timezone": "UTC", "receivers": [hook],
                                    "from": "beginning"})


def test_service_notifies_once_across_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    with receiving() as hook:
        svc = Service(settings(tmp_path, hook.url), waker=ManualWaker(), clock=clock)
        svc.notifier.start()
        while svc.run_once():
            pass
        hook.wait_for("the storm notified",
                      lambda: (STORM_FIRING_CID, "fired", "firing") in alerts(hook))
        text = render(new_registry(svc.engine, svc.notifier)).decode()
        for name in DELIVERY_METRIC_NAMES:
            assert f"# TYPE {name} " in text, name
        assert 'retrywatch_notifications_total{outcome="success",receiver="hook"}' in text
        svc.stop()
        before = len(hook.requests)

        again = Service(settings(tmp_path, hook.url), waker=ManualWaker(), clock=clock)
        again.run_once()  # restored from the checkpoint, the notifier not started yet: an
        # alert it would notify again waits in its queue (no wait for a send to happen)
        assert again.notifier.stats()["hook"].queue_depth == 0
        assert again.notifier.state().receivers["hook"].pending == []
        again.notifier.start()
        assert again.notifier.drain(10) == 0
        assert len(hook.requests) == before
        clock.now += again.engine.config.resolve_after + 1
        again.run_once()
        hook.wait_for("the resolve",
                      lambda: (STORM_FIRING_CID, "resolved", "resolved") in alerts(hook))
        again.stop()
    fired = [a for a in alerts(hook) if a[1] == "fired" and a[0] == STORM_FIRING_CID]
    assert len(fired) == 1
