"""One settings model for the live service: flags, environment, and a TOML, YAML or JSON
file.

Precedence, highest first: command-line flags, ``RETRYWATCH_*`` environment variables
(``RETRYWATCH_`` and the setting's name in capitals, ``RETRYWATCH_FROM`` for ``from``;
lists as JSON, e.g. ``RETRYWATCH_LOG='["/var/log/nginx/error.log"]'``), the file given
with ``--config`` (or ``RETRYWATCH_CONFIG``; its kind by its ending: ``.toml``, ``.yaml``
or ``.yml``, ``.json``), then the defaults. A bad value is a :class:`SettingsError` that
says, in one line, where it came from: the flag, the variable, or the file and its key.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping
from ipaddress import ip_address
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import pydantic_settings
import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from retrywatch.delivery.receivers import Receiver
from retrywatch.detect.core import DEFAULT_MAX_LINE, DetectorConfig
from retrywatch.sources.syslog import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CLIENTS, parse_syslog_url
from retrywatch.timezones import resolve_zone

__all__ = ["CONFIG_KINDS", "DEFAULT_LISTEN", "ENV_PREFIX", "MASK", "Settings", "SettingsError",
           "env_var", "load_settings", "mask_url", "read_config_file"]

#: What `retrywatch config` shows instead of a secret (pydantic's SecretStr shows the same).
MASK = "**********"

#: Outside the ports of Prometheus' default port allocations (the 9xxx exporter range).
DEFAULT_LISTEN = "127.0.0.1:8734"

#: What every environment variable of a setting begins with (no nested delimiter: a list
#: or the receivers are one variable, as JSON).
ENV_PREFIX = "RETRYWATCH_"

_DEFAULTS = DetectorConfig()


class SettingsError(ValueError):
    """Settings that cannot be used, in one line: where each bad value came from (a flag,
    a ``RETRYWATCH_*`` variable, the config file and its key) and what is wrong with it."""


class Settings(BaseSettings):
    # env_prefix_target "all": the prefix applies to the alias too (RETRYWATCH_FROM, not
    # FROM; pydantic-settings reads an alias without the prefix by default).
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_prefix_target="all",
                                      extra="forbid", populate_by_name=True)
    #: The config file's settings (load_settings() makes a subclass that carries them).
    config_file_data: ClassVar[dict[str, Any]] = {}

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
    window: int = Field(_DEFAULTS.window, ge=1, description=(
        "Seconds of log time over which a connection's connect failures are counted."))
    threshold: int = Field(_DEFAULTS.threshold, ge=1, description=(
        "Connect failures of one connection within the window that make it a runaway "
        "connection (an alert)."))
    min_repeat: int = Field(_DEFAULTS.min_repeat, ge=1, description=(
        "Failures against one upstream address a runaway connection needs as well: a "
        "retry loop comes back to a peer, a request trying each server once does not."))
    resolve_after: int = Field(_DEFAULTS.resolve_after, ge=1, description=(
        "Seconds of log time without a failure after which an alert resolves."))
    max_tracked: int = Field(_DEFAULTS.max_tracked, ge=1, description=(
        "Connections followed at once (the memory bound); past it a cold one, never a "
        "firing one, is forgotten (counted as an eviction)."))
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
    disk_forecast: bool = Field(True, description=(
        "Sample each followed file's growth and its filesystem's free space (statvfs) "
        "about once a second for the disk forecast and its alert; off: neither is read."))
    disk_horizon: float = Field(1800.0, ge=0, description=(
        "Alert when the followed logs will fill their filesystem within this many seconds "
        "at their growth of the last minute (0: no disk alert; the forecast is still "
        "served)."))
    upstream_anomalies: bool = Field(True, description=(
        "Count connect failures per upstream peer, learn each peer's usual rate, and alert "
        "when one fails far above it for many connections (a dead pod); off: not counted."))
    upstream_peers: int = Field(256, ge=1, le=65536, description=(
        "Upstream peers named at most (about 9 KiB each); past it the least failing make "
        "room, and the metrics sum the rest as peer=\"other\"."))
    upstream_warmup: int = Field(60, ge=0, le=86400, description=(
        "Seconds of log time after the first line during which each peer's failures are "
        "learnt as its usual rate (what fails when retrywatch starts is the status quo); a "
        "peer's baseline is kept in the checkpoint."))
    upstream_min_connections: int = Field(20, ge=1, description=(
        "Distinct connections that must fail against a peer within a minute before its "
        "failures can alert (fewer is the runaway alert's business)."))
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
            parse_syslog_url(url)  # ValueError with the reason: a port out of range, ...
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
            raise ValueError("TLS needs both ssl_certfile and ssl_keyfile (--tls-cert and "
                             "--tls-key)")
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
        # The file named by load_settings() comes last (read by read_config_file()).
        data = getattr(settings_cls, "config_file_data", {})
        return (init_settings, env_settings, InitSettingsSource(settings_cls, dict(data)))

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


def env_var(field: str) -> str:
    """The environment variable a setting is read from: ``RETRYWATCH_WINDOW``, and
    ``RETRYWATCH_FROM`` for ``start_from`` (its alias)."""
    info = Settings.model_fields[field]
    return ENV_PREFIX + (info.alias or field).upper()


def _yaml(text: str) -> Any:
    return yaml.safe_load(text)


#: The kinds of config file, by the ending of its name: (what it is, its reader).
CONFIG_KINDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    ".toml": ("TOML", tomllib.loads), ".yaml": ("YAML", _yaml), ".yml": ("YAML", _yaml),
    ".json": ("JSON", json.loads)}


def read_config_file(path: str) -> dict[str, Any]:
    """The settings in a config file, read as its ending says (:data:`CONFIG_KINDS`);
    :class:`SettingsError` when it cannot be read or is not a table of settings."""
    kind, reader = CONFIG_KINDS.get(Path(path).suffix.lower(), (None, None))
    if kind is None or reader is None:
        raise SettingsError(f"{path}: a config file is TOML, YAML or JSON, by the ending of its "
                            f"name: {', '.join(CONFIG_KINDS)}")
    if not Path(path).is_file():
        raise SettingsError(f"config file {path!r} does not exist")
    try:
        data = reader(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"{path}: {exc.strerror or exc}") from exc
    except (ValueError, yaml.YAMLError) as exc:  # TOML, JSON: ValueError; not UTF-8 too
        raise SettingsError(f"{path}: not {kind}: {_one_line(exc)}") from exc
    if data is None:  # an empty YAML file
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: not a table of settings (name: value), but a "
                            f"{type(data).__name__}")
    return data


def _one_line(exc: BaseException) -> str:
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.MarkedYAMLError) and mark is not None:
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def load_settings(config_file: str | None = None, *,
                  flag_names: Mapping[str, str] | None = None, **flags: Any) -> Settings:
    """Settings from ``flags`` (those not None), the environment, and ``config_file`` (or
    the file named by ``RETRYWATCH_CONFIG``; :func:`read_config_file`).

    :class:`SettingsError` names where each bad value came from: a flag (spelled as in
    ``flag_names``, by setting; ``--name`` otherwise), a variable, or the file and key."""
    path = config_file or os.environ.get("RETRYWATCH_CONFIG")
    cls: type[Settings] = Settings
    if path:
        data = read_config_file(path)
        cls = type("FileSettings", (Settings,), {"config_file_data": data})
    given = {k: v for k, v in flags.items() if v is not None and v != ()}
    try:
        return cls(**given)
    except ValidationError as exc:
        raise SettingsError("; ".join(_problem(e, given, path, flag_names or {})
                                      for e in exc.errors())) from exc
    except pydantic_settings.SettingsError as exc:  # a variable's value is not JSON
        field = next((f for f in Settings.model_fields if f'"{f}"' in str(exc)), None)
        if field is None:
            raise SettingsError(_one_line(exc)) from exc
        raise SettingsError(f"{field} ({env_var(field)}): not JSON "
                            f"({_one_line(exc.__cause__ or exc)}); a list is given as JSON, "
                            "e.g. '[\"a\", \"b\"]'") from exc


def _field(key: str) -> str | None:
    """The setting named ``key`` (its name or its alias), None when there is none."""
    for name, info in Settings.model_fields.items():
        if key in (name, info.alias):
            return name
    return None


def _problem(error: ErrorDetails, given: Mapping[str, Any], path: str | None,
             flag_names: Mapping[str, str]) -> str:
    """One validation error, said with where its value came from."""
    loc = [str(part) for part in error["loc"]]
    message = error["msg"].removeprefix("Value error, ")
    if not loc:  # a rule across settings (a TLS pair)
        return message
    field = _field(loc[0])
    value = error.get("input")
    if (len(loc) == 1 and field != "api_token" and "got " not in message
            and isinstance(value, str | int | float) and len(str(value)) <= 80):
        message = f"{message} (got {value!r})"
    if field is not None and field in given:
        where = flag_names.get(field, "--" + loc[0].replace("_", "-"))
    elif field is not None and env_var(field) in {k.upper() for k in os.environ}:
        where = f"{'.'.join(loc)} ({env_var(field)})"
    elif path:
        where = f"{path}: {'.'.join(loc)}"
    else:
        where = ".".join(loc)
    return f"{where}: {message}"
