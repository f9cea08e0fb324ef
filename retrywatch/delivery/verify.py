"""Checking a retrywatch webhook on the receiving side (docs/webhooks.md).

The signature is ``sha256=`` + hex HMAC-SHA256(secret, timestamp + "." + body), the
timestamp (Unix seconds) in ``X-Retrywatch-Timestamp``. A message older (or newer) than
``tolerance`` seconds is rejected, and a :class:`ReplayGuard` rejects a signature seen
before within that window: together no captured request can be played again.

A retry is no replay: a new request (timestamp, signature) of the same message, with the
same delivery id (``X-Retrywatch-Delivery``, and ``delivery_id`` in the body, which the
signature covers). A receiver that must act on each message once dedupes on that id,
after verifying.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict

__all__ = ["InvalidSignature", "ReplayGuard", "verify"]


class InvalidSignature(ValueError):
    """The request is not an authentic, fresh retrywatch message; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReplayGuard:
    """Signatures accepted in the last ``tolerance`` seconds (bounded by ``max_entries``)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def check_and_add(self, signature: str, expires: float, now: float) -> bool:
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now:
                self._seen.popitem(last=False)
            if signature in self._seen:
                return False
            self._seen[signature] = expires
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
            return True


def verify(secret: str | bytes, timestamp: str, body: bytes, signature: str,
           tolerance: float = 300.0, *, now: float | None = None,
           guard: ReplayGuard | None = None) -> None:
    """Raise :class:`InvalidSignature` unless ``body`` was signed with ``secret`` at
    ``timestamp``, within ``tolerance`` seconds of ``now``, and (with ``guard``) not seen."""
    key = secret.encode() if isinstance(secret, str) else secret
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        raise InvalidSignature("malformed timestamp") from None
    now = time.time() if now is None else now
    if abs(now - ts) > tolerance:
        raise InvalidSignature("timestamp outside tolerance (replay?)")
    expected = "sha256=" + hmac.new(key, str(ts).encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature or ""):
        raise InvalidSignature("signature mismatch")
    if guard is not None and not guard.check_and_add(signature, ts + tolerance, now):
        raise InvalidSignature("replayed signature")
