"""An upstream alert delivered: its shape in the json, Alertmanager and Slack formats
(beside the other kinds in one message), kept in the delivery state, sent to a real
receiver by the notifier; and through a restart of the service from its checkpoint (the
alert fires on, the peers' baselines are kept), or turned off (it resolves, said to the
receivers). detect/upstreams.py, delivery/formats.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from helpers import BASE_TS, http_refused
from service_harness import FakeClock
from test_delivery import alert
from test_disk_delivery import am_receiver, disk_alert, settings_of
from test_upstream_watch import figures_of, peer
from webhook_receiver import receiving

from retrywatch.delivery import Notifier, Receiver
from retrywatch.delivery.formats import Entry, alertmanager_alert, build, slack_message
from retrywatch.delivery.receivers import RUNBOOK
from retrywatch.delivery.state import DeliveryState, ReceiverState
from retrywatch.detect.schema import UpstreamAlertData, is_upstream_alert
from retrywatch.detect.upstreams import UpstreamChange, UpstreamWatch
from retrywatch.serve.service import Service
from retrywatch.sources.follow import ManualWaker

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
PEER = "10.12.39.132:5555"
BAD = peer(peer=PEER, failures=4_200, failing_seconds=60, connections=3_900, recent=700,
           baseline_mean=0.05, baseline_sd=0.02)
QUIET = peer(peer=PEER, failures=300, failing_seconds=20, connections=250, recent=0,
             baseline_mean=0.05, baseline_sd=0.02)


def fired(watch: UpstreamWatch | None = None) -> list[UpstreamChange]:
    watch = watch or UpstreamWatch()
    changes = watch.evaluate(figures_of(BAD), lambda: [("aaaa", 49447, [PEER])])
    assert [c.kind for c in changes] == ["fired"]
    return changes


def upstream_alert(state: str = "firing") -> UpstreamAlertData:
    watch = UpstreamWatch()
    fired(watch)
    data = watch.alerts()[0]
    if state == "resolved":
        data = {**data, "state": "resolved", "resolved_at": NOW.isoformat(),
                "resolved_reason": "back_to_baseline"}
    return data


def test_its_alertmanager_alert() -> None:
    a = upstream_alert()
    out = alertmanager_alert(a, am_receiver(), "edge-1", NOW)
    assert out["labels"] == {"alertname": "RetrywatchUpstreamFailing", "severity": "critical",
                             "instance": "edge-1", "peer": PEER, "alert_id": a["id"]}
    notes = out["annotations"]
    assert notes["summary"] == (f"upstream {PEER} failed 4,200 connects from 3,900 "
                                "connections in the last minute")
    assert notes["description"].splitlines() == [
        f"peer={PEER} 70.0 failures/s in 60 of 60 s, baseline 0.05/s",
        "runaway alerts on it: aaaa (*49447)",
        f"diagnosis: upstream_failing: {a['diagnosis']['cause']}",
        f"fix: {a['diagnosis']['fix']}"]
    assert notes["runbook_url"] == f"{RUNBOOK}#upstream_failing"
    assert out["generatorURL"] == "http://retrywatch.test:8734/api/v1/upstreams"
    ended = alertmanager_alert(upstream_alert("resolved"), am_receiver(), "edge-1", NOW)
    assert ended["endsAt"] == "2026-12-03T12:00:00Z"
    assert ended["annotations"]["summary"] == (
        f"upstream {PEER} no longer fails (back_to_baseline)")


def test_one_message_of_each_format_with_the_three_kinds() -> None:
    entries = [Entry("fired", alert()), Entry("fired", upstream_alert()),
               Entry("fired", disk_alert())]
    _, body, _ = build(Receiver(name="hook", url="http://127.0.0.1:1/h"), entries,
                       "edge-1", NOW)
    sent = json.loads(body)["alerts"]
    assert [a.get("alertname") for a in sent] == [
        None, "RetrywatchUpstreamFailing", "RetrywatchDiskFilling"]
    assert sent[1] == {**upstream_alert(), "change": "fired"}
    _, body, _ = build(am_receiver(), entries, "edge-1", NOW)
    assert [a["labels"]["alertname"] for a in json.loads(body)] == [
        "RetrywatchRunawayConnection", "RetrywatchUpstreamFailing", "RetrywatchDiskFilling"]
    slack = slack_message(entries, Receiver(name="s", url="https://hooks.slack.com/x",
                                            format="slack",
                                            external_url="http://retrywatch.test:8734"))
    assert slack["text"] == ("retrywatch: 1 runaway nginx connection(s) and 1 upstream(s) "
                             "failing and 1 filesystem(s) filling: 3 firing")
    text = slack["blocks"][2]["text"]["text"]
    assert text.splitlines()[:3] == [
        f":no_entry: *upstream {PEER} failed 4,200 connects from 3,900 connections in the "
        "last minute*",
        "70.0 failures/s in 60 of the last 60 s, baseline 0.05/s",
        "runaway connections on it: 1"]
    assert "*Fix:* The peer refuses or does not answer" in text
    assert text.endswith("<http://retrywatch.test:8734/api/v1/upstreams|details>")


def test_kept_in_the_delivery_state_and_read_back() -> None:
    firing = upstream_alert()
    state = DeliveryState({"hook": ReceiverState(
        firing={firing["id"]: firing},
        pending=[Entry("resolved", upstream_alert("resolved")), Entry("fired", alert())])})
    back = DeliveryState.loads(state.dumps()).receivers["hook"]
    assert back.firing == {firing["id"]: firing}
    assert is_upstream_alert(back.pending[0].alert)
    assert not is_upstream_alert(back.pending[1].alert)


def test_the_notifier_sends_it_to_a_real_receiver() -> None:
    watch = UpstreamWatch(hold=0)
    with receiving() as hook:
        notifier = Notifier([Receiver(name="hook", url=f"{hook.url}/h", group_wait=0.0)])
        notifier.start()
        try:
            for change in fired(watch):
                notifier.offer(change)
            hook.wait_for("the upstream alert", lambda: len(hook.ok) == 1)
            for change in watch.evaluate(figures_of(QUIET, now=BASE_TS + 101)):
                notifier.offer(change)
            hook.wait_for("its resolve", lambda: len(hook.ok) == 2)
        finally:
            notifier.stop()
    (first,), (second,) = (r.json()["alerts"] for r in hook.ok)
    assert (first["alertname"], first["change"], first["peer"]) == (
        "RetrywatchUpstreamFailing", "fired", PEER)
    assert (second["change"], second["resolved_reason"]) == ("resolved", "back_to_baseline")
    assert first["id"] == second["id"]


# -- a restart --------------------------------------------------------------------------

def checkpointed(tmp_path: Path, **more: Any) -> UpstreamAlertData:
    """A service's checkpoint holding a firing upstream alert and its peer's baseline."""
    first = Service(settings_of(tmp_path, **more), waker=ManualWaker(), clock=FakeClock(0.0))
    try:
        # a line read (the snapshot's log second), and the peer's baseline learnt so far
        first.engine.feed("nginx", http_refused(0, 1, peer="10.0.0.9:80").encode() + b"\n")
        first.engine.end("nginx")
        first.engine.core.seed_upstreams([(PEER, 0.05, 0.0004, 900)], BASE_TS)
        fired(first.upstreams)
        assert first.checkpoint()
    finally:
        first.stop()
    (before,) = first.upstreams.alerts()
    return before


def test_a_firing_upstream_alert_and_the_baselines_outlive_a_restart(tmp_path: Path) -> None:
    before = checkpointed(tmp_path)
    again = Service(settings_of(tmp_path), waker=ManualWaker(), clock=FakeClock(0.0))
    try:
        assert again.upstreams.alerts() == [before]
        assert again.engine.upstreams is again.upstreams
        assert (PEER, 0.05, 0.0004, 900) in again.engine.core.upstream_baselines()
        figures = again.engine.upstream_figures(BASE_TS + 200)
        assert figures is not None
        rows = {p["peer"]: p for p in figures["peers"]}
        assert set(rows) == {PEER, "10.0.0.9:80"}
        assert rows[PEER]["warm"]  # judged against its saved baseline at once
        assert rows[PEER]["baseline_mean"] == 0.05
    finally:
        again.stop()


def test_turned_off_a_restored_upstream_alert_resolves_and_receivers_hear_it(
        tmp_path: Path) -> None:
    before = checkpointed(tmp_path)
    with receiving() as hook:
        receiver = Receiver(name="hook", url=f"{hook.url}/h", group_wait=0.0)
        again = Service(settings_of(tmp_path, upstream_anomalies=False, receivers=[receiver]),
                        waker=ManualWaker(), clock=FakeClock(0.0))
        again.notifier.start()
        try:
            (after,) = again.upstreams.alerts()
            assert (after["id"], after["resolved_reason"]) == (before["id"], "disabled")
            assert again.engine.upstream_figures(BASE_TS) is None  # not counted
            hook.wait_for("the resolve", lambda: len(hook.ok) == 1)
        finally:
            again.stop()
    (sent,) = hook.ok[0].json()["alerts"]
    assert (sent["alertname"], sent["change"], sent["resolved_reason"]) == (
        "RetrywatchUpstreamFailing", "resolved", "disabled")
