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
