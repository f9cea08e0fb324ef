"""Which file is this: device and inode plus a hash of the file's first bytes.

A path is not an identity: logrotate renames it, copytruncate empties it, a symlink
points elsewhere. An inode alone is not one either: once a file is deleted its number
is reused. A :class:`Fingerprint` is both: ``(dev, ino)`` and a digest of the first
``length`` bytes (:data:`FINGERPRINT_BYTES`, or fewer while the file is shorter).

A fingerprint of a short file is *incomplete*: it covers only the bytes that existed
when it was taken and is compared by prefix (the first ``length`` bytes of the file
now must hash the same). It is upgraded by :func:`refresh` once the file has grown.
A file whose first bytes changed (copytruncate, then new writes) is a new file even
when it keeps its inode.

This module only reads; it keeps no state.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

__all__ = ["FINGERPRINT_BYTES", "Fingerprint", "matches", "refresh", "same_head", "take"]

#: How many first bytes identify a file. One nginx error line is longer than this.
FINGERPRINT_BYTES = 256


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The identity of one file: where it lives on disk and how it begins."""

    dev: int
    ino: int
    #: How many first bytes ``digest`` covers.
    length: int
    #: Hex BLAKE2b (16 bytes) of the first ``length`` bytes.
    digest: str

    def complete(self, size: int = FINGERPRINT_BYTES) -> bool:
        """Whether the digest covers the full ``size`` bytes (else: compared by prefix)."""
        return self.length >= size

    def same_inode(self, dev: int, ino: int) -> bool:
        return self.dev == dev and self.ino == ino


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def take(fd: int, size: int = FINGERPRINT_BYTES) -> Fingerprint:
    """The fingerprint of the open file ``fd`` over its first ``size`` bytes (fewer
    when the file is shorter: an incomplete fingerprint)."""
    st = os.fstat(fd)
    head = os.pread(fd, size, 0)
    return Fingerprint(st.st_dev, st.st_ino, len(head), _digest(head))


def matches(known: Fingerprint, fd: int) -> bool:
    """Whether the open file ``fd`` is the file ``known`` was taken of: the same inode,
    and its first ``known.length`` bytes unchanged."""
    st = os.fstat(fd)
    if not known.same_inode(st.st_dev, st.st_ino):
        return False
    head = os.pread(fd, known.length, 0)
    return len(head) == known.length and _digest(head) == known.digest


def same_head(known: Fingerprint, fd: int) -> bool:
    """Whether the open file ``fd``, whatever its inode, begins with the bytes ``known``
    was taken of: a copy (copytruncate's ``error.log.1``). An empty fingerprint matches
    nothing: it would match every file."""
    if known.length == 0:
        return False
    head = os.pread(fd, known.length, 0)
    return len(head) == known.length and _digest(head) == known.digest


def refresh(known: Fingerprint, fd: int, size: int = FINGERPRINT_BYTES) -> Fingerprint | None:
    """``known`` checked against the open file ``fd``: ``None`` when its first bytes
    changed (or it is another inode); else the fingerprint, upgraded when it was
    incomplete and the file has grown since."""
    if not matches(known, fd):
        return None
    if known.complete(size) or os.fstat(fd).st_size <= known.length:
        return known
    return take(fd, size)
