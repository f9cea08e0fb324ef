"""The compiled core as Python sees it: the GIL released while it works, memory bounded
for every input, every line counted once, and its typed stub in step with it."""

from __future__ import annotations

import inspect
import resource
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from helpers import stream_refused
from hypothesis import given, settings
from hypothesis import strategies as st

from retrywatch import _core
from retrywatch.detect.core import DetectorConfig, new_core

UTC = ZoneInfo("UTC")


def _storm(lines: int) -> bytes:
    one = (stream_refused(0, 7) + "\n").encode()
    return one * lines


def test_the_gil_is_released_while_the_core_works() -> None:
    """A Python thread (the API, delivery) keeps running while a big chunk is read."""
    core = new_core(DetectorConfig(), UTC)
    data = _storm(1_500_000)  # a few hundred milliseconds of work
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    thread = threading.Thread(target=count)
    thread.start()
    time.sleep(0.01)
    before = ticks
    started = time.perf_counter()
    core.feed("storm", data)
    took = time.perf_counter() - started
    during = ticks - before
    stop.set()
    thread.join()
    # Holding the GIL would leave the other thread one or two ticks at most.
    assert took > 0.05
    assert during >= took / 0.001 * 0.3, (during, took)


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_memory_is_bounded_for_blank_and_over_long_lines() -> None:
    """Millions of whitespace-only lines after an event, and lines over the maximum
    length, are counted, never kept."""
    core = new_core(DetectorConfig(), UTC, max_line=1024)
    core.feed("s", (stream_refused(0, 1) + "\n").encode())
    before = _maxrss_mib()
    blanks = b"   \n" * 1_000_000
    for _ in range(6):  # 6M blank lines
        core.feed("s", blanks)
    long_line = b"x" * 5000 + b"\n"
    for _ in range(20):
        core.feed("s", long_line * 2000)
    core.feed("s", b"y" * (10 << 20))  # 10 MB without a newline, in one chunk
    core.feed("s", b"y" * (10 << 20) + b"\n")  # ... and its end
    grown = _maxrss_mib() - before
    core.flush("s")
    stats = core.source_stats()["s"]
    assert stats["unparsed"]["blank"] == 6_000_000
    assert stats["unparsed"]["too_long"] == 40_001  # the 20 MB line counted once
    assert stats["lines_read"] == 1 + 6_000_000 + 40_001
    assert grown < 150, f"RSS grew {grown:.0f} MiB"


def test_a_flood_of_distinct_connections_stays_under_the_cap() -> None:
    core = new_core(DetectorConfig(max_tracked=1000), UTC)
    lines = "".join(stream_refused(i // 5000, 100_000 + i) + "\n" for i in range(50_000))
    core.feed("f", lines.encode())
    core.flush("f")
    assert core.tracked_keys <= 1000
    stats = core.detector_stats()
    assert stats["connect_failures"] == 50_000
    assert stats["evictions"] == 50_000 - core.tracked_keys


def test_the_stub_names_every_method() -> None:
    text = (Path(inspect.getfile(_core)).parent / "_core.pyi").read_text(encoding="utf-8")
    for cls in (_core.Core, _core.EventReader):
        for name in dir(cls):
            if not name.startswith("_"):
                assert f"def {name}(" in text, f"{cls.__name__}.{name} missing from _core.pyi"


def test_analyze_aggregates_are_exact_for_distinct_and_repeated_lines() -> None:
    """The aggregates' line cache is bypassed for a flood of distinct lines and used for a
    storm: the counts are the same either way."""
    from collections import Counter

    from helpers import http_refused

    lines = [http_refused(i // 3000, 10_000 + i, peer=f"10.0.0.{i % 7}:80") for i in range(20_000)]
    lines += [stream_refused(7, 5, upstream=f"10.0.1.{i % 2}:5555") for i in range(20_000)]
    lines += [http_refused(8 + i // 3000, 50_000 + i, peer="10.0.9.9:80") for i in range(9_000)]
    core = new_core(DetectorConfig(), UTC, aggregates=True)
    core.feed("a", ("\n".join(lines) + "\n").encode())
    core.flush("a")
    agg = core.aggregates()
    peers: Counter[str] = Counter()
    for _, peer, n in agg["by_peer"]:
        peers[peer] += n
    want: Counter[str] = Counter()
    for i in range(20_000):
        want[f"10.0.0.{i % 7}:80"] += 1
    for i in range(20_000):
        want[f"10.0.1.{i % 2}:5555"] += 1
    want["10.0.9.9:80"] += 9_000
    assert peers == want
    assert sum(n for _, _, n in agg["by_kind"]) == len(lines)
    assert dict(agg["by_errno"]) == {111: len(lines)}


# -- any bytes: no exception, every line counted -------------------------------------------

_PIECES = st.sampled_from([
    b"\n", b"\r\n", b"\x00", b" ", b"\xff", b"\xe2\x82", b"{", b"}", b'"log":"', b"\\n",
    b"2026/11/25 17:33:43 [error] 1#1: *", b"2026/11/25 17:33:43 [info] 2#2: ",
    b"connect() failed (111: Connection refused) while connecting to upstream",
    b", client: 1.2.3.4, server: s", b', request: "GET / HTTP/1.1"', b', upstream: "',
    b", bytes from/to client:0/0, bytes from/to upstream:0/0", b"client disconnected",
    b"2024-01-01T00:00:00Z stderr P ", b"2024-01-01T00:00:00Z stdout F ",
    b"<187>Nov 25 17:33:53 nginx: ", b"<14>1 2026-11-25T17:33:53Z h a - - - ",
    b"web_1  | ", b"host nginx[1]: ", b"9" * 25, b"x" * 300,
    b'{"log":"2024/01/01 00:00:00 [error] 1#1: *2 a\\nb\\n","stream":"e"}',
    b'{"log":"piece","stream":"', b'"}\n',
])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.one_of(_PIECES, st.binary(max_size=40)), max_size=80),
       cuts=st.lists(st.integers(0, 4000), max_size=5),
       records=st.booleans())
def test_any_bytes_are_read_without_error_and_every_line_counted(
        parts: list[bytes], cuts: list[int], records: bool) -> None:
    data = b"".join(parts)
    core = new_core(DetectorConfig(threshold=2, max_tracked=4, window=3), UTC, max_line=256)
    if records:
        core.feed_records("s", data.split(b"\n"))
    else:
        last = 0
        for cut in sorted(c % (len(data) + 1) for c in cuts):
            core.feed("s", data[last:cut])
            last = cut
        core.feed("s", data[last:])
    core.flush("s")
    core.advance(2_000_000_000)
    stats = core.source_stats()["s"]
    unparsed = sum(stats["unparsed"].values())
    # Every line read is parsed (part of an event) or unparsed, once.
    assert stats["lines_parsed"] + unparsed == stats["lines_read"], stats
    assert core.tracked_keys <= 4
    again = type(core).restore(core.snapshot(), window=3, threshold=2, min_repeat=2,
                               resolve_after=60, max_tracked=4, utc_offset=0, max_line=256)
    assert again.snapshot() == core.snapshot()


def test_a_docker_log_with_newlines_is_one_line_read() -> None:
    core = new_core(DetectorConfig(), UTC)
    core.feed("d", b'{"log":"2024/01/01 00:00:00 [error] 1#1: a\\nb\\nc\\n","stream":"stderr"}\n')
    core.flush("d")
    stats = core.source_stats()["d"]
    assert stats["lines_read"] == 1
    assert stats["lines_parsed"] == 1
    assert stats["events"] == 1


def test_docker_pieces_are_held_for_a_bounded_number_of_streams() -> None:
    """A docker `stream` is any JSON value: a flood of pieces of distinct streams, over
    syslog too, is counted, not kept."""
    core = new_core(DetectorConfig(), UTC)
    piece = "A" * 60_000
    before = _maxrss_mib()
    records = [f'<13>Nov 25 17:33:53 host nginx: {{"log":"{piece}","stream":"s{i}"}}'.encode()
               for i in range(3000)]
    for i in range(0, len(records), 100):
        core.feed_records("syslog", records[i : i + 100])
    grown = _maxrss_mib() - before
    stats = core.source_stats()["syslog"]
    assert stats["unparsed"]["too_many_streams"] == 3000 - 16
    assert len(core.snapshot()) < 16 * 70_000
    assert grown < 100, f"RSS grew {grown:.0f} MiB"
