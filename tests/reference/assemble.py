"""Assembling events from lines: a line that does not start with an nginx timestamp
continues the event before it (``FastCGI sent in stderr:`` dumps, debug header dumps).

The last event is held back until the next event starts (or :meth:`flush`), since its
continuation lines may arrive in the next chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reference.formats import event_start

__all__ = ["Assembled", "EventAssembler"]

MAX_CONTINUATION_LINES = 256


@dataclass(slots=True)
class Assembled:
    events: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # lines with no event to continue


class EventAssembler:
    def __init__(self) -> None:
        self._start = event_start()
        self._pending: list[str] = []
        self._blanks: list[str] = []  # blank lines after the held event, not yet placed

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def feed(self, lines: list[str]) -> Assembled:
        out = Assembled()
        pending = self._pending
        blanks = self._blanks
        start = self._start
        for line in lines:
            if start(line) is not None:
                if pending:
                    out.events.append("\n".join(pending))
                out.orphans.extend(blanks)
                blanks = []
                pending = [line]
            elif not line.strip() and pending:
                blanks.append(line)  # joined only if a continuation line follows
            elif pending and len(pending) + len(blanks) <= MAX_CONTINUATION_LINES:
                pending.extend(blanks)
                blanks = []
                pending.append(line)
            else:
                out.orphans.extend(blanks)
                blanks = []
                out.orphans.append(line)
        self._pending = pending
        self._blanks = blanks
        return out

    def release(self, last: str) -> tuple[str | None, int]:
        """Fast path (every line of a chunk starts an event): hold ``last`` back; return
        the event held so far and how many blank lines after it are orphans."""
        held = "\n".join(self._pending) if self._pending else None
        blanks = len(self._blanks)
        self._pending = [last]
        self._blanks = []
        return held, blanks

    def flush(self) -> Assembled:
        out = Assembled(orphans=self._blanks)
        self._blanks = []
        if self._pending:
            out.events.append("\n".join(self._pending))
            self._pending = []
        return out
