"""Replay: the live pipeline over whole files, at full speed.

Several files are merged by event time a chunk at a time (the chunk whose first line is
oldest goes next), so a detector fed from two nginx instances, or a rotated set, sees
time move forward much as it would live: to within a chunk (4 MiB, about a second of
a storm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from retrywatch.detect.alerts import Alert, AlertChange
from retrywatch.detect.core import Core, DetectorConfig, new_core
from retrywatch.detect.engine import DetectorStats, apply_changes
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
            "alerts_fired": d.fired,
            "alerts_resolved": d.resolved,
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
) -> ReplayResult:
    """Run every file through the core; return all alerts (firing or resolved).

    Several files are merged a chunk at a time: the next chunk comes from the file whose
    newest event is oldest (a file not yet started goes first), so the detector sees
    event time move forward much as it would live, to within a chunk. ``on_chunk`` is
    called with the core after each chunk (analysis takes its export rows there);
    ``on_raw`` is told the file bytes consumed (progress); ``names`` overrides each
    file's source name.
    """
    config = config or DetectorConfig()
    core = core if core is not None else new_core(config, tz)
    names = names or [source_name(p) for p in paths]
    for name in names:
        core.add_source(name)
    streams = {i: iter_chunks(p, chunk_size, on_raw) for i, p in enumerate(paths)}
    alerts: dict[str, Alert] = {}
    by_key: dict[tuple[str, int, int], Alert] = {}
    n_changes = 0

    def take(raw: list[Any]) -> None:
        nonlocal n_changes
        for change in apply_changes(raw, by_key, tz):
            n_changes += 1
            alerts[change.alert.id] = change.alert
            if on_change is not None:
                on_change(change)

    while streams:
        def order(i: int) -> tuple[int, float, int]:
            newest = core.newest(names[i])
            return (0, 0, i) if newest is None else (1, newest, i)

        i = min(streams, key=order)
        chunk = next(streams[i], None)
        if chunk is None:
            del streams[i]
            take(core.flush(names[i]))
        else:
            take(core.feed(names[i], chunk))
        if on_chunk is not None:
            on_chunk(core)
    ordered = sorted(alerts.values(), key=lambda a: (a.fired_at, a.source, a.pid, a.cid))
    stats = core.source_stats()
    sources = [SourceStats.of(name, stats[name]) for name in dict.fromkeys(names)]
    return ReplayResult(ordered, sources, DetectorStats.of(core),
                        tracked_at_end=core.tracked_keys, changes=n_changes)
