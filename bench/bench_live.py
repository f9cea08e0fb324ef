#!/usr/bin/env python3
"""Live benchmark: `retrywatch run` following a log file that is appended to.

Three parts, each against a fresh ``retrywatch run`` child on 127.0.0.1, on the two
workloads of ``bench/gen_logs.py`` (``storm``: the incident's retry storm; ``flood``:
every request of a busy ingress failing once, with slow runaway connections hidden in
it):

1. **Throughput.** The workload's generated file (the same cached file as
   ``bench_replay.py``'s) is appended to the followed file as fast as it can be copied;
   the time until ``retrywatch_source_lines_read_total`` reaches its line count gives
   the sustained lines/s of the follower and engine. The alerts (``/api/v1/alerts``)
   are then checked against the generator's ground truth.
2. **Detection latency.** The generator's lines, stamped with the current UTC time, are
   appended at a target rate in one ``write(2)`` every ``--batch-ms``. For each runaway
   connection, the time its ``--threshold``-th failure reached the file (the write of its
   batch returned) is compared with the arrival of its ``fired`` event on
   ``/api/v1/alerts/stream``: p50, p99, max. Also the achieved write rate, the lag while
   writing, the time to catch up after the writer stopped, and the child's peak RSS.
3. **Rotation under load** (storm lines). While a writer appends at
   ``--rotation-rate``, a rotator performs ``--rotations`` rotations of the followed
   path, alternating rename and create and copytruncate; the lines retrywatch counted
   are compared with the lines written.

Every loop is bounded in count and time; all traffic is to 127.0.0.1. Exit status: 0
when the figures were printed and every check passed; 1 when a child could not be
started or a check failed (wrong alerts after the throughput part, an alert that fired
for no runaway or never fired at all in the latency part, lines lost or doubled in the
rotation part); 2 on a usage error. No assertion is made on a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gen_logs  # bench/gen_logs.py, beside this script
import httpx
from bench_replay import retrywatch_base

REPO_ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
COPY_BLOCK = 4 * MIB
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SAMPLE_EVERY = 0.5  # seconds between lag samples while writing
POLL_EVERY = 0.02  # seconds between polls while waiting for the follower
MAX_PAGES = 200  # of /api/v1/alerts, 1000 alerts each


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def utc_stamp(now: float) -> str:
    return time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(now))


# ------------------------------------------------------------------------ the lines


def live_lines(workload: str, args: argparse.Namespace, seed: int) -> gen_logs.Workload:
    """The generator of ``workload`` for live writing (no per-connection truth kept).

    storm: ``--active`` runaway connections at once, each failing ``--life`` times
    before a new one takes its slot, so alerts keep firing. flood: a new slow runaway
    (2 failures a second, two peers) every ``--hidden-every`` seconds while at least 6 s
    of the run remain, each failing for ``--hidden-life`` seconds.
    """
    if workload == "storm":
        return gen_logs.Storm(
            seed,
            active=args.active,
            retries=(args.life, args.life),
            track=False,
            threshold=args.threshold,
        )
    hidden = max(1, int((args.flood_duration - 6) / args.hidden_every))
    return gen_logs.Flood(
        seed,
        hidden=hidden,
        hidden_every=args.hidden_every,
        hidden_life=args.hidden_life,
        track=False,
        threshold=args.threshold,
    )


# ------------------------------------------------------------------------ the writer


class Writer:
    """Appends ``gen``'s lines to ``path`` (``O_APPEND``, unbuffered) at a target rate,
    in batches, stamped with the current UTC time.

    ``lock`` is held around every write; a rotator takes it to rotate between writes.
    """

    def __init__(self, path: Path, gen: gen_logs.Workload) -> None:
        self.path = path
        self.gen = gen
        self.lock = threading.Lock()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.reopen_at: float | None = None  # rename and create: switch files then
        self.written = 0
        self.bytes = 0
        self.crossed: dict[tuple[int, int], float] = {}  # (pid, cid) -> time on file
        self.behind_batches = 0  # batches capped because the writer fell behind

    def reopen(self) -> None:
        """Switch to the file the path names now (nginx's reopen on USR1)."""
        old = self.fd
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.close(old)
        self.reopen_at = None

    def close(self) -> None:
        os.close(self.fd)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            done = os.write(self.fd, view)
            view = view[done:]

    def run(self, rate: int, duration: float, batch_s: float, stop: threading.Event) -> float:
        """Write for ``duration`` seconds (bounded: one batch per tick); return the time
        spent writing."""
        per_batch = max(1, round(rate * batch_s))
        ticks = max(1, round(duration / batch_s))
        start = time.perf_counter()
        for k in range(1, ticks + 1):
            if stop.is_set() or time.perf_counter() - start > duration * 2:
                break
            due = round(rate * k * batch_s) - self.written
            if due > 10 * per_batch:  # far behind: do not try to catch up in one burst
                due = 10 * per_batch
                self.behind_batches += 1
            if due > 0:
                now = time.perf_counter()
                lines, crossed = self.gen.batch(due, now - start, utc_stamp(time.time()))
                data = "".join(lines).encode()
                with self.lock:
                    if self.reopen_at is not None and time.perf_counter() >= self.reopen_at:
                        self.reopen()
                    self._write(data)
                    on_file = time.perf_counter()
                    self.written += len(lines)
                    self.bytes += len(data)
                for key in crossed:
                    self.crossed[key] = on_file
            pause = start + k * batch_s - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        return time.perf_counter() - start


# ------------------------------------------------------------------ the child process


class Child:
    """One ``retrywatch run`` process following ``path``, serving on a free port."""

    def __init__(
        self,
        base: list[str],
        path: Path,
        threshold: int,
        workdir: Path,
        extra: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.argv = [
            *base, "run",
            "--log", str(path), "--from", "beginning", "--timezone", "UTC",
            "--threshold", str(threshold), "--listen", f"127.0.0.1:{self.port}", *extra,
        ]  # fmt: skip
        # Only the flags configure it: no RETRYWATCH_* variable or configuration file.
        env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYWATCH_")}
        self.stderr_path = workdir / f"retrywatch-{self.port}.err"
        self._err = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self._err, env=env,
        )  # fmt: skip
        self.http = httpx.Client(base_url=self.base, timeout=10.0)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"retrywatch exited with {self.proc.returncode}: {self.tail()}")
            try:
                if self.http.get("/healthz").status_code == 200 and self.sources():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"retrywatch not ready after {STARTUP_TIMEOUT:.0f} s: {self.tail()}")

    def tail(self) -> str:
        self._err.flush()
        text = self.stderr_path.read_text(errors="replace").strip()
        return text.splitlines()[-1] if text else "(no output)"

    def sources(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.http.get("/api/v1/sources").json()["sources"]
        return data

    def lines_read_metric(self) -> int:
        """``retrywatch_source_lines_read_total`` on /metrics, summed over sources."""
        total = 0.0
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith("retrywatch_source_lines_read_total"):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert, firing or resolved, from the REST API (paged, bounded)."""
        out: list[dict[str, Any]] = []
        for page in range(MAX_PAGES):
            params: dict[str, str | int] = {"state": "all", "limit": 1000, "offset": page * 1000}
            got = self.http.get("/api/v1/alerts", params=params).json()
            out.extend(got["alerts"])
            if len(out) >= got["total"] or not got["alerts"]:
                break
        return out

    def peak_rss_mib(self) -> float | None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None

    def stop(self) -> int | None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self._err.close()
        return self.proc.returncode


class AlertStream:
    """Reads ``/api/v1/alerts/stream`` in a thread: the arrival time of each ``fired``."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.fired: dict[tuple[int, int], float] = {}
        self.events: dict[str, int] = {}
        self.dropped = 0
        self.error: str | None = None
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sse", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self.connected.wait(STARTUP_TIMEOUT):
            raise RuntimeError(f"no event stream: {self.error}")

    def stop(self) -> None:
        """Stop counting; the thread ends at the next line or when the child stops."""
        self._stop.set()
        self._thread.join(0.2)

    def _run(self) -> None:
        timeout = httpx.Timeout(10.0, read=30.0)  # the server's keep-alive: every 15 s
        try:
            with (
                httpx.Client(base_url=self.base, timeout=timeout) as client,
                client.stream("GET", "/api/v1/alerts/stream") as resp,
            ):
                kind = ""
                for line in resp.iter_lines():
                    now = time.perf_counter()
                    if line.startswith(":"):
                        self.connected.set()
                    elif line.startswith("event: "):
                        kind = line[7:]
                        self.events[kind] = self.events.get(kind, 0) + 1
                    elif line.startswith("data: "):
                        if kind == "fired":
                            alert = json.loads(line[6:])
                            self.fired.setdefault((alert["pid"], alert["cid"]), now)
                        elif kind == "dropped":
                            self.dropped += int(line[6:])
                    if self._stop.is_set():
                        return
        except httpx.ReadTimeout:
            if not self._stop.is_set():
                self.error = "read timeout"
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.connected.set()


class LagSampler:
    """Samples ``/api/v1/sources`` every ``SAMPLE_EVERY`` while the writer runs."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.max_lag_bytes = 0
        self.max_lag_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(STOP_TIMEOUT)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5.0) as client:
            while not self._stop.wait(SAMPLE_EVERY):
                try:
                    sources = client.get("/api/v1/sources").json()["sources"]
                except (httpx.HTTPError, ValueError, KeyError):
                    continue
                self.max_lag_bytes = max(
                    [self.max_lag_bytes, *(s["lag_bytes"] or 0 for s in sources)]
                )
                self.max_lag_seconds = max(
                    [self.max_lag_seconds, *(s["lag_seconds"] or 0.0 for s in sources)]
                )


def wait_caught_up(child: Child, path: Path, timeout: float) -> float | None:
    """Seconds until every source reports no lag and the followed file is read to its
    size; None when that did not happen within ``timeout``."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            sources = child.sources()
        except httpx.HTTPError:
            sources = []
        size = path.stat().st_size
        if sources and all(
            (s["lag_bytes"] or 0) == 0 and (s["position"] is None or s["position"] == size)
            for s in sources
        ):
            return time.perf_counter() - start
        time.sleep(POLL_EVERY)
    return None


def wait_lines(child: Child, want: int, timeout: float) -> tuple[int, float | None]:
    """Poll the lines counter until it equals ``want`` (or ``timeout``); a counter above
    ``want`` is returned at once (lines read twice)."""
    start = time.perf_counter()
    got = -1
    while time.perf_counter() - start < timeout:
        with contextlib.suppress(httpx.HTTPError):
            got = child.lines_read_metric()
        if got >= want:
            return got, time.perf_counter() - start
        time.sleep(POLL_EVERY)
    return got, None


def metric_by_label(text: str, name: str, label: str) -> dict[str, float]:
    """Sum of the samples of metric ``name`` by the value of ``label``."""
    out: dict[str, float] = {}
    prefix = name + "{"
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, value = line[len(prefix) :].rsplit("} ", 1)
        key = ""
        for part in labels.split(","):
            k, _, v = part.partition("=")
            if k == label:
                key = v.strip('"')
        out[key] = out.get(key, 0.0) + float(value)
    return out


def alert_checks(
    alerts: list[dict[str, Any]], summary: dict[str, Any], by_kind: dict[str, float]
) -> list[dict[str, Any]]:
    """The alerts of the throughput part against the generator's ground truth."""
    truth = summary["runaway"]
    failures: dict[str, int] = {}
    for a in alerts:
        failures[str(a["cid"])] = failures.get(str(a["cid"]), 0) + int(a["failures"])
    missing, extra = set(truth) - set(failures), set(failures) - set(truth)
    detail = f"{len(failures)} flagged ({len(alerts)} alerts), {len(truth)} runaway"
    if len(truth) == 1:
        detail += f" (*{next(iter(truth))})"
    if missing:
        detail += f"; MISSING {len(missing)}: {', '.join(sorted(missing)[:5])}"
    if extra:
        detail += f"; EXTRA {len(extra)}: {', '.join(sorted(extra)[:5])}"
    wrong = {c for c in set(truth) & set(failures) if failures[c] != truth[c]}
    kinds = {k: v for k, v in summary["connect_failures"].items() if v}
    got = {k: int(v) for k, v in by_kind.items() if v}
    return [
        {
            "what": "flagged connections == runaway connections",
            "ok": not missing and not extra,
            "detail": detail,
        },
        {
            "what": "each runaway's failures == the generator's",
            "ok": not wrong,
            "detail": f"{len(set(truth) & set(failures)) - len(wrong)} equal"
            + (f"; differ: {', '.join(sorted(wrong)[:5])}" if wrong else ""),
        },
        {
            "what": "retrywatch_upstream_connect_failures_total by kind == the generator's",
            "ok": got == kinds,
            "detail": f"{sum(kinds.values())} in all" if got == kinds else f"{got} vs {kinds}",
        },
    ]


# ------------------------------------------------------------------------ the parts


#: The switches of the features beyond one connection (``--features``): off, each is
#: disabled; on, each runs as by default.
FEATURES_OFF = ["--no-disk-forecast", "--no-upstream-anomalies"]


def part_throughput(
    args: argparse.Namespace, workdir: Path, workload: str, rw: list[str], features: str = "on"
) -> dict[str, Any]:
    """Append the generated file to the followed one; time until every line is read.

    By default the child is stopped (SIGSTOP) while the file is copied and resumed
    (SIGCONT) after: the figure is the follower's and engine's own rate on a burst of
    appended lines, not the copy's (on 2 cores the copy and the child compete).
    ``--concurrent-copy`` copies while the child runs instead.
    """
    size = {"lines": args.storm_lines} if workload == "storm" else {"seconds": args.flood_seconds}
    source, summary = gen_logs.ensure(args.cache_dir, workload, seed=args.seed, log=log, **size)
    total = summary["lines"]
    path = workdir / f"throughput-{workload}.log"
    path.write_bytes(b"")
    child = Child(rw, path, args.threshold, workdir, FEATURES_OFF if features == "off" else [])
    result: dict[str, Any] = {
        "workload": workload,
        "features": features,
        "file": str(source),
        "lines": total,
        "bytes": summary["bytes"],
        "mode": "concurrent copy" if args.concurrent_copy else "burst (child stopped during copy)",
    }
    stopped = False
    try:
        child.wait_ready()
        log(f"throughput: {workload}, appending {source} ({total:,} lines) to {path}")
        if not args.concurrent_copy:
            child.proc.send_signal(signal.SIGSTOP)
            stopped = True
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        samples: list[tuple[float, int]] = [(0.0, 0)]
        start = time.perf_counter()
        try:
            with source.open("rb", buffering=0) as f:
                while block := f.read(COPY_BLOCK):
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        copied = time.perf_counter() - start
        if stopped:
            start = time.perf_counter()
            child.proc.send_signal(signal.SIGCONT)
            stopped = False
        done_at: float | None = None
        while time.perf_counter() - start < args.drain_timeout:
            with contextlib.suppress(httpx.HTTPError):
                got = child.lines_read_metric()
                samples.append((time.perf_counter() - start, got))
                if got >= total:
                    done_at = samples[-1][0]
                    break
            time.sleep(0.05)
        rss = child.peak_rss_mib()
        lines_read = samples[-1][1]
        steady = None
        lo = next((s for s in samples if s[1] >= total * 0.1), None)
        hi = next((s for s in samples if s[1] >= total * 0.9), None)
        if lo and hi and hi[0] > lo[0]:
            steady = round((hi[1] - lo[1]) / (hi[0] - lo[0]))
        # The engine holds the last line until the source is quiet (a continuation line
        # could follow): wait (bounded) until every connect failure is counted.
        want = summary["connect_failures_total"]
        settle = time.perf_counter() + 5.0
        while True:
            by_kind = metric_by_label(
                child.http.get("/metrics").text,
                "retrywatch_upstream_connect_failures_total",
                "kind",
            )
            if sum(by_kind.values()) >= want or time.perf_counter() > settle:
                break
            time.sleep(0.1)
        alerts = child.alerts()
        result.update(
            {
                "copy_seconds": round(copied, 3),
                "read_all_after_s": None if done_at is None else round(done_at, 3),
                "lines_read": lines_read,
                "lines_per_s": None if not done_at else round(total / done_at),
                "steady_lines_per_s": steady,
                "peak_rss_mib": None if rss is None else round(rss, 1),
                "alerts": len(alerts),
                "checks": alert_checks(alerts, summary, by_kind)
                if done_at is not None
                else [
                    {
                        "what": "every line read",
                        "ok": False,
                        "detail": f"{lines_read:,} of {total:,} after {args.drain_timeout} s",
                    }
                ],
            }
        )
    finally:
        if stopped:
            child.proc.send_signal(signal.SIGCONT)
        result["exit_code"] = child.stop()
        if not args.keep:
            path.unlink(missing_ok=True)
    return result


def part_latency(
    args: argparse.Namespace, workdir: Path, workload: str, rate: int, rw: list[str]
) -> dict[str, Any]:
    path = workdir / f"latency-{workload}-{rate}.log"
    path.write_bytes(b"")
    duration = args.duration if workload == "storm" else args.flood_duration
    gen = live_lines(workload, args, args.seed)
    writer = Writer(path, gen)
    child = Child(rw, path, args.threshold, workdir)
    result: dict[str, Any] = {
        "workload": workload,
        "target_lines_per_s": rate,
        "duration_s": duration,
    }
    try:
        child.wait_ready()
        stream = AlertStream(child.base)
        stream.start()
        sampler = LagSampler(child.base)
        sampler.start()
        log(f"latency: {workload}, writing {rate:,} lines/s for {duration} s to {path}")
        spent = writer.run(rate, duration, args.batch_ms / 1000, threading.Event())
        sampler.stop()
        caught_up = wait_caught_up(child, path, args.drain_timeout)
        # Alerts of the last lines: wait (bounded) until every crossing was seen.
        deadline = time.perf_counter() + args.alert_timeout
        while time.perf_counter() < deadline and not writer.crossed.keys() <= stream.fired.keys():
            time.sleep(POLL_EVERY)
        lines_read, _ = wait_lines(child, writer.written, 3.0)
        rss = child.peak_rss_mib()
        stream.stop()
        rest = {(a["pid"], a["cid"]) for a in child.alerts()}
        latencies = [
            (stream.fired[key] - at) * 1000
            for key, at in writer.crossed.items()
            if key in stream.fired
        ]
        never = writer.crossed.keys() - rest - stream.fired.keys()
        unexpected = (rest | stream.fired.keys()) - writer.crossed.keys()
        result.update(
            {
                "lines_written": writer.written,
                "bytes_written": writer.bytes,
                "write_seconds": round(spent, 3),
                "achieved_lines_per_s": round(writer.written / spent) if spent > 0 else None,
                "writer_capped_batches": writer.behind_batches,
                "runaways_started": len(gen.runaways),
                "alerts_expected": len(writer.crossed),
                "alerts_measured": len(latencies),
                "alerts_missing_on_stream": len(writer.crossed.keys() - stream.fired.keys()),
                "alerts_never_fired": len(never),
                "alerts_unexpected": len(unexpected),
                "latency_ms": None
                if not latencies
                else {
                    "p50": round(statistics.median(latencies), 1),
                    "p99": round(percentile(latencies, 99), 1),
                    "max": round(max(latencies), 1),
                    "min": round(min(latencies), 1),
                },
                "stream_events": stream.events,
                "stream_dropped": stream.dropped,
                "stream_error": stream.error,
                "max_lag_bytes_sampled": sampler.max_lag_bytes,
                "max_lag_seconds_sampled": round(sampler.max_lag_seconds, 3),
                "caught_up_after_s": None if caught_up is None else round(caught_up, 3),
                "kept_up": caught_up is not None,
                "lines_read": lines_read,
                "peak_rss_mib": None if rss is None else round(rss, 1),
                "checks": [
                    {
                        "what": "every runaway fired (stream or REST API)",
                        "ok": not never,
                        "detail": f"{len(writer.crossed) - len(never)} of {len(writer.crossed)}",
                    },
                    {
                        "what": "no alert for another connection",
                        "ok": not unexpected,
                        "detail": f"{len(unexpected)} unexpected",
                    },
                ],
            }
        )
    finally:
        writer.close()
        result["exit_code"] = child.stop()
        if not args.keep:
            path.unlink(missing_ok=True)
    return result


class Rotator:
    """Rotates ``path`` ``count`` times, evenly over ``duration``: even ones rename and
    create, odd ones copytruncate (with the writer paused)."""

    def __init__(self, writer: Writer, child: Child, args: argparse.Namespace) -> None:
        self.writer = writer
        self.child = child
        self.count = args.rotations
        self.duration = args.rotation_duration
        self.reopen_delay = args.reopen_delay
        self.drain = args.drain_before_truncate
        self.done = {"rename": 0, "copytruncate": 0}
        self.drain_timeouts = 0
        self.unread_at_truncate = 0  # bytes the follower had not read when truncated
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="rotator", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join(self.duration * 2 + 30)

    def _run(self) -> None:
        path = self.writer.path
        rotated = path.with_name(path.name + ".1")
        start = time.perf_counter()
        try:
            for i in range(self.count):
                pause = start + (i + 0.5) * self.duration / self.count - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                with self.writer.lock:
                    if i % 2 == 0:
                        self._rename(path, rotated)
                    else:
                        self._copytruncate(path, rotated)
        except (OSError, httpx.HTTPError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def _rename(self, path: Path, rotated: Path) -> None:
        """mv error.log error.log.1; a new empty error.log; the writer switches to it
        at once, or after ``--reopen-delay`` (nginx writing on until its USR1 reopen)."""
        if self.writer.reopen_at is not None:  # the previous one not switched yet
            self.writer.reopen()
        os.rename(path, rotated)
        path.touch()
        if self.reopen_delay > 0:
            self.writer.reopen_at = time.perf_counter() + self.reopen_delay
        else:
            self.writer.reopen()
        self.done["rename"] += 1

    def _copytruncate(self, path: Path, rotated: Path) -> None:
        """cp error.log error.log.1; truncate error.log, while the writer waits."""
        if self.writer.reopen_at is not None:
            self.writer.reopen()
        if self.drain and wait_caught_up(self.child, path, 2.0) is None:
            self.drain_timeouts += 1
        position = sum(s["position"] or 0 for s in self.child.sources()) if not self.drain else 0
        shutil.copyfile(path, rotated)
        size = path.stat().st_size
        os.truncate(path, 0)
        if not self.drain:
            self.unread_at_truncate += max(0, size - position)
        self.done["copytruncate"] += 1


def part_rotation(args: argparse.Namespace, workdir: Path, rw: list[str]) -> dict[str, Any]:
    path = workdir / "error.log"
    for stale in (path, path.with_name("error.log.1")):
        stale.unlink(missing_ok=True)
    path.write_bytes(b"")
    writer = Writer(path, live_lines("storm", args, args.seed + 1))
    child = Child(rw, path, args.threshold, workdir)
    rate = args.rotation_rate
    result: dict[str, Any] = {
        "target_lines_per_s": rate,
        "duration_s": args.rotation_duration,
        "rotations_planned": args.rotations,
        "reopen_delay_s": args.reopen_delay,
        "drain_before_truncate": args.drain_before_truncate,
    }
    try:
        child.wait_ready()
        rotator = Rotator(writer, child, args)
        log(
            f"rotation: writing {rate:,} lines/s for {args.rotation_duration} s to {path}, "
            f"{args.rotations} rotations"
        )
        rotator.start()
        spent = writer.run(rate, args.rotation_duration, args.batch_ms / 1000, threading.Event())
        rotator.join()
        with writer.lock:
            if writer.reopen_at is not None:
                writer.reopen()
        caught_up = wait_caught_up(child, path, args.drain_timeout)
        # The counter may trail by the last line (held until the source is quiet).
        lines_read, took = wait_lines(child, writer.written, args.drain_timeout)
        time.sleep(1.5)  # one more look: a counter that goes on past the lines written
        lines_read = child.lines_read_metric()
        sources = child.sources()
        result.update(
            {
                "lines_written": writer.written,
                "achieved_lines_per_s": round(writer.written / spent) if spent > 0 else None,
                "rotations_done": rotator.done,
                "rotator_error": rotator.error,
                "copytruncate_drain_timeouts": rotator.drain_timeouts,
                "unread_bytes_at_truncate": None
                if args.drain_before_truncate
                else rotator.unread_at_truncate,
                "lines_read": lines_read,
                "difference": lines_read - writer.written,
                "counted_equal_written": lines_read == writer.written,
                "caught_up_after_s": None if caught_up is None else round(caught_up, 3),
                "lines_settled_after_s": None if took is None else round(took, 3),
                "rotations_seen": sum(s["rotations"] for s in sources),
                "source_errors": [s["last_error"] for s in sources if s["last_error"]],
                "peak_rss_mib": child.peak_rss_mib(),
                "checks": [
                    {
                        "what": "lines counted == lines written",
                        "ok": lines_read == writer.written,
                        "detail": f"{lines_read:,} vs {writer.written:,}",
                    }
                ],
            }
        )
    finally:
        writer.close()
        result["exit_code"] = child.stop()
        if not args.keep:
            for f in (path, path.with_name("error.log.1")):
                f.unlink(missing_ok=True)
    return result


# ----------------------------------------------------------------------- figures


def mark(ok: bool | None) -> str:
    return {True: "OK  ", False: "FAIL", None: "??  "}[ok]


def print_report(result: dict[str, Any], out: Any) -> None:
    def p(line: str = "") -> None:
        print(line, file=out)

    for r in result.get("throughput", []):
        p(
            f"throughput, {r['workload']}, features {r.get('features', 'on')}: "
            f"{r['lines']:,} lines ({r['bytes'] / MIB:.0f} MiB) "
            f"appended to the followed file, {r.get('mode')}"
        )
        if "error" in r:
            p(f"  error: {r['error']}")
            continue
        rate = f"{r['lines_per_s']:,}" if r["lines_per_s"] else "-"
        steady = f"{r['steady_lines_per_s']:,}" if r["steady_lines_per_s"] else "-"
        done = r["read_all_after_s"]
        p(
            f"  sustained {rate} lines/s (all read in {done} s; the copy took "
            f"{r['copy_seconds']} s), steady {steady} lines/s (10 % to 90 % of the lines); "
            f"peak RSS {r['peak_rss_mib']} MiB; {r['alerts']} alerts"
        )
        for c in r["checks"]:
            p(f"  [{mark(c['ok'])}] {c['what']}: {c['detail']}")
    rates: dict[tuple[str, str], list[int]] = {}
    for r in result.get("throughput", []):
        if r.get("lines_per_s"):
            rates.setdefault((r["workload"], r.get("features", "on")), []).append(r["lines_per_s"])
    for workload in dict.fromkeys(w for w, _ in rates):
        ons, offs = rates.get((workload, "on")), rates.get((workload, "off"))
        if ons and offs:
            on, off = round(statistics.median(ons)), round(statistics.median(offs))
            runs = ""
            if len(ons) > 1 or len(offs) > 1:
                runs = (f" (medians of {len(ons)} and {len(offs)} interleaved runs; on "
                        f"{min(ons):,}-{max(ons):,}, off {min(offs):,}-{max(offs):,})")
            p(f"features, {workload}: {on:,} lines/s on, {off:,} lines/s off{runs}: on is "
              f"{on / off:.1%} of off ({FEATURES_OFF} turns them off)")
    for r in result.get("latency", []):
        lat = r.get("latency_ms")
        p(
            f"detection latency, {r['workload']}: {r['target_lines_per_s']:,} lines/s for "
            f"{r['duration_s']} s"
        )
        if "error" in r:
            p(f"  error: {r['error']}")
            continue
        p(
            f"  written: {r['lines_written']:,} lines ({r['bytes_written'] / MIB:.0f} MiB), "
            f"achieved {r['achieved_lines_per_s']:,} lines/s"
            + (
                f", {r['writer_capped_batches']} batches capped"
                if r["writer_capped_batches"]
                else ""
            )
        )
        if lat:
            p(
                f"  latency: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
                f"max {lat['max']:.1f} ms over {r['alerts_measured']:,} alerts "
                f"(expected {r['alerts_expected']:,}, missing on the stream "
                f"{r['alerts_missing_on_stream']}, unexpected {r['alerts_unexpected']})"
            )
        else:
            p(f"  latency: no alert measured (expected {r['alerts_expected']:,})")
        if r["stream_dropped"] or r["stream_error"]:
            p(f"  event stream: {r['stream_dropped']} dropped, error: {r['stream_error']}")
        kept = (
            f"yes, lag back to 0 {r['caught_up_after_s']:.2f} s after the writer stopped"
            if r["kept_up"]
            else "NO: still lagging at the timeout"
        )
        p(
            f"  follower kept up: {kept}; lag sampled while writing: max "
            f"{r['max_lag_bytes_sampled'] / MIB:.1f} MiB, {r['max_lag_seconds_sampled']:.2f} s"
        )
        p(f"  lines read: {r['lines_read']:,}; peak RSS: {r['peak_rss_mib']} MiB")
        for c in r["checks"]:
            p(f"  [{mark(c['ok'])}] {c['what']}: {c['detail']}")
    rot = result.get("rotation")
    if rot:
        p(
            f"rotation under load (storm lines): {rot['target_lines_per_s']:,} lines/s for "
            f"{rot['duration_s']} s, {rot['rotations_planned']} rotations"
        )
        if "error" in rot:
            p(f"  error: {rot['error']}")
        else:
            done = rot["rotations_done"]
            p(
                f"  rotations: {done['rename']} rename and create, {done['copytruncate']} "
                f"copytruncate; retrywatch counted {rot['rotations_seen']}"
                + (f"; rotator error: {rot['rotator_error']}" if rot["rotator_error"] else "")
            )
            p(
                f"  [{mark(rot['counted_equal_written'])}] lines written "
                f"{rot['lines_written']:,}, counted by retrywatch {rot['lines_read']:,}, "
                f"difference {rot['difference']:+,} (achieved {rot['achieved_lines_per_s']:,} "
                "lines/s)"
            )
            p(
                "  copytruncate: the writer is paused for cp + truncate"
                + (
                    ", and the truncate waits (<= 2 s) until retrywatch has read the whole "
                    f"file ({rot['copytruncate_drain_timeouts']} waits timed out)"
                    if rot["drain_before_truncate"]
                    else f"; {rot['unread_bytes_at_truncate']:,} bytes were still unread "
                    "when truncated (lost for any tailer)"
                )
                + ": lines written between cp and truncate, or not yet read at the truncate, "
                "are lost for every tailer (logrotate's caveat), so this isolates retrywatch."
            )
            if rot["reopen_delay_s"]:
                p(
                    f"  rename: the writer kept writing to the renamed file for "
                    f"{rot['reopen_delay_s']} s (nginx until its reopen)"
                )
            if rot["source_errors"]:
                p(f"  source errors: {rot['source_errors']}")
    if result.get("note"):
        p(result["note"])


# -------------------------------------------------------------------------- main

PARTS = ("throughput", "latency", "rotation")


def int_list(text: str) -> list[int]:
    return [int(r) for r in text.split(",") if r.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--parts", default=",".join(PARTS), help="a subset of " + ",".join(PARTS))
    ap.add_argument("--workload", choices=("storm", "flood", "both"), default="both")
    ap.add_argument(
        "--features",
        choices=("on", "off", "both"),
        default="on",
        help="throughput with the features beyond one connection (the disk forecast) on, "
        "off, or both, each in its own run, and their ratio (on)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="throughput runs per workload and setting, interleaved (on, off, on, ...); the "
        "ratio is of the medians (1). A run is a second or two: one is noisy on a shared "
        "machine",
    )
    ap.add_argument("--storm-lines", type=int, default=2_000_000, help="throughput (2000000)")
    ap.add_argument(
        "--concurrent-copy",
        action="store_true",
        help="throughput: copy while the child runs (default: child stopped during the copy)",
    )
    ap.add_argument("--flood-seconds", type=int, default=180, help="throughput (180)")
    ap.add_argument(
        "--storm-rates",
        "--rates",
        default="100000,400000",
        help="write rates of the storm's latency part, lines/s (default 100000,400000)",
    )
    ap.add_argument(
        "--flood-rates",
        default="16700,100000",
        help="write rates of the flood's latency part, lines/s (default 16700,100000)",
    )
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per storm rate (10)")
    ap.add_argument(
        "--flood-duration", type=float, default=20.0, help="seconds per flood rate (20)"
    )
    ap.add_argument("--batch-ms", type=float, default=10.0, help="one write every N ms (10)")
    ap.add_argument("--threshold", type=int, default=10, help="failures that fire (10)")
    ap.add_argument("--active", type=int, default=8, help="storm: runaways at once (8)")
    ap.add_argument("--life", type=int, default=1000, help="storm: failures per runaway (1000)")
    ap.add_argument(
        "--hidden-every", type=float, default=0.25, help="flood: a new slow runaway every N s"
    )
    ap.add_argument(
        "--hidden-life", type=float, default=10.0, help="flood: seconds each one fails (10)"
    )
    ap.add_argument("--rotation-rate", type=int, default=50_000, help="lines/s (50000)")
    ap.add_argument("--rotations", type=int, default=100, help="rotations (100)")
    ap.add_argument("--rotation-duration", type=float, default=10.0, help="seconds of writing (10)")
    ap.add_argument(
        "--reopen-delay",
        type=float,
        default=0.0,
        help="after a rename, seconds the writer still writes to the renamed file "
        "(nginx until its reopen; default 0: it switches at once)",
    )
    ap.add_argument(
        "--no-drain-before-truncate",
        dest="drain_before_truncate",
        action="store_false",
        help="truncate without first waiting until retrywatch read the whole file",
    )
    ap.add_argument("--drain-timeout", type=float, default=120.0, help="max wait to catch up (120)")
    ap.add_argument(
        "--alert-timeout", type=float, default=5.0, help="max wait for the last alerts (5)"
    )
    ap.add_argument("--seed", type=int, default=gen_logs.DEFAULT_SEED)
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("RETRYWATCH_BENCH_DIR") or "/tmp/retrywatch-bench"),
        help="the generated files of the throughput part, shared with bench_replay.py "
        "(default $RETRYWATCH_BENCH_DIR or /tmp/retrywatch-bench)",
    )
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("RETRYWATCH_BENCH_DIR") or tempfile.gettempdir()),
        help="where the followed files are written, in a new temporary directory "
        "(default $RETRYWATCH_BENCH_DIR or the system's)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the followed files")
    ap.add_argument(
        "--json", action="store_true", help="print the figures as JSON (report on stderr)"
    )
    args = ap.parse_args(argv)
    args.part_set = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not args.part_set or not args.part_set <= set(PARTS):
        ap.error(f"--parts takes a subset of {','.join(PARTS)}")
    try:
        args.storm_rate_list = int_list(args.storm_rates)
        args.flood_rate_list = int_list(args.flood_rates)
    except ValueError:
        ap.error("--storm-rates and --flood-rates take comma-separated integers")
    numbers = [
        *args.storm_rate_list,
        *args.flood_rate_list,
        args.storm_lines,
        args.flood_seconds,
        args.duration,
        args.flood_duration,
        args.batch_ms,
        args.threshold,
        args.active,
        args.life,
        args.hidden_every,
        args.hidden_life,
        args.rotation_rate,
        args.rotation_duration,
        args.drain_timeout,
    ]
    if any(x <= 0 for x in numbers) or args.rotations < 0 or args.reopen_delay < 0:
        ap.error("rates, durations and counts must be positive")
    if args.life < args.threshold:
        ap.error("--life must be at least --threshold (a connection must fire)")
    if args.hidden_life * 2 < args.threshold or args.flood_duration < 7:
        ap.error("flood: --hidden-life must let a runaway fire, --flood-duration be >= 7")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for d in (args.data_dir, args.cache_dir):
        if d.resolve().is_relative_to(REPO_ROOT):
            log(f"bench: {d} is inside the repository; use a path outside it")
            return 2
    rw, why = retrywatch_base()
    if rw is None:
        log(f"bench: retrywatch cannot run: {why}")
        return 1
    args.data_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="retrywatch-live-", dir=args.data_dir))
    workloads = ["storm", "flood"] if args.workload == "both" else [args.workload]
    result: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "command": rw,
        "settings": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("part_set", "json", "storm_rate_list", "flood_rate_list")
        },
        "note": "latency: from the write of the batch holding a connection's "
        f"{args.threshold}th failure to its `fired` event on /api/v1/alerts/stream",
    }
    failed = False

    def attempt(fn: Any, fallback: dict[str, Any], *fn_args: Any) -> dict[str, Any]:
        nonlocal failed
        try:
            return dict(fn(*fn_args))
        except RuntimeError as exc:
            log(f"bench: {exc}")
            failed = True
            return {**fallback, "error": str(exc)}

    try:
        if "throughput" in args.part_set:
            features = ["on", "off"] if args.features == "both" else [args.features]
            result["throughput"] = [
                attempt(part_throughput, {"workload": w, "lines": 0, "bytes": 0,
                                          "features": f},
                        args, workdir, w, rw, f)
                for w in workloads for _ in range(args.repeat) for f in features
            ]  # fmt: skip
        if "latency" in args.part_set:
            result["latency"] = []
            for w in workloads:
                rates = args.storm_rate_list if w == "storm" else args.flood_rate_list
                duration = args.duration if w == "storm" else args.flood_duration
                for rate in rates:
                    fallback = {"workload": w, "target_lines_per_s": rate, "duration_s": duration}
                    result["latency"].append(
                        attempt(part_latency, fallback, args, workdir, w, rate, rw)
                    )
        if "rotation" in args.part_set:
            fallback = {
                "target_lines_per_s": args.rotation_rate,
                "duration_s": args.rotation_duration,
                "rotations_planned": args.rotations,
            }
            result["rotation"] = attempt(part_rotation, fallback, args, workdir, rw)
    finally:
        if args.keep:
            log(f"files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    out = sys.stderr if args.json else sys.stdout
    print_report(result, out)
    parts = [*result.get("throughput", []), *result.get("latency", []), result.get("rotation")]
    bad = [c["what"] for r in parts if r for c in r.get("checks", []) if c["ok"] is False]
    if bad:
        failed = True
        print(f"CHECK FAILED ({len(bad)}): " + "; ".join(bad), file=out)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
