"""Replay: the live pipeline over whole files, at full speed, on every core.

Each file is read and parsed by the core on a thread of its own (the GIL released), and
the one detector takes the parsed chunks merged by event time (the chunk whose first
event is oldest goes next), so a detector fed from two nginx instances, or a rotated
set, sees time move forward much as it would live: to within a chunk (4 MiB, about a
second of a storm).
"""

from __future__ import annotations

import heapq
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from retrywatch.detect.alerts import Alert, AlertChange
from retrywatch.detect.core import (
    Core,
    DetectorConfig,
    ParsedChunk,
    SourceReader,
    new_core,
    zone_arguments,
)
from retrywatch.detect.engine import DetectorStats, RuledOut, apply_changes
from retrywatch.detect.knowledge import Knowledge
from retrywatch.detect.stats import SourceStats
from retrywatch.sources.files import CHUNK_SIZE, iter_chunks, source_name

__all__ = ["ReplayResult", "replay"]


@dataclass(slots=True)
class ReplayResult:
    alerts: list[Alert]
    sources: list[SourceStats]
    detector: DetectorStats
    tracked_at_end: int = 0
    changes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    ruled_out: int = 0  # connections past the threshold that the configuration bounds
    paths: list[str] = field(default_factory=list)  # each source's file, as given

    @property
    def found(self) -> bool:
        """Whether a runaway connection was found (``replay --exit-code``: exit 1)."""
        return bool(self.alerts)

    def not_nginx_logs(self) -> list[str]:
        """The files of which lines were read but none is an nginx error log line: given
        by mistake, most likely (a ``*.gz`` that takes the ground truth beside the logs)."""
        return [path for path, s in zip(self.paths, self.sources, strict=True)
                if s.lines_read and not s.lines_parsed]

    def stats(self) -> dict[str, Any]:
        """Totals over all sources, then each source."""
        lines_read = sum(s.lines_read for s in self.sources)
        unparsed: dict[str, int] = {}
        for s in self.sources:
            for reason, n in s.unparsed.items():
                unparsed[reason] = unparsed.get(reason, 0) + n
        d = self.detector
        return {
            "lines_read": lines_read,
            "lines_parsed": sum(s.lines_parsed for s in self.sources),
            "lines_unparsed": sum(unparsed.values()),
            "unparsed_by_reason": unparsed,
            "bytes_read": sum(s.bytes_read for s in self.sources),
            "events": sum(s.events for s in self.sources),
            "connect_failures": d.connect_failures,
            "connect_failures_by_kind": _by_kind(d),
            "alerts_fired": len(self.alerts),
            "alerts_resolved": sum(a.state == "resolved" for a in self.alerts),
            "threshold_crossings": d.fired,
            "alerts_confirmed": sum(a.confidence == "confirmed" for a in self.alerts),
            "alerts_suspected": sum(a.confidence == "suspected" for a in self.alerts),
            "ruled_out_by_configuration": self.ruled_out,
            "evictions": d.evictions,
            "untracked_failures": d.untracked,
            "tracked_at_end": self.tracked_at_end,
            "sources": [s.to_dict() for s in self.sources],
            **self.extra,
        }


def _by_kind(stats: DetectorStats) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for (_source, kind, _subsystem), n in stats.by_source_kind.items():
        kinds[kind] = kinds.get(kind, 0) + n
    return dict(sorted(kinds.items()))


class _Stream:
    """One file's chunks, read and parsed ahead on a thread of its own (GIL released in
    the core), at most ``AHEAD`` chunks ahead; or, inline, read when asked."""

    AHEAD = 1

    def __init__(self, path: str, reader: SourceReader, chunk_size: int,
                 on_raw: Callable[[int], None] | None, gate: threading.Semaphore | None,
                 stop: threading.Event) -> None:
        self.reader = reader
        self._chunks = iter_chunks(path, chunk_size, on_raw)
        self._parsed = self._parse()  # read by the thread, or inline when there is none
        self._gate = gate
        self._stop = stop
        self._queue: queue.Queue[ParsedChunk | BaseException | None] | None = None
        if gate is not None:
            self._queue = queue.Queue(maxsize=self.AHEAD)
            threading.Thread(target=self._run, name=f"read {path}", daemon=True).start()

    def _parse(self) -> Iterator[ParsedChunk]:
        for chunk in self._chunks:
            yield self.reader.parse(chunk)
        yield self.reader.flush()

    def _run(self) -> None:
        assert self._queue is not None and self._gate is not None
        try:
            while not self._stop.is_set():
                with self._gate:  # at most `threads` files parse at once
                    item = next(self._parsed, None)
                self._put(item)
                if item is None:
                    return
        except BaseException as exc:  # handed to the merging thread, raised there
            self._put(exc)

    def _put(self, item: ParsedChunk | BaseException | None) -> None:
        assert self._queue is not None
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next_with_events(self) -> ParsedChunk | None:
        """The next chunk that holds events (None at the end of the file)."""
        while True:
            if self._queue is None:
                item: ParsedChunk | BaseException | None = next(self._parsed, None)
            else:
                item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is None or len(item):
                return item


def replay(
    paths: list[str],
    *,
    tz: tzinfo,
    config: DetectorConfig | None = None,
    chunk_size: int = CHUNK_SIZE,
    on_change: Callable[[AlertChange], None] | None = None,
    on_chunk: Callable[[Core], None] | None = None,
    on_raw: Callable[[int], None] | None = None,
    names: list[str] | None = None,
    core: Core | None = None,
    threads: int | None = None,
    knowledge: Knowledge | None = None,
) -> ReplayResult:
    """Run every file through the core; return all alerts (firing or resolved).

    Each file is read and parsed on a thread of its own, at most ``threads`` at once
    (default: one per processor this process may run on), the core releasing the GIL,
    while the detector takes the parsed chunks in event-time order: the chunk whose first
    event is oldest goes next, so the detector sees time move forward much as it would
    live, to within a chunk. One large file is parsed ahead while the chunk before it is
    detected. The order depends only on the files, never on the threads: ``threads=1``
    (read inline) gives the same alerts and counts.

    ``on_chunk`` is called with the core after each chunk (analysis takes its export rows
    there); ``on_raw`` is told the file bytes consumed (progress); ``names`` overrides
    each file's source name; ``knowledge``: the nginx configuration (``--nginx-config``),
    which rules out or confirms loops route by route.
    """
    config = config or DetectorConfig()
    core = core if core is not None else new_core(config, tz)
    names = names or [source_name(p) for p in paths]
    threads = threads if threads is not None else len(os.sched_getaffinity(0))
    gate = threading.Semaphore(threads) if threads > 1 else None
    stop = threading.Event()
    zone = zone_arguments(tz)
    streams = [_Stream(path, SourceReader(name, **zone), chunk_size, on_raw, gate, stop)
               for path, name in zip(paths, names, strict=True)]
    for name in names:
        core.add_source(name)
    alerts: dict[str, Alert] = {}
    by_key: dict[tuple[str, int, int], Alert] = {}
    ruled_out = RuledOut()
    n_changes = 0
    try:
        heads: list[tuple[int, int, ParsedChunk]] = []
        for i, stream in enumerate(streams):
            head = stream.next_with_events()
            if head is not None:
                heapq.heappush(heads, (head.first_ts or 0, i, head))
        while heads:
            _, i, chunk = heapq.heappop(heads)
            for change in apply_changes(core.detect(chunk), by_key, tz, knowledge, ruled_out):
                n_changes += 1
                alerts[change.alert.id] = change.alert
                if on_change is not None:
                    on_change(change)
            if on_chunk is not None:
                on_chunk(core)
            head = streams[i].next_with_events()
            if head is not None:
                heapq.heappush(heads, (head.first_ts or 0, i, head))
    finally:
        stop.set()
    ordered = sorted(alerts.values(), key=lambda a: (a.fired_at, a.source, a.pid, a.cid))
    sources = [SourceStats.of(name, stream.reader.stats())
               for name, stream in zip(names, streams, strict=True)]
    return ReplayResult(ordered, sources, DetectorStats.of(core),
                        tracked_at_end=core.tracked_keys, changes=n_changes,
                        ruled_out=ruled_out.total, paths=list(paths))
