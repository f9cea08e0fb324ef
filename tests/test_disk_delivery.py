"""A disk alert delivered: its shape in the json, Alertmanager and Slack formats (beside a
runaway connection's in one message), kept in the delivery state across a restart, sent
to a real receiver by the notifier, and still firing after the service restarts from its
checkpoint (detect/disk.py, delivery/formats.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service_harness import FakeClock, feed_storm, new_engine
from test_delivery import alert
from webhook_receiver import receiving

from retrywatch.delivery import Notifier, Receiver
from retrywatch.delivery.formats import Entry, alertmanager_alert, build, slack_message
from retrywatch.delivery.receivers import RUNBOOK
from retrywatch.delivery.state import DeliveryState, ReceiverState
from retrywatch.detect.core import DetectorConfig
from retrywatch.detect.disk import DEFAULT_HOLD, DiskChange, DiskWatch
from retrywatch.detect.engine import Engine
from retrywatch.detect.schema import ConnectionData, DiskAlertData, is_disk_alert
from retrywatch.serve.service import Service
from retrywatch.serve.settings import Settings
from retrywatch.sources.follow import ManualWaker
from retrywatch.sources.growth import IDLE_AFTER, Filesystem

MiB = 1 << 20
LOG = "/var/log/nginx/error.log"
#: Seconds of nothing written after which a disk alert has resolved.
QUIET = int(IDLE_AFTER + DEFAULT_HOLD) + 2
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
HOTTEST: list[ConnectionData] = [{
    "source": LOG, "pid": 2454, "cid": 49447, "failures_in_window": 60_000,
    "rate_per_second": 1000.0, "failures": 90_000, "upstreams": {"unix:/run/app.sock": 60_000},
    "client": "10.0.0.7", "server": "shop", "first_seen": "", "last_seen": ""}]


def fired(watch: DiskWatch | None = None, clock: FakeClock | None = None) -> list[DiskChange]:
    """A disk alert fired on /var/log: 10 MiB free, the log growing 1,000 lines (128 KiB)
    a second, written by *49447."""
    clock = clock or FakeClock(0.0)
    watch = watch or DiskWatch(clock=clock, wall=NOW.timestamp)
    changes: list[DiskChange] = []
    for t in range(20):
        watch.observe(LOG, t * 128 * 1024, t * 1000,
                      Filesystem(1, "/var/log", 10 * MiB, 64 * MiB))
        changes += watch.evaluate(lambda: HOTTEST)
        clock.advance(1.0)
    assert [c.kind for c in changes] == ["fired"]
    return changes


def disk_alert(state: str = "firing") -> DiskAlertData:
    (change,) = fired()
    data = change.alert.to_dict()
    if state == "resolved":
        data = {**data, "state": "resolved", "resolved_at": NOW.isoformat(),
                "resolved_reason": "not_growing"}
    return data


def am_receiver(**options: Any) -> Receiver:
    return Receiver(name="am", url="http://127.0.0.1:9093", format="alertmanager",
                    instance="edge-1", external_url="http://retrywatch.test:8734", **options)


def test_its_alertmanager_alert() -> None:
    a = disk_alert()
    out = alertmanager_alert(a, am_receiver(), "edge-1", NOW)
    assert out["labels"] == {"alertname": "RetrywatchDiskFilling", "severity": "critical",
                             "instance": "edge-1", "mount": "/var/log", "alert_id": a["id"]}
    notes = out["annotations"]
    assert notes["summary"] == "nginx's logs will fill /var/log in about 80 s"
    assert notes["description"].splitlines() == [
        "mount=/var/log free=10.0 MiB of 64.0 MiB, growth 128.0 KiB/s",
        f"files: {LOG}",
        "writing: *49447 (pid 2454) 100%; upstreams: unix:/run/app.sock",
        f"diagnosis: log_fills_disk: {a['diagnosis']['cause']}",
        f"fix: {a['diagnosis']['fix']}"]
    assert notes["runbook_url"] == f"{RUNBOOK}#log_fills_disk"
    assert out["generatorURL"] == "http://retrywatch.test:8734/api/v1/disk"
    assert out["startsAt"] == "2026-12-03T12:00:00Z" and "endsAt" not in out
    ended = alertmanager_alert(disk_alert("resolved"), am_receiver(), "edge-1", NOW)
    assert ended["endsAt"] == "2026-12-03T12:00:00Z"
    assert ended["annotations"]["summary"] == (
        "nginx's logs no longer fill /var/log (not_growing)")


def test_a_full_disk_says_so() -> None:
    a = disk_alert()
    a["forecast"] = {**a["forecast"], "free_bytes": 0, "seconds_to_full": 0.0}
    out = alertmanager_alert(a, am_receiver(), "edge-1", NOW)
    assert out["annotations"]["summary"] == "nginx's logs have filled /var/log"


def test_one_message_of_each_format_with_both_kinds_of_alert() -> None:
    entries = [Entry("fired", alert()), Entry("fired", disk_alert())]
    # json: each alert as the API has it, with its change; the disk one says its name
    _, body, headers = build(Receiver(name="hook", url="http://127.0.0.1:1/h"), entries,
                             "edge-1", NOW)
    sent = json.loads(body)["alerts"]
    assert [a.get("alertname") for a in sent] == [None, "RetrywatchDiskFilling"]
    assert sent[1] == {**disk_alert(), "change": "fired"}
    assert headers["X-Retrywatch-Schema"] == "1"
    # Alertmanager: one alert each, by their own names
    _, body, _ = build(am_receiver(), entries, "edge-1", NOW)
    assert [a["labels"]["alertname"] for a in json.loads(body)] == [
        "RetrywatchRunawayConnection", "RetrywatchDiskFilling"]
    # Slack: the title counts both; each has its line and its link
    slack = slack_message(entries, Receiver(name="s", url="https://hooks.slack.com/x",
                                            format="slack",
                                            external_url="http://retrywatch.test:8734"))
    assert slack["text"] == ("retrywatch: 1 runaway nginx connection(s) and 1 filesystem(s) "
                             "filling: 2 firing")
    disk_text = slack["blocks"][2]["text"]["text"]
    assert disk_text.splitlines()[:3] == [
        ":floppy_disk: *nginx's logs will fill /var/log in about 80 s*",
        "10.0 MiB free of 64.0 MiB, growing 128.0 KiB/s",
        "writing: *cid 49447* (pid 2454), 100% of the lines"]
    assert "*Fix:* Stop the writer first" in disk_text
    assert disk_text.endswith("<http://retrywatch.test:8734/api/v1/disk|details>")


def test_kept_in_the_delivery_state_and_read_back() -> None:
    firing, pending = disk_alert(), Entry("resolved", disk_alert("resolved"))
    state = DeliveryState({"hook": ReceiverState(notified={firing["id"]: 1.7e9},
                                                 firing={firing["id"]: firing},
                                                 pending=[pending, Entry("fired", alert())])})
    back = DeliveryState.loads(state.dumps()).receivers["hook"]
    assert back.firing == {firing["id"]: firing}
    assert [(e.kind, e.key, e.alert) for e in back.pending] == [
        (e.kind, e.key, e.alert) for e in state.receivers["hook"].pending]
    assert is_disk_alert(back.pending[0].alert) and not is_disk_alert(back.pending[1].alert)


def test_the_notifier_sends_it_to_a_real_receiver() -> None:
    clock = FakeClock(0.0)
    watch = DiskWatch(clock=clock, wall=NOW.timestamp)
    with receiving() as hook:
        notifier = Notifier([Receiver(name="hook", url=f"{hook.url}/h", group_wait=0.0)])
        notifier.start()
        try:
            for change in fired(watch, clock):
                notifier.offer(change)
            hook.wait_for("the disk alert", lambda: len(hook.ok) == 1)
            for _ in range(QUIET):  # nothing grows: resolved after IDLE_AFTER and the hold
                watch.observe(LOG, 19 * 128 * 1024, 19_000,
                              Filesystem(1, "/var/log", 10 * MiB, 64 * MiB))
                for change in watch.evaluate():
                    notifier.offer(change)
                clock.advance(1.0)
            hook.wait_for("its resolve", lambda: len(hook.ok) == 2)
        finally:
            notifier.stop()
    (first,), (second,) = (r.json()["alerts"] for r in hook.ok)
    assert (first["alertname"], first["change"], first["state"]) == (
        "RetrywatchDiskFilling", "fired", "firing")
    assert (second["change"], second["state"], second["resolved_reason"]) == (
        "resolved", "resolved", "not_growing")
    assert first["id"] == second["id"]


def settings_of(tmp_path: Path, **more: Any) -> Settings:
    log = tmp_path / "error.log"
    if not log.exists():
        log.write_bytes(b"")
    return Settings.model_validate({"log": [str(log)], "state_dir": tmp_path / "state",
                                    "timezone": "UTC", "from": "beginning", **more})


def checkpointed_with_a_disk_alert(tmp_path: Path) -> DiskAlertData:
    """A service's checkpoint holding a firing disk alert (of /var/log: not the real
    filesystem of the followed file); that alert."""
    clock = FakeClock(0.0)
    first = Service(settings_of(tmp_path), waker=ManualWaker(), clock=clock)
    try:
        fired(first.disk, clock)
        assert first.checkpoint()
    finally:
        first.stop()
    (before,) = first.disk.alerts()
    return before


def test_a_firing_disk_alert_outlives_a_restart(tmp_path: Path) -> None:
    """Checkpointed with the engine's state: after a restart it fires on (receivers are
    not told it fired again), a slow first look at the files does not resolve it, and it
    resolves after the hold once no followed file is on its filesystem."""
    before = checkpointed_with_a_disk_alert(tmp_path)
    clock = FakeClock(0.0)
    again = Service(settings_of(tmp_path), waker=ManualWaker(), clock=clock)
    try:
        assert again.disk.alerts() == [before]
        assert again.engine.disk is again.disk
        again.run_once()  # the file, on its real filesystem (not /var/log)
        assert again.disk.alerts()[0]["state"] == "firing"
        for _ in range(int(DEFAULT_HOLD)):
            clock.advance(1.0)
            again.run_once()
        (after,) = again.disk.alerts()
        assert (after["id"], after["state"], after["resolved_reason"]) == (
            before["id"], "resolved", "source_gone")
    finally:
        again.stop()


def test_turned_off_a_restored_disk_alert_resolves_and_receivers_hear_it(
        tmp_path: Path) -> None:
    before = checkpointed_with_a_disk_alert(tmp_path)
    with receiving() as hook:
        receiver = Receiver(name="hook", url=f"{hook.url}/h", group_wait=0.0)
        again = Service(settings_of(tmp_path, disk_forecast=False, receivers=[receiver]),
                        waker=ManualWaker(), clock=FakeClock(0.0))
        again.notifier.start()
        try:
            (after,) = again.disk.alerts()
            assert (after["id"], after["resolved_reason"]) == (before["id"], "disabled")
            hook.wait_for("the resolve", lambda: len(hook.ok) == 1)
        finally:
            again.stop()
    (sent,) = hook.ok[0].json()["alerts"]
    assert (sent["alertname"], sent["change"], sent["resolved_reason"]) == (
        "RetrywatchDiskFilling", "resolved", "disabled")


def test_a_saved_disk_alert_that_cannot_be_read_costs_only_itself(
        tmp_path: Path, caplog: Any) -> None:
    """A later version's field is dropped; a broken alert is left out with a warning;
    the rest of the engine's state (the runaway alerts) is read as ever."""
    engine = new_engine()
    feed_storm(engine)
    engine.disk = DiskWatch()
    core, extra = engine.snapshot()
    state = json.loads(extra)
    good = {**disk_alert(), "added_later": 1}
    broken = {**disk_alert(), "forecast": "?"}
    state["disk"] = [good, broken]
    restored = Engine.restore(core, json.dumps(state).encode(), DetectorConfig(), UTC)
    assert [a.to_dict() for a in restored.restored_disk] == [disk_alert()]
    assert set(restored.firing) == set(engine.firing) and restored.firing
    (said,) = [r.getMessage() for r in caplog.records if "saved disk alert" in r.getMessage()]
    assert said.startswith("a saved disk alert cannot be read (") and said.endswith("): left out")
    assert "forecast" in said  # pydantic's reason: the field that is wrong
