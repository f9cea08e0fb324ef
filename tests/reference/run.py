"""Drive the reference model and the compiled core with the same operations, and read
back what each one said, in the same shape (tests/test_differential.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from reference.detector import Detector
from reference.parser import EventHead, Parser
from reference.pipeline import SourcePipeline
from retrywatch.detect.alerts import Alert, AlertChange
from retrywatch.detect.core import DetectorConfig, new_core
from retrywatch.detect.engine import DetectorStats, apply_changes
from retrywatch.detect.events import Event

#: ("feed", source, bytes) | ("records", source, [bytes]) | ("flush", source) |
#: ("idle", source) (a quiet source's flush) | ("advance", ts)
Op = tuple[Any, ...]


@dataclass
class Outcome:
    """What an implementation said: every change (the alert as it was then), the counts."""

    changes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    detector: dict[str, Any] = field(default_factory=dict)
    tracked: int = 0
    #: connect failures by the peer their line names (None: names none), the upstream
    #: anomalies' input
    peers: dict[str | None, int] = field(default_factory=dict)


def _take(changes: Iterable[AlertChange], out: Outcome) -> None:
    for change in changes:
        out.changes.append((change.kind, change.alert.to_dict()))


def _source_stats(name: str, d: dict[str, Any]) -> dict[str, Any]:
    return {"source": name, "bytes_read": d["bytes_read"], "lines_read": d["lines_read"],
            "lines_parsed": d["lines_parsed"], "events": d["events"],
            "unparsed": {k: v for k, v in d["unparsed"].items() if v}}


def _detector_stats(s: DetectorStats | Any) -> dict[str, Any]:
    return {"connect_failures": s.connect_failures, "evictions": s.evictions,
            "untracked": s.untracked, "expired": s.expired, "ended": s.ended,
            "fired": s.fired, "resolved": s.resolved,
            "by_source_kind": {k: v for k, v in dict(s.by_source_kind).items() if v}}


def run_reference(ops: list[Op], config: DetectorConfig, tz: tzinfo,
                  max_line: int = 64 * 1024) -> Outcome:
    parser = Parser(tz)
    detector = Detector(config)
    pipes: dict[str, SourcePipeline] = {}
    out = Outcome()
    for op in ops:
        if op[0] == "advance":
            _take(detector.advance(op[1], datetime.fromtimestamp(op[1], tz)), out)
            continue
        source = op[1]
        pipe = pipes.get(source)
        if pipe is None:
            pipe = pipes[source] = SourcePipeline(source, parser, max_line=max_line,
                                                  ordered=True)
        if op[0] == "feed":
            batch = pipe.feed(op[2])
        elif op[0] == "records":
            batch = pipe.feed_records(op[2])
        else:
            batch = pipe.flush(idle=op[0] == "idle")
        heads: list[tuple[EventHead, int]] = []
        for record in batch.records:
            if isinstance(record, Event):
                head = parser.head(record.line, source)
                assert isinstance(head, EventHead)
                heads.append((head, 1))
                if head.failure is not None and head.cid is not None:
                    peer = head.event().peer
                    out.peers[peer] = out.peers.get(peer, 0) + 1
        _take(detector.process(heads), out)
    for name, pipe in pipes.items():
        s = pipe.stats
        out.sources[name] = _source_stats(name, {
            "bytes_read": s.bytes_read, "lines_read": s.lines_read,
            "lines_parsed": s.lines_parsed, "events": s.events, "unparsed": dict(s.unparsed)})
    out.detector = _detector_stats(detector.stats)
    out.tracked = detector.tracked_keys
    return out


def run_core(ops: list[Op], config: DetectorConfig, tz: tzinfo,
             max_line: int = 64 * 1024) -> Outcome:
    core = new_core(config, tz, max_line=max_line)
    core.set_upstreams(65536, 0)  # every peer named
    by_key: dict[tuple[str, int, int], Alert] = {}
    out = Outcome()
    for op in ops:
        if op[0] == "advance":
            raw = core.advance(op[1])
        elif op[0] == "feed":
            raw = core.feed(op[1], op[2])
        elif op[0] == "records":
            raw = core.feed_records(op[1], op[2])
        else:
            raw = core.flush(op[1], idle=op[0] == "idle")
        _take(apply_changes(raw, by_key, tz), out)
    for name, d in core.source_stats().items():
        out.sources[name] = _source_stats(name, d)
    out.detector = _detector_stats(DetectorStats.of(core))
    out.tracked = core.tracked_keys
    figures = core.upstreams()
    assert figures is not None
    out.peers = {p["peer"]: p["total"] for p in figures["peers"]}
    if figures["without_peer_total"]:
        out.peers[None] = figures["without_peer_total"]
    assert figures["failures_total"] == sum(n for p, n in out.peers.items() if p is not None)
    return out
