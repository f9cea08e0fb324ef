"""One settings model for the live service: flags, environment, and a YAML or TOML file.

Precedence, highest first: command-line flags, ``RETRYWATCH_*`` environment variables
(lists as JSON, e.g. ``RETRYWATCH_LOG='["/var/log/nginx/error.log"]'``), the file given
with ``--config`` (or ``RETRYWATCH_CONFIG``), then the defaults.
"""

from __future__ import annotations

import os
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from retrywatch.delivery.receivers import Receiver
from retrywatch.detect.core import DEFAULT_MAX_LINE, DetectorConfig
from retrywatch.sources.syslog import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CLIENTS
from retrywatch.timezones import resolve_zone

__all__ = ["DEFAULT_LISTEN", "MASK", "Settings", "load_settings", "mask_url"]

#: What `retrywatch config` shows instead of a secret (pydantic's SecretStr shows the same).
MASK = "**********"

#: Outside the ports of Prometheus' default port allocations (the 9xxx exporter range).
DEFAULT_LISTEN = "127.0.0.1:8734"

_DEFAULTS = DetectorConfig()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RETRYWATCH_", extra="forbid",
                                      populate_by_name=True)

    log: list[str] = Field(default_factory=list, description=(
        "Log files or globs to follow ('-' for stdin); globs are re-evaluated."))
    syslog: list[str] = Field(default_factory=list, description=(
        "Syslog listeners: udp://HOST:PORT or tcp://HOST:PORT."))
    syslog_max_clients: int = Field(DEFAULT_MAX_CLIENTS, ge=1, description=(
        "TCP syslog clients at once, per listener; more are refused and counted. Lowered "
        "to what the descriptor limit (ulimit -n) leaves room for."))
    syslog_idle_timeout: float = Field(DEFAULT_IDLE_TIMEOUT, gt=0, description=(
        "Seconds without a byte after which a TCP syslog client is closed."))
    syslog_max_frame: int = Field(DEFAULT_MAX_LINE, ge=480, le=DEFAULT_MAX_LINE, description=(
        "The longest syslog record (UDP datagram or TCP frame), bytes; longer ones are "
        "skipped and counted."))
    listen: str = Field(DEFAULT_LISTEN, description="HOST:PORT of the HTTP service.")
    state_dir: Path | None = Field(None, description=(
        "Where checkpoints and alert history are kept (SQLite); none: in memory only."))
    start_from: Literal["beginning", "end"] = Field("end", alias="from", description=(
        "Where to start a file without a checkpoint."))
    timezone: str = Field("local", description="Zone of nginx's local timestamps.")
    nginx_config: list[str] = Field(default_factory=list, description=(
        "nginx configuration files (with their includes) or ingress-nginx YAML of the nginx "
        "whose log is read: a route whose tries are bounded gets no loop alert, one that "
        "can loop is confirmed at once."))
    window: int = Field(_DEFAULTS.window, ge=1)
    threshold: int = Field(_DEFAULTS.threshold, ge=1)
    min_repeat: int = Field(_DEFAULTS.min_repeat, ge=1)
    resolve_after: int = Field(_DEFAULTS.resolve_after, ge=1)
    max_tracked: int = Field(_DEFAULTS.max_tracked, ge=1)
    poll_interval: float = Field(1.0, gt=0, description=(
        "Seconds between polls of files where change notification does not work."))
    shutdown_timeout: float = Field(10.0, ge=0, description=(
        "On SIGTERM or SIGINT, seconds to go on delivering queued alert changes after the "
        "sources are closed and the last checkpoint written (what is left stays pending "
        "in the state)."))
    stall_timeout: float = Field(60.0, gt=0, description=(
        "Seconds the ingest loop may go without a turn before /healthz fails (a liveness "
        "probe then restarts the service)."))
    http_max_connections: int = Field(1000, ge=8, description=(
        "HTTP connections at once (lowered to half of what the descriptor limit, ulimit -n, "
        "leaves after 128); past it, the oldest connection without a request in progress "
        "is closed to make room."))
    http_header_timeout: float = Field(10.0, gt=0, description=(
        "Seconds a client has to send a whole request head (and to start the next one on "
        "a kept-alive connection) before its connection is closed."))
    source_retention: float = Field(6 * 3600.0, ge=0, description=(
        "Seconds a file source may be gone (deleted, no longer matched by its glob) "
        "before it is forgotten with its metric series (a pod's log on a node)."))
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    api_token: SecretStr | None = Field(None, description=(
        "Bearer token (Authorization: Bearer TOKEN) every endpoint but /healthz and /readyz "
        "requires when set, /metrics included."))
    ssl_certfile: Path | None = Field(None, description=(
        "TLS: the server's certificate chain (PEM); with ssl_keyfile, the API speaks HTTPS."))
    ssl_keyfile: Path | None = Field(None, description="TLS: the certificate's private key.")
    keep_query_strings: bool = Field(False, description=(
        "Show query strings of requests and referrers as logged; by default their values "
        "are replaced (?token=…&a=…) in the API, metrics and deliveries."))
    max_stream_clients: int = Field(500, ge=1, description=(
        "Event-stream clients (/api/v1/alerts/stream) at once; more are refused (503)."))
    receivers: list[Receiver] = Field(default_factory=list, description=(
        "Where alerts are delivered: name, url, format (json, alertmanager, slack) and "
        "options (docs/webhooks.md)."))

    @field_validator("receivers")
    @classmethod
    def _receivers(cls, value: list[Receiver]) -> list[Receiver]:
        names = [r.name for r in value]
        if len(set(names)) != len(names):
            raise ValueError(f"receiver names must be unique, got {names}")
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen must be HOST:PORT, got {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        resolve_zone(value)  # raises ValueError with a clear message
        return value

    @field_validator("syslog")
    @classmethod
    def _syslog(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("udp://", "tcp://")):
                raise ValueError(f"syslog listener must be udp://HOST:PORT or tcp://HOST:PORT, "
                                 f"got {url!r}")
        return value

    @field_validator("ssl_certfile", "ssl_keyfile")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("TLS needs both ssl_certfile and ssl_keyfile")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file named by load_settings() (model_config yaml_file / toml_file) comes last.
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls),
                TomlConfigSettingsSource(settings_cls))

    def detector_config(self) -> DetectorConfig:
        return DetectorConfig(window=self.window, threshold=self.threshold,
                              min_repeat=self.min_repeat, resolve_after=self.resolve_after,
                              max_tracked=self.max_tracked)

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def loopback_only(self) -> bool:
        """True when the HTTP service listens on a loopback address only."""
        host = self.host_port()[0]
        if host == "localhost":
            return True
        try:
            return ip_address(host).is_loopback
        except ValueError:  # a host name: whatever it resolves to, assume beyond
            return False

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets masked: the API token, receivers'
        secrets and headers, credentials and query values of every receiver URL, and the
        path of webhook URLs (json, slack: a Slack webhook's path is its secret)."""
        data = self.model_dump(mode="json", by_alias=True)
        if self.api_token is not None:
            data["api_token"] = MASK
        for receiver, out in zip(self.receivers, data["receivers"], strict=True):
            out["url"] = mask_url(receiver.url, path=receiver.format != "alertmanager")
            out["external_url"] = mask_url(receiver.external_url, path=False)
            out["runbook_url"] = mask_url(receiver.runbook_url, path=False)
            if receiver.secret is not None:
                out["secret"] = MASK
            out["headers"] = dict.fromkeys(receiver.headers, MASK)
        return data


def mask_url(url: str, *, path: bool) -> str:
    """``url`` with its credentials and query values masked (names kept), and its path
    too when ``path``: ``https://u:p@h/x?token=t&a=1`` → ``https://MASK@h/MASK?token=MASK&a=MASK``
    (``MASK``: ten asterisks)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{MASK}@{host}" if "@" in parts.netloc else host
    where = f"/{MASK}" if path and parts.path not in ("", "/") else parts.path
    query = "&".join(f"{p.partition('=')[0]}={MASK}" if "=" in p else p
                     for p in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, where, query, MASK if parts.fragment else ""))


def load_settings(config_file: str | None = None, **flags: Any) -> Settings:
    """Settings from ``flags`` (those not None), the environment, and ``config_file`` (or
    the file named by ``RETRYWATCH_CONFIG``): YAML by its ending, otherwise TOML."""
    path = config_file or os.environ.get("RETRYWATCH_CONFIG")
    cls: type[Settings] = Settings
    if path:
        if not Path(path).is_file():
            raise ValueError(f"config file {path!r} does not exist")
        key = "yaml_file" if path.endswith((".yaml", ".yml")) else "toml_file"
        config: dict[str, Any] = {**Settings.model_config, key: path}
        cls = type("FileSettings", (Settings,), {"model_config": config})
    given = {k: v for k, v in flags.items() if v is not None and v != ()}
    return cls(**given)
