"""The three payloads: retrywatch's signed JSON (schema v1), Alertmanager v2, Slack.

Each builder takes the message's entries (an alert change: ``kind`` and the API's alert
object) and returns the request body and headers; nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from retrywatch.delivery.receivers import Receiver

__all__ = [
    "ALERTNAME",
    "SCHEMA_VERSION",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Entry",
    "alertmanager_alert",
    "build",
    "json_body",
    "sign",
    "slack_message",
]

SCHEMA_VERSION = "1"
TIMESTAMP_HEADER = "X-Retrywatch-Timestamp"
SIGNATURE_HEADER = "X-Retrywatch-Signature"
ALERTNAME = "RetrywatchRunawayConnection"
#: Slack shows at most 50 blocks; a storm lists this many alerts and counts the rest.
SLACK_LISTED = 10


@dataclass(slots=True)
class Entry:
    """One alert in a message: what happened to it (fired, updated, resolved, repeat)."""

    kind: str
    alert: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.alert["id"])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "alert": self.alert}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``timestamp``, ``.``, ``body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _status(entries: Sequence[Entry]) -> str:
    return "resolved" if all(e.alert.get("state") == "resolved" for e in entries) else "firing"


def json_body(receiver: str, entries: Sequence[Entry], now: datetime) -> bytes:
    payload = {
        "version": SCHEMA_VERSION,
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


def _severity(alert: dict[str, Any]) -> str:
    """Only a confirmed loop pages; a suspected one (a busy connection to a dead upstream
    looks the same in the log) is a warning."""
    return "critical" if alert.get("confidence") == "confirmed" else "warning"


def _upstreams(alert: dict[str, Any], limit: int = 3) -> str:
    ups = alert.get("upstreams") or {}
    text = ", ".join(f"{addr} ({n:,})" for addr, n in list(ups.items())[:limit])
    return text + (f" and {len(ups) - limit} more" if len(ups) > limit else "")


def summary(alert: dict[str, Any]) -> str:
    if alert.get("confidence") == "confirmed":
        return (f"nginx connection *{alert['cid']} (pid {alert['pid']}) on {alert['source']} "
                f"is in a connect() retry loop")
    return (f"nginx connection *{alert['cid']} (pid {alert['pid']}) on {alert['source']} "
            f"keeps failing upstream connects (suspected retry loop)")


def description(alert: dict[str, Any]) -> str:
    diagnosis = alert.get("diagnosis") or {}
    return (f"cid={alert['cid']} pid={alert['pid']} source={alert['source']} "
            f"subsystem={alert.get('subsystem')}\n"
            f"upstreams: {_upstreams(alert)}\n"
            f"failures: {alert.get('failures', 0):,}, peak {alert.get('peak_per_second', 0):,}/s, "
            f"since {alert.get('first_seen')}\n"
            f"confidence: {alert.get('confidence', '?')}: "
            f"{'; '.join(alert.get('evidence') or [])}\n"
            f"diagnosis: {diagnosis.get('code', '?')}: {diagnosis.get('cause', '')}\n"
            f"fix: {diagnosis.get('fix', '')}")


def alertmanager_alert(alert: dict[str, Any], receiver: Receiver, instance: str,
                       now: datetime) -> dict[str, Any]:
    """One alert of ``POST /api/v2/alerts``. Labels have bounded values, except
    ``alert_id``: Alertmanager identifies an alert by its label set, and without it two
    runaway connections of one source would be one alert (one resolve ending both)."""
    starts = _iso(alert.get("fired_at")) or now
    starts = min(starts, now)  # log time ahead of ours (skew) must not delay the alert
    out: dict[str, Any] = {
        "labels": {
            "alertname": ALERTNAME,
            "severity": _severity(alert),
            "instance": instance,
            "source": str(alert["source"]),
            "subsystem": str(alert.get("subsystem") or "unknown"),
            "confidence": str(alert.get("confidence") or "suspected"),
            "alert_id": str(alert["id"]),
        },
        "annotations": {
            "summary": summary(alert),
            "description": description(alert),
            "runbook_url": receiver.runbook_url,
            "cid": str(alert["cid"]),
            "pid": str(alert["pid"]),
        },
        "startsAt": _rfc3339(starts),
        "generatorURL": f"{receiver.external_url.rstrip('/')}/api/v1/alerts/{alert['id']}",
    }
    if alert.get("state") == "resolved":
        ends = _iso(alert.get("resolved_at")) or now
        out["endsAt"] = _rfc3339(max(starts, min(ends, now)))
    return out


# -- Slack ---------------------------------------------------------------------------------
def _slack_line(entry: Entry) -> str:
    a = entry.alert
    diagnosis = a.get("diagnosis") or {}
    if a.get("state") == "resolved":
        icon = ":white_check_mark:"
    else:
        icon = ":rotating_light:" if a.get("confidence") == "confirmed" else ":warning:"
    head = (f"{icon} *cid {a['cid']}* (pid {a['pid']}) on `{a['source']}` "
            f"{a.get('subsystem') or ''} ({a.get('confidence') or 'suspected'})")
    rate = (f"{a.get('failures', 0):,} failures, peak {a.get('peak_per_second', 0):,}/s, "
            f"since {a.get('first_seen', '?')}")
    if a.get("state") == "resolved":
        rate += f"; resolved {a.get('resolved_at')} ({a.get('resolved_reason')})"
    return (f"{head}\n{rate}\nupstream: {_upstreams(a, 1)}\n"
            f"*Fix:* {diagnosis.get('fix', 'cap the retries')}")


def slack_message(entries: Sequence[Entry], receiver: Receiver) -> dict[str, Any]:
    firing = sum(e.alert.get("state") != "resolved" for e in entries)
    resolved = len(entries) - firing
    parts = [f"{n} {what}" for n, what in ((firing, "firing"), (resolved, "resolved")) if n]
    title = f"retrywatch: {len(entries)} runaway nginx connection(s): {', '.join(parts)}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}}]
    for entry in entries[:SLACK_LISTED]:
        link = f"{receiver.external_url.rstrip('/')}/api/v1/alerts/{entry.id}"
        text = f"{_slack_line(entry)}\n<{link}|details>"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    if len(entries) > SLACK_LISTED:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"and {len(entries) - SLACK_LISTED} more"}]})
    return {"text": title, "blocks": blocks}


# -- one entry point -------------------------------------------------------------------------
def build(receiver: Receiver, entries: Sequence[Entry], instance: str,
          now: datetime) -> tuple[str, bytes, dict[str, str]]:
    """The URL, body and content headers of one message (signature headers: at send)."""
    headers = {"Content-Type": "application/json", "User-Agent": "retrywatch"}
    if receiver.format == "alertmanager":
        url = receiver.url.rstrip("/") + "/api/v2/alerts"
        alerts = []
        for e in entries:
            alerts.append(alertmanager_alert(e.alert, receiver, instance, now))
            if e.kind == "confirmed":  # the labels changed: end the suspected one
                ended = alertmanager_alert({**e.alert, "confidence": "suspected",
                                            "state": "resolved",
                                            "resolved_at": now.isoformat()},
                                           receiver, instance, now)
                alerts.append(ended)
        body = json.dumps(alerts).encode()
    elif receiver.format == "slack":
        url, body = receiver.url, json.dumps(slack_message(entries, receiver)).encode()
    else:
        url, body = receiver.url, json_body(receiver.name, entries, now)
        headers["X-Retrywatch-Schema"] = SCHEMA_VERSION
    return url, body, headers


def signature_headers(receiver: Receiver, body: bytes, timestamp: int) -> dict[str, str]:
    """Fresh for every attempt, so a retry is not taken for a replay."""
    if receiver.format != "json" or receiver.secret is None:
        return {}
    ts = str(timestamp)
    return {TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: sign(receiver.secret.get_secret_value(), ts, body)}
