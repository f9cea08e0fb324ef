"""One delivery channel's decisions, step by step on fake clocks.

What :meth:`Channel.offer` queues, coalesces, leaves alone or drops; when the worker is
next due and what it takes then (grouping, ``max_group``, json/slack repeats, Alertmanager
re-sends); what each answer of the receiver decides (sent, retried, dropped, rejected), the
figures counted and the lines logged, word for word. No worker thread runs unless a test
says so: the test calls ``_next_due``/``_take``/``deliver`` as the worker would, with the
monotonic clock and the wall clock at the moments it chooses (they differ on purpose, so a
repeat computed on the wrong clock shows). HTTP goes to a real receiver on 127.0.0.1
(tests/webhook_receiver.py)."""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from service_harness import FakeClock
from test_delivery import alert, receiver, until
from test_delivery_retries import Waits as RecordedWaits
from webhook_receiver import WebhookReceiver, closed_port, receiving

from retrywatch.delivery import channel as channel_module
from retrywatch.delivery.channel import IDLE, Channel, Result
from retrywatch.delivery.formats import DELIVERY_HEADER, TIMESTAMP_HEADER, Entry
from retrywatch.delivery.state import ReceiverState

MONO = 100.0  #: the channel's monotonic clock when a test starts
WALL = 1_700_000_000.0  #: its wall clock then
GROUP = 2.0  #: group_wait of these tests' receivers
SEED = 7


class Waits(RecordedWaits):
    """test_delivery_retries' ``wait`` (each delay recorded, the monotonic clock moved by
    it) that can also ask the channel to stop while waiting (as a shutdown would)."""

    def __init__(self, clock: FakeClock, stop_after: int | None = None) -> None:
        super().__init__(clock)
        self.stop_after = stop_after
        self.channel: Channel | None = None

    def __call__(self, seconds: float) -> None:
        super().__call__(seconds)
        if self.stop_after is not None and len(self.delays) >= self.stop_after:
            assert self.channel is not None
            self.channel.signal_stop()


def make(url: str = "", *, state: ReceiverState | None = None, stop_after: int | None = None,
         **options: Any) -> tuple[Channel, FakeClock, FakeClock, Waits]:
    """A channel (not started) on its own monotonic and wall clocks; ``url`` defaults to a
    closed port (for the tests that never send)."""
    clock, wall = FakeClock(MONO), FakeClock(WALL)
    waits = Waits(clock, stop_after)
    r = receiver(url or f"http://127.0.0.1:{closed_port()}",
                 **{"group_wait": GROUP, "backoff_initial": 0.5, "backoff_max": 4.0, **options})
    ch = Channel(r, httpx.Client(timeout=2.0), instance="test", clock=clock, wall=wall,
                 rng=random.Random(SEED), state=state, wait=waits)
    waits.channel = ch
    return ch, clock, wall, waits


@contextmanager
def hook(*script: Any, default: Any = 200) -> Iterator[WebhookReceiver]:
    with receiving(WebhookReceiver(script=list(script), default=default)) as r:
        yield r


def kinds(batch: list[Entry]) -> list[tuple[str, str]]:
    """(kind, alert id) of each change, in order."""
    return [(e.kind, e.id) for e in batch]


def pending(ch: Channel) -> list[tuple[str, str]]:
    """The changes waiting (queued or in flight), in order."""
    return kinds(ch.state().pending)


def ids(*ns: int) -> list[str]:
    return [alert(n)["id"] for n in ns]


def jitter(attempts: int, initial: float = 0.5, most: float = 4.0) -> list[float]:
    """The delays before attempts 2..attempts+1: exponential backoff, each drawn in the
    upper half of its step, from the channel's seeded generator in the same order."""
    rng = random.Random(SEED)
    return [rng.uniform(d / 2, d) for d in
            (min(most, initial * 2 ** (a - 1)) for a in range(1, attempts + 1))]


A1, A2, A3 = ids(1, 2, 3)


# -- offer: what is queued ---------------------------------------------------------------------
def test_a_new_alert_is_queued_as_fired_whatever_the_change_says() -> None:
    ch, clock, _, _ = make()
    assert ch.offer("updated", alert(1)) is True
    clock.advance(0.5)
    assert ch.offer("confirmed", alert(2)) is True
    assert ch.offer("fired", alert(3)) is True
    assert pending(ch) == [("fired", A1), ("fired", A2), ("fired", A3)]
    assert ch.state().firing == {a: alert(n) for n, a in ((1, A1), (2, A2), (3, A3))}
    assert ch.queue_depth() == 3
    # the group is timed from the first change, not pushed back by the later ones
    assert ch._next_due(clock()) == MONO + GROUP


def test_a_queued_change_takes_the_newest_figures_and_a_resolve_wins() -> None:
    ch, _, _, _ = make()
    ch.offer("fired", alert(1))
    newer = {**alert(1), "failures": 9999}
    assert ch.offer("updated", newer) is True
    assert [(e.kind, e.alert["failures"]) for e in ch.state().pending] == [("fired", 9999)]
    assert ch.state().firing == {A1: newer}
    resolved = alert(1, state="resolved")
    assert ch.offer("resolved", resolved) is True
    assert [(e.kind, e.alert) for e in ch.state().pending] == [("resolved", resolved)]
    assert ch.state().firing == {}
    # a change after the resolve (the alert fired again) keeps the message a resolve but
    # brings the alert back among the firing
    assert ch.offer("updated", alert(1)) is True
    assert pending(ch) == [("resolved", A1)]
    assert ch.state().firing == {A1: alert(1)}


def test_an_alert_already_notified_is_not_queued_again_unless_confirmed() -> None:
    state = ReceiverState(notified={A1: WALL - 10}, firing={A1: alert(1)})
    ch, _, _, _ = make(state=state)
    update = {**alert(1), "failures": 5}
    assert ch.offer("updated", update) is True
    assert ch.offer("fired", update) is True  # a re-fire after a restart
    assert pending(ch) == []
    assert ch.state().firing == {A1: update}
    assert ch.state().notified == {A1: WALL - 10}
    assert ch._next_due(MONO) == MONO + IDLE  # nothing queued, no repeat due before the idle
    assert ch.offer("confirmed", alert(1)) is True  # suspected to confirmed: heard again
    assert pending(ch) == [("confirmed", A1)]


def test_an_alert_in_flight_is_known_but_its_resolve_is_not() -> None:
    ch, clock, _, _ = make()
    ch.offer("fired", alert(1))
    ch.offer("resolved", alert(2, state="resolved"))
    clock.advance(GROUP)
    assert kinds(ch._take(clock())) == [("fired", A1), ("resolved", A2)]
    assert ch.offer("updated", alert(1)) is True  # in flight: the message says it already
    assert ch.queue_depth() == 0
    assert ch.offer("updated", alert(2)) is True  # only its resolve is in flight
    assert ch.queue_depth() == 1
    # saved: in flight first, then queued; a newer change of the same alert replaces it
    assert pending(ch) == [("fired", A1), ("fired", A2)]
    assert [(e.kind, e.id) for e in ch._queue.values()] == [("fired", A2)]


def test_a_resolve_of_an_alert_never_seen_is_queued() -> None:
    ch, _, _, _ = make()
    assert ch.offer("resolved", alert(1, state="resolved")) is True
    assert pending(ch) == [("resolved", A1)]
    assert ch.state().firing == {}


def test_a_full_queue_drops_counts_and_still_tracks_the_alert() -> None:
    state = ReceiverState(notified={A3: WALL - 10}, firing={A3: alert(3)})
    ch, _, _, _ = make(state=state, queue_size=2)
    assert ch.offer("fired", alert(1)) is True
    assert ch.offer("fired", alert(2)) is True  # the second fills the queue: still queued
    assert ch.stats.drops == Counter()
    assert ch.offer("fired", alert(4)) is False
    assert ch.stats.drops == Counter(queue_full=1)
    assert ch.stats.alerts_dropped == 1
    assert ch.state().firing[alert(4)["id"]] == alert(4)  # re-notified at its next repeat
    assert ch.offer("updated", {**alert(1), "failures": 1}) is True  # coalesced: no room needed
    assert ch.offer("resolved", alert(3, state="resolved")) is False
    assert ch.stats.drops == Counter(queue_full=2)
    assert ch.stats.alerts_dropped == 2
    state_now = ch.state()
    assert A3 not in state_now.firing
    assert state_now.notified == {}  # a resolve given up: forgotten, not repeated
    assert [e.id for e in state_now.pending] == [A1, A2]
    assert ch.offer("resolved", alert(5, state="resolved")) is False  # never notified
    assert ch.stats.drops == Counter(queue_full=3)


def test_a_restored_channel_queues_its_pending_changes_and_copies_its_state() -> None:
    saved = ReceiverState(notified={A1: WALL - 5}, firing={A1: alert(1)},
                          pending=[Entry("resolved", alert(2, state="resolved"), "k2"),
                                   Entry("fired", alert(3), "k3")])
    ch, clock, _, _ = make(state=saved)
    assert [(e.kind, e.id, e.key) for e in ch.state().pending] == \
        [("resolved", A2, "k2"), ("fired", A3, "k3")]
    assert ch._next_due(clock()) == MONO + GROUP  # grouped from the restart
    saved.notified.clear()
    saved.firing.clear()
    assert ch.state().notified == {A1: WALL - 5}
    assert ch.state().firing == {A1: alert(1)}


def test_a_channel_restored_with_nothing_pending_is_idle() -> None:
    ch, clock, _, _ = make(state=ReceiverState(notified={}, firing={}))
    assert ch._next_due(clock()) == MONO + IDLE
    clock.advance(IDLE)
    assert ch._take(clock()) == []


# -- when the worker is due, and what it takes -------------------------------------------------
def test_the_group_is_taken_at_group_wait_not_before() -> None:
    ch, clock, _, _ = make()
    ch.offer("fired", alert(1))
    clock.advance(1.0)
    ch.offer("fired", alert(2))
    assert ch._take(MONO + GROUP - 0.001) == []
    assert ch.queue_depth() == 2
    batch = ch._take(MONO + GROUP)
    assert kinds(batch) == [("fired", A1), ("fired", A2)]
    assert ch.queue_depth() == 0
    assert ch._next_due(MONO + GROUP) == MONO + GROUP + IDLE  # firing but never notified


def test_a_big_group_goes_in_messages_of_max_group_without_waiting_again() -> None:
    ch, _, _, _ = make(max_group=2)
    for n in (1, 2, 3, 4, 5):
        ch.offer("fired", alert(n))
    now = MONO + GROUP + 7.0
    assert kinds(ch._take(now)) == [("fired", A1), ("fired", A2)]
    assert ch._next_due(now) == now  # the rest is due at once
    assert kinds(ch._take(now)) == [("fired", a) for a in ids(3, 4)]
    assert kinds(ch._take(now)) == [("fired", alert(5)["id"])]
    assert ch._next_due(now) == now + IDLE


def test_draining_takes_the_group_at_once() -> None:
    ch, clock, _, _ = make()
    ch.offer("fired", alert(1))
    ch._draining = True
    assert ch._next_due(clock()) == MONO
    assert kinds(ch._take(clock())) == [("fired", A1)]


def test_a_repeat_is_due_one_repeat_interval_after_it_was_notified_by_the_wall_clock() -> None:
    state = ReceiverState(notified={A1: WALL - 100, A2: WALL - 50},
                          firing={A1: alert(1), A2: alert(2), A3: alert(3)})
    ch, clock, wall, _ = make(state=state, repeat_interval=130.0)
    # A1 is due 30 s on: the soonest (A3 was never notified: no repeat of it)
    assert ch._next_due(clock()) == MONO + 30
    wall.advance(29.999)
    assert ch._take(MONO) == []
    wall.advance(0.001)
    batch = ch._take(MONO)
    assert kinds(batch) == [("repeat", A1)]
    assert batch[0].alert == alert(1)
    assert ch.state().notified == {A1: WALL + 30, A2: WALL - 50}  # due again from now
    assert ch._next_due(MONO) == MONO + 50
    assert ch.state().pending == batch  # in flight, so saved if the process stops


def test_repeats_stop_at_max_group_and_skip_what_the_message_carries() -> None:
    state = ReceiverState(notified=dict.fromkeys(ids(1, 2, 3, 4), WALL - 2000),
                          firing={alert(n)["id"]: alert(n) for n in (1, 2, 3, 4)})
    ch, clock, _, _ = make(state=state, repeat_interval=1000.0, max_group=3)
    ch.offer("confirmed", alert(2))  # known, confirmed: a change of its own
    clock.advance(GROUP)
    batch = ch._take(clock())
    assert kinds(batch) == [("confirmed", A2), ("repeat", A1), ("repeat", A3)]
    notified = ch.state().notified
    assert notified[A1] == notified[A3] == WALL
    assert notified[alert(4)["id"]] == WALL - 2000  # no room: repeated next time
    assert notified[A2] == WALL - 2000  # its change is sent, not repeated
    ch._delivered(batch)  # the worker's next step once the receiver said 200
    assert ch.state().notified[A2] == WALL
    assert kinds(ch._take(clock())) == [("repeat", alert(4)["id"])]


def test_alertmanager_gets_every_firing_alert_each_resend_interval() -> None:
    state = ReceiverState(firing={A1: alert(1), A2: alert(2)})
    ch, clock, wall, _ = make(state=state, format="alertmanager", resend_interval=30.0)
    assert ch._next_due(clock()) == MONO + 30
    wall.advance(10_000)  # the wall clock plays no part here
    assert ch._take(MONO + 29.999) == []
    ch.offer("fired", alert(3))
    batch = ch._take(MONO + 30)
    assert kinds(batch) == [("fired", A3), ("repeat", A1), ("repeat", A2)]
    assert ch._next_due(MONO + 30) == MONO + 60
    assert ch._take(MONO + 59.999) == []


def test_alertmanager_without_firing_alerts_idles() -> None:
    ch, clock, _, _ = make(format="alertmanager", resend_interval=30.0)
    ch.offer("resolved", alert(1, state="resolved"))
    clock.advance(GROUP)
    assert kinds(ch._take(clock())) == [("resolved", A1)]
    assert ch._next_due(clock()) == clock() + IDLE
    assert ch._take(clock() + 30) == []


# -- sending: answers, retries, drops ----------------------------------------------------------
def test_a_delivered_message_marks_its_firing_alerts_notified_at_the_wall_clock() -> None:
    with hook() as r:
        ch, clock, wall, waits = make(r.url, state=ReceiverState(notified={A2: WALL - 1}))
        ch.offer("fired", alert(1))
        ch.offer("resolved", alert(2, state="resolved"))
        ch.offer("fired", alert(3))
        ch.offer("resolved", alert(4, state="resolved"))  # never notified
        clock.advance(GROUP)
        batch = ch._take(clock())
        ch.offer("resolved", alert(3, state="resolved"))  # resolved while in flight
        wall.advance(42)
        assert ch.deliver(batch, 6) == Result(True, 1, "HTTP 200")
        assert ch.state().notified == {A1: WALL + 42}
        assert pending(ch) == [("resolved", A3)]
        assert ch.stats.deliveries == Counter(success=1)
        assert (ch.stats.attempts_failed, ch.stats.retries, ch.stats.drops) == (0, 0, Counter())
        assert waits.delays == []
        sent = r.requests[0].json()
        assert [x["id"] for x in sent["alerts"]] == [A1, A2, A3, alert(4)["id"]]
        assert datetime.fromisoformat(sent["sent_at"]).utcoffset() == timedelta(0)


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_any_2xx_is_delivered(status: int) -> None:
    with hook(status) as r:
        ch, _, _, _ = make(r.url)
        assert ch.deliver([Entry("fired", alert(1))], 3) == Result(True, 1, f"HTTP {status}")
        assert len(r.requests) == 1


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 599])
def test_a_retryable_answer_is_retried_with_backoff_and_logged(
        status: int, caplog: pytest.LogCaptureFixture) -> None:
    with hook(status, status) as r, caplog.at_level(logging.INFO, "retrywatch.delivery"):
        ch, _, _, waits = make(r.url)
        assert ch.deliver([Entry("fired", alert(1))], 6) == Result(True, 3, "HTTP 200")
        assert [q.status for q in r.requests] == [status, status, 200]
        delivery = r.requests[0].headers[DELIVERY_HEADER]
        assert {q.headers[DELIVERY_HEADER] for q in r.requests} == {delivery}
    assert waits.delays == jitter(2)
    assert [m.getMessage() for m in caplog.records] == [
        f"receiver hook: attempt {n} of delivery {delivery} failed (HTTP {status}), "
        f"retrying in {d:.2f}s" for n, d in zip((1, 2), jitter(2), strict=True)]
    assert (ch.stats.attempts_failed, ch.stats.retries) == (2, 2)
    assert ch.stats.deliveries == Counter(success=1)


def test_the_backoff_doubles_up_to_its_bound() -> None:
    with hook(default=500) as r:
        ch, _, _, waits = make(r.url, backoff_initial=0.5, backoff_max=3.0)
        ch.deliver([Entry("fired", alert(1))], 6)
    assert waits.delays == jitter(5, 0.5, 3.0)
    # 0.5, 1, 2, then 3 and 3 (not 4, 8): each drawn in the upper half of its step
    steps = [0.5, 1.0, 2.0, 3.0, 3.0]
    assert all(s / 2 <= d <= s for d, s in zip(waits.delays, steps, strict=True))


def test_the_figures_add_up_over_messages() -> None:
    with hook(200, 200, 400, 500, 500, 400) as r:
        ch, _, _, _ = make(r.url)
        assert ch.deliver([Entry("fired", alert(1))], 6).ok
        assert ch.deliver([Entry("fired", alert(2))], 6).ok
        assert not ch.deliver([Entry("fired", alert(1)), Entry("fired", alert(2))], 6).ok
        assert not ch.deliver([Entry("fired", alert(3))], 2).ok
        assert not ch.deliver([Entry("fired", alert(3))], 2).ok
    assert ch.stats.deliveries == Counter(success=2, dropped=3)
    assert ch.stats.drops == Counter(rejected=2, max_attempts=1)
    assert (ch.stats.attempts_failed, ch.stats.retries, ch.stats.alerts_dropped) == (4, 1, 4)


def test_the_instance_is_the_alertmanager_label() -> None:
    with hook() as r:
        ch, _, _, _ = make(r.url, format="alertmanager")
        assert ch.deliver([Entry("fired", alert(1))], 1).ok
    assert r.requests[0].path == "/api/v2/alerts"
    assert [a["labels"]["instance"] for a in r.requests[0].json()] == ["test"]


def test_a_rejection_quotes_the_first_200_characters_of_the_answer() -> None:
    why = b"x" * 199 + b"yz" + b"!" * 50
    with hook((422, {}, why)) as r:
        ch, _, _, _ = make(r.url)
        result = ch.deliver([Entry("fired", alert(1))], 6)
    assert result == Result(False, 1, "rejected: HTTP 422: " + "x" * 199 + "y")
    assert len(r.requests) == 1


@pytest.mark.parametrize("status", [300, 302, 400, 401, 404, 409, 413, 499])
def test_another_answer_is_rejected_at_once(status: int,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with hook(status) as r, caplog.at_level(logging.INFO, "retrywatch.delivery"):
        ch, _, _, waits = make(r.url)
        result = ch.deliver([Entry("fired", alert(1)), Entry("fired", alert(2))], 6)
    assert result == Result(False, 1, f"rejected: HTTP {status}: ")
    assert len(r.requests) == 1 and waits.delays == []
    assert [m.getMessage() for m in caplog.records] == [
        f"receiver hook: dropped a message of 2 alert(s) after 1 attempt(s): rejected "
        f"(HTTP {status}: )"]
    assert [m.levelname for m in caplog.records] == ["WARNING"]
    assert ch.stats.drops == Counter(rejected=1)
    assert ch.stats.deliveries == Counter(dropped=1)
    assert (ch.stats.attempts_failed, ch.stats.retries, ch.stats.alerts_dropped) == (1, 0, 2)


def test_max_attempts_ends_the_message_and_a_dropped_resolve_is_forgotten(
        caplog: pytest.LogCaptureFixture) -> None:
    state = ReceiverState(notified={A1: WALL - 1, A2: WALL - 1}, firing={A1: alert(1)})
    with hook(default=503) as r, caplog.at_level(logging.INFO, "retrywatch.delivery"):
        ch, clock, _, waits = make(r.url, state=state)
        ch.offer("resolved", alert(2, state="resolved"))
        ch.offer("fired", alert(3))
        ch.offer("resolved", alert(4, state="resolved"))  # never notified
        clock.advance(GROUP)
        batch = ch._take(clock())
        result = ch.deliver(batch, 3)
    assert result == Result(False, 3, "max_attempts: HTTP 503")
    assert len(r.requests) == 3 and len(waits.delays) == 2
    assert caplog.records[-1].getMessage() == (
        "receiver hook: dropped a message of 3 alert(s) after 3 attempt(s): max_attempts "
        "(HTTP 503)")
    assert ch.state().notified == {A1: WALL - 1}  # A2's resolve given up; A3 never sent
    assert ch.state().firing == {A1: alert(1), A3: alert(3)}
    assert pending(ch) == []
    assert ch.stats.drops == Counter(max_attempts=1)
    assert ch.stats.deliveries == Counter(dropped=1)
    assert (ch.stats.attempts_failed, ch.stats.retries, ch.stats.alerts_dropped) == (3, 2, 3)
    ch.offer("updated", alert(3))  # never notified: its next change notifies it
    assert pending(ch) == [("fired", A3)]


@pytest.mark.parametrize(("max_age", "attempts"), [(9.999, 1), (10.0, 2), (19.999, 2),
                                                   (20.0, 3)])
def test_max_age_counts_the_wait_that_would_pass_it(max_age: float, attempts: int) -> None:
    asked = (503, {"Retry-After": "10"})
    with hook(asked, asked, asked) as r:
        ch, _, _, waits = make(r.url, max_age=max_age, backoff_initial=0.5, backoff_max=0.5)
        result = ch.deliver([Entry("fired", alert(1))], 10)
    assert result == Result(False, attempts, "max_age: HTTP 503, Retry-After 10s")
    assert waits.delays == [10.0] * (attempts - 1)
    assert ch.stats.drops == Counter(max_age=1)


def test_a_retry_after_on_another_status_is_not_followed() -> None:
    with hook((500, {"Retry-After": "120"})) as r:
        ch, _, _, waits = make(r.url)
        assert ch.deliver([Entry("fired", alert(1))], 2) == Result(True, 2, "HTTP 200")
    assert waits.delays == jitter(1)


def test_a_refused_connection_is_retried_with_the_error_named() -> None:
    ch, _, _, waits = make(max_attempts=2)
    result = ch.deliver([Entry("fired", alert(1))], 2)
    assert result.ok is False and result.attempts == 2
    assert result.detail.startswith("max_attempts: ConnectError: ")
    assert waits.delays == jitter(1)


def test_stopping_during_a_retry_wait_keeps_the_message_pending(
        caplog: pytest.LogCaptureFixture) -> None:
    with hook(default=500) as r, caplog.at_level(logging.INFO, "retrywatch.delivery"):
        ch, clock, _, _ = make(r.url, stop_after=2)
        ch.offer("fired", alert(1))
        clock.advance(GROUP)
        result = ch.deliver(ch._take(clock()), 6)
    assert result == Result(False, 2, "stopped: HTTP 500")
    assert len(r.requests) == 2
    assert pending(ch) == [("fired", A1)]  # saved with the state, sent after the restart
    assert ch.stats.deliveries == Counter() and ch.stats.drops == Counter()
    assert [m.levelname for m in caplog.records] == ["INFO", "INFO"]


def test_the_default_wait_ends_at_once_when_stopping() -> None:
    with hook(default=500) as r:
        clock, wall = FakeClock(MONO), FakeClock(WALL)
        ch = Channel(receiver(r.url, backoff_initial=3600.0, backoff_max=3600.0,
                              max_age=7200.0),
                     httpx.Client(timeout=2.0), instance="test", clock=clock, wall=wall,
                     rng=random.Random(SEED))
        ch.signal_stop()
        done = threading.Event()
        results: list[Result] = []
        worker = threading.Thread(target=lambda: (results.append(
            ch.deliver([Entry("fired", alert(1))], 6)), done.set()), daemon=True)
        worker.start()
        assert done.wait(10), "a stopping channel waited out its backoff"
    assert results == [Result(False, 1, "stopped: HTTP 500")]


def test_every_attempt_is_signed_with_the_wall_clock_of_its_own() -> None:
    with hook(500, 500) as r:
        ch, _, wall, waits = make(r.url)
        seen: list[float] = []

        def wait(seconds: float) -> None:
            waits(seconds)
            wall.advance(100.5)
            seen.append(wall())

        ch._wait = wait
        assert ch.deliver([Entry("fired", alert(1))], 6).ok
    stamps = [int(q.headers[TIMESTAMP_HEADER]) for q in r.requests]
    assert stamps == [int(WALL), int(seen[0]), int(seen[1])]


# -- the worker thread -------------------------------------------------------------------------
def test_the_worker_survives_a_bug_in_one_delivery(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    real = channel_module.build
    calls = []

    def build(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(channel_module, "build", build)
    with hook() as r, caplog.at_level(logging.INFO, "retrywatch.delivery"):
        ch, _, _, _ = make(r.url, group_wait=0.0)
        ch.start()
        try:
            assert [t.daemon for t in threading.enumerate() if t.name == "notify-hook"] == [True]
            ch.offer("fired", alert(1))
            until("the bug logged", lambda: any(m.exc_info for m in caplog.records))
            assert pending(ch) == []  # the failed message is not stuck in flight
            ch.offer("fired", alert(2))
            r.wait_for("the next message", lambda: len(r.requests) == 1)
        finally:
            ch.stop()
    failed = [m for m in caplog.records if m.exc_info]
    assert [m.getMessage() for m in failed] == ["receiver hook: delivery failed"]
    assert [x["id"] for x in r.requests[0].json()["alerts"]] == [A2]


@pytest.mark.parametrize(("attempt", "wait", "closed"), [
    (0.5, None, True),  # stop() waits the attempt's timeout and 2 s: the attempt ends first
    (5.0, 0.05, False),  # still going when stop() gives up: its client stays open for it
])
def test_stop_and_a_request_in_flight(attempt: float, wait: float | None, closed: bool) -> None:
    with hook("hang") as r:
        ch, _, _, _ = make(r.url, group_wait=0.0, timeout=attempt, max_attempts=1)
        ch.start()
        ch.offer("fired", alert(1))
        r.wait_for("the request", lambda: len(r.requests) == 1)
        ch.stop(timeout=wait)
        assert ch.client.is_closed is closed
        assert any(t.name == "notify-hook" for t in threading.enumerate()) is not closed
        assert pending(ch) == ([] if closed else [("fired", A1)])
        r.release.set()


class Joined:
    """A worker thread that records how long stop() would wait for it and never ends."""

    def __init__(self) -> None:
        self.waits: list[float | None] = []

    def join(self, timeout: float | None = None) -> None:
        self.waits.append(timeout)

    def is_alive(self) -> bool:
        return True


def test_stop_waits_one_attempt_and_two_seconds_unless_told() -> None:
    ch, _, _, _ = make(timeout=0.5)
    ch._thread = worker = Joined()  # type: ignore[assignment]
    ch.stop()
    ch.stop(timeout=0.05)
    assert worker.waits == [2.5, 0.05]
    assert not ch.client.is_closed  # still in use by a worker that did not end


def test_stop_without_a_worker_closes_the_client() -> None:
    ch, _, _, _ = make()
    ch.stop()
    assert ch.client.is_closed
