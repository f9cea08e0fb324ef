"""The alert lifecycle: one alert per runaway connection, fired, updated, resolved."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast

import orjson

from retrywatch.detect.core import Conn
from retrywatch.detect.diagnosis import Diagnosis, diagnose
from retrywatch.detect.judge import Judgement, judge
from retrywatch.detect.schema import AlertData, ConfigurationData, SnapshotData

__all__ = ["REDACTED", "Alert", "AlertChange", "ChangeKind", "alert_id", "redact_query"]

#: ``confirmed``: a suspected alert's evidence became strong (it pages from now on)
ChangeKind = Literal["fired", "updated", "confirmed", "resolved"]


#: A query string: from ``?`` to a space, a quote or a fragment.
_QUERY = re.compile(r"\?([^\s\"#]+)")
#: What a redacted query value reads as.
REDACTED = "…"


def redact_query(text: str) -> str:
    """Every query string in ``text`` with its values replaced and its names kept:
    ``GET /a?token=secret&b=1 HTTP/1.1`` → ``GET /a?token=…&b=… HTTP/1.1``."""
    if "?" not in text:
        return text
    return _QUERY.sub(lambda m: "?" + "&".join(
        p.partition("=")[0] + "=" + REDACTED if "=" in p else p
        for p in m.group(1).split("&")), text)


def _text(value: Any, redact: bool) -> Any:
    return redact_query(value) if redact and isinstance(value, str) else value


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
    snapshot: SnapshotData = field(default_factory=lambda: cast(SnapshotData, {}))
    #: "confirmed" or "suspected" (judge.py); a confirmed alert stays confirmed
    confidence: Literal["confirmed", "suspected"] = "suspected"
    evidence: dict[str, Any] = field(default_factory=dict)
    #: :meth:`to_dict` as JSON, made once per change (cleared by every change)
    _json: bytes | None = field(default=None, repr=False, compare=False)

    @classmethod
    def fire(cls, st: Conn, now: datetime, judgement: Judgement | None = None, *,
             redact: bool = False) -> Alert:
        source, pid, cid = st.key
        alert = cls(alert_id(source, pid, cid, st.first), source, pid, cid, now)
        alert.refresh(st, judgement, redact=redact)
        return alert

    @property
    def confirmed(self) -> bool:
        return self.confidence == "confirmed"

    def refresh(self, st: Conn, judgement: Judgement | None = None, *,
                redact: bool = False) -> bool:
        """Take the connection's current figures; True when it became confirmed now.
        ``redact``: query values of the request and of the sample line (its request,
        upstream URL and referrer) replaced (:func:`redact_query`)."""
        judgement = judgement or judge(st)
        self._json = None
        became = judgement.confidence == "confirmed" and not self.confirmed
        if judgement.confidence == "confirmed" or not self.confirmed:
            self.confidence = "confirmed" if judgement.confidence == "confirmed" else "suspected"
            self.evidence = judgement.to_dict()
        self.failures_in_window = st.failures_in_window
        self.diagnosis = diagnose(st, judgement)
        duration = st.last - st.first + 1
        self.snapshot = {
            "subsystem": st.subsystem,
            "client": st.client,
            "server": st.server,
            "request": _text(next(iter(st.requests), None), redact),
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
            "distinct_requests": st.distinct_requests,
            "sample": _text(st.sample, redact),
        }
        return became

    def redact(self) -> None:
        """Query values of the request and sample replaced (an alert kept from before)."""
        snap = self.snapshot
        if any(isinstance(v, str) and "?" in v for v in (snap.get("request"), snap.get("sample"))):
            self._json = None
            self.snapshot = {**snap, "request": _text(snap["request"], True),
                             "sample": _text(snap["sample"], True)}

    def resolve(self, when: datetime, reason: str) -> None:
        self._json = None
        self.state = "resolved"
        self.resolved_at = when
        self.resolved_reason = reason

    def to_state(self) -> dict[str, Any]:
        """Plain JSON data for the service's checkpoint (:meth:`from_state` reads it)."""
        return {
            "id": self.id, "source": self.source, "pid": self.pid, "cid": self.cid,
            "fired_at": self.fired_at.isoformat(), "state": self.state,
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "resolved_reason": self.resolved_reason,
            "failures_in_window": self.failures_in_window,
            "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None,
            "snapshot": self.snapshot,
            "confidence": self.confidence,
            "evidence": self.evidence,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> Alert:
        diagnosis = d.get("diagnosis")
        return cls(
            id=str(d["id"]), source=str(d["source"]), pid=int(d["pid"]), cid=int(d["cid"]),
            fired_at=datetime.fromisoformat(d["fired_at"]),
            state="resolved" if d.get("state") == "resolved" else "firing",
            resolved_at=datetime.fromisoformat(d["resolved_at"]) if d.get("resolved_at") else None,
            resolved_reason=d.get("resolved_reason"),
            failures_in_window=int(d.get("failures_in_window", 0)),
            diagnosis=Diagnosis(str(diagnosis["code"]), str(diagnosis["cause"]),
                                str(diagnosis["fix"])) if diagnosis else None,
            snapshot=cast(SnapshotData, dict(d.get("snapshot") or {})),
            # an alert saved before confidence existed fired on the count alone
            confidence="confirmed" if d.get("confidence") == "confirmed" else "suspected",
            evidence=dict(d.get("evidence") or {}),
        )

    def to_json(self) -> bytes:
        """:meth:`to_dict` as JSON, made once per change: a resolved alert, never again.
        The caller holds the engine's lock (a change clears it: nothing stale is kept)."""
        if self._json is None:
            self._json = orjson.dumps(self.to_dict())
        return self._json

    @property
    def json_made(self) -> bytes | None:
        """What :meth:`to_json` made, if anything (for a reader without the lock)."""
        return self._json

    def to_dict(self) -> AlertData:
        """The alert as the API, the events and the deliveries carry it (detect/schema.py)."""
        return {
            "id": self.id,
            "state": self.state,
            "source": self.source,
            "pid": self.pid,
            "cid": self.cid,
            **self.snapshot,
            "failures_in_window": self.failures_in_window,
            "fired_at": self.fired_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "resolved_reason": self.resolved_reason,
            "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None,
            "confidence": self.confidence,
            "evidence": list(self.evidence.get("evidence", [])),
            "configuration": cast(ConfigurationData | None, self.evidence.get("configuration")),
        }


@dataclass(slots=True, frozen=True)
class AlertChange:
    kind: ChangeKind
    alert: Alert
