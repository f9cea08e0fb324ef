"""One receiver: a bounded queue, a worker thread, grouping, bounded retries.

:meth:`Channel.offer` runs under the engine's lock: it only touches dicts (O(1)) and wakes
the worker. The worker gathers changes for ``group_wait`` seconds into one message, adds
the repeats that are due (json, slack: ``repeat_interval``; alertmanager: every firing
alert each ``resend_interval``), and sends it with exponential backoff and jitter until it
succeeds, ``max_attempts`` is reached or the message is ``max_age`` old; a 429 or 503 with
``Retry-After`` waits that long instead (at least the backoff, at most
``RETRY_AFTER_MAX``). What is given up is counted and logged, never retried forever. The
message is built once: every attempt sends the same body and delivery id, signed afresh.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx

from retrywatch.delivery.formats import DELIVERY_HEADER, Entry, build, signature_headers
from retrywatch.delivery.receivers import Receiver
from retrywatch.delivery.state import ReceiverState
from retrywatch.detect.schema import AnyAlertData

__all__ = ["RETRY_AFTER_MAX", "Channel", "ChannelStats", "Result", "retry_after"]

log = logging.getLogger("retrywatch.delivery")

Clock = Callable[[], float]
#: Waits out a retry's delay (seconds); the default waits on the channel's stop event.
Wait = Callable[[float], None]
Outcome = Literal["ok", "retry", "rejected"]
IDLE = 60.0  # seconds the worker sleeps when nothing is due
#: The longest a receiver's Retry-After is followed (seconds): a larger one is cut to it.
RETRY_AFTER_MAX = 300.0
#: The answers whose Retry-After is followed (RFC 9110: 503; RFC 6585: 429).
_RETRY_AFTER_STATUSES = (429, 503)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait that a ``Retry-After`` value asks for: delay-seconds or an
    HTTP-date (``now``: POSIX seconds); None when absent or malformed; 0 for a date past."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]+", value):
        return float(value) if len(value) <= 12 else 1e12  # more is cut all the same
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, said to be of unknown origin
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


@dataclass(slots=True)
class ChannelStats:
    deliveries: Counter[str] = field(default_factory=Counter)  # success, dropped
    attempts_failed: int = 0
    retries: int = 0
    drops: Counter[str] = field(default_factory=Counter)  # queue_full, max_attempts, ...
    alerts_dropped: int = 0
    queue_depth: int = 0


@dataclass(slots=True, frozen=True)
class Result:
    ok: bool
    attempts: int
    detail: str


class Channel:
    def __init__(self, receiver: Receiver, client: httpx.Client, *, instance: str,
                 clock: Clock, wall: Clock, rng: random.Random,
                 state: ReceiverState | None = None, wait: Wait | None = None) -> None:
        self.receiver = receiver
        self.client = client
        self.instance = instance
        self._clock, self._wall, self._rng = clock, wall, rng
        self._wait = wait
        self._cond = threading.Condition(threading.Lock())
        self._stop = threading.Event()
        self._draining = False  # stopping: what is queued goes out now (drain)
        self._queue: OrderedDict[str, Entry] = OrderedDict()
        self._first_at: float | None = None
        self._inflight: list[Entry] = []
        self._sending: set[str] = set()  # ids of the firing alerts in flight
        self._last_resend = clock()
        self.stats = ChannelStats()
        state = state or ReceiverState()
        self._notified = dict(state.notified)
        self._firing = dict(state.firing)
        for entry in state.pending:  # a pending resolve survives the restart
            self._queue[entry.id] = entry
        if self._queue:
            self._first_at = clock()
        self._thread: threading.Thread | None = None

    # -- the engine's side (under its lock: O(1), never blocks on I/O) ---------------------
    def offer(self, kind: str, alert: AnyAlertData) -> bool:
        aid = alert["id"]
        with self._cond:
            queued = self._queue.get(aid)
            if queued is not None:  # coalesce: the newest figures, a resolve wins
                queued.alert = alert
                if kind == "resolved":
                    queued.kind = "resolved"
                self._track(kind, aid, alert)
                return True
            if kind != "resolved":
                self._firing[aid] = alert
                known = aid in self._notified or aid in self._sending
                if known and kind != "confirmed":
                    return True  # an update, or a re-fire after a restart
                if not known:
                    kind = "fired"  # never notified (e.g. dropped): this change notifies it
                # else a suspected alert became confirmed: its receivers hear it again
            if len(self._queue) >= self.receiver.queue_size:
                self.stats.drops["queue_full"] += 1
                self.stats.alerts_dropped += 1
                self._track(kind, aid, alert)
                if kind == "resolved":
                    self._notified.pop(aid, None)
                return False
            self._track(kind, aid, alert)
            self._queue[aid] = Entry(kind, alert)
            if self._first_at is None:
                self._first_at = self._clock()
                self._cond.notify()
            return True

    def _track(self, kind: str, aid: str, alert: AnyAlertData) -> None:
        if kind == "resolved":
            self._firing.pop(aid, None)
        else:
            self._firing[aid] = alert

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"notify-{self.receiver.name}")
        self._thread.start()

    def signal_stop(self) -> None:
        """Ask the worker to stop (a message being retried stays pending in the state)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Stop, waiting at most one attempt's timeout (or ``timeout``) for a request in
        flight (still going after that: left to the daemon thread, its client open)."""
        self.signal_stop()
        if self._thread is not None:
            self._thread.join(self.receiver.timeout + 2 if timeout is None else timeout)
            if self._thread.is_alive():
                return
        self.client.close()

    def drain(self, deadline: float) -> int:
        """Send what is queued now, ``group_wait`` cut short, until nothing is left or
        ``deadline`` (``time.monotonic``) passes; the changes still unsent (they stay
        pending in :meth:`state`)."""
        with self._cond:
            self._draining = True
            self._cond.notify_all()
            while (self._queue or self._inflight) and not self._stop.is_set() \
                    and self._thread is not None and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))
            return len(self._queue) + len(self._inflight)

    def state(self) -> ReceiverState:
        with self._cond:
            pending = {e.id: e for e in self._inflight}
            for entry in self._queue.values():
                pending[entry.id] = entry
            return ReceiverState(dict(self._notified), dict(self._firing),
                                 [Entry(e.kind, e.alert, e.key) for e in pending.values()])

    def queue_depth(self) -> int:
        return len(self._queue)

    # -- the worker --------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                batch = self._wait_for_batch()
            if batch:
                try:
                    self.deliver(batch, self.receiver.max_attempts)
                except Exception:  # a bug must not end deliveries silently
                    log.exception("receiver %s: delivery failed", self.receiver.name)
                    with self._cond:
                        self._inflight, self._sending = [], set()

    def _wait_for_batch(self) -> list[Entry]:
        while not self._stop.is_set():
            now = self._clock()
            due = self._next_due(now)
            if due <= now:
                return self._take(now)
            self._cond.wait(due - now)
        return []

    def _next_due(self, now: float) -> float:
        r = self.receiver
        due = now + IDLE
        if self._first_at is not None:
            due = min(due, now if self._draining else self._first_at + r.group_wait)
        if self._firing:
            if r.format == "alertmanager":
                due = min(due, self._last_resend + r.resend_interval)
            else:
                wall = self._wall()
                for aid in self._firing:
                    at = self._notified.get(aid)
                    if at is not None:
                        due = min(due, now + at + r.repeat_interval - wall)
        return due

    def _take(self, now: float) -> list[Entry]:
        r = self.receiver
        batch: list[Entry] = []
        if self._first_at is not None and (self._draining or now >= self._first_at + r.group_wait):
            while self._queue and len(batch) < r.max_group:
                batch.append(self._queue.popitem(last=False)[1])
            self._first_at = (now - r.group_wait) if self._queue else None
        taken = {e.id for e in batch}
        if r.format == "alertmanager":
            if self._firing and now >= self._last_resend + r.resend_interval:
                self._last_resend = now
                batch += [Entry("repeat", a) for i, a in self._firing.items() if i not in taken]
        else:
            wall = self._wall()
            for aid, alert in self._firing.items():
                at = self._notified.get(aid)
                if aid not in taken and at is not None and wall >= at + r.repeat_interval:
                    if len(batch) >= r.max_group:
                        break
                    batch.append(Entry("repeat", alert))
                    self._notified[aid] = wall  # due again one interval on, sent or not
        self._inflight = batch
        self._sending = {e.id for e in batch if e.kind != "resolved"}
        return batch

    # -- sending ---------------------------------------------------------------------------
    def deliver(self, batch: list[Entry], max_attempts: int) -> Result:
        """Send one message, retrying within the receiver's bounds: the same body and
        delivery id on every attempt, signed afresh."""
        r = self.receiver
        url, body, headers = build(r, batch, self.instance, datetime.now(UTC))
        created = self._clock()
        attempt = 0
        while True:
            attempt += 1
            sent = {**{k: v.get_secret_value() for k, v in r.headers.items()}, **headers,
                    **signature_headers(r, body, int(self._wall()))}
            outcome, detail, asked = self._attempt(url, body, sent)
            if outcome == "ok":
                self._delivered(batch)
                return Result(True, attempt, detail)
            self.stats.attempts_failed += 1
            delay = self._delay(attempt, asked)
            reason = ("rejected" if outcome == "rejected" else
                      "max_attempts" if attempt >= max_attempts else
                      "max_age" if self._clock() - created + delay > r.max_age else None)
            if reason is not None:
                self._dropped(batch, reason, attempt, detail)
                return Result(False, attempt, f"{reason}: {detail}")
            self.stats.retries += 1
            log.info("receiver %s: attempt %d of delivery %s failed (%s), retrying in %.2fs",
                     r.name, attempt, headers[DELIVERY_HEADER], detail, delay)
            if self._pause(delay):  # stopping: the message stays pending in the state
                return Result(False, attempt, f"stopped: {detail}")

    def _delay(self, attempt: int, asked: float | None) -> float:
        """Exponential backoff with jitter (receivers see no herd); a receiver's
        Retry-After (``asked``) lengthens it, up to ``RETRY_AFTER_MAX``."""
        r = self.receiver
        delay = min(r.backoff_max, r.backoff_initial * 2 ** (attempt - 1))
        delay = self._rng.uniform(delay / 2, delay)
        if asked is not None:
            delay = max(delay, min(asked, RETRY_AFTER_MAX))
        return delay

    def _pause(self, delay: float) -> bool:
        """Wait ``delay`` seconds before the next attempt; True when stopping."""
        if self._wait is None:
            return self._stop.wait(delay)
        self._wait(delay)
        return self._stop.is_set()

    def _attempt(self, url: str, body: bytes,
                 headers: dict[str, str]) -> tuple[Outcome, str, float | None]:
        """The outcome, a detail for the log, and the Retry-After asked for (seconds)."""
        try:
            response = self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as e:
            return "retry", f"{type(e).__name__}: {e}", None
        status = response.status_code
        if 200 <= status < 300:
            return "ok", f"HTTP {status}", None
        if status in (408, 425, 429) or status >= 500:
            asked = (retry_after(response.headers.get("Retry-After"), self._wall())
                     if status in _RETRY_AFTER_STATUSES else None)
            return "retry", (f"HTTP {status}" if asked is None else
                             f"HTTP {status}, Retry-After {asked:.0f}s"), asked
        return "rejected", f"HTTP {status}: {response.text[:200]}", None

    def _delivered(self, batch: list[Entry]) -> None:
        wall = self._wall()
        with self._cond:
            for entry in batch:
                if entry.alert["state"] == "resolved":
                    self._notified.pop(entry.id, None)
                elif entry.id in self._firing:
                    self._notified[entry.id] = wall
            self._inflight, self._sending = [], set()
            self.stats.deliveries["success"] += 1

    def _dropped(self, batch: list[Entry], reason: str, attempts: int, detail: str) -> None:
        with self._cond:
            for entry in batch:
                if entry.alert["state"] == "resolved":
                    self._notified.pop(entry.id, None)  # given up: forget it
            self._inflight, self._sending = [], set()
            self.stats.deliveries["dropped"] += 1
            self.stats.drops[reason] += 1
            self.stats.alerts_dropped += len(batch)
        log.warning("receiver %s: dropped a message of %d alert(s) after %d attempt(s): "
                    "%s (%s)", self.receiver.name, len(batch), attempts, reason, detail)
