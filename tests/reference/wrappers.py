"""Removing the wrappers around nginx error lines: syslog, journal, CRI, docker, compose.

Detection is per line with a per-source memory of the last wrapper seen, so a
source can be any of them without configuration. CRI ``P`` pieces and docker
json-file pieces (no trailing ``\\n``) are joined into one line here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from reference.formats import compile_pattern, event_start, load_format

__all__ = ["Unwrapped", "Unwrapper"]

_MAX_DEPTH = 3
#: Wrappers whose shape is unmistakable; the others must reveal an nginx line.
_DEFINITE = frozenset({"cri", "docker_json", "rfc5424", "rfc3164"})


@dataclass(slots=True)
class Unwrapped:
    """Lines with wrappers removed, and lines that were wrapped but broken."""

    lines: list[str] = field(default_factory=list)
    broken: list[tuple[str, str]] = field(default_factory=list)  # (reason, raw line), one a line
    partial: int = 0  # raw lines that were leading pieces of a line joined in ``lines``


class Unwrapper:
    """Per-source state: the wrapper seen last, and partial CRI/docker pieces."""

    def __init__(self, max_line: int = 64 * 1024) -> None:
        spec = load_format("wrappers")
        self._event_start = event_start()
        self._patterns: dict[str, Any] = {
            name: compile_pattern(w["pattern"]) for name, w in spec["wrapper"].items()
        }
        self._order = list(self._patterns)
        self.last: str | None = None
        self.max_line = max_line
        # Pieces of a split line, per stream (a pod's stdout and stderr interleave).
        self._pieces: dict[str, list[str]] = {}
        self._dropping: set[str] = set()

    def is_event_start(self, line: str) -> bool:
        return self._event_start(line) is not None

    def unwrap_lines(self, lines: list[str]) -> Unwrapped:
        out = Unwrapped()
        for line in lines:
            self._one(line, out)
        return out

    def _one(self, line: str, out: Unwrapped) -> None:
        if self._event_start(line) is not None:
            out.lines.append(line)
            return
        text = line
        for _ in range(_MAX_DEPTH):
            found = self._match(text)
            if found is None:
                break
            name, m = found
            self.last = name
            if name == "cri":
                piece = m.group("payload") or ""
                stream = "cri:" + m.group("stream")
                if m.group("tag") == "P":
                    self._add_piece(stream, piece, out)
                    return
                joined = self._join(stream, piece, out)
                if joined is None:
                    return
                text = joined
            elif name == "docker_json":
                try:
                    record = orjson.loads(text)
                    piece = record["log"]
                    if not isinstance(piece, str):
                        raise TypeError("log is not a string")
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    out.broken.append(("bad_docker_json", line))
                    return
                stream = "docker:" + str(record.get("stream", ""))
                if not piece.endswith("\n"):
                    self._add_piece(stream, piece, out)
                    return
                joined = self._join(stream, piece[:-1].removesuffix("\r"), out)
                if joined is None:
                    return
                text = joined
            else:
                text = m.group("payload") or ""
            if self._event_start(text) is not None:
                break
        out.lines.append(text)

    def _match(self, text: str) -> tuple[str, Any] | None:
        order = self._order
        if self.last is not None:
            order = [self.last, *(n for n in order if n != self.last)]
        for name in order:
            m = self._patterns[name].match(text)
            if m is None:
                continue
            if name in _DEFINITE or self._reveals_event(m.group("payload") or "", _MAX_DEPTH):
                return name, m
        return None

    def _reveals_event(self, payload: str, depth: int) -> bool:
        """Whether a loose wrapper's payload is an nginx line, directly or inside more
        wrappers; a continuation line such as ``PHP message: ...`` is not unwrapped."""
        if self._event_start(payload) is not None:
            return True
        if depth <= 1:
            return False
        for name, pattern in self._patterns.items():
            m = pattern.match(payload)
            if m is not None and (name in _DEFINITE or self._reveals_event(
                m.group("payload") or "", depth - 1)):
                return True
        return False

    def flush(self, idle: bool = False) -> tuple[list[str], int]:
        """End of input: the pieces of lines whose last piece never came, joined, and how
        many raw lines they span beyond one each. ``idle`` (a quiet source, not its end):
        a line being dropped stays dropped up to its last piece."""
        lines = ["".join(pieces) for pieces in self._pieces.values() if pieces]
        extra = sum(len(pieces) for pieces in self._pieces.values()) - len(lines)
        self._pieces.clear()
        if not idle:
            self._dropping.clear()
        return lines, extra

    def _add_piece(self, stream: str, piece: str, out: Unwrapped) -> None:
        if stream in self._dropping:
            out.broken.append(("too_long", piece[:200]))
            return
        pieces = self._pieces.setdefault(stream, [])
        pieces.append(piece)
        # Every piece counts towards the bound, an empty one as one character.
        if sum(max(len(p), 1) for p in pieces) > self.max_line:
            out.broken.extend(("too_long", p[:200]) for p in pieces)
            del self._pieces[stream]
            self._dropping.add(stream)  # the rest of this line, up to its last piece

    def _join(self, stream: str, last: str, out: Unwrapped) -> str | None:
        """The whole line ending with ``last``; ``None`` for the end of a dropped one."""
        if stream in self._dropping:
            self._dropping.discard(stream)
            out.broken.append(("too_long", last[:200]))
            return None
        pieces = self._pieces.pop(stream, None)
        if not pieces:
            return last
        out.partial += len(pieces)
        pieces.append(last)
        return "".join(pieces)
