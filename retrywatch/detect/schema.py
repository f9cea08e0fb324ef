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
from typing import Annotated, Any, Final, Literal, NotRequired, cast

from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict, TypeIs

__all__ = ["DISK_ALERTNAME", "UPSTREAM_ALERTNAME", "AlertData", "AnyAlertData",
           "ConfigurationData", "ConnectionData", "DiagnosisData", "DiskAlertData",
           "DiskConnectionData", "FileGrowthData", "ForecastData", "RunawayLinkData",
           "SnapshotData",
           "UpstreamAlertData", "UpstreamData", "is_disk_alert", "is_upstream_alert",
           "saved_alert", "saved_disk_alert", "saved_upstream_alert"]

AlertState = Literal["firing", "resolved"]
#: The name of a disk alert, in its own field and in Alertmanager (a runaway connection's
#: alert has no such field: it is the one the API's alert endpoints serve).
DISK_ALERTNAME: Final = "RetrywatchDiskFilling"
#: The name of an upstream peer's alert (many connections failing against one peer).
UPSTREAM_ALERTNAME: Final = "RetrywatchUpstreamFailing"
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



class ForecastData(TypedDict):
    """A filesystem holding followed logs: its free space and when they will fill it."""

    mount: Annotated[str, Field(description="Where the filesystem is mounted.")]
    free_bytes: Annotated[int, Field(description=(
        "Bytes a writer without root's reserve can still use (df's Avail)."))]
    size_bytes: int
    sources: Annotated[list[str], Field(description="The followed files on it.")]
    bytes_per_second: Annotated[float | None, Field(description=(
        "What those files grow by together over the last minute (null: not known yet)."))]
    lines_per_second: Annotated[float | None, Field(description=(
        "Lines read from them per second over the last minute."))]
    seconds_to_full: Annotated[float | None, Field(description=(
        "Free bytes over growth: when the filesystem is full at this rate (0: full now; "
        "null: not growing)."))]
    full_at: Annotated[str | None, Field(description="That moment (RFC 3339, UTC).")]


class FileGrowthData(TypedDict):
    """How fast one followed file grows (``GET /api/v1/sources``)."""

    bytes_per_second: Annotated[float | None, Field(description=(
        "Bytes the file grew by per second over the last minute, through rotations: what "
        "nginx wrote, whether or not it was read yet (null: not known yet)."))]
    lines_per_second: Annotated[float | None, Field(description=(
        "Lines read from it per second over the last minute."))]
    filesystem: Annotated[ForecastData | None, Field(description=(
        "Its filesystem and the forecast for it (null: statvfs could not read it)."))]


class DiskConnectionData(TypedDict):
    """A connection writing a share of a filling log's lines."""

    source: str
    pid: int
    cid: int
    rate_per_second: Annotated[float, Field(description=(
        "Its connect failures per second (one line each) in the detector's window."))]
    share: Annotated[float, Field(description=(
        "That rate over the lines per second of the files on the filesystem (0 to 1)."))]
    upstreams: Annotated[dict[str, int], Field(description=(
        "Its failures per upstream address, most first."))]


@with_config(ConfigDict(extra="forbid"))
class DiskAlertData(TypedDict):
    """A filesystem the followed logs will fill within the horizon (``disk_horizon``)."""

    alertname: Annotated[Literal["RetrywatchDiskFilling"], Field(description=(
        "What tells a disk alert from a runaway connection's among delivered alerts."))]
    id: Annotated[str, Field(description="Stable for one filesystem and the second it fired.")]
    state: AlertState
    mount: str
    horizon_seconds: Annotated[float, Field(description=(
        "It fired because the forecast was within this many seconds."))]
    forecast: Annotated[ForecastData, Field(description="The figures when last evaluated.")]
    connections: Annotated[list[DiskConnectionData], Field(description=(
        "The connections writing most of the lines, most first."))]
    upstreams: Annotated[dict[str, int], Field(description=(
        "Upstream addresses those connections fail against (failures in the window)."))]
    fired_at: str
    resolved_at: str | None
    resolved_reason: Annotated[str | None, Field(description=(
        "not_growing, forecast_past_horizon (past 1.5 horizons) or source_gone."))]
    diagnosis: DiagnosisData



class UpstreamData(TypedDict):
    """One upstream peer's connect failures in the last minute (``GET /api/v1/upstreams``)."""

    peer: Annotated[str, Field(description=(
        "The peer's address as nginx logs it (host:port, a unix socket, a group name)."))]
    failures: Annotated[int, Field(description="Connect failures in the window (60 s).")]
    failures_per_second: Annotated[float, Field(description="failures over the window.")]
    recent_per_second: Annotated[float, Field(description=(
        "Connect failures per second in the last 10 s of the window."))]
    failing_seconds: Annotated[int, Field(description=(
        "Seconds of the window with at least one failure."))]
    connections: Annotated[int, Field(description=(
        "Distinct connections (source, worker, connection id) that failed against it in "
        "about the window (a HyperLogLog estimate: within a few per cent; 70 s at most)."))]
    baseline_per_second: Annotated[float, Field(description=(
        "Its usual failures per second, learnt from the stream (an exponentially weighted "
        "mean over about five minutes; an outage moves it only slowly)."))]
    baseline_sd: Annotated[float, Field(description="The spread around that mean.")]
    seconds_learnt: Annotated[int, Field(description=(
        "Seconds the baseline has learnt (since the peer was first seen)."))]
    warm: Annotated[bool, Field(description=(
        "Past the warm-up (upstream_warmup seconds after retrywatch first saw the log, "
        "during which what fails is learnt as usual): only then can it alert."))]
    total: Annotated[int, Field(description="Connect failures since it was first seen.")]
    first_seen: Annotated[str, Field(description="Log time of its first failure (RFC 3339).")]
    last_seen: Annotated[str, Field(description="Log time of its last failure (RFC 3339).")]
    anomalous: Annotated[bool, Field(description=(
        "Failing far above its baseline for many connections now (the alert's condition)."))]


class RunawayLinkData(TypedDict):
    """A runaway connection's alert firing against the peer of an upstream alert."""

    id: Annotated[str, Field(description="The runaway alert's id (GET /api/v1/alerts/{id}).")]
    cid: Annotated[int, Field(description="Its nginx connection number.")]


@with_config(ConfigDict(extra="forbid"))
class UpstreamAlertData(TypedDict):
    """An upstream peer failing far above its baseline for many connections."""

    alertname: Annotated[Literal["RetrywatchUpstreamFailing"], Field(description=(
        "What tells an upstream alert from a runaway connection's among delivered alerts."))]
    id: Annotated[str, Field(description="Stable for one peer and the log second it fired.")]
    state: AlertState
    peer: str
    figures: Annotated[UpstreamData, Field(description="The figures when last evaluated.")]
    peak_failures: Annotated[int, Field(description=(
        "The most failures in a window seen while it fired."))]
    peak_connections: Annotated[int, Field(description=(
        "The most distinct failing connections in a window seen while it fired."))]
    runaway_alerts: Annotated[list[RunawayLinkData], Field(description=(
        "The runaway connections' alerts firing against this peer (linked: one dead peer, "
        "and the connections looping on it)."))]
    fired_at: Annotated[str, Field(description="Log time it fired (RFC 3339).")]
    resolved_at: str | None
    resolved_reason: Annotated[str | None, Field(description=(
        "back_to_baseline (its last 10 s within the baseline), peer_gone (no longer among "
        "the peers counted) or disabled."))]
    diagnosis: DiagnosisData


#: What an alert saved by an older version may lack (the delivery state keeps alerts as
#: they were sent): the value it would have had.
_SAVED_DEFAULTS: dict[str, object] = {
    "subsystem": None, "client": None, "server": None, "request": None, "host": None,
    "upstreams": {}, "failures": 0, "duration_seconds": 0, "peak_per_second": 0,
    "mean_per_second": 0.0, "errnos": {}, "kinds": {}, "distinct_requests": 0, "sample": "",
    "failures_in_window": 0, "resolved_at": None, "resolved_reason": None,
    "diagnosis": None, "confidence": "suspected", "evidence": [], "configuration": None,
}


#: What the deliveries carry: a runaway connection's alert, a disk alert or an upstream's.
AnyAlertData = AlertData | DiskAlertData | UpstreamAlertData


def is_disk_alert(alert: AnyAlertData) -> TypeIs[DiskAlertData]:
    return alert.get("alertname") == DISK_ALERTNAME


def is_upstream_alert(alert: AnyAlertData) -> TypeIs[UpstreamAlertData]:
    return alert.get("alertname") == UPSTREAM_ALERTNAME


def saved_alert(data: dict[str, object]) -> AnyAlertData:
    """An alert read back from saved JSON (the delivery state): the fields of today's
    shape, those an older version did not write filled in, any other dropped; checked
    (pydantic ValidationError, a ValueError, when it is not an alert at all). A disk or
    upstream alert (its ``alertname``) is checked as one, whole."""
    if data.get("alertname") == DISK_ALERTNAME:
        return saved_disk_alert(data)
    if data.get("alertname") == UPSTREAM_ALERTNAME:
        return saved_upstream_alert(data)
    return cast(AlertData, _adapter(AlertData).validate_python(
        _SAVED_DEFAULTS | _known(AlertData, data)))



def saved_disk_alert(data: object) -> DiskAlertData:
    """A disk alert read back from a checkpoint or the delivery state: the fields of
    today's shape (any other dropped: a later version's), checked (pydantic
    ValidationError, a ValueError)."""
    return cast(DiskAlertData, _saved(DiskAlertData, data, "a disk alert"))


def saved_upstream_alert(data: object) -> UpstreamAlertData:
    """An upstream alert read back, as :func:`saved_disk_alert`."""
    return cast(UpstreamAlertData, _saved(UpstreamAlertData, data, "an upstream alert"))


def _saved(shape: Any, data: object, what: str) -> object:
    """``data`` as the TypedDict ``shape`` (its fields only), checked."""
    if not isinstance(data, dict):
        raise ValueError(f"not {what}: {type(data).__name__}")
    return _adapter(shape).validate_python(_known(shape, data))


@functools.cache
def _adapter(shape: Any) -> TypeAdapter[Any]:
    return TypeAdapter(shape)


def _known(shape: Any, data: dict[str, object]) -> dict[str, object]:
    """The fields of ``data`` that the TypedDict ``shape`` has (a later version's others
    dropped)."""
    keys = shape.__required_keys__ | shape.__optional_keys__
    return {k: v for k, v in data.items() if k in keys}

