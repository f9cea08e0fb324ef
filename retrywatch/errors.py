"""Errors that the command line reports in one line, without a traceback.

    OSError
     └── ListenError   an address to listen on cannot be bound (HTTP, syslog)
"""

from __future__ import annotations

__all__ = ["ListenError"]


class ListenError(OSError):
    """An address that cannot be listened on: taken, not local, or not allowed.

    ``str()`` is the whole sentence, ``cannot listen on udp://192.0.2.1:5514: Cannot
    assign requested address``; ``errno`` is the bind's."""

    def __init__(self, where: str, cause: OSError) -> None:
        super().__init__(f"cannot listen on {where}: {cause.strerror or cause}")
        self.errno = cause.errno
        self.where = where
