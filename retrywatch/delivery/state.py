"""Delivery state as plain data, for the service's SQLite snapshot.

Per receiver: when each firing alert was last notified (wall-clock seconds), the firing
alerts themselves (for repeats and Alertmanager re-sends), and the changes accepted but
not delivered yet (a pending resolve among them), each with its key. After a restart an
alert already notified is not notified again, and what was pending is sent, with the
same delivery id as before the restart when it goes out as the same message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from retrywatch.delivery.formats import Entry
from retrywatch.detect.schema import AnyAlertData, saved_alert

__all__ = ["DeliveryState", "ReceiverState"]

STATE_VERSION = 1


@dataclass(slots=True)
class ReceiverState:
    notified: dict[str, float] = field(default_factory=dict)
    firing: dict[str, AnyAlertData] = field(default_factory=dict)
    pending: list[Entry] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"notified": dict(self.notified), "firing": dict(self.firing),
                "pending": [e.to_dict() for e in self.pending]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReceiverState:
        return cls(notified={k: float(v) for k, v in data.get("notified", {}).items()},
                   firing={k: saved_alert(v) for k, v in data.get("firing", {}).items()},
                   pending=[_entry(p) for p in data.get("pending", [])])


def _entry(data: dict[str, Any]) -> Entry:
    """A pending change with its key (saved before keys existed: a new one)."""
    key = data.get("key")
    alert = saved_alert(data["alert"])
    return Entry(data["kind"], alert, str(key)) if key else Entry(data["kind"], alert)


@dataclass(slots=True)
class DeliveryState:
    receivers: dict[str, ReceiverState] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION,
                "receivers": {k: v.to_dict() for k, v in self.receivers.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeliveryState:
        if data.get("version") != STATE_VERSION:
            return cls()
        return cls({k: ReceiverState.from_dict(v)
                    for k, v in data.get("receivers", {}).items()})

    def dumps(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), default=str).encode()

    @classmethod
    def loads(cls, raw: bytes | str) -> DeliveryState:
        return cls.from_dict(json.loads(raw))
