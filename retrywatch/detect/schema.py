"""The alert and the connection as every consumer sees them: one declaration.

An alert leaves the engine as JSON data (:meth:`Alert.to_dict`): the REST API and its
OpenAPI schema, the event stream, the webhook bodies, the Alertmanager labels, the
metrics and ``analyze``'s tables all read it. These ``TypedDict`` classes are that shape,
declared once: mypy checks every key read and written against them, pydantic makes the
API's schema (and its tests' validation) from them, and ``analyze`` takes its columns from
them. They are dicts, not models, on purpose: an alert is serialized once per change by
orjson straight from the dict (thousands a second in a storm), and a model per alert
would add a copy and a validation on that path for nothing.

(``typing_extensions.TypedDict``: pydantic reads field descriptions from it on Python
3.11; ``typing.TypedDict`` gains that only in 3.12. No ``from __future__ import
annotations`` here: with string annotations the class cannot see ``NotRequired`` and
lists ``configuration`` among ``__required_keys__``.)
"""

import functools
from typing import Annotated, Literal, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict

__all__ = ["AlertData", "ConfigurationData", "ConnectionData", "DiagnosisData",
           "SnapshotData", "saved_alert"]

AlertState = Literal["firing", "resolved"]
Confidence = Literal["confirmed", "suspected"]


class DiagnosisData(TypedDict):
    """Why the connection keeps failing and what to change (detect/diagnosis.py)."""

    code: Annotated[str, Field(description="The failure mode, e.g. http_retry_loop.")]
    cause: Annotated[str, Field(description="What the log (or the configuration) shows.")]
    fix: Annotated[str, Field(description="What to change.")]
    docs: Annotated[str, Field(description=(
        "The page on this failure mode, relative to the project's root "
        "(`retrywatch lint --explain CODE` prints it)."))]


class ConfigurationData(TypedDict):
    """What the nginx configuration given (--nginx-config) allows the alert's route."""

    loop: Annotated[bool, Field(description="The route can retry without end.")]
    bound: Annotated[int | None, Field(description="Tries a request makes at most, if bounded.")]
    why: str


class SnapshotData(TypedDict):
    """The connection's figures when the alert last changed (Alert.snapshot)."""

    subsystem: Annotated[str | None, Field(description="http or stream.")]
    client: str | None
    server: str | None
    request: Annotated[str | None, Field(description=(
        "The first request seen (query values replaced unless --keep-query-strings)."))]
    host: str | None
    upstreams: Annotated[dict[str, int], Field(description=(
        "Failures per upstream address, most first."))]
    failures: Annotated[int, Field(description="Failures since the connection was first seen.")]
    first_seen: Annotated[str, Field(description="Log time of the first failure (RFC 3339).")]
    last_seen: Annotated[str, Field(description="Log time of the last failure (RFC 3339).")]
    duration_seconds: int
    peak_per_second: Annotated[int, Field(description="Most failures in one log second.")]
    mean_per_second: float
    errnos: Annotated[dict[str, int], Field(description="Failures per errno (111: refused).")]
    kinds: Annotated[dict[str, int], Field(description="Failures per line shape.")]
    distinct_requests: Annotated[int, Field(description=(
        "Distinct failing requests seen (exact up to 256)."))]
    sample: Annotated[str, Field(description="One failure line, as logged.")]


@with_config(ConfigDict(extra="forbid"))
class AlertData(SnapshotData):
    """One runaway connection: what the REST API, the events and the webhooks carry."""

    id: Annotated[str, Field(description=(
        "Stable: the same connection and start give the same id, live or replayed."))]
    state: AlertState
    source: Annotated[str, Field(description="The log file or syslog listener.")]
    pid: Annotated[int, Field(description="The nginx worker's process id.")]
    cid: Annotated[int, Field(description="nginx's connection number (`*N` in the log).")]
    failures_in_window: Annotated[int, Field(description="Failures in the sliding window.")]
    fired_at: Annotated[str, Field(description="When the alert fired (RFC 3339).")]
    resolved_at: str | None
    resolved_reason: str | None
    diagnosis: DiagnosisData | None
    confidence: Annotated[Confidence, Field(description=(
        "confirmed: the log (or the configuration given) shows one request or session "
        "retrying without end; suspected: the count crossed the threshold but many bounded "
        "requests would look the same. Only confirmed alerts page."))]
    evidence: Annotated[list[str], Field(description="What the confidence rests on, plainly.")]
    configuration: NotRequired[ConfigurationData | None]


class ConnectionData(TypedDict):
    """A tracked connection now (``GET /api/v1/connections``)."""

    source: str
    pid: int
    cid: int
    failures_in_window: int
    rate_per_second: Annotated[float, Field(description="Failures per second in the window.")]
    failures: int
    upstreams: dict[str, int]
    client: str | None
    server: str | None
    first_seen: str
    last_seen: str



#: What an alert saved by an older version may lack (the delivery state keeps alerts as
#: they were sent): the value it would have had.
_SAVED_DEFAULTS: dict[str, object] = {
    "subsystem": None, "client": None, "server": None, "request": None, "host": None,
    "upstreams": {}, "failures": 0, "duration_seconds": 0, "peak_per_second": 0,
    "mean_per_second": 0.0, "errnos": {}, "kinds": {}, "distinct_requests": 0, "sample": "",
    "failures_in_window": 0, "resolved_at": None, "resolved_reason": None,
    "diagnosis": None, "confidence": "suspected", "evidence": [], "configuration": None,
}


def saved_alert(data: dict[str, object]) -> AlertData:
    """An alert read back from saved JSON (the delivery state): the fields of today's
    shape, those an older version did not write filled in, any other dropped; checked
    (pydantic ValidationError, a ValueError, when it is not an alert at all)."""
    keys = AlertData.__required_keys__ | AlertData.__optional_keys__
    known = {k: v for k, v in data.items() if k in keys}
    return _alert_adapter().validate_python(_SAVED_DEFAULTS | known)


@functools.cache
def _alert_adapter() -> TypeAdapter[AlertData]:
    return TypeAdapter(AlertData)
