"""The compiled core against the reference model (tests/reference/): the same bytes in,
the same alerts (ids, failures, first/last seen, upstreams, diagnosis, every field) and
the same counts out, change by change.

Streams are generated (hypothesis): interleaved keys and workers, event time that steps
back a few seconds as several workers write it, every wrapper (with CRI and docker
pieces), continuation and blank lines, over-long lines, NUL bytes, CRLF, invalid UTF-8,
random chunk splits, several sources, floods under a small cap. Then every real log of
sample_logs/ and every line of the peer fixtures.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from helpers import (
    BASE_TS,
    grpc_refused,
    http_refused,
    http_timeout,
    premature_close,
    stream_connected,
    stream_refused,
    stream_timeout,
    unix_refused,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference.parser import Parser
from reference.pipeline import parse_text as reference_parse_text
from reference.run import Op, run_core, run_reference

from retrywatch.detect.core import DetectorConfig
from retrywatch.detect.events import Event, Unparsed
from retrywatch.detect.records import parse_text

UTC = ZoneInfo("UTC")
ROOT = Path(__file__).resolve().parent.parent
SAMPLE_LOGS = ROOT / "sample_logs"
PEER = Path(__file__).resolve().parent / "fixtures" / "peer"
MAX_LINE = 600  # small, so over-long lines are cheap to make


def assert_same(ops: list[Op], config: DetectorConfig, max_line: int = MAX_LINE) -> None:
    ref = run_reference(ops, config, UTC, max_line)
    core = run_core(ops, config, UTC, max_line)
    assert core.sources == ref.sources
    assert [kind for kind, _ in core.changes] == [kind for kind, _ in ref.changes]
    for (_, got), (_, want) in zip(core.changes, ref.changes, strict=True):
        assert got == want
    assert core.detector == ref.detector
    assert core.tracked == ref.tracked
    assert core.peers == ref.peers


# -- generated streams ------------------------------------------------------------------

def _ended_stream(t: int, cid: int, pid: int) -> str:
    return (BASE_STAMP(t) + f" [info] {pid}#{pid}: *{cid} client disconnected, bytes from/to "
            "client:0/0, bytes from/to upstream:0/0")


def BASE_STAMP(t: int) -> str:
    from helpers import stamp
    return stamp(t)


FAILURES = [
    lambda t, c, p: stream_refused(t, c, pid=p),
    lambda t, c, p: stream_refused(t, c, pid=p, upstream="10.0.0.3:5555"),
    lambda t, c, p: stream_timeout(t, c, pid=p),
    lambda t, c, p: http_refused(t, c, pid=p, uri=f"/r{c % 3}"),
    lambda t, c, p: http_refused(t, c, pid=p, peer="10.0.0.9:80", uri="/x"),
    lambda t, c, p: grpc_refused(t, c, pid=p),
    lambda t, c, p: unix_refused(t, c, pid=p),
    lambda t, c, p: http_timeout(t, c, pid=p),
    lambda t, c, p: http_timeout(t, c, pid=p, action="reading response header from upstream"),
    lambda t, c, p: (BASE_STAMP(t) + f" [error] {p}#{p}: *{c} no live upstreams while "
                     "connecting to upstream, client: 10.0.0.1, server: s, request: "
                     '"GET / HTTP/1.1", upstream: "http://grp/", host: "h"'),
]
OTHERS = [
    lambda t, c, p: premature_close(t, c, pid=p),
    lambda t, c, p: stream_connected(t, c, pid=p),
    _ended_stream,
    lambda t, c, p: BASE_STAMP(t) + f" [notice] {p}#{p}: signal process started",
    lambda t, c, p: BASE_STAMP(t) + f" [bogus] {p}#{p}: *{c} x",
    lambda t, c, p: "2026/13/45 25:61:61 [error] 1#1: *1 connect() failed (111: x)",
]
JUNK = ["", "   ", "\t", "PHP message: continued", "  at frame 2", "\x00\x00",
        "garbage \udcff\udcfe bytes", "x" * (MAX_LINE + 5)]


def _wrap(line: str, how: int, t: int) -> list[str]:
    """The line as a wrapper would carry it (one or more physical lines)."""
    if how == 0:
        return [line]
    if how == 1:
        return [f"2026-11-25T17:00:{t % 60:02d}.5Z stderr F {line}"]
    if how == 2:  # CRI split in two pieces
        cut = len(line) // 2
        return [f"2026-11-25T17:00:00.5Z stderr P {line[:cut]}",
                f"2026-11-25T17:00:00.5Z stderr F {line[cut:]}"]
    if how == 3:
        return [json.dumps({"log": line + "\n", "stream": "stderr", "time": "t"})]
    if how == 4:
        return [f"<187>Nov 25 17:00:00 nginx: {line}"]
    if how == 5:
        return [f"web_1  | {line}"]
    if how == 7:  # CRI split in many pieces, empty ones among them
        third = len(line) // 3
        return [f"2026-11-25T17:00:00.5Z stderr P {piece}"
                for piece in (line[:third], "", "", line[third:2 * third], "")
                ] + [f"2026-11-25T17:00:00.5Z stderr F {line[2 * third:]}"]
    return [f"host nginx[12]: {line}"]


@st.composite
def streams(draw: Any, wrappers: bool = True) -> bytes:
    n = draw(st.integers(0, 60))
    t = 0
    lines: list[str] = []
    wrap = draw(st.integers(0, 7)) if wrappers and draw(st.booleans()) else 0
    for _ in range(n):
        t = max(0, t + draw(st.integers(-3, 3)))
        cid = draw(st.integers(1, 6))
        pid = draw(st.sampled_from([2454, 2455]))
        pick = draw(st.integers(0, 9))
        if pick < 6:
            line = draw(st.sampled_from(FAILURES))(t, cid, pid)
        elif pick < 8:
            line = draw(st.sampled_from(OTHERS))(t, cid, pid)
        else:
            line = draw(st.sampled_from(JUNK))
        for physical in _wrap(line, wrap if draw(st.integers(0, 4)) else 0, t):
            lines.append(physical)
    end = draw(st.sampled_from(["\n", "\r\n"]))
    text = end.join(lines) + (end if draw(st.booleans()) else "")
    return text.encode("utf-8", "surrogateescape")


@st.composite
def chunked(draw: Any, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    pieces, last = [], 0
    for cut in cuts:
        pieces.append(data[last:cut])
        last = cut
    pieces.append(data[last:])
    return pieces


configs = st.builds(
    DetectorConfig,
    window=st.integers(2, 10), threshold=st.integers(1, 6), min_repeat=st.integers(1, 3),
    resolve_after=st.integers(1, 10), max_tracked=st.integers(1, 8))


@st.composite
def operations(draw: Any) -> list[Op]:
    ops: list[Op] = []
    for source in draw(st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=3)):
        data = draw(streams())
        for piece in draw(chunked(data)):
            ops.append(("feed", source, piece))
            if draw(st.integers(0, 3)) == 0:  # a quiet spell: held things released
                ops.append(("idle", source))
        if draw(st.booleans()):
            ops.append(("flush", source))
        if draw(st.integers(0, 5)) == 0:
            ops.append(("advance", BASE_TS + draw(st.integers(0, 80))))
    return ops


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations(), config=configs)
def test_generated_streams(ops: list[Op], config: DetectorConfig) -> None:
    assert_same(ops, config)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=streams(), config=configs)
def test_generated_datagrams(data: bytes, config: DetectorConfig) -> None:
    records = data.replace(b"\r\n", b"\n").split(b"\n")
    half = len(records) // 2
    assert_same([("records", "syslog", records[:half]), ("records", "syslog", records[half:]),
                 ("flush", "syslog")], config)


@settings(max_examples=60, deadline=None)
@given(cap=st.integers(1, 20), threshold=st.integers(2, 8), split=st.integers(1, 4000))
def test_flood_with_a_hidden_runaway_under_a_small_cap(cap: int, threshold: int,
                                                       split: int) -> None:
    lines = []
    for i in range(600):
        t = i // 40
        lines.append(stream_refused(t, 1000 + i))  # one-off connections
        if i % 7 == 0:
            lines.append(stream_refused(t, 7, upstream=f"10.0.0.{i % 2}:5555"))
    data = ("\n".join(lines) + "\n").encode()
    ops: list[Op] = [("feed", "f", data[i : i + split]) for i in range(0, len(data), split)]
    ops.append(("flush", "f"))
    config = DetectorConfig(window=10, threshold=threshold, max_tracked=cap)
    assert_same(ops, config, max_line=64 * 1024)
    core = run_core(ops, config, UTC)
    assert core.tracked <= cap


def test_bounds_quiet_spells_and_empty_pieces() -> None:
    """An over-long line written slowly (quiet spells between its parts) is one line,
    too_long once; runs of empty CRI and docker pieces count towards the bound."""
    ev = stream_refused(0, 1)
    cri_p = b"2026-11-25T17:00:00.5Z stdout P \n"
    docker_p = json.dumps({"log": "", "stream": "stderr", "time": "t"}).encode() + b"\n"
    ops: list[Op] = [("feed", "f", ev.encode() + b"\n")]
    for _ in range(4):
        ops += [("feed", "f", b"x" * (MAX_LINE + 100)), ("idle", "f")]
    ops += [("feed", "f", b"\n" + ev.encode() + b"\n"), ("idle", "f")]
    ops += [("feed", "k", cri_p * (MAX_LINE + 50) + docker_p * (MAX_LINE * 2)),
            ("idle", "k"),
            ("feed", "k", cri_p * 10 + (b"2026-11-25T17:00:00.5Z stdout F " + ev.encode()
                                        + b"\n") * 2),
            ("flush", "k"), ("flush", "f")]
    assert_same(ops, DetectorConfig(threshold=1))
    stats = run_core(ops, DetectorConfig(threshold=1), UTC, MAX_LINE).sources
    assert stats["f"]["unparsed"] == {"too_long": 1}
    assert stats["f"]["lines_read"] == 3
    # Every raw piece line is one too_long, up to the end of its line; then lines again.
    k = stats["k"]
    assert k["unparsed"] == {"too_long": (MAX_LINE + 50) + 2 * MAX_LINE + 10 + 1}
    assert k["lines_read"] == k["lines_parsed"] + sum(k["unparsed"].values())
    assert k["events"] == 1


# -- real logs --------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(SAMPLE_LOGS.glob("*.error.log.gz")), ids=lambda p: p.name)
@pytest.mark.parametrize("config", [DetectorConfig(), DetectorConfig(max_tracked=50, window=5)],
                         ids=["defaults", "small-cap"])
def test_sample_logs(path: Path, config: DetectorConfig) -> None:
    data = gzip.decompress(path.read_bytes())
    size = 64 * 1024
    ops: list[Op] = [("feed", path.name, data[i : i + size]) for i in range(0, len(data), size)]
    ops.append(("flush", path.name))
    assert_same(ops, config, max_line=64 * 1024)


def _peer_lines() -> list[str]:
    lines = []
    for path in sorted(PEER.glob("*.jsonl")):
        with path.open(encoding="utf-8") as f:
            lines += [json.loads(raw)["line"] for raw in f if raw.strip()]
    return lines


def _fields(record: Event | Unparsed) -> dict[str, Any]:
    out = record.to_dict()
    if isinstance(record, Event):
        out["ts"] = record.ts
        out["lines"] = record.lines
    return out


def test_peer_fixture_lines_parse_alike() -> None:
    lines = _peer_lines()
    assert len(lines) > 500
    for line in lines:
        want = [_fields(r) for r in reference_parse_text(line, UTC, "peer")]
        got = [_fields(r) for r in parse_text(line, UTC, "peer")]
        assert got == want, line


def test_sample_log_lines_parse_alike() -> None:
    seen: set[str] = set()
    for path in sorted(SAMPLE_LOGS.glob("*.error.log.gz")):
        seen.update(gzip.decompress(path.read_bytes()).decode().splitlines())
    parser = Parser(UTC)
    for line in sorted(seen):
        want = parser.parse(line, "s")
        [got] = parse_text(line, UTC, "s")
        assert _fields(got) == _fields(want), line


@settings(max_examples=300, deadline=None)
@given(data=streams())
def test_generated_records_parse_alike(data: bytes) -> None:
    want = reference_parse_text(data, UTC, "g")
    got = parse_text(data, UTC, "g")
    assert [_fields(r) for r in got if isinstance(r, Event)] == \
        [_fields(r) for r in want if isinstance(r, Event)]
    assert sorted((r.reason, r.line) for r in got if isinstance(r, Unparsed)) == \
        sorted((r.reason, r.line) for r in want if isinstance(r, Unparsed))


# -- the shapes' examples (parsers/*.toml), on the core ------------------------------------

def _examples(name: str) -> list[dict[str, Any]]:
    import tomllib
    with (ROOT / "parsers" / f"{name}.toml").open("rb") as f:
        return list(tomllib.load(f)["example"])


@pytest.mark.parametrize("example", _examples("nginx_error"), ids=lambda e: e["about"][:50])
def test_core_parses_every_nginx_example(example: dict[str, Any]) -> None:
    [event] = parse_text(example["line"], UTC, "src")
    assert isinstance(event, Event), event
    assert event.line == example["line"]
    assert event.source == "src"
    for name, value in example["expect"].items():
        assert getattr(event, name) == (None if value == "null" else value), name


@pytest.mark.parametrize("example", _examples("wrappers"), ids=lambda e: e["about"][:50])
def test_core_unwraps_every_wrapper_example(example: dict[str, Any]) -> None:
    [event] = parse_text(example["line"], UTC)
    assert isinstance(event, Event), event
    assert event.line == example["inner"]


# -- state: a restore in the middle changes nothing ----------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations(), config=configs, cut=st.integers(0, 40))
def test_snapshot_and_restore_mid_stream_changes_nothing(ops: list[Op], config: DetectorConfig,
                                                         cut: int) -> None:
    """Save the core's state after any operation, restore it into a new core, go on: the
    changes and counts are those of one uninterrupted core."""
    from retrywatch.detect.core import Core, zone_arguments
    from retrywatch.detect.engine import DetectorStats, apply_changes

    def run(restart: int | None) -> tuple[list[Any], dict[str, Any], Any]:
        core = Core(**config.arguments(), **zone_arguments(UTC), max_line=MAX_LINE)
        by_key: dict[Any, Any] = {}
        seen: list[Any] = []
        for i, op in enumerate(ops):
            if i == restart:
                state = core.snapshot()
                core = Core.restore(state, **config.arguments(), **zone_arguments(UTC),
                                    max_line=MAX_LINE)
                assert core.snapshot() == state
            if op[0] == "advance":
                raw = core.advance(op[1])
            elif op[0] == "feed":
                raw = core.feed(op[1], op[2])
            else:
                raw = core.flush(op[1], idle=op[0] == "idle")
            seen += [(c.kind, c.alert.to_dict()) for c in apply_changes(raw, by_key, UTC)]
        return seen, core.source_stats(), DetectorStats.of(core)

    assert run(cut % (len(ops) + 1)) == run(None)


def test_a_damaged_state_is_refused_not_trusted() -> None:
    from retrywatch.detect.core import Core, zone_arguments

    config = DetectorConfig(threshold=3)
    core = Core(**config.arguments(), **zone_arguments(UTC))
    core.feed("a", (stream_refused(0, 7) + "\n").encode() * 5)
    state = core.snapshot()
    for bad in (state[: len(state) // 2], state + b"x", b"", b"RWCORE\0\x63", b"\x80\x04junk",
                state.replace(b"RWCORE", b"RWCORF")):
        with pytest.raises(ValueError):
            Core.restore(bad, **config.arguments(), **zone_arguments(UTC))


def test_restore_takes_todays_settings() -> None:
    from retrywatch.detect.core import Core, zone_arguments

    old = DetectorConfig(threshold=1000, max_tracked=100)
    core = Core(**old.arguments(), **zone_arguments(UTC))
    core.feed("a", "".join(stream_refused(0, 7) + "\n" for _ in range(20)).encode())
    assert core.firing() == []
    new = DetectorConfig(threshold=5, max_tracked=100)
    again = Core.restore(core.snapshot(), **new.arguments(), **zone_arguments(UTC))
    changes = again.feed("a", (stream_refused(1, 7) + "\n").encode())
    assert [c[0] for c in changes] == ["fired"]
