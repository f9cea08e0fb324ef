"""Line framing: bytes in, lines (still bytes) out.

The one place that knows about line ends (LF and CRLF), the maximum line size (a
longer line is cut, counted and skipped, never a crash), NUL padding left by a crash,
and the final partial line (held until more bytes come, or flushed at the end of
input). A datagram is one record and is framed on its own (:func:`frame_datagram`).

Lines stay bytes here: in a storm most lines repeat, and :func:`decode` runs once per
distinct line, keeping invalid UTF-8 visible as ``\\xNN`` (the way nginx escapes bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_MAX_LINE", "Framed", "LineFramer", "decode", "frame_datagram"]

DEFAULT_MAX_LINE = 64 * 1024


@dataclass(slots=True)
class Framed:
    """Complete lines from one chunk, and how many over-long lines were skipped."""

    lines: list[bytes] = field(default_factory=list)
    too_long: int = 0


def decode(line: bytes) -> str:
    """Text of a line: invalid UTF-8 as ``\\xNN`` escapes."""
    return line.decode("utf-8", "backslashreplace")


class LineFramer:
    """Splits a byte stream into lines, carrying the partial last line between chunks."""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._pending = b""
        self._skipping = False  # inside an over-long line, dropping bytes up to its end

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def feed(self, chunk: bytes) -> Framed:
        out = Framed()
        if b"\x00" in chunk:
            chunk = chunk.replace(b"\x00", b"")
        if b"\n" not in chunk:
            self._pending = b"" if self._skipping else self._pending + chunk
            self._check_pending(out)
            return out
        lines = chunk.split(b"\n")
        partial = lines.pop()  # the unfinished last line (b"" after a final "\n")
        if self._skipping:
            # The first line ending here is the rest of the over-long line: drop it.
            self._skipping = False
            del lines[0]
        elif self._pending:
            lines[0] = self._pending + lines[0]
        if b"\r" in chunk or self._pending.endswith(b"\r"):
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        self._pending = partial
        longest_possible = len(chunk) + len(lines[0]) if lines else 0
        if longest_possible > self.max_line and max(map(len, lines), default=0) > self.max_line:
            kept = [line for line in lines if len(line) <= self.max_line]
            out.too_long += len(lines) - len(kept)
            lines = kept
        out.lines = lines
        self._check_pending(out)
        return out

    def _check_pending(self, out: Framed) -> None:
        size = len(self._pending) - self._pending.endswith(b"\r")  # a CR of CRLF is no byte
        if size > self.max_line:
            # The line in progress is already too long: count it once, drop it to its end.
            out.too_long += 1
            self._pending = b""
            self._skipping = True

    def flush(self, idle: bool = False) -> Framed:
        """The final line without a line end, at the end of input. ``idle`` (a quiet
        source, not its end): an over-long line being dropped stays dropped to its end."""
        out = Framed()
        if self._pending:
            out.lines = [self._pending.removesuffix(b"\r")]
            self._pending = b""
        if not idle:
            self._skipping = False
        return out


def frame_datagram(payload: bytes, max_line: int = DEFAULT_MAX_LINE) -> Framed:
    """A datagram is one record: trailing line ends dropped, never joined to the next."""
    if len(payload) > max_line:
        return Framed(too_long=1)
    line = payload.replace(b"\x00", b"").rstrip(b"\r\n")
    if b"\n" in line:  # one record is one line: keep a stray line break visible
        line = line.replace(b"\r\n", b"\\n").replace(b"\n", b"\\n")
    return Framed(lines=[line])
