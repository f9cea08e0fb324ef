"""Bounded everything on the per-line path, measured on real ``retrywatch replay`` and
``retrywatch run`` processes (issue 10): runs of blank and whitespace-only lines, an
over-long line (counted once, however slowly it is written), CRI ``P`` and docker pieces
(joined in linear time; every piece, empty ones included, counted towards the bound),
and CRI pieces over syslog beside a storm in another file.

Memory is the kernel's figure for the process itself (``wait4``'s ru_maxrss for replay,
VmHWM for run), compared with the same process over a small input; every wait is a
bounded poll; inputs are streamed, never held whole."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

from bounds_harness import free_udp_port, poll, replay_rss, running
from helpers import stream_refused

from retrywatch.detect.core import DetectorConfig, new_core

UTC_ARGS = ["--timezone", "UTC"]
#: Growth allowed over the same process's peak on a small input: far below what holding
#: the input would take (6M blank lines: 24 MB of text, 48 MB of line ends as before).
FLAT_MIB = 16.0
EVENT = stream_refused(0, 1).encode() + b"\n"
WHITESPACE = b"   \n\t\n \r\n\n" * 25_000  # 100,000 whitespace-only lines
CRI_EMPTY_P = b"2026-11-25T17:33:44.000000000Z stdout P \n"


def blank_run(lines: int) -> Iterator[bytes]:
    """One event, then ``lines`` blank and whitespace-only lines (in 100,000-line blocks)."""
    yield EVENT
    for _ in range(lines // 100_000):
        yield WHITESPACE


def stats_of(replayed: bytes) -> dict[str, object]:
    out: dict[str, object] = json.loads(replayed)["stats"]
    return out


# -- blank and whitespace-only runs ----------------------------------------------------

def test_whitespace_runs_keep_replay_memory_flat() -> None:
    small = replay_rss(["--format", "json", *UTC_ARGS, "-"], blank_run(100_000))
    big = replay_rss(["--format", "json", *UTC_ARGS, "-"], blank_run(6_000_000))
    stats = stats_of(big.stdout)
    assert stats["lines_read"] == 6_000_001
    assert stats["unparsed_by_reason"] == {"blank": 6_000_000}
    assert stats["events"] == 1
    assert big.peak_rss_mib - small.peak_rss_mib < FLAT_MIB, (small, big.peak_rss_mib)


def test_whitespace_runs_keep_run_memory_flat(tmp_path: Path) -> None:
    """`retrywatch run` over one event then 6M whitespace-only lines: the service's peak
    memory is that of the same service over 100,000 of them."""
    peaks = []
    for lines in (100_000, 6_000_000):
        log = tmp_path / f"blank-{lines}.log"
        with log.open("wb") as f:
            f.writelines(blank_run(lines))
        with running(["--log", str(log), "--from", "beginning", *UTC_ARGS],
                     tmp_path) as svc:
            poll("every line read", lambda svc=svc, n=lines: svc.metric(
                "retrywatch_source_lines_read_total") >= n + 1, timeout=60)
            assert svc.metric("retrywatch_source_lines_unparsed_total",
                              reason="blank") == lines
            peaks.append(svc.peak_rss_mib())
        log.unlink()
    assert peaks[1] - peaks[0] < FLAT_MIB, peaks


# -- over-long lines -------------------------------------------------------------------

def test_a_10_mb_line_without_newline_is_one_too_long_line_in_replay(tmp_path: Path) -> None:
    log = tmp_path / "long.log"
    log.write_bytes(b"x" * 10_000_000)
    stats = stats_of(replay_rss(["--format", "json", *UTC_ARGS, str(log)]).stdout)
    assert (stats["lines_read"], stats["unparsed_by_reason"]) == (1, {"too_long": 1})


def test_a_10_mb_line_written_slowly_is_one_too_long_line_live(tmp_path: Path) -> None:
    """Written in three parts with quiet spells between them (longer than the idle flush),
    then its newline and an event: one line too long, one event; nothing counted twice."""
    log = tmp_path / "slow.log"
    log.write_bytes(b"")
    with running(["--log", str(log), "--from", "beginning", *UTC_ARGS], tmp_path) as svc:
        written = 0
        with log.open("ab") as f:
            for part in (5_000_000, 5_000_000, 1):
                data = b"x" * part if part > 1 else b"\n" + EVENT
                f.write(data)
                f.flush()
                written += len(data)
                # Read as far as the follower hands out (whole 4 MiB blocks of a line
                # without end, or up to a newline), then quiet for more than a second.
                want = written if part == 1 else (written // (4 << 20)) * (4 << 20)
                poll("the part read", lambda want=want: svc.metric(
                    "retrywatch_source_bytes_read_total") >= want)
                time.sleep(1.5)
        source = svc.source("file")
        assert source["unparsed_by_reason"] == {"too_long": 1}
        assert source["lines_read"] == 2
        assert source["lines_unparsed"] == 1


# -- CRI and docker pieces ----------------------------------------------------------------

def test_empty_cri_pieces_are_counted_and_keep_memory_flat() -> None:
    """4M empty CRI `P` pieces of one line that never ends: each one counted (too_long,
    once the line passes the bound), and memory flat (they used to be held: 8 bytes
    each, without end)."""
    def pieces(n: int) -> Iterator[bytes]:
        block = CRI_EMPTY_P * 100_000
        for _ in range(n // 100_000):
            yield block

    small = replay_rss(["--format", "json", *UTC_ARGS, "-"], pieces(100_000))
    big = replay_rss(["--format", "json", *UTC_ARGS, "-"], pieces(4_000_000))
    stats = stats_of(big.stdout)
    assert stats["lines_read"] == 4_000_000
    assert stats["unparsed_by_reason"] == {"too_long": 4_000_000}
    assert big.peak_rss_mib - small.peak_rss_mib < FLAT_MIB, (small, big.peak_rss_mib)


def test_every_piece_counts_towards_the_bound_and_joining_is_linear() -> None:
    """Through the core directly: empty pieces (CRI and docker) over syslog records are
    dropped at the bound like any others; a line of many small pieces is joined in time
    linear in its length (64,000 1-byte pieces in milliseconds)."""
    core = new_core(DetectorConfig(), ZoneInfo("UTC"))
    header = b"<14>Nov 25 17:33:44 node1 kubelet: "
    empty_cri = header + CRI_EMPTY_P.rstrip(b"\n")
    empty_docker = header + b'{"log":"","stream":"stderr","time":"t"}'
    n = 196_000  # 98,000 pieces a stream, past the bound of 65,536
    for _ in range(n // 1000):
        core.feed_records("syslog", [empty_cri, empty_docker] * 500)
    stats = core.source_stats()["syslog"]
    assert stats["lines_read"] == n
    # Each stream held DEFAULT_MAX_LINE empty pieces, then dropped them all and the rest.
    assert stats["unparsed"]["too_long"] == n
    assert not core.holds("syslog")

    def join(size: int) -> tuple[float, float]:
        """Seconds per byte to join a 64,000-byte event line cut into ``size``-byte pieces."""
        text = EVENT.rstrip(b"\n") + b" "
        text += b"x" * (64_000 - len(text))
        cri = b"2026-11-25T17:33:44.000000000Z stdout "
        parts = [text[i:i + size] for i in range(0, len(text), size)]
        data = b"".join(cri + b"P " + p + b"\n" for p in parts[:-1])
        data += cri + b"F " + parts[-1] + b"\n"
        core = new_core(DetectorConfig(), ZoneInfo("UTC"))
        started = time.perf_counter()
        core.feed("f", data)
        core.flush("f")
        seconds = time.perf_counter() - started
        s = core.source_stats()["f"]
        assert (s["lines_read"], s["lines_parsed"], s["events"]) == (len(parts),) * 2 + (1,)
        return seconds, seconds / len(data)

    tiny = min(join(1) for _ in range(3))
    mid = min(join(100) for _ in range(3))
    # Quadratic joining (a sum over the pieces held, for each piece) spent seconds on the
    # 64,000 1-byte pieces (2e9 character visits); linear: milliseconds. Per byte read
    # (a 1-byte piece is a 42-byte raw line) about what 100-byte pieces cost.
    assert tiny[0] < 0.25, tiny
    assert tiny[1] < 25 * mid[1], (tiny, mid)


def test_cri_pieces_over_syslog_do_not_delay_a_storm_in_another_file(tmp_path: Path) -> None:
    """3,000 syslog datagrams a second, each a CRI `P` piece (empty or not) of lines that
    end now and then, while a storm is written to a followed file: the storm's alert is
    out within 2 s, no datagram is dropped, and every piece is counted."""
    log = tmp_path / "error.log"
    log.write_bytes(b"")
    port = free_udp_port()
    with running(["--log", str(log), "--syslog", f"udp://127.0.0.1:{port}", *UTC_ARGS,
                  "--from", "beginning"], tmp_path) as svc:
        header = b"<14>Nov 25 17:33:44 node1 kubelet: 2026-11-25T17:33:44.000000000Z "
        shapes = [header + b"stdout P ", header + b"stdout P " + b"p" * 200,
                  header + b"stderr P " + b"q" * 1000, header + b"stderr P ",
                  header + b"stdout F tail"]
        stop = threading.Event()
        sent = [0]

        def send() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                started = time.monotonic()
                while not stop.is_set():
                    due = int((time.monotonic() - started) * 3000)
                    while sent[0] < due:
                        s.sendto(shapes[sent[0] % len(shapes)], ("127.0.0.1", port))
                        sent[0] += 1
                    time.sleep(0.005)

        sender = threading.Thread(target=send)
        sender.start()
        try:
            time.sleep(2.0)  # pieces flowing
            storm = "".join(stream_refused(0, 77) + "\n" for _ in range(50)).encode()
            written_at = time.monotonic()
            with log.open("ab") as f:
                f.write(storm)
            alert = poll("the storm's alert", lambda: svc.get(
                "/api/v1/alerts", limit=10)["alerts"] or None, timeout=20)
            latency = time.monotonic() - written_at
            time.sleep(1.0)  # pieces still flowing
        finally:
            stop.set()
            sender.join(10)
        assert alert[0]["cid"] == 77
        assert latency < 2.0, f"alert {latency:.2f} s after the storm was written"
        assert sent[0] >= 3000 * 3 * 0.9
        syslog = poll("every datagram read", lambda: (s := svc.source("syslog"))
                      and s["lines_read"] == sent[0] and s)
        assert syslog["syslog"]["drops"] == 0
