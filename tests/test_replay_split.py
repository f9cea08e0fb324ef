"""Replaying a log whole or cut into chunks at any byte offsets gives the same alerts.

Live following reads whatever was appended (small, arbitrary chunks); replay reads
4 MiB at a time. DESIGN.md: "replaying a file gives the same alerts as following it
live". Every field of every alert is compared, nothing is dropped.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrywatch.detect.alerts import Alert
from retrywatch.detect.core import DetectorConfig, new_core
from retrywatch.detect.engine import apply_changes
from retrywatch.detect.stats import SourceStats
from retrywatch.forensics.replay import replay
from retrywatch.sources.files import CHUNK_SIZE, source_name

# Reporting a falsifying example makes hypothesis import libcst, which warns about
# mypy_extensions; with filterwarnings=error that would hide the report behind an
# INTERNALERROR.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")

UTC = ZoneInfo("UTC")
SAMPLE_LOGS = Path(__file__).resolve().parent.parent / "sample_logs"
STORM = Path(__file__).resolve().parent.parent / "sample_logs" / \
    "scenario-http-lua-storm.error.log.gz"
STORM_CIDS = {73, 20137, 20302, 41557, 49447}


@dataclass
class Outcome:
    alerts: list[dict[str, Any]]
    stats: dict[str, Any]


def run_chunks(chunks: Iterable[bytes], config: DetectorConfig | None = None,
               source: str = "src") -> Outcome:
    """What ``replay`` does for one source, with the chunks given: the core."""
    core = new_core(config or DetectorConfig(), UTC)
    alerts: dict[str, Alert] = {}
    by_key: dict[tuple[str, int, int], Alert] = {}
    for chunk in [*chunks, None]:
        raw = core.feed(source, chunk) if chunk is not None else core.flush(source)
        for change in apply_changes(raw, by_key, UTC):
            alerts[change.alert.id] = change.alert
    ordered = sorted(alerts.values(), key=lambda a: (a.fired_at, a.source, a.pid, a.cid))
    return Outcome([a.to_dict() for a in ordered],
                   SourceStats.of(source, core.source_stats()[source]).to_dict())


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def fixed(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def assert_same(got: Outcome, want: Outcome) -> None:
    assert [a["cid"] for a in got.alerts] == [a["cid"] for a in want.alerts]
    for g, w in zip(got.alerts, want.alerts, strict=True):
        assert g == w
    assert got.stats == want.stats


# -- the real storm ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def storm() -> bytes:
    with gzip.open(STORM, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def storm_whole(storm: bytes) -> Outcome:
    return run_chunks([storm], source=source_name(str(STORM)))


@pytest.fixture(scope="module")
def storm_line_starts(storm: bytes) -> list[int]:
    starts = [0]
    pos = storm.find(b"\n")
    while pos >= 0:
        starts.append(pos + 1)
        pos = storm.find(b"\n", pos + 1)
    return starts


def test_storm_whole_finds_the_runaway_connections(storm_whole: Outcome) -> None:
    assert {a["cid"] for a in storm_whole.alerts} == STORM_CIDS
    assert storm_whole.stats["lines_read"] == 57522
    assert storm_whole.stats["lines_read"] == (storm_whole.stats["lines_parsed"]
                                               + storm_whole.stats["lines_unparsed"])


@pytest.mark.parametrize("chunk_size", [CHUNK_SIZE, 1 << 16, 8191])
def test_replay_with_any_chunk_size_equals_one_feed(storm_whole: Outcome,
                                                    chunk_size: int) -> None:
    result = replay([str(STORM)], tz=UTC, chunk_size=chunk_size)
    got = Outcome([a.to_dict() for a in result.alerts], result.sources[0].to_dict())
    assert_same(got, storm_whole)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=0, max_value=17_000_000), min_size=1, max_size=40))
def test_storm_split_at_any_offsets(storm: bytes, storm_whole: Outcome, cuts: list[int]) -> None:
    assert_same(run_chunks(split_at(storm, cuts), source=source_name(str(STORM))), storm_whole)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(near=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=-3, max_value=3)),
                     min_size=1, max_size=40))
def test_storm_split_near_line_ends(storm: bytes, storm_whole: Outcome,
                                    storm_line_starts: list[int],
                                    near: list[tuple[int, int]]) -> None:
    """Cuts right at, just before or just after a line end (a CR-less "\\n" split from its
    line, an empty held line, ...)."""
    cuts = [max(0, storm_line_starts[i % len(storm_line_starts)] + d) for i, d in near]
    assert_same(run_chunks(split_at(storm, cuts), source=source_name(str(STORM))), storm_whole)


# -- generated storms ------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, 12, 0, 0)
PIDS = (100, 101)


def failure_line(stamp: str, pid: int, cid: int, shape: str, peer: str) -> str:
    tail = (f', client: 10.1.0.{cid % 250}, server: s.test, request: "GET /{cid} HTTP/1.1", '
            f'upstream: "http://{peer}/{cid}", host: "s.test"')
    prefix = f"{stamp} [error] {pid}#{pid}: *{cid} "
    if shape == "refused":
        return prefix + "connect() failed (111: Connection refused) while connecting to " \
            "upstream" + tail
    if shape == "unix":
        return (f"{prefix}connect() to unix:/run/{peer}.sock failed (111: Connection "
                f"refused) while connecting to upstream, client: 10.1.0.{cid % 250}, server: "
                f's.test, request: "GET / HTTP/1.1", upstream: "http://unix:/run/{peer}.sock:/'
                '", host: "s.test"')
    if shape == "timeout":
        return prefix + "upstream timed out (110: Connection timed out) while connecting to " \
            "upstream" + tail
    if shape == "stream":
        return (f"{prefix}connect() failed (111: Connection refused) while connecting to "
                f'upstream, client: 10.1.0.{cid % 250}, server: 0.0.0.0:5555, upstream: '
                f'"{peer}", bytes from/to client:0/0, bytes from/to upstream:0/0')
    return prefix + "no live upstreams while connecting to upstream" + tail


@st.composite
def generated_storms(draw: st.DrawFn) -> tuple[bytes, DetectorConfig]:
    """A log of two workers whose lines are in time order: connections fail (often fast,
    against one or two peers), some end, with noise between (notices, read timeouts,
    multi-line events, blank lines), some lines wrapped (CRI, split CRI, docker)."""
    live: list[tuple[int, int]] = [(draw(st.sampled_from(PIDS)), cid) for cid in range(1, 4)]
    next_cid = 4
    t = draw(st.integers(0, 86_400))
    lines: list[str] = []
    actions = draw(st.lists(st.tuples(
        st.sampled_from(["fail"] * 8 + ["burst"] * 3 + ["end", "notice", "read_timeout",
                                                         "multiline", "blank", "new"]),
        st.integers(0, 10**6),  # which connection
        st.sampled_from([0, 0, 0, 0, 1, 1, 2, 5, 40, 70]),  # seconds before it
        st.sampled_from(["refused", "refused", "unix", "timeout", "no_live", "stream"]),
        st.sampled_from(["10.0.0.1:80", "10.0.0.2:80"]),
    ), min_size=1, max_size=60))
    for action, which, dt, shape, peer in actions:
        t += dt
        stamp = (T0 + timedelta(seconds=t)).strftime("%Y/%m/%d %H:%M:%S")
        pid, cid = live[which % len(live)]
        if action == "fail":
            lines.append(failure_line(stamp, pid, cid, shape, peer))
        elif action == "burst":
            peers = ["10.0.0.1:80", "10.0.0.2:80"]
            lines += [failure_line(stamp, pid, cid, shape, peers[i % 2]) for i in range(12)]
        elif action == "end":
            lines.append(f"{stamp} [info] {pid}#{pid}: *{cid} client 10.1.0.{cid % 250} "
                         "closed keepalive connection")
            live.remove((pid, cid))  # nginx never logs an ended connection id again
            live.append((pid, next_cid))
            next_cid += 1
        elif action == "notice":
            lines.append(f"{stamp} [notice] {pid}#{pid}: signal process started")
        elif action == "read_timeout":
            lines.append(f"{stamp} [error] {pid}#{pid}: *{cid} upstream timed out (110: "
                         "Connection timed out) while reading response header from upstream, "
                         f'client: 10.1.0.1, server: s.test, upstream: "http://{peer}/"')
        elif action == "multiline":
            lines += [f'{stamp} [error] {pid}#{pid}: *{cid} FastCGI sent in stderr: "PHP '
                      'message: PHP Warning: x', 'PHP message: PHP Warning: y" while reading '
                      "response header from upstream"]
        elif action == "blank":
            lines.append("")
        else:
            live.append((draw(st.sampled_from(PIDS)), next_cid))
            next_cid += 1
    wrapped: list[str] = []
    for line in lines:
        wrap = draw(st.sampled_from(["none"] * 4 + ["cri", "cri_split", "docker"]))
        if wrap == "cri":
            wrapped.append(f"2026-01-01T00:00:00Z stderr F {line}")
        elif wrap == "cri_split" and len(line) > 2:
            at = draw(st.integers(1, len(line) - 1))
            wrapped += [f"2026-01-01T00:00:00Z stderr P {line[:at]}",
                        f"2026-01-01T00:00:00Z stderr F {line[at:]}"]
        elif wrap == "docker":
            wrapped.append(orjson.dumps({"log": line + "\n", "stream": "stderr"}).decode())
        else:
            wrapped.append(line)
    end = draw(st.sampled_from(["\n", "\r\n"]))
    data = end.join(wrapped) + draw(st.sampled_from(["", end]))
    config = DetectorConfig(
        window=draw(st.sampled_from([2, 5, 60])),
        threshold=draw(st.sampled_from([2, 3, 5, 10])),
        min_repeat=draw(st.sampled_from([1, 2, 3])),
        resolve_after=draw(st.sampled_from([1, 3, 60])),
    )
    return data.encode(), config


@settings(max_examples=150, deadline=None)
@given(generated_storms(), st.lists(st.integers(min_value=0), min_size=1, max_size=30))
def test_generated_storm_split_at_any_offsets(storm: tuple[bytes, DetectorConfig],
                                              cuts: list[int]) -> None:
    data, config = storm
    assert_same(run_chunks(split_at(data, cuts), config), run_chunks([data], config))


@settings(max_examples=30, deadline=None)
@given(generated_storms())
def test_generated_storm_byte_by_byte(storm: tuple[bytes, DetectorConfig]) -> None:
    data, config = storm
    assert_same(run_chunks(fixed(data, 1), config), run_chunks([data], config))


def test_a_small_storm_fires_and_is_split_invariant() -> None:
    """The generator's shapes do alert (the properties are not vacuous)."""
    lines = [failure_line(f"2026/01/01 12:00:{s:02d}", 100, 7, "refused",
                          ["10.0.0.1:80", "10.0.0.2:80"][i % 2])
             for s in range(3) for i in range(20)]
    lines.append("2026/01/01 12:00:02 [info] 100#100: *7 epoll_wait() reported that client "
                 "prematurely closed connection, so upstream connection is closed too while "
                 "connecting to upstream, client: 10.1.0.7, server: s.test")
    data = ("\n".join(lines) + "\n").encode()
    whole = run_chunks([data])
    assert [(a["cid"], a["state"], a["failures"], a["resolved_reason"])
            for a in whole.alerts] == [(7, "resolved", 60, "connection_ended")]
    for size in (1, 7, 100, 4096):
        assert_same(run_chunks(fixed(data, size)), whole)


# -- known chunking dependence -----------------------------------------------------------------


def _two_workers_one_second_apart(lead: list[str]) -> bytes:
    """Worker 101's lines carry a second less than worker 100's, interleaved (nginx
    caches the time per worker: a log of two busy workers is not globally ordered)."""
    lines = [
        *lead,
        *[failure_line("2026/01/01 12:02:13", 101, 2, "refused", "10.0.0.1:80")] * 3,
        failure_line("2026/01/01 12:02:13", 101, 2, "no_live", "g"),
        failure_line("2026/01/01 12:02:14", 100, 1, "refused", "10.0.0.2:80"),
        failure_line("2026/01/01 12:02:13", 101, 2, "no_live", "g"),
        failure_line("2026/01/01 12:02:16", 100, 1, "refused", "10.0.0.2:80"),
    ]
    return ("\n".join(lines) + "\n").encode()


WORKER_CONFIG = DetectorConfig(window=60, threshold=5, min_repeat=2, resolve_after=3)


def test_quiet_alert_resolves_when_workers_are_a_second_apart() -> None:
    lead = [failure_line("2026/01/01 12:02:14", 100, 1, "refused", "10.0.0.2:80")] * 5
    whole = run_chunks([_two_workers_one_second_apart(lead)], WORKER_CONFIG)
    # *2 last failed at 12:02:13; the line at 12:02:16 is 3 s later: resolve_after.
    assert {(a["cid"], a["state"]) for a in whole.alerts} == {(1, "firing"), (2, "resolved")}


def test_two_workers_a_second_apart_split_invariant() -> None:
    lead = [failure_line("2026/01/01 12:01:42", 100, 1, "refused", "10.0.0.2:80"),
            failure_line("2026/01/01 12:01:43", 100, 1, "timeout", "10.0.0.2:80"),
            failure_line("2026/01/01 12:01:43", 100, 1, "refused", "10.0.0.2:80"),
            failure_line("2026/01/01 12:02:14", 100, 1, "refused", "10.0.0.1:80")]
    data = _two_workers_one_second_apart(lead)
    whole = run_chunks([data], WORKER_CONFIG)
    assert {(a["cid"], a["state"]) for a in whole.alerts} == {(1, "firing"), (2, "resolved")}
    cut = data.rindex(b"\n", 0, len(data) - 1) + 20  # inside the last line
    assert_same(run_chunks([data[:cut], data[cut:]], WORKER_CONFIG), whole)


def test_eviction_under_the_cap_split_invariant() -> None:
    """The core counts every line in order (no per-chunk counting of identical lines), so
    the least-recently-updated order eviction samples is the same however it is cut."""
    lines = [
        failure_line("2026/01/01 12:05:28", 100, 6, "refused", "10.0.0.1:80"),
        failure_line("2026/01/01 12:05:29", 100, 6, "refused", "10.0.0.1:80"),
        failure_line("2026/01/01 12:05:59", 101, 4, "refused", "10.0.0.2:80"),
        failure_line("2026/01/01 12:05:59", 101, 103, "refused", "10.0.0.2:80"),
        failure_line("2026/01/01 12:05:59", 101, 4, "refused", "10.0.0.2:80"),
        failure_line("2026/01/01 12:06:29", 101, 4, "refused", "10.0.0.2:80"),
        failure_line("2026/01/01 12:17:22", 100, 105, "refused", "10.0.0.2:80"),
    ]
    data = "\n".join(lines).encode()
    config = DetectorConfig(window=60, threshold=2, min_repeat=3, resolve_after=1,
                            max_tracked=2)
    whole = run_chunks([data], config)
    cut = len("\n".join(lines[:4])) + 25  # inside the fifth line
    assert_same(run_chunks([data[:cut], data[cut:]], config), whole)


# -- every core: files read on threads give what one thread gives ---------------------------

def _outcome(result: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    stats = result.stats()
    stats.pop("seconds", None)
    return [a.to_dict() for a in result.alerts], stats


@pytest.mark.parametrize("chunk_size", [4096, 64 * 1024, CHUNK_SIZE])
def test_replay_on_threads_equals_one_thread(tmp_path: Path, chunk_size: int) -> None:
    """Sample logs and their halves as several sources whose times overlap: the merge by
    event time, not the threads, decides the order."""
    paths = []
    for log in sorted(SAMPLE_LOGS.glob("*.error.log.gz")):
        data = gzip.decompress(log.read_bytes())
        cut = data.index(b"\n", len(data) // 2) + 1
        for part, piece in (("a", data[:cut]), ("b", data[cut:])):
            path = tmp_path / f"{log.name.removesuffix('.error.log.gz')}-{part}.log"
            path.write_bytes(piece)
            paths.append(str(path))
    config = DetectorConfig(max_tracked=40, window=20)
    one = replay(paths, tz=UTC, config=config, chunk_size=chunk_size, threads=1)
    for threads in (2, 3, 8):
        many = replay(paths, tz=UTC, config=config, chunk_size=chunk_size, threads=threads)
        assert _outcome(many) == _outcome(one)
    assert one.alerts


def test_replay_of_one_file_equals_feeding_it(tmp_path: Path) -> None:
    """The reader threads and Core.detect give what Core.feed gives (the live path)."""
    log = SAMPLE_LOGS / "scenario-http-lua-storm.error.log.gz"
    data = gzip.decompress(log.read_bytes())
    path = tmp_path / "storm.log"
    path.write_bytes(data)
    size = 64 * 1024
    fed = run_chunks(fixed(data, size), DetectorConfig(), source="storm.log")
    replayed = replay([str(path)], tz=UTC, chunk_size=size, threads=2, names=["storm.log"])
    assert [a.to_dict() for a in replayed.alerts] == fed.alerts
    assert replayed.sources[0].to_dict() == fed.stats
