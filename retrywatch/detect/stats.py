"""Counters of what each source read: the core reports here, sinks read from here."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SourceStats"]


@dataclass(slots=True)
class SourceStats:
    """Per source. Every line read is either parsed (part of an event) or unparsed."""

    name: str
    bytes_read: int = 0
    lines_read: int = 0
    lines_parsed: int = 0
    events: int = 0
    unparsed: Counter[str] = field(default_factory=Counter)  # reason -> lines

    @classmethod
    def of(cls, name: str, d: dict[str, Any]) -> SourceStats:
        """From the core's counters of one source."""
        return cls(name, d["bytes_read"], d["lines_read"], d["lines_parsed"], d["events"],
                   Counter(d["unparsed"]))

    @property
    def lines_unparsed(self) -> int:
        return sum(self.unparsed.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "bytes_read": self.bytes_read,
            "lines_read": self.lines_read,
            "lines_parsed": self.lines_parsed,
            "lines_unparsed": self.lines_unparsed,
            "unparsed_by_reason": dict(self.unparsed),
            "events": self.events,
        }
