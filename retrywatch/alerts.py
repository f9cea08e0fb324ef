"""The alert lifecycle: one alert per runaway connection, fired, updated, resolved."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from retrywatch.connection import ConnState
from retrywatch.diagnosis import Diagnosis, diagnose

__all__ = ["Alert", "AlertChange", "ChangeKind", "alert_id"]

ChangeKind = Literal["fired", "updated", "resolved"]


def alert_id(source: str, pid: int, cid: int, first: int) -> str:
    """Stable id: the same connection and start give the same id, live or replayed."""
    raw = f"{source}\x1f{pid}\x1f{cid}\x1f{first}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(slots=True)
class Alert:
    id: str
    source: str
    pid: int
    cid: int
    fired_at: datetime
    state: Literal["firing", "resolved"] = "firing"
    resolved_at: datetime | None = None
    resolved_reason: str | None = None
    failures_in_window: int = 0
    diagnosis: Diagnosis | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fire(cls, st: ConnState, now: datetime) -> Alert:
        source, pid, cid = st.key
        alert = cls(alert_id(source, pid, cid, st.first), source, pid, cid, now)
        alert.refresh(st)
        return alert

    def refresh(self, st: ConnState) -> None:
        """Take the connection's current figures."""
        self.failures_in_window = st.window.count()
        self.diagnosis = diagnose(st)
        duration = st.last - st.first + 1
        self.snapshot = {
            "subsystem": st.subsystem,
            "client": st.client,
            "server": st.server,
            "request": next(iter(st.requests), None),
            "host": st.host,
            "upstreams": dict(sorted(st.upstreams.items(), key=lambda kv: -kv[1])),
            "failures": st.failures,
            "first_seen": st.first_seen.isoformat(),
            "last_seen": st.last_seen.isoformat(),
            "duration_seconds": duration,
            "peak_per_second": st.peak,
            "mean_per_second": round(st.failures / duration, 1),
            "errnos": dict(st.errnos),
            "kinds": dict(st.kinds),
            "distinct_requests": len(st.request_keys),
            "sample": st.sample,
        }

    def resolve(self, when: datetime, reason: str) -> None:
        self.state = "resolved"
        self.resolved_at = when
        self.resolved_reason = reason

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "source": self.source,
            "pid": self.pid,
            "cid": self.cid,
        }
        out.update(self.snapshot)
        out["failures_in_window"] = self.failures_in_window
        out["fired_at"] = self.fired_at.isoformat()
        out["resolved_at"] = self.resolved_at.isoformat() if self.resolved_at else None
        out["resolved_reason"] = self.resolved_reason
        out["diagnosis"] = self.diagnosis.to_dict() if self.diagnosis else None
        return out


@dataclass(slots=True, frozen=True)
class AlertChange:
    kind: ChangeKind
    alert: Alert
