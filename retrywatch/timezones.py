"""The zone nginx wrote its local times in (configuration; default: this machine's)."""

from __future__ import annotations

from datetime import tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tzlocal

__all__ = ["resolve_zone"]


def resolve_zone(name: str | None) -> tzinfo:
    """``None``, ``""`` or ``"local"``: the machine's zone; otherwise an IANA name or UTC."""
    if not name or name == "local":
        return tzlocal.get_localzone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as "
                         "Europe/Berlin, or UTC)") from exc
