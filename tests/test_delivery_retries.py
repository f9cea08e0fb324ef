"""Retries against a real local HTTP receiver: a 429 or 503's Retry-After (seconds or an
HTTP-date) is waited, bounded; every attempt of a message, and the same message after a
restart, carries one delivery id, in the header and in the json body.

The waits between attempts go through the notifier's ``wait`` seam onto a fake clock that
also stamps the receiver's requests: no test sleeps out a Retry-After (but one, of 1 s,
through the real worker thread)."""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate
from typing import Any

import pytest
from service_harness import FakeClock
from test_delivery import SECRET, alert, notifying, offer, receiver, until
from webhook_receiver import Received, WebhookReceiver, receiving

from retrywatch.delivery import DeliveryState, Notifier, Receiver
from retrywatch.delivery.channel import RETRY_AFTER_MAX, retry_after
from retrywatch.delivery.formats import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Entry,
    build,
)
from retrywatch.delivery.verify import verify


class Waits:
    """The notifier's ``wait``: records each delay and moves the fake clock by it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)


def deliver(script: list[Any], **options: Any) -> tuple[list[Received], list[float], bool]:
    """One message through a fresh notifier (fake clock and waits) to a receiver answering
    ``script`` then 200: what it received, the waits between attempts, whether it went."""
    clock = FakeClock()
    waits = Waits(clock)
    with receiving(WebhookReceiver(script=list(script), clock=clock)) as hook:
        notifier = Notifier([receiver(hook.url, **options)], clock=clock, wall=clock,
                            wait=waits, rng=random.Random(7))
        try:
            result = notifier.channels["hook"].deliver([Entry("fired", alert())], 10)
        finally:
            notifier.stop()
    return hook.requests, waits.delays, result.ok


def test_retry_after_seconds_then_the_same_delivery_again() -> None:
    requests, delays, ok = deliver([(429, {"Retry-After": "2"})])
    assert ok and [r.status for r in requests] == [429, 200]
    assert delays == [2.0]  # not the backoff (at most 0.02 s here)
    first, second = requests
    assert second.at - first.at >= 2.0
    ids = {r.headers[DELIVERY_HEADER] for r in requests}
    assert len(ids) == 1
    (delivery,) = ids
    assert uuid.UUID(delivery)
    assert first.json()["delivery_id"] == second.json()["delivery_id"] == delivery
    assert first.body == second.body  # the message is built once
    # each attempt signed afresh, both valid
    assert first.headers[TIMESTAMP_HEADER] != second.headers[TIMESTAMP_HEADER]
    for r in requests:
        verify(SECRET, r.headers[TIMESTAMP_HEADER], r.body, r.headers[SIGNATURE_HEADER],
               now=second.at)


def test_retry_after_http_date() -> None:
    at = FakeClock().now + 3  # the receiver's date: 3 s after the attempt
    requests, delays, ok = deliver([(503, {"Retry-After": formatdate(at, usegmt=True)})])
    assert ok and [r.status for r in requests] == [503, 200]
    assert delays == [3.0]
    assert requests[1].at - requests[0].at >= 3.0


@pytest.mark.parametrize("value", ["86400", "99999999999", "9" * 40,
                                   formatdate(FakeClock().now + 7 * 86400, usegmt=True)])
def test_a_huge_retry_after_is_bounded(value: str) -> None:
    requests, delays, ok = deliver([(429, {"Retry-After": value})], max_age=3600)
    assert ok and len(requests) == 2
    assert delays == [RETRY_AFTER_MAX]


def test_a_retry_after_beyond_max_age_ends_the_message() -> None:
    requests, delays, ok = deliver([(503, {"Retry-After": "120"})], max_age=60)
    assert not ok and len(requests) == 1 and delays == []


def test_a_short_retry_after_waits_at_least_the_backoff() -> None:
    requests, delays, ok = deliver([(429, {"Retry-After": "0"})], backoff_initial=4,
                                   backoff_max=4)
    assert ok and len(requests) == 2
    assert 2.0 <= delays[0] <= 4.0  # the jittered backoff: half to all of 4 s


@pytest.mark.parametrize(("status", "value"), [(429, "soon"), (429, "-5"), (429, "1.5"),
                                               (500, "60"), (502, "60")])
def test_retry_after_ignored_when_malformed_or_not_429_503(status: int, value: str) -> None:
    requests, delays, ok = deliver([(status, {"Retry-After": value})])
    assert ok and len(requests) == 2
    assert delays[0] <= 0.02  # the receiver's backoff


def test_retry_after_through_the_worker_in_real_time() -> None:
    """The real worker thread and its stop event: the retry comes 1 s later, not sooner."""
    script = WebhookReceiver(script=[(429, {"Retry-After": "1"})])
    with receiving(script) as hook, notifying(receiver(hook.url)) as notifier:
        offer(notifier, "fired", alert())
        hook.wait_for("the retry delivered", lambda: bool(hook.ok))
    first, second = hook.requests
    assert second.at - first.at >= 0.95
    assert first.headers[DELIVERY_HEADER] == second.headers[DELIVERY_HEADER]


def test_stopping_ends_a_long_retry_after_wait_at_once() -> None:
    script = WebhookReceiver(script=[(503, {"Retry-After": "300"})])
    with receiving(script) as hook:
        r = receiver(hook.url, max_age=3600)
        with notifying(r) as notifier:
            offer(notifier, "fired", alert())
            hook.wait_for("the 503", lambda: len(hook.requests) == 1)
            until("the retry scheduled", lambda: notifier.stats()["hook"].retries == 1)
            start = time.monotonic()
        assert time.monotonic() - start < 5
    assert len(notifier.state().receivers["hook"].pending) == 1


@pytest.mark.parametrize(("value", "seconds"), [
    ("2", 2.0), (" 120 ", 120.0), ("0", 0.0),
    (formatdate(1_000_010, usegmt=True), 10.0),
    (format_datetime(datetime.fromtimestamp(1_000_030, UTC)), 30.0),  # "+0000"
    (formatdate(999_000), 0.0),  # "-0000", and in the past: no wait
    (None, None), ("", None), ("soon", None), ("-1", None), ("1.5", None),
])
def test_retry_after_values(value: str | None, seconds: float | None) -> None:
    assert retry_after(value, now=1_000_000.0) == seconds


@pytest.mark.parametrize(("value", "seconds"), [
    ("9" * 12, 999_999_999_999.0), ("9" * 13, 1e12), ("1" + "0" * 40, 1e12),
    ("Thu, 01 Jan 1970 03:00:00 +0200", 3600.0),  # 01:00 UTC
    ("Thu, 01 Jan 1970 01:00:00 -0000", 3600.0),  # UTC of unknown origin
])
@pytest.mark.usefixtures("away_from_utc")
def test_retry_after_bounds_and_offsets(value: str, seconds: float) -> None:
    """Twelve digits are read as they are, more as 10^12 (cut to RETRY_AFTER_MAX later);
    a date's offset is applied, and "-0000" is UTC whatever the machine's own zone."""
    assert retry_after(value, now=0.0) == seconds


# -- the delivery id --------------------------------------------------------------------
def test_the_delivery_id_survives_a_restart() -> None:
    """A message retried when retrywatch stops is sent after the restart with the id of
    its earlier attempts (the entries' keys are in the saved delivery state)."""
    with receiving(WebhookReceiver(default=503)) as hook:
        # group_wait: both changes in the first message
        r = receiver(hook.url, max_attempts=100, max_age=3600, group_wait=0.2)
        with notifying(r) as first:
            offer(first, "fired", alert(1))
            offer(first, "fired", alert(2))
            hook.wait_for("an attempt", lambda: len(hook.requests) >= 1)
            until("the retry scheduled", lambda: first.stats()["hook"].retries >= 1)
        saved = first.state().dumps()
        before = {x.headers[DELIVERY_HEADER] for x in hook.requests}
        assert len(before) == 1
        hook.default = 200
        with notifying(r, state=DeliveryState.loads(saved)):
            hook.wait_for("the message delivered", lambda: bool(hook.ok))
    (got,) = hook.ok
    assert {got.headers[DELIVERY_HEADER], got.json()["delivery_id"]} == before
    assert sorted(a["cid"] for a in got.json()["alerts"]) == [1001, 1002]


def test_messages_have_their_own_ids() -> None:
    with receiving() as hook:
        notifier = Notifier([receiver(hook.url)])
        assert notifier.test("hook").ok and notifier.test("hook").ok
        notifier.stop()
    ids = [r.headers[DELIVERY_HEADER] for r in hook.requests]
    assert len(set(ids)) == 2
    assert [r.json()["delivery_id"] for r in hook.requests] == ids


def test_every_format_sends_the_id_in_a_header() -> None:
    """Alertmanager's and Slack's bodies have shapes of their own: the header only."""
    now = datetime.now(UTC)
    entries = [Entry("fired", alert())]
    for fmt in ("alertmanager", "slack"):
        r = Receiver(name=fmt, url="http://127.0.0.1:9", format=fmt)
        _url, body, headers = build(r, entries, "edge-1", now)
        assert uuid.UUID(headers[DELIVERY_HEADER])
        assert "delivery_id" not in body.decode()
        again = build(r, entries, "edge-1", now)[2][DELIVERY_HEADER]
        assert again == headers[DELIVERY_HEADER]  # the same entries: the same id
        other = build(Receiver(name="other", url="http://127.0.0.1:9", format=fmt),
                      entries, "edge-1", now)[2][DELIVERY_HEADER]
        assert other != again  # another receiver: another delivery


def test_a_state_saved_without_keys_still_loads() -> None:
    old = {"version": 1, "receivers": {"hook": {"notified": {}, "firing": {},
                                                "pending": [{"kind": "fired",
                                                             "alert": alert()}]}}}
    loaded = DeliveryState.from_dict(old)
    (entry,) = loaded.receivers["hook"].pending
    assert entry.kind == "fired" and len(entry.key) == 32  # a key of its own from now on
    again = DeliveryState.loads(loaded.dumps())
    assert again.receivers["hook"].pending[0].key == entry.key


def test_coalesced_changes_keep_their_key() -> None:
    """An update of a queued change is the same change: its key, hence the message's id,
    does not move (the change was not sent yet)."""
    notifier = Notifier([receiver("http://127.0.0.1:9", group_wait=3600)])
    channel = notifier.channels["hook"]
    offer(notifier, "fired", alert())
    key = channel.state().pending[0].key
    offer(notifier, "resolved", alert(state="resolved"))
    (entry,) = channel.state().pending
    assert (entry.kind, entry.key) == ("resolved", key)
    notifier.stop()
