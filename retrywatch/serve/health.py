"""How the live service itself fares: checkpoints, the state database, the ingest loop.

The service writes these figures; ``/healthz``, ``/readyz``, ``/api/v1/sources`` and
``/metrics`` read them (the engine carries one :class:`ServiceHealth`, so whatever serves
the engine serves them too). Plain attributes, each written by one thread: a reader sees
each value whole, which is all a probe or a scrape needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ServiceHealth"]


@dataclass(slots=True)
class ServiceHealth:
    #: A state directory is used (``--state-dir``): checkpoints are written.
    checkpoints: bool = False
    #: Checkpoints that could not be written (disk full, read-only, I/O error).
    checkpoint_failures: int = 0
    #: Wall-clock time of the last checkpoint written (POSIX seconds); None: none yet.
    checkpoint_last_success: float | None = None
    #: Why the last checkpoint failed, while checkpoints fail (None once one is written).
    checkpoint_error: str | None = None
    #: State databases found unreadable at start and moved aside (``.corrupt-TIMESTAMP``).
    state_moved_aside: int = 0
    #: Seconds the ingest loop may go without a turn before ``/healthz`` fails (None: never).
    stall_timeout: float | None = None
    #: Monotonic time of the ingest loop's last turn (None: it has not started).
    ingest_at: float | None = None
    #: A stop was asked (SIGTERM, SIGINT): not ready any more.
    stopping: bool = False
    #: HTTP connections the server closed, by reason (serve/http.py; None: not serving).
    http_closed: Callable[[], dict[str, int]] | None = field(default=None, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def advanced(self) -> None:
        """The ingest loop made a turn."""
        self.ingest_at = self.clock()

    def stalled_for(self) -> float | None:
        """Seconds since the ingest loop's last turn, when that is over the stall
        timeout (a loop stuck in a read, a lock, a bug); None while it is alive."""
        if self.stall_timeout is None or self.ingest_at is None or self.stopping:
            return None
        idle = self.clock() - self.ingest_at
        return idle if idle > self.stall_timeout else None

    def problems(self) -> list[str]:
        """What makes the service not ready, beyond its sources."""
        out = []
        if self.stopping:
            out.append("stopping")
        if self.checkpoint_error is not None:
            out.append(f"checkpoints failing ({self.checkpoint_failures} so far): "
                       f"{self.checkpoint_error}")
        stalled = self.stalled_for()
        if stalled is not None:
            out.append(f"ingest loop stalled for {stalled:.0f} s")
        return out
