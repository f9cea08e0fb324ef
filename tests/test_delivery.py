"""Alert delivery against a real local HTTP receiver: failures and recovery, bounded
retries and drops, a never-blocked ingest side, grouping, repeats, restarts, signatures."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from service_harness import STORM_FIRING_CID, feed_storm, new_engine
from webhook_receiver import WebhookReceiver, closed_port, receiving

from retrywatch.delivery import (
    ChannelStats,
    DeliveryState,
    InvalidSignature,
    Notifier,
    Receiver,
    ReplayGuard,
)
from retrywatch.delivery.formats import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Entry,
    alertmanager_alert,
    build,
    sign,
    slack_message,
)
from retrywatch.delivery.notifier import sample_alert
from retrywatch.delivery.verify import verify

SECRET = "s3cret"
WAIT = 10.0  # seconds: the bound on any delivery the tests wait for

FAST = {"group_wait": 0.0, "backoff_initial": 0.02, "backoff_max": 0.1, "timeout": 0.5}


def receiver(url: str, **options: Any) -> Receiver:
    return Receiver(**{"name": "hook", "url": url, "secret": SECRET, **FAST, **options})


#: One moment for every alert of a run: two made a second apart are equal all the same.
_SEEN = sample_alert()["fired_at"]


def alert(n: int = 1, state: str = "firing", confidence: str = "confirmed") -> dict[str, Any]:
    a = sample_alert()
    a.update(first_seen=_SEEN, last_seen=_SEEN, fired_at=_SEEN)
    a["id"] = f"{n:016x}"
    a["cid"] = 1000 + n
    a["source"] = "nginx"
    a["confidence"] = confidence
    if state == "resolved":
        a.update(state="resolved", resolved_at=a["fired_at"], resolved_reason="quiet")
    return a


@contextmanager
def notifying(*receivers: Receiver, **kwargs: Any) -> Iterator[Notifier]:
    notifier = Notifier(receivers, **kwargs)
    notifier.start()
    try:
        yield notifier
    finally:
        notifier.stop()


def until(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    """Ask ``check`` until it holds (bounded), pausing on an event, not a sleep loop."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout}s")
        pause.wait(0.01)


def offer(notifier: Notifier, kind: str, a: dict[str, Any]) -> None:
    for channel in notifier.channels.values():
        channel.offer(kind, a)


# -- failures, recovery, bounds -------------------------------------------------------------
def test_refused_then_500s_then_timeout_then_recovers() -> None:
    port = closed_port()
    r = receiver(f"http://127.0.0.1:{port}/hook", max_attempts=50, max_age=30, timeout=0.3)
    with notifying(r) as notifier:
        def stats() -> ChannelStats:
            return notifier.stats()["hook"]

        offer(notifier, "fired", alert())
        until("two refused attempts", lambda: stats().attempts_failed >= 2)
        script = WebhookReceiver(script=[500, 503, "hang"])
        with receiving(script, port=port) as hook:
            hook.wait_for("a successful delivery", lambda: bool(hook.ok))
            until("success counted", lambda: stats().deliveries["success"] == 1)
    s = stats()
    assert [x.status for x in hook.requests] == [500, 503, 0, 200]
    assert s.attempts_failed >= 5 and s.retries == s.attempts_failed
    assert s.deliveries["dropped"] == 0 and s.queue_depth == 0
    got = hook.ok[0]
    verify(SECRET, got.headers[TIMESTAMP_HEADER], got.body,
                         got.headers[SIGNATURE_HEADER])
    payload = got.json()
    assert payload["version"] == "1" and payload["status"] == "firing"
    assert [a["cid"] for a in payload["alerts"]] == [1001]
    assert payload["alerts"][0]["change"] == "fired"


def test_never_recovers_stops_at_max_attempts_and_counts_the_drop() -> None:
    with receiving(WebhookReceiver(default=500)) as hook:
        r = receiver(hook.url, max_attempts=3)
        with notifying(r) as notifier:
            offer(notifier, "fired", alert())
            until("the drop", lambda: notifier.stats()["hook"].deliveries["dropped"] == 1)
            s = notifier.stats()["hook"]
    assert len(hook.requests) == 3
    assert s.drops["max_attempts"] == 1 and s.alerts_dropped == 1
    assert s.retries == 2 and s.deliveries["success"] == 0


def test_max_age_ends_retrying() -> None:
    with receiving(WebhookReceiver(default=503)) as hook:
        r = receiver(hook.url, max_attempts=1000, max_age=0.3, backoff_initial=0.1,
                     backoff_max=0.1)
        with notifying(r) as notifier:
            offer(notifier, "fired", alert())
            until("the drop", lambda: notifier.stats()["hook"].drops["max_age"] == 1)
    assert 2 <= len(hook.requests) <= 8


def test_a_4xx_is_not_retried() -> None:
    with receiving(WebhookReceiver(default=400)) as hook, \
            notifying(receiver(hook.url)) as notifier:
        offer(notifier, "fired", alert())
        until("the drop", lambda: notifier.stats()["hook"].drops["rejected"] == 1)
    assert len(hook.requests) == 1


def test_full_queue_drops_and_counts_without_blocking() -> None:
    with receiving(WebhookReceiver(default="hang")) as hook:
        r = receiver(hook.url, queue_size=10, timeout=5, max_attempts=1)
        with notifying(r) as notifier:
            offer(notifier, "fired", alert(0))
            hook.wait_for("the first message in flight", lambda: len(hook.requests) == 1)
            start = time.perf_counter()
            for n in range(1, 10_001):
                offer(notifier, "fired", alert(n))
            elapsed = time.perf_counter() - start
            s = notifier.stats()["hook"]
            assert s.queue_depth == 10
            assert s.drops["queue_full"] == 9_990
            hook.release.set()
    assert elapsed < 1.0, f"10,000 offers took {elapsed:.3f}s"


def test_a_dead_receiver_does_not_slow_ingest() -> None:
    """The real storm through the engine, with and without a receiver that hangs."""
    def ingest(subscribe: Callable[[Any], None] | None) -> float:
        engine = new_engine()
        if subscribe is not None:
            engine.subscribe(subscribe)
        start = time.perf_counter()
        feed_storm(engine)
        return time.perf_counter() - start

    bare = min(ingest(None) for _ in range(2))
    with receiving(WebhookReceiver(default="hang")) as hook:
        r = receiver(hook.url, timeout=5, queue_size=4)
        with notifying(r) as notifier:
            notified = min(ingest(notifier.offer) for _ in range(2))
            hook.release.set()
    print(f"storm ingest: {bare:.3f}s bare, {notified:.3f}s with a hanging receiver")
    assert notified < bare * 1.5 + 0.1


# -- storm control ----------------------------------------------------------------------------
def test_changes_within_the_group_window_are_one_message() -> None:
    with receiving() as hook, notifying(receiver(hook.url, group_wait=0.3)) as notifier:
        for n in range(5):
            offer(notifier, "fired", alert(n))
        for n in range(5):
            offer(notifier, "updated", alert(n))
        hook.wait_for("one message", lambda: len(hook.requests) == 1)
        until("success counted", lambda: notifier.stats()["hook"].deliveries["success"] == 1)
        assert len(hook.requests) == 1
    payload = hook.requests[0].json()
    assert sorted(a["cid"] for a in payload["alerts"]) == [1000, 1001, 1002, 1003, 1004]
    assert {a["change"] for a in payload["alerts"]} == {"fired"}


def test_updates_do_not_notify_but_repeat_interval_does() -> None:
    with receiving() as hook, notifying(receiver(hook.url, repeat_interval=0.5)) as notifier:
        offer(notifier, "fired", alert())
        hook.wait_for("the first", lambda: len(hook.requests) == 1)
        first = time.monotonic()
        for _ in range(50):
            offer(notifier, "updated", alert())
        hook.wait_for("the repeat", lambda: len(hook.requests) == 2)
        gap = time.monotonic() - first
        offer(notifier, "resolved", alert(state="resolved"))
        hook.wait_for("the resolve", lambda: len(hook.requests) == 3)
    assert gap >= 0.4
    kinds = [r.json()["alerts"][0]["change"] for r in hook.requests]
    assert kinds == ["fired", "repeat", "resolved"]
    assert hook.requests[2].json()["status"] == "resolved"


def test_the_engine_feeds_the_notifier() -> None:
    engine = new_engine()
    with receiving() as hook, notifying(receiver(hook.url, group_wait=0.2)) as notifier:
        engine.subscribe(notifier.offer)
        feed_storm(engine)
        until("everything sent", lambda: notifier.stats()["hook"].queue_depth == 0
              and not notifier.channels["hook"]._inflight)
        hook.wait_for("a message", lambda: bool(hook.ok))
    alerts = [a for r in hook.ok for a in r.json()["alerts"]]
    firing = [a for a in alerts if a["cid"] == STORM_FIRING_CID]
    assert firing and firing[-1]["state"] == "firing"
    assert firing[-1]["diagnosis"]["code"]


# -- restarts ------------------------------------------------------------------------------------
def test_a_restart_does_not_renotify_and_still_sends_a_pending_resolve() -> None:
    with receiving() as hook:
        r = receiver(hook.url)
        with notifying(r) as first:
            offer(first, "fired", alert(1))
            offer(first, "fired", alert(2))
            hook.wait_for("notified", lambda: len(hook.ok) >= 1)
            until("both notified", lambda: len(first.state().receivers["hook"].notified) == 2)
        saved = first.state().dumps()
        sent = len(hook.requests)
        down = receiver(f"http://127.0.0.1:{closed_port()}/", max_attempts=1000, max_age=100)
        with notifying(down, state=DeliveryState.loads(saved)) as second:
            offer(second, "fired", alert(1))  # re-fired after a restart: not notified again
            offer(second, "resolved", alert(2, "resolved"))
            until("an attempt", lambda: second.stats()["hook"].attempts_failed >= 1)
        saved = second.state().dumps()
        assert len(hook.requests) == sent
        with notifying(r, state=DeliveryState.loads(saved)):
            hook.wait_for("the pending resolve", lambda: len(hook.requests) == sent + 1)
    payload = hook.requests[-1].json()
    assert [(a["cid"], a["state"]) for a in payload["alerts"]] == [(1002, "resolved")]


# -- signatures ------------------------------------------------------------------------------------
def signed(body: bytes, ts: int, secret: str = SECRET) -> tuple[str, str]:
    return str(ts), sign(secret, str(ts), body)


def test_signature_verifies() -> None:
    body = b'{"version":"1"}'
    ts, sig = signed(body, int(time.time()))
    verify(SECRET, ts, body, sig)


@pytest.mark.parametrize(("case", "reason"), [
    ("wrong_secret", "signature mismatch"),
    ("tampered", "signature mismatch"),
    ("old", "timestamp outside tolerance"),
    ("bad_ts", "malformed timestamp"),
])
def test_signature_rejects(case: str, reason: str) -> None:
    body = b'{"version":"1"}'
    now = int(time.time())
    ts, sig = signed(body, now - 600 if case == "old" else now,
                     "other" if case == "wrong_secret" else SECRET)
    if case == "tampered":
        body = b'{"version":"2"}'
    if case == "bad_ts":
        ts = "yesterday"
    with pytest.raises(InvalidSignature, match=reason):
        verify(SECRET, ts, body, sig, tolerance=300)


def test_a_replayed_request_is_rejected() -> None:
    guard = ReplayGuard()
    body = b'{"version":"1"}'
    ts, sig = signed(body, 1_000_000)
    verify(SECRET, ts, body, sig, now=1_000_010, guard=guard)
    with pytest.raises(InvalidSignature, match="replayed"):
        verify(SECRET, ts, body, sig, now=1_000_020, guard=guard)
    with pytest.raises(InvalidSignature, match="outside tolerance"):  # later: too old
        verify(SECRET, ts, body, sig, now=1_000_400, guard=guard)


def test_each_attempt_is_signed_afresh_through_the_transport_seam() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500 if len(seen) == 1 else 204)

    wall = iter([1000.0])  # the first attempt's second, then 7 s later
    notifier = Notifier([receiver("http://hook.invalid/x")],
                        transport=httpx.MockTransport(handle), wall=lambda: next(wall, 1007.0))
    result = notifier.channels["hook"].deliver([Entry("fired", alert())], 3)
    notifier.stop()
    assert result.ok and result.attempts == 2
    stamps = [r.headers[TIMESTAMP_HEADER] for r in seen]
    assert stamps == ["1000", "1007"]
    for r in seen:
        verify(SECRET, r.headers[TIMESTAMP_HEADER], r.content,
                             r.headers[SIGNATURE_HEADER], now=1007)


def test_notify_test_reports_the_outcome() -> None:
    with receiving(WebhookReceiver(script=[204, 500])) as hook:
        notifier = Notifier([receiver(hook.url)])
        assert notifier.test("hook").ok
        failed = notifier.test("hook")
        notifier.stop()
    assert not failed.ok and "HTTP 500" in failed.detail
    with pytest.raises(KeyError):
        notifier.test("nope")


# -- formats ---------------------------------------------------------------------------
def test_alertmanager_alert_shape() -> None:
    r = Receiver(name="am", url="http://127.0.0.1:9093", format="alertmanager",
                 external_url="http://rw:8734", instance="edge-1")
    now = datetime.now(UTC)
    firing = alertmanager_alert(alert(), r, "edge-1", now)
    assert firing["labels"] == {"alertname": "RetrywatchRunawayConnection",
                                "severity": "critical", "instance": "edge-1",
                                "source": "nginx", "subsystem": "http",
                                "confidence": "confirmed", "alert_id": "0000000000000001"}
    assert "endsAt" not in firing
    assert firing["generatorURL"] == "http://rw:8734/api/v1/alerts/0000000000000001"
    description = firing["annotations"]["description"]
    assert "cid=1001" in description and "pid=2454" in description
    assert "unix:/run/app.sock" in description and "synchronous_loop" in description
    resolved = alertmanager_alert(alert(state="resolved"), r, "edge-1", now)
    assert resolved["endsAt"] >= resolved["startsAt"]
    url, body, _ = build(r, [Entry("fired", alert())], "edge-1", now)
    assert url == "http://127.0.0.1:9093/api/v2/alerts" and isinstance(json.loads(body), list)


def test_slack_message_lists_a_storm_briefly() -> None:
    r = Receiver(name="slack", url="https://hooks.slack.invalid/x", format="slack")
    message = slack_message([Entry("fired", alert(n)) for n in range(25)], r)
    assert message["text"].startswith("retrywatch: 25 runaway")
    sections = [b for b in message["blocks"] if b["type"] == "section"]
    assert len(sections) == 10
    assert "Fix:" in sections[0]["text"]["text"] and "4,000/s" in sections[0]["text"]["text"]
    assert message["blocks"][-1]["elements"][0]["text"] == "and 15 more"


def test_extra_headers_are_sent_and_masked() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    r = receiver("http://hook.invalid/x", headers={"Authorization": "Bearer t0ken"})
    assert "t0ken" not in json.dumps(r.model_dump(mode="json"))
    notifier = Notifier([r], transport=httpx.MockTransport(handle))
    assert notifier.test("hook").ok
    notifier.stop()
    assert seen[0].headers["Authorization"] == "Bearer t0ken"


def test_only_a_confirmed_loop_pages() -> None:
    """A suspected alert is a warning; when it is confirmed, Alertmanager gets the page and
    the end of the warning (its label set changed, so it is another alert there)."""
    r = Receiver(name="am", url="http://127.0.0.1:9093", format="alertmanager",
                 external_url="http://rw:8734", instance="edge-1")
    now = datetime.now(UTC)
    suspected = alert(confidence="suspected")
    warn = alertmanager_alert(suspected, r, "edge-1", now)
    assert (warn["labels"]["severity"], warn["labels"]["confidence"]) == ("warning", "suspected")
    assert "suspected" in warn["annotations"]["summary"]
    _url, body, _headers = build(r, [Entry("confirmed", alert())], "edge-1", now)
    sent = json.loads(body)
    assert [(a["labels"]["severity"], "endsAt" in a) for a in sent] == [
        ("critical", False), ("warning", True)]
    assert {a["labels"]["alert_id"] for a in sent} == {"0000000000000001"}


def test_confirmation_notifies_again() -> None:
    """A receiver told of a suspected alert hears again when it is confirmed; plain
    updates in between stay quiet."""
    with receiving(WebhookReceiver()) as hook, notifying(
            receiver(hook.url, group_wait=0)) as notifier:
        offer(notifier, "fired", alert(confidence="suspected"))
        hook.wait_for("the suspected alert", lambda: len(hook.ok) == 1)
        offer(notifier, "updated", alert(confidence="suspected"))
        offer(notifier, "confirmed", alert())
        hook.wait_for("the confirmation", lambda: len(hook.ok) == 2)
    changes = [(m.json()["alerts"][0]["change"], m.json()["alerts"][0]["confidence"])
               for m in hook.ok]
    assert changes == [("fired", "suspected"), ("confirmed", "confirmed")]


# -- draining at a stop ------------------------------------------------------------------------
def test_drain_cuts_the_group_wait_short_and_sends_everything() -> None:
    with receiving() as hook, \
            notifying(receiver(hook.url, group_wait=30.0)) as notifier:
        for n in (1, 2, 3):
            offer(notifier, "fired", alert(n))
        started = time.monotonic()
        assert notifier.drain(5.0) == 0
        assert time.monotonic() - started < 5.0  # not the 30 s group wait
        (message,) = hook.requests
        assert sorted(a["id"] for a in json.loads(message.body)["alerts"]) == [
            f"{n:016x}" for n in (1, 2, 3)]
        assert notifier.state().receivers["hook"].pending == []


def test_drain_gives_up_at_its_deadline_and_keeps_what_is_unsent() -> None:
    down = receiver(f"http://127.0.0.1:{closed_port()}/", max_attempts=1000, max_age=100,
                    backoff_initial=0.05, backoff_max=0.05)
    with notifying(down) as notifier:
        offer(notifier, "fired", alert(1))
        offer(notifier, "fired", alert(2))
        started = time.monotonic()
        assert notifier.drain(0.5) == 2
        assert 0.4 < time.monotonic() - started < 3.0
        pending = notifier.state().receivers["hook"].pending
        assert sorted(e.alert["id"] for e in pending) == [f"{n:016x}" for n in (1, 2)]
    assert notifier.drain(0.0) == 2  # stopped: nothing sent, at once


def test_drain_without_a_running_worker_says_what_is_queued_at_once() -> None:
    notifier = Notifier([receiver("http://127.0.0.1:9/")])
    offer(notifier, "fired", alert(1))
    started = time.monotonic()
    assert notifier.drain(5.0) == 1
    assert time.monotonic() - started < 1.0
