"""Finding the log files behind PATH arguments and naming the log each belongs to.

Arguments may be files, globs or folders (searched recursively for log files). Rotated
files of one log (``error.log``, ``error.log.1``, ``error.log.2.gz``,
``error.log-20240101.gz``) form one source; Kubernetes pod logs
(``/var/log/pods/NAMESPACE_POD_UID/CONTAINER/N.log``) are named
``NAMESPACE/POD/CONTAINER``. Within a source the files are ordered oldest first.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrywatch.sources.files import source_name

__all__ = ["LogFile", "discover"]

# error.log, error.log.1, error.log.2.gz, error.log-20240101.gz, and kubelet's rotated
# pod logs 0.log.20240101-120000(.gz); access logs are not error logs.
_LOG_NAME = re.compile(r"(?:\.log|error)(?:\.\d+|-\d{8,10}|\.\d{8}-\d{6})?(?:\.gz)?$")
_NOT_ERROR_LOG = re.compile(r"(?:^|[._-])access(?:[._-]|$)")
_ROTATION = re.compile(
    r"(?:\.(?P<n>\d+)|[-.](?P<date>\d{8,10}(?:-\d{6})?))?(?:\.gz)?$")


@dataclass(frozen=True, slots=True)
class LogFile:
    path: str
    source: str
    size: int
    mtime: float

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "source": self.source, "bytes": self.size}


def _age_key(f: LogFile) -> tuple[int, str, float]:
    """Oldest first: higher rotation numbers and earlier dates are older; the live file last."""
    name = Path(f.path).name
    m = _ROTATION.search(name.removesuffix(".gz") if name.endswith(".log.gz") else name)
    number = m.group("n") if m else None
    date = m.group("date") if m else None
    if number is not None:
        return (0, f"{10**9 - int(number):012d}", f.mtime)
    if date is not None:
        return (1, date, f.mtime)
    return (2, "", f.mtime)


def _expand(arg: str) -> list[Path]:
    if any(ch in arg for ch in "*?["):
        return [Path(p) for p in sorted(glob.glob(arg, recursive=True))]
    path = Path(arg)
    if path.is_dir():
        found: list[Path] = []
        for root, _dirs, names in os.walk(path):
            found.extend(Path(root) / n for n in names
                         if _LOG_NAME.search(n) and not _NOT_ERROR_LOG.search(n))
        return sorted(found)
    return [path]


def discover(args: list[str]) -> list[LogFile]:
    """The files behind ``args``, grouped by source and ordered oldest first.

    A named file that does not exist raises :class:`FileNotFoundError`.
    """
    seen: set[str] = set()
    files: list[LogFile] = []
    for arg in args:
        named = not any(ch in arg for ch in "*?[") and not Path(arg).is_dir()
        for path in _expand(arg):
            try:
                st = path.stat()
            except OSError:
                if named:
                    raise  # a file named on the command line must exist
                continue  # a dangling symlink met while walking or globbing
            if not path.is_file():
                continue
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            source = source_name(str(path))
            files.append(LogFile(str(path), source, st.st_size, st.st_mtime))
    order = {src: i for i, src in enumerate(dict.fromkeys(f.source for f in files))}
    return sorted(files, key=lambda f: (order[f.source], _age_key(f)))
