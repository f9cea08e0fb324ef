"""Reading whole files (plain or gzip) in chunks, for replay and analysis."""

from __future__ import annotations

import gzip
import logging
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["CHUNK_SIZE", "is_rotated_name", "iter_chunks", "source_name"]

log = logging.getLogger("retrywatch")

CHUNK_SIZE = 4 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
# error.log.1, error.log.2.gz, error.log-20240101, error.log-20240101.gz
# error.log.1, error.log.2.gz, error.log-20240101(.gz), kubelet's 0.log.20240101-120000(.gz)
_ROTATION_SUFFIX = re.compile(r"(?:\.\d+|-\d{8}(?:\d{2})?|\.\d{8}-\d{6})?(?:\.gz)?$")
# /var/log/pods/NAMESPACE_POD_UID/CONTAINER/N.log
_POD_DIR = re.compile(r"^(?P<ns>[^_/]+)_(?P<pod>[^_/]+)_[0-9a-f-]+$")


def source_name(path: str) -> str:
    """The log a file belongs to: ``NAMESPACE/POD/CONTAINER`` for a Kubernetes pod log;
    otherwise the path without rotation and compression suffixes, so ``error.log.2.gz``,
    ``error.log.1`` and ``error.log`` are one nginx's log."""
    if path == "-":
        return "stdin"
    parts = Path(path).parts
    if len(parts) >= 3:
        pod = _POD_DIR.match(parts[-3])
        if pod is not None:
            return f"{pod.group('ns')}/{pod.group('pod')}/{parts[-2]}"
    return _ROTATION_SUFFIX.sub("", path) or path


def is_rotated_name(name: str, base: str) -> bool:
    """Whether the file name ``name`` is ``base`` with a rotation suffix (``error.log.1``,
    ``error.log-20240101``, ``0.log.20240101-120000``), compressed or not."""
    rest = name[len(base):]
    return bool(rest) and name.startswith(base) and _ROTATION_SUFFIX.fullmatch(rest) is not None


def _open(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    raw = Path(path).open("rb")  # noqa: SIM115 (closed by iter_chunks)
    if raw.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def iter_chunks(path: str, chunk_size: int = CHUNK_SIZE,
                on_raw: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """The file's bytes in chunks of about ``chunk_size`` (decompressed when gzip).

    ``on_raw`` is told how many bytes of the file itself each chunk consumed (compressed
    bytes for gzip), for progress against the files' sizes.
    """
    stream = _open(path)
    raw = getattr(stream, "fileobj", stream)  # a GzipFile reads from .fileobj
    done = 0
    try:
        while True:
            try:
                chunk = stream.read(chunk_size)
            except (EOFError, gzip.BadGzipFile) as exc:
                # A .gz still being written by logrotate: keep what was read.
                log.warning("%s: %s; stopped reading there", path, exc)
                return
            if not chunk:
                return
            if on_raw is not None and path != "-":
                pos = raw.tell()
                on_raw(pos - done)
                done = pos
            yield chunk
    finally:
        if path != "-":
            stream.close()
            if raw is not stream:
                raw.close()  # GzipFile does not close a file object it was given
