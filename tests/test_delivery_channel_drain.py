"""Channel.drain (a stop's last sending) on a fake monotonic clock.

Nothing wakes drain when the worker's last message is answered (the worker notifies no
one): drain looks again every ``POLL`` seconds, so it returns at most that long after the
queue is empty, and it gives up on its deadline, its last wait cut to it. The channel's
condition is swapped for one whose waits move the fake clock by their whole timeout (as
an unnotified wait lasts) and let a stand-in of the worker run meanwhile; no thread runs
and no test sleeps."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from service_harness import FakeClock
from test_delivery import alert
from test_delivery_channel import A1, A2, MONO, Joined, make, pending

from retrywatch.delivery import channel as channel_module
from retrywatch.delivery.channel import Channel
from retrywatch.delivery.formats import Entry

POLL = 0.05  #: how often drain looks whether the worker is done
MOST = 100  #: more waits than these tests' drains make, by far


class Polls(threading.Condition):
    """The channel's condition on a fake clock: each wait records its timeout, moves the
    clock by all of it, and lets the lock go meanwhile (as a real wait does) for the
    ``worker`` stand-in to run."""

    def __init__(self, clock: FakeClock, worker: Callable[[], None]) -> None:
        super().__init__(threading.Lock())
        self.clock, self.worker = clock, worker
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None, "drain waited without a bound"
        # a fake clock moves only by the waits: a drain looking again at its deadline
        # would wait 0 s without end (the real clock moves a hair, the fake one not at all)
        assert len(self.waits) < MOST, f"drain kept looking: {self.waits[-3:]}"
        self.waits.append(timeout)
        self.clock.advance(timeout)
        self.release()
        try:
            self.worker()
        finally:
            self.acquire()
        return False


def draining(monkeypatch: pytest.MonkeyPatch,
             answered_at: float | None) -> tuple[Channel, FakeClock, Polls]:
    """A channel with A1 and A2 queued and a worker (stand-in) that takes them as soon as
    it runs and has them answered 200 at ``answered_at`` (never: None); drain's
    ``time.monotonic`` is the channel's fake clock."""
    ch, clock, _, _ = make()
    ch.offer("fired", alert(1))
    ch.offer("fired", alert(2))
    batch: list[Entry] = []

    def worker() -> None:
        if not batch:
            with ch._cond:
                batch.extend(ch._take(clock()))  # draining: the group wait is cut short
        elif answered_at is not None and clock() >= answered_at and ch._inflight:
            ch._delivered(batch)

    polls = Polls(clock, worker)
    ch._cond = polls
    ch._thread = Joined()  # type: ignore[assignment]  # alive, as a started worker is
    monkeypatch.setattr(channel_module, "time", SimpleNamespace(monotonic=clock))
    return ch, clock, polls


def test_drain_returns_at_its_first_look_after_the_last_message_is_answered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    answered = MONO + 0.12
    ch, clock, polls = draining(monkeypatch, answered)
    assert ch.drain(MONO + 10.0) == 0
    # taken at the first look, answered between the second and the third; seen at the third
    assert polls.waits == [POLL, POLL, POLL]
    assert clock() == pytest.approx(MONO + 3 * POLL)
    assert clock() - answered <= POLL
    assert pending(ch) == []
    assert ch.stats.deliveries == Counter(success=1)


def test_drain_gives_up_on_its_deadline_with_its_last_wait_cut_to_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ch, clock, polls = draining(monkeypatch, None)  # the receiver never answers
    deadline = MONO + 0.125
    assert ch.drain(deadline) == 2
    assert polls.waits == [POLL, POLL, pytest.approx(0.025)]
    assert clock() == deadline  # it ends on the deadline: no further look, however short
    assert pending(ch) == [("fired", A1), ("fired", A2)]  # in flight: kept in the state
    assert ch.stats.deliveries == Counter()
