"""The records that flow between stages: parsed events and unparsed lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = ["CONNECT_FAILURE_KINDS", "Event", "Kind", "Subsystem", "Unparsed"]

Kind = Literal[
    "connect_failed", "connect_to_failed", "upstream_timed_out", "no_live_upstreams", "other"
]
Subsystem = Literal["http", "stream", "mail"]

#: Kinds that are always an upstream connect failure (a timeout is one only
#: while connecting; see :attr:`Event.connect_failure`).
CONNECT_FAILURE_KINDS = frozenset({"connect_failed", "connect_to_failed", "no_live_upstreams"})


@dataclass(slots=True)
class Event:
    """One nginx error-log event (a line, with its continuation lines joined)."""

    time: datetime  # aware: the line's local time in the configured zone
    ts: int  # the same instant as POSIX seconds
    level: str
    pid: int
    tid: int
    cid: int | None
    message: str
    line: str
    source: str = ""
    context: str | None = None
    client: str | None = None
    server: str | None = None
    request: str | None = None
    subrequest: str | None = None
    upstream: str | None = None
    host: str | None = None
    referrer: str | None = None
    login: str | None = None
    peer: str | None = None  # the upstream address (or group name) the failure is about
    kind: Kind | None = None
    errno: int | None = None
    errno_text: str | None = None
    subsystem: Subsystem | None = None
    lua_context: str | None = None
    bytes_from_client: int | None = None
    bytes_to_client: int | None = None
    bytes_from_upstream: int | None = None
    bytes_to_upstream: int | None = None
    connect_failure: bool = False
    ended: bool = False
    lines: int = 1  # physical lines this event spans

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``time`` in ISO 8601 with its offset); absent fields are left out."""
        out: dict[str, Any] = {"time": self.time.isoformat()}
        for name in _OUTPUT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


_OUTPUT_FIELDS = [
    name
    for name in Event.__dataclass_fields__
    if name not in {"time", "ts", "lines"}
]


@dataclass(slots=True, frozen=True)
class Unparsed:
    """A line that is not an nginx error event, with the reason."""

    reason: str
    line: str
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"unparsed": True, "reason": self.reason, "line": self.line}
        if self.source:
            out["source"] = self.source
        return out
