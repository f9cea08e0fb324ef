"""One settings model for the live service: flags, environment, and a YAML or TOML file.

Precedence, highest first: command-line flags, ``RETRYWATCH_*`` environment variables
(lists as JSON, e.g. ``RETRYWATCH_LOG='["/var/log/nginx/error.log"]'``), the file given
with ``--config`` (or ``RETRYWATCH_CONFIG``), then the defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from retrywatch.delivery.receivers import Receiver
from retrywatch.detect.core import DetectorConfig
from retrywatch.timezones import resolve_zone

__all__ = ["DEFAULT_LISTEN", "Settings", "load_settings"]

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
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    api_token: SecretStr | None = Field(None, description=(
        "Bearer token required by endpoints that change state."))
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

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets masked."""
        data = self.model_dump(mode="json", by_alias=True)
        if self.api_token is not None:
            data["api_token"] = "**********"
        return data


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
