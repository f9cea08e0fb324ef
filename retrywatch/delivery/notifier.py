"""The notifier: every alert change to every receiver's channel, and the channels' state.

``engine.subscribe(notifier.offer)``: the alert is turned into its API object once (under
the engine's lock: the alert changes in place) and offered to each channel (O(1) each).
All HTTP goes through httpx clients built on one injectable transport (STYLE.md 9).
"""

from __future__ import annotations

import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import httpx

from retrywatch.delivery.channel import Channel, ChannelStats, Result, Wait
from retrywatch.delivery.formats import Entry
from retrywatch.delivery.receivers import Receiver
from retrywatch.delivery.state import DeliveryState
from retrywatch.detect.alerts import AlertChange
from retrywatch.detect.disk import DiskChange
from retrywatch.detect.schema import AlertData
from retrywatch.detect.upstreams import UpstreamChange

__all__ = ["Notifier", "sample_alert"]

Clock = Callable[[], float]


class Notifier:
    def __init__(self, receivers: Sequence[Receiver], *,
                 transport: httpx.BaseTransport | None = None,
                 state: DeliveryState | None = None, clock: Clock = time.monotonic,
                 wall: Clock = time.time, rng: random.Random | None = None,
                 wait: Wait | None = None) -> None:
        """``clock``, ``wall``, ``rng`` and ``wait`` (waits out a retry's delay; by
        default on the channel's stop event) are seams for tests."""
        names = [r.name for r in receivers]
        if len(set(names)) != len(names):
            raise ValueError(f"receiver names must be unique: {names}")
        state = state or DeliveryState()
        rng = rng or random.Random()
        host = socket.gethostname()
        self.channels: dict[str, Channel] = {}
        for r in receivers:
            client = httpx.Client(
                transport=transport, follow_redirects=False,
                timeout=httpx.Timeout(r.timeout, connect=min(r.timeout, 3.0)))
            self.channels[r.name] = Channel(
                r, client, instance=r.instance or host, clock=clock, wall=wall, rng=rng,
                state=state.receivers.get(r.name), wait=wait)

    def offer(self, change: AlertChange | DiskChange | UpstreamChange) -> None:
        """The engine's subscriber: quick, never blocks on a receiver. A disk or upstream
        alert goes the way of the others (its own shape in each format: formats.py)."""
        if not self.channels:
            return
        alert = (change.data if isinstance(change, DiskChange | UpstreamChange)
                 else change.alert.to_dict())
        for channel in self.channels.values():
            channel.offer(change.kind, alert)

    def start(self) -> None:
        for channel in self.channels.values():
            channel.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop every worker (all asked first: a shutdown waits for one timeout, not N);
        ``timeout``: the most to wait for a request in flight, in all."""
        for channel in self.channels.values():
            channel.signal_stop()
        deadline = None if timeout is None else time.monotonic() + timeout
        for channel in self.channels.values():
            channel.stop(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def drain(self, timeout: float) -> int:
        """Deliver what is queued now (``group_wait`` cut short), for at most ``timeout``
        seconds in all; the alert changes still unsent (pending in :meth:`state`)."""
        deadline = time.monotonic() + timeout
        return sum(channel.drain(deadline) for channel in self.channels.values())

    def state(self) -> DeliveryState:
        """Plain data for the service's snapshot (see :mod:`retrywatch.delivery.state`)."""
        return DeliveryState({name: ch.state() for name, ch in self.channels.items()})

    def stats(self) -> dict[str, ChannelStats]:
        out = {}
        for name, ch in self.channels.items():
            s = ch.stats
            out[name] = ChannelStats(Counter(s.deliveries), s.attempts_failed, s.retries,
                                     Counter(s.drops), s.alerts_dropped, ch.queue_depth())
        return out

    def test(self, name: str, attempts: int = 1) -> Result:
        """``retrywatch notify-test``: a sample alert to one receiver, now, in this thread."""
        channel = self.channels.get(name)
        if channel is None:
            raise KeyError(f"no receiver named {name!r} (have: {', '.join(self.channels)})")
        return channel.deliver([Entry("fired", sample_alert())], attempts)


def sample_alert() -> AlertData:
    """An alert shaped like the API's, marked as a test."""
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    return {
        "id": "0000000000000000", "state": "firing", "source": "notify-test", "pid": 2454,
        "cid": 49447, "subsystem": "http", "client": "127.0.0.1", "server": "localhost",
        "request": "GET / HTTP/1.1", "host": "localhost",
        "upstreams": {"unix:/run/app.sock": 8000}, "failures": 8000,
        "first_seen": now, "last_seen": now, "duration_seconds": 2,
        "peak_per_second": 4000, "mean_per_second": 4000.0, "errnos": {"111": 8000},
        "kinds": {"connect_to_failed": 8000}, "distinct_requests": 1,
        "sample": "(test alert from retrywatch notify-test)", "failures_in_window": 8000,
        "fired_at": now, "resolved_at": None, "resolved_reason": None,
        "diagnosis": {"code": "synchronous_loop", "cause": "A test alert.",
                      "fix": "Nothing to fix: this is retrywatch notify-test.",
                      "docs": "docs/lint/synchronous_loop.md"},
        "confidence": "confirmed", "evidence": ["a test alert"], "configuration": None,
    }
