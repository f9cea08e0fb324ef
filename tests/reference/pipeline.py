"""One source's path from bytes to events: framing, unwrapping, assembling, parsing.

Work moves in chunks. In a retry storm the same line repeats thousands of times
within a second, so a chunk's events are parsed once per distinct text and handed
on as ``(event, times)`` pairs, in order of first appearance. The detector treats
``n`` identical events exactly as ``n`` events in a row (they share one second), so
this is exact, not a sample.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import tzinfo

from reference.assemble import Assembled, EventAssembler
from reference.formats import event_start
from reference.framing import DEFAULT_MAX_LINE, Framed, LineFramer, decode, frame_datagram
from reference.parser import EventHead, Parser
from reference.wrappers import Unwrapper
from retrywatch.detect.events import Event, Unparsed
from retrywatch.detect.stats import SourceStats

__all__ = ["Batch", "SourcePipeline", "parse_text"]


@dataclass(slots=True)
class Batch:
    """What one chunk produced: distinct events with their counts, and what failed."""

    events: list[tuple[EventHead, int]] = field(default_factory=list)
    unparsed: list[Unparsed] = field(default_factory=list)
    #: In ``ordered`` mode: every event and unparsed line, one item each, in input order.
    records: list[Event | Unparsed] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events)


class SourcePipeline:
    """Turns one source's bytes into batches of events. Never raises on bad input."""

    def __init__(self, name: str, parser: Parser, *, max_line: int = DEFAULT_MAX_LINE,
                 ordered: bool = False) -> None:
        self.name = name
        self.parser = parser
        self.stats = SourceStats(name)
        #: Keep every event and unparsed line in order (``retrywatch parse``) instead
        #: of counting identical events.
        self.ordered = ordered
        self._framer = LineFramer(max_line)
        self._unwrapper = Unwrapper(max_line)
        self._assembler = EventAssembler()
        self._start = event_start()

    def feed(self, chunk: bytes) -> Batch:
        self.stats.bytes_read += len(chunk)
        return self._lines(self._framer.feed(chunk))

    def feed_record(self, record: bytes) -> Batch:
        """A datagram or other self-delimited record: one line, joined to nothing."""
        return self.feed_records([record])

    def feed_records(self, records: list[bytes]) -> Batch:
        """Datagrams (syslog): each one line, never joined to the next; counted and
        parsed together like the lines of a chunk."""
        framed = Framed()
        for record in records:
            self.stats.bytes_read += len(record)
            one = frame_datagram(record, self._framer.max_line)
            framed.lines.extend(one.lines)
            framed.too_long += one.too_long
        batch = self._lines(framed, records=True)
        _extend(batch, self._finish(self._assembler.flush()))
        return batch

    def flush(self, idle: bool = False) -> Batch:
        """End of input (or, ``idle``, a quiet source): release the held line, pieces and
        event; a quiet source's line being dropped stays dropped."""
        batch = self._lines(self._framer.flush(idle))
        held, pieces = self._unwrapper.flush(idle)
        if held:
            self.stats.lines_parsed += pieces  # leading pieces of the lines released now
            _extend(batch, self._finish(self._assembler.feed(held)))
        tail = self._finish(self._assembler.flush())
        _extend(batch, tail)
        return batch

    # -- stages ------------------------------------------------------------
    def _lines(self, framed: Framed, *, records: bool = False) -> Batch:
        lines = framed.lines
        stats = self.stats
        stats.lines_read += len(lines) + framed.too_long
        if framed.too_long:
            stats.unparsed["too_long"] += framed.too_long
        if not lines:
            return Batch()
        if not self.ordered and self._unwrapper.last is None:
            # Plain nginx lines (a wrapped source takes the slow path from its first
            # wrapped line on, rather than scanning every chunk twice).
            batch = self._fast(lines)
            if batch is not None:
                return batch
        unwrapped = self._unwrapper.unwrap_lines(list(map(decode, lines)))
        batch = Batch()
        for reason, raw in unwrapped.broken:
            stats.unparsed[reason] += 1
            if self.ordered:
                item = Unparsed(reason, raw, self.name)
                batch.unparsed.append(item)
                batch.records.append(item)
        if unwrapped.partial:
            stats.lines_parsed += unwrapped.partial  # pieces joined into one line
        if records:  # each datagram is one event: nothing continues another
            _extend(batch, self._finish(self._assembler.flush()))
            assembled = Assembled()
            for line in unwrapped.lines:
                (assembled.events if self._start(line) else assembled.orphans).append(line)
            _extend(batch, self._finish(assembled))
        else:
            _extend(batch, self._finish(self._assembler.feed(unwrapped.lines)))
        return batch

    def _fast(self, lines: list[bytes]) -> Batch | None:
        """Count identical lines and read each distinct one's head once; ``None`` when a
        line does not start an event (a wrapper, a continuation): the slow path then."""
        counts = Counter(lines)
        raws = list(counts)
        scanned = self.parser.scan(raws, self.name)
        for result in scanned:
            if type(result) is Unparsed and self._start(result.line) is None:
                return None
        # The last line is held back (continuation lines may follow in the next chunk),
        # and the one held from the previous chunk is released first.
        last = lines[-1]
        released, blanks = self._assembler.release(decode(last))
        counts[last] -= 1
        batch = self._heads({released: 1}) if released is not None else Batch()
        stats = self.stats
        if blanks:
            stats.unparsed["blank"] += blanks
        events = batch.events
        n_events = 0
        for raw, result in zip(raws, scanned, strict=True):
            n = counts[raw]
            if not n:
                continue
            if result is None:
                n_events += n
            elif type(result) is EventHead:
                events.append((result, n))
                n_events += n
            else:
                stats.unparsed[result.reason] += n  # type: ignore[union-attr]
        stats.events += n_events
        stats.lines_parsed += n_events
        return batch

    def _finish(self, assembled: Assembled) -> Batch:
        batch = Batch()
        stats = self.stats
        for orphan in assembled.orphans:
            reason = "blank" if not orphan.strip() else "no_timestamp"
            stats.unparsed[reason] += 1
            if self.ordered:
                item = Unparsed(reason, orphan, self.name)
                batch.unparsed.append(item)
                batch.records.append(item)
        if not assembled.events:
            return batch
        if self.ordered:
            self._parse_all(assembled.events, batch)
            return batch
        return self._heads(Counter(assembled.events))

    def _heads(self, counts: dict[str, int]) -> Batch:
        """Read the head of each distinct event text once; pass it on with its count."""
        batch = Batch()
        stats = self.stats
        head = self.parser.head
        name = self.name
        events = batch.events
        n_events = n_lines = 0
        for text, n in counts.items():
            result = head(text, name)
            if type(result) is EventHead:
                events.append((result, n))
                n_events += n
                n_lines += result.lines * n
            else:
                stats.unparsed[result.reason] += (text.count("\n") + 1) * n  # type: ignore[union-attr]
        stats.events += n_events
        stats.lines_parsed += n_lines
        return batch

    def _parse_all(self, texts: list[str], batch: Batch) -> None:
        stats = self.stats
        for text in texts:
            result = self.parser.parse(text, self.name)
            if isinstance(result, Event):
                stats.events += 1
                stats.lines_parsed += result.lines
            else:
                stats.unparsed[result.reason] += text.count("\n") + 1
                batch.unparsed.append(result)
            batch.records.append(result)


def _extend(batch: Batch, more: Batch) -> None:
    batch.events.extend(more.events)
    batch.unparsed.extend(more.unparsed)
    batch.records.extend(more.records)


def parse_text(text: str | bytes, tz: tzinfo, source: str = "") -> list[Event | Unparsed]:
    """Every event and unparsed line of a text, in order: for tests and ``retrywatch parse``."""
    data = text.encode() if isinstance(text, str) else text
    pipe = SourcePipeline(source, Parser(tz), ordered=True)
    return pipe.feed(data).records + pipe.flush().records
