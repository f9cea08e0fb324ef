"""The three payloads: retrywatch's signed JSON (schema v1), Alertmanager v2, Slack.

Each builder takes the message's entries (an alert change: ``kind`` and the API's alert
object) and returns the request body and headers; nothing here does I/O.

Every message has a delivery id (:func:`delivery_id`), made from the receiver's name and
the keys of its entries: each entry gets its key once, when the change is queued, and
keeps it in the saved delivery state, so every attempt of a message, and the same
message sent again after a restart, carry the same id (in ``X-Retrywatch-Delivery``
and, for ``json``, in the body).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from retrywatch.delivery.receivers import Receiver
from retrywatch.detect.disk import human_bytes, human_seconds
from retrywatch.detect.schema import (
    DISK_ALERTNAME,
    UPSTREAM_ALERTNAME,
    AlertData,
    AnyAlertData,
    DiskAlertData,
    UpstreamAlertData,
    is_disk_alert,
    is_upstream_alert,
)

__all__ = [
    "ALERTNAME",
    "DELIVERY_HEADER",
    "SCHEMA_VERSION",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Entry",
    "alertmanager_alert",
    "build",
    "delivery_id",
    "json_body",
    "runbook_url",
    "sign",
    "slack_message",
]

SCHEMA_VERSION = "1"
TIMESTAMP_HEADER = "X-Retrywatch-Timestamp"
SIGNATURE_HEADER = "X-Retrywatch-Signature"
DELIVERY_HEADER = "X-Retrywatch-Delivery"
#: The pushed alert: one per connection. The Prometheus rule that counts such
#: connections per instance is ``RetrywatchRunawayConnections`` (dashboards/README.md:
#: "Rules and pushed alerts: which to use").
ALERTNAME = "RetrywatchRunawayConnection"
#: Delivery ids are UUIDs in this namespace (uuid5 of receiver and entry keys).
_DELIVERY_NAMESPACE = uuid.UUID("6f1d3c52-3b0e-4c8e-9a59-4f7e0d1b2a10")
#: Slack shows at most 50 blocks; a storm lists this many alerts and counts the rest.
SLACK_LISTED = 10


@dataclass(slots=True)
class Entry:
    """One alert in a message: what happened to it (fired, updated, resolved, repeat)."""

    kind: str
    alert: AnyAlertData
    #: This change's own id, made once when it is queued and saved with it.
    key: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def id(self) -> str:
        return self.alert["id"]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "alert": self.alert, "key": self.key}


def delivery_id(receiver: str, entries: Sequence[Entry]) -> str:
    """The id of one message: the same for the same receiver and entries, whatever the
    attempt (and across a restart, the entries' keys being saved)."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE,
                          "\n".join([receiver, *(e.key for e in entries)])))


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``timestamp``, ``.``, ``body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _status(entries: Sequence[Entry]) -> str:
    return "resolved" if all(e.alert["state"] == "resolved" for e in entries) else "firing"


def json_body(receiver: str, entries: Sequence[Entry], now: datetime,
              delivery: str | None = None) -> bytes:
    payload = {
        "version": SCHEMA_VERSION,
        "delivery_id": delivery or delivery_id(receiver, entries),
        "receiver": receiver,
        "status": _status(entries),
        "sent_at": now.isoformat(),
        "alerts": [{**e.alert, "change": e.kind} for e in entries],
    }
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


# -- Alertmanager --------------------------------------------------------------------------
def _iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _severity(alert: AlertData) -> str:
    """Only a confirmed loop pages; a suspected one (a busy connection to a dead upstream
    looks the same in the log) is a warning."""
    return "critical" if alert["confidence"] == "confirmed" else "warning"


def _upstreams(alert: AlertData, limit: int = 3) -> str:
    ups = alert["upstreams"]
    text = ", ".join(f"{addr} ({n:,})" for addr, n in list(ups.items())[:limit])
    return text + (f" and {len(ups) - limit} more" if len(ups) > limit else "")


def summary(alert: AlertData) -> str:
    if alert["confidence"] == "confirmed":
        return (f"nginx connection *{alert['cid']} (pid {alert['pid']}) on {alert['source']} "
                f"is in a connect() retry loop")
    return (f"nginx connection *{alert['cid']} (pid {alert['pid']}) on {alert['source']} "
            f"keeps failing upstream connects (suspected retry loop)")


def description(alert: AlertData) -> str:
    diagnosis = alert["diagnosis"]
    return (f"cid={alert['cid']} pid={alert['pid']} source={alert['source']} "
            f"subsystem={alert['subsystem']}\n"
            f"upstreams: {_upstreams(alert)}\n"
            f"failures: {alert['failures']:,}, peak {alert['peak_per_second']:,}/s, "
            f"since {alert['first_seen']}\n"
            f"confidence: {alert['confidence']}: {'; '.join(alert['evidence'])}\n"
            f"diagnosis: {diagnosis['code'] if diagnosis else '?'}: "
            f"{diagnosis['cause'] if diagnosis else ''}\n"
            f"fix: {diagnosis['fix'] if diagnosis else ''}")


def runbook_url(base: str, alert: AnyAlertData) -> str:
    """``base`` with the anchor of the alert's diagnosis in docs/runbook.md (a section per
    diagnosis code), or of the alert itself without one; ``base`` with a ``#`` already
    is taken as it is (one page of your own for every alert)."""
    if "#" in base:
        return base
    code = alert["diagnosis"]["code"] if alert["diagnosis"] else ""
    name = (DISK_ALERTNAME if is_disk_alert(alert) else
            UPSTREAM_ALERTNAME if is_upstream_alert(alert) else ALERTNAME)
    anchor = code if re.fullmatch(r"[a-z][a-z0-9_]*", code) else name.lower()
    return f"{base}#{anchor}"


def disk_summary(alert: DiskAlertData) -> str:
    f = alert["forecast"]
    left = f["seconds_to_full"]
    if alert["state"] == "resolved":
        return f"nginx's logs no longer fill {alert['mount']} ({alert['resolved_reason']})"
    if left == 0:
        return f"nginx's logs have filled {alert['mount']}"
    when = f" in about {human_seconds(left)}" if left is not None else ""
    return f"nginx's logs will fill {alert['mount']}{when}"


def disk_description(alert: DiskAlertData) -> str:
    f, diagnosis = alert["forecast"], alert["diagnosis"]
    writers = ", ".join(f"*{c['cid']} (pid {c['pid']}) {c['share']:.0%}"
                        for c in alert["connections"][:3]) or "none tracked"
    ups = ", ".join(list(alert["upstreams"])[:3]) or "none"
    return (f"mount={alert['mount']} free={human_bytes(f['free_bytes'])} "
            f"of {human_bytes(f['size_bytes'])}, growth "
            f"{human_bytes(f['bytes_per_second'] or 0)}/s\n"
            f"files: {', '.join(f['sources'][:5])}\n"
            f"writing: {writers}; upstreams: {ups}\n"
            f"diagnosis: {diagnosis['code']}: {diagnosis['cause']}\n"
            f"fix: {diagnosis['fix']}")


def upstream_summary(alert: UpstreamAlertData) -> str:
    f = alert["figures"]
    if alert["state"] == "resolved":
        return f"upstream {alert['peer']} no longer fails ({alert['resolved_reason']})"
    return (f"upstream {alert['peer']} failed {f['failures']:,} connects from "
            f"{f['connections']:,} connections in the last minute")


def upstream_description(alert: UpstreamAlertData) -> str:
    f, diagnosis = alert["figures"], alert["diagnosis"]
    linked = ", ".join(f"{r['id']} (*{r['cid']})" for r in alert["runaway_alerts"][:5]) or "none"
    return (f"peer={alert['peer']} {f['failures_per_second']:,.1f} failures/s in "
            f"{f['failing_seconds']} of 60 s, baseline {f['baseline_per_second']:,.2f}/s\n"
            f"runaway alerts on it: {linked}\n"
            f"diagnosis: {diagnosis['code']}: {diagnosis['cause']}\n"
            f"fix: {diagnosis['fix']}")


def _envelope(alert: AnyAlertData, labels: dict[str, str], annotations: dict[str, str],
              generator: str, now: datetime) -> dict[str, Any]:
    """An alert of Alertmanager's API: starts when it fired (log time ahead of ours, a
    skew, must not delay it), ends only on resolve."""
    starts = min(_iso(alert["fired_at"]) or now, now)
    out: dict[str, Any] = {"labels": labels, "annotations": annotations,
                           "startsAt": _rfc3339(starts), "generatorURL": generator}
    if alert["state"] == "resolved":
        ends = _iso(alert["resolved_at"]) or now
        out["endsAt"] = _rfc3339(max(starts, min(ends, now)))
    return out


def alertmanager_alert(alert: AnyAlertData, receiver: Receiver, instance: str,
                       now: datetime) -> dict[str, Any]:
    """One alert of ``POST /api/v2/alerts``. Labels have bounded values, except
    ``alert_id``: Alertmanager identifies an alert by its label set, and without it two
    runaway connections of one source would be one alert (one resolve ending both). A
    disk alert is ``RetrywatchDiskFilling``, labelled with its mount point; an upstream's
    ``RetrywatchUpstreamFailing``, labelled with its peer."""
    base = receiver.external_url.rstrip("/")
    if is_disk_alert(alert):
        return _envelope(alert, {
            "alertname": DISK_ALERTNAME, "severity": "critical", "instance": instance,
            "mount": alert["mount"], "alert_id": alert["id"],
        }, {
            "summary": disk_summary(alert),
            "description": disk_description(alert),
            "runbook_url": runbook_url(receiver.runbook_url, alert),
        }, f"{base}/api/v1/disk", now)
    if is_upstream_alert(alert):
        return _envelope(alert, {
            "alertname": UPSTREAM_ALERTNAME, "severity": "critical", "instance": instance,
            "peer": alert["peer"], "alert_id": alert["id"],
        }, {
            "summary": upstream_summary(alert),
            "description": upstream_description(alert),
            "runbook_url": runbook_url(receiver.runbook_url, alert),
        }, f"{base}/api/v1/upstreams", now)
    return _envelope(alert, {
        "alertname": ALERTNAME,
        "severity": _severity(alert),
        "instance": instance,
        "source": alert["source"],
        "subsystem": alert["subsystem"] or "unknown",
        "confidence": alert["confidence"],
        "alert_id": alert["id"],
    }, {
        "summary": summary(alert),
        "description": description(alert),
        "runbook_url": runbook_url(receiver.runbook_url, alert),
        "cid": str(alert["cid"]),
        "pid": str(alert["pid"]),
    }, f"{base}/api/v1/alerts/{alert['id']}", now)


# -- Slack ---------------------------------------------------------------------------------
def _slack_disk_line(a: DiskAlertData) -> str:
    icon = ":white_check_mark:" if a["state"] == "resolved" else ":floppy_disk:"
    f = a["forecast"]
    head = f"{icon} *{disk_summary(a)}*"
    figures = (f"{human_bytes(f['free_bytes'])} free of {human_bytes(f['size_bytes'])}, "
               f"growing {human_bytes(f['bytes_per_second'] or 0)}/s")
    writers = "".join(f"\nwriting: *cid {c['cid']}* (pid {c['pid']}), {c['share']:.0%} of "
                      f"the lines" for c in a["connections"][:1])
    return f"{head}\n{figures}{writers}\n*Fix:* {a['diagnosis']['fix']}"


def _slack_upstream_line(a: UpstreamAlertData) -> str:
    icon = ":white_check_mark:" if a["state"] == "resolved" else ":no_entry:"
    f = a["figures"]
    figures = (f"{f['failures_per_second']:,.1f} failures/s in {f['failing_seconds']} of the "
               f"last 60 s, baseline {f['baseline_per_second']:,.2f}/s")
    linked = (f"\nrunaway connections on it: {len(a['runaway_alerts'])}"
              if a["runaway_alerts"] else "")
    return (f"{icon} *{upstream_summary(a)}*\n{figures}{linked}\n"
            f"*Fix:* {a['diagnosis']['fix']}")


def _slack_line(entry: Entry) -> str:
    a = entry.alert
    if is_disk_alert(a):
        return _slack_disk_line(a)
    if is_upstream_alert(a):
        return _slack_upstream_line(a)
    diagnosis = a["diagnosis"]
    if a["state"] == "resolved":
        icon = ":white_check_mark:"
    else:
        icon = ":rotating_light:" if a["confidence"] == "confirmed" else ":warning:"
    head = (f"{icon} *cid {a['cid']}* (pid {a['pid']}) on `{a['source']}` "
            f"{a['subsystem'] or ''} ({a['confidence']})")
    rate = (f"{a['failures']:,} failures, peak {a['peak_per_second']:,}/s, "
            f"since {a['first_seen']}")
    if a["state"] == "resolved":
        rate += f"; resolved {a['resolved_at']} ({a['resolved_reason']})"
    return (f"{head}\n{rate}\nupstream: {_upstreams(a, 1)}\n"
            f"*Fix:* {diagnosis['fix'] if diagnosis else 'cap the retries'}")


def slack_message(entries: Sequence[Entry], receiver: Receiver) -> dict[str, Any]:
    firing = sum(e.alert["state"] != "resolved" for e in entries)
    resolved = len(entries) - firing
    parts = [f"{n} {what}" for n, what in ((firing, "firing"), (resolved, "resolved")) if n]
    disks = sum(is_disk_alert(e.alert) for e in entries)
    peers = sum(is_upstream_alert(e.alert) for e in entries)
    what = [f"{n} {label}" for n, label in ((len(entries) - disks - peers,
                                            "runaway nginx connection(s)"),
                                           (peers, "upstream(s) failing"),
                                           (disks, "filesystem(s) filling")) if n]
    title = f"retrywatch: {' and '.join(what)}: {', '.join(parts)}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}}]
    base = receiver.external_url.rstrip("/")
    for entry in entries[:SLACK_LISTED]:
        link = (f"{base}/api/v1/disk" if is_disk_alert(entry.alert)
                else f"{base}/api/v1/upstreams" if is_upstream_alert(entry.alert)
                else f"{base}/api/v1/alerts/{entry.id}")
        text = f"{_slack_line(entry)}\n<{link}|details>"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    if len(entries) > SLACK_LISTED:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"and {len(entries) - SLACK_LISTED} more"}]})
    return {"text": title, "blocks": blocks}


# -- one entry point -------------------------------------------------------------------------
def build(receiver: Receiver, entries: Sequence[Entry], instance: str,
          now: datetime) -> tuple[str, bytes, dict[str, str]]:
    """The URL, body and content headers of one message (signature headers: at send).

    The delivery id is in ``X-Retrywatch-Delivery`` for every format, and in the body
    for ``json``; Alertmanager's and Slack's bodies have shapes of their own (Alertmanager
    tells alerts apart by their labels, so a repeated message changes nothing there)."""
    delivery = delivery_id(receiver.name, entries)
    headers = {"Content-Type": "application/json", "User-Agent": "retrywatch",
               DELIVERY_HEADER: delivery}
    if receiver.format == "alertmanager":
        url = receiver.url.rstrip("/") + "/api/v2/alerts"
        alerts = []
        for e in entries:
            alerts.append(alertmanager_alert(e.alert, receiver, instance, now))
            if (e.kind == "confirmed" and not is_disk_alert(e.alert)
                    and not is_upstream_alert(e.alert)):
                # the labels changed: end the suspected one
                suspected: AlertData = {**e.alert, "confidence": "suspected",
                                        "state": "resolved", "resolved_at": now.isoformat()}
                alerts.append(alertmanager_alert(suspected, receiver, instance, now))
        body = json.dumps(alerts).encode()
    elif receiver.format == "slack":
        url, body = receiver.url, json.dumps(slack_message(entries, receiver)).encode()
    else:
        url, body = receiver.url, json_body(receiver.name, entries, now, delivery)
        headers["X-Retrywatch-Schema"] = SCHEMA_VERSION
    return url, body, headers


def signature_headers(receiver: Receiver, body: bytes, timestamp: int) -> dict[str, str]:
    """Fresh for every attempt, so a retry is not taken for a replay."""
    if receiver.format != "json" or receiver.secret is None:
        return {}
    ts = str(timestamp)
    return {TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: sign(receiver.secret.get_secret_value(), ts, body)}
