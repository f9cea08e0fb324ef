"""A receiver's configuration: where to send, in which format, and the bounds."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["RUNBOOK", "Format", "Receiver"]

Format = Literal["json", "alertmanager", "slack"]
#: docs/runbook.md, where every alert has a section (dashboards/mixin.py's default too).
RUNBOOK = "https://github.com/retrywatch/retrywatch/blob/main/docs/runbook.md"


class Receiver(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str = Field(description="Webhook URL; for alertmanager its base URL "
                                 "(POST {url}/api/v2/alerts).")
    format: Format = "json"
    secret: SecretStr | None = Field(default=None, description="json: HMAC-SHA256 signing key.")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description=(
        "Extra request headers (e.g. Authorization); masked like the secret."))
    timeout: float = Field(default=5.0, gt=0, description="Seconds for one HTTP attempt.")
    queue_size: int = Field(default=1000, ge=1, description="Alert changes waiting, at most.")
    max_attempts: int = Field(default=6, ge=1)
    max_age: float = Field(default=300.0, gt=0,
                           description="Seconds a message may keep retrying.")
    backoff_initial: float = Field(default=0.5, gt=0)
    backoff_max: float = Field(default=30.0, gt=0)
    group_wait: float = Field(default=2.0, ge=0, description=(
        "Seconds to gather changes into one message after the first one arrives."))
    max_group: int = Field(default=100, ge=1, description="Alerts in one message, at most.")
    repeat_interval: float = Field(default=4 * 3600.0, gt=0, description=(
        "json/slack: a firing alert is re-notified at most (and at least) this often."))
    resend_interval: float = Field(default=60.0, gt=0, description=(
        "alertmanager: firing alerts are re-sent this often (keep well below "
        "Alertmanager's resolve_timeout, 5m by default)."))
    external_url: str = Field(default="http://127.0.0.1:8734", description=(
        "retrywatch's own URL, for links to /api/v1/alerts/{id}."))
    instance: str | None = Field(default=None,
                                 description="The 'instance' label (default: host name).")
    runbook_url: str = Field(default=RUNBOOK, description=(
        "alertmanager: the runbook page; each alert links to its diagnosis' section "
        "(#synchronous_loop, …) unless the URL has a '#' already."))

    @field_validator("url", "external_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value
