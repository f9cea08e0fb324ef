#!/usr/bin/env python3
"""Live benchmark: `retrywatch run` following a log written at a storm's pace.

Two parts, each against a fresh ``retrywatch run`` child on 127.0.0.1:

1. **Detection latency.** A writer appends stream-proxy runaway lines (the shape of
   ``shared/bench/gen_storm.py``'s, stamped with the current UTC time) at a target rate,
   in one batch every ``--batch-ms``; new connections keep starting, so new alerts keep
   firing. For each connection, the time its ``--threshold``-th failure reached the file
   (after the write of its batch returned) is compared with the time its ``fired`` event
   arrived on ``/api/v1/alerts/stream``. Reported: p50, p99 and max latency, alerts
   measured, the achieved write rate, the time the follower took to catch up after the
   writer stopped (lag back to 0), and the child's peak RSS (``VmHWM``).
2. **Rotation under load.** While a writer appends at ``--rotation-rate``, a rotator
   performs ``--rotations`` rotations of the one followed path, alternating rename and
   create and copytruncate; at the end, the lines retrywatch counted
   (``retrywatch_source_lines_read_total`` summed over sources) are compared with the
   lines written.

Exit status: 0 when the figures were printed (no assertion is made on them: this
script prints figures, it is not a test); 1 when retrywatch could not be started;
2 on a usage error (e.g. a data directory inside the repository).
"""

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
WORKERS = (2454, 2455, 2456, 2457)
START_CID = 3_584_000
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SAMPLE_EVERY = 0.5  # seconds between lag samples while writing
POLL_EVERY = 0.02  # seconds between polls while waiting for the follower


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


# ------------------------------------------------------------------------ the lines


@dataclass
class _Conn:
    pid: int
    cid: int
    suffixes: list[bytes]  # the line after the timestamp, one per upstream
    left: int
    n: int = 0
    stamp: bytes = b""
    lines: list[bytes] = field(default_factory=list)


class StormLines:
    """Runaway stream-proxy lines like gen_storm.py's, stamped with the current UTC time.

    ``active`` connections are open at once; each logs ``life`` failures, alternating its
    2 or 3 upstreams, then a new connection (a higher id) takes its slot. ``batch(n)``
    returns the bytes of ``n`` lines and the ``(pid, cid)`` of the connections whose
    ``threshold``-th failure is among them.
    """

    def __init__(self, seed: int, active: int, life: int, threshold: int) -> None:
        self.rng = random.Random(seed)
        self.life = life
        self.threshold = threshold
        self.next_cid = START_CID
        self.started = 0
        self.slots = [self._new() for _ in range(active)]
        self._sec = -1
        self._stamp = b""

    def _ip(self, prefix: str) -> str:
        return f"{prefix}.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"

    def _new(self) -> _Conn:
        rng = self.rng
        self.next_cid += rng.randint(1, 25)
        self.started += 1
        port = rng.choice([5555, 5555, 6379, 9092, 3306])
        ups: list[str] = []
        while len(ups) < rng.randint(2, 3):
            u = f"{self._ip('10.12')}:{port}"
            if u not in ups:
                ups.append(u)
        pid = rng.choice(WORKERS)
        client = self._ip("10.10")
        server = f"0.0.0.0:{rng.choice([55556, 55557, 55558, 6379, 9092])}"
        suffixes = [
            (
                f" [error] {pid}#{pid}: *{self.next_cid} connect() failed (111: Connection "
                f"refused) while connecting to upstream, client: {client}, server: {server}, "
                f'upstream: "{up}", bytes from/to client:0/0, bytes from/to upstream:0/0\n'
            ).encode()
            for up in ups
        ]
        return _Conn(pid, self.next_cid, suffixes, self.life)

    def stamp(self) -> bytes:
        now = int(time.time())
        if now != self._sec:
            self._sec = now
            self._stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(now)).encode()
        return self._stamp

    def batch(self, n: int) -> tuple[bytes, list[tuple[int, int]]]:
        stamp = self.stamp()
        parts: list[bytes] = []
        crossed: list[tuple[int, int]] = []
        slots = self.slots
        threshold = self.threshold
        for i in self.rng.choices(range(len(slots)), k=n):
            c = slots[i]
            if c.stamp is not stamp:  # whole lines for this second, made once
                c.stamp = stamp
                c.lines = [stamp + suffix for suffix in c.suffixes]
            parts.append(c.lines[c.n % len(c.lines)])
            c.n += 1
            if c.n == threshold:
                crossed.append((c.pid, c.cid))
            if c.n >= c.left:
                slots[i] = self._new()
        return b"".join(parts), crossed


# ------------------------------------------------------------------------ the writer


class Writer:
    """Appends to ``path`` (``O_APPEND``, unbuffered) at a target rate, in batches.

    ``lock`` is held around every write; a rotator takes it to rotate between writes.
    """

    def __init__(self, path: Path, lines: StormLines) -> None:
        self.path = path
        self.lines = lines
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
                data, crossed = self.lines.batch(due)
                with self.lock:
                    if self.reopen_at is not None and time.perf_counter() >= self.reopen_at:
                        self.reopen()
                    self._write(data)
                    on_file = time.perf_counter()
                    self.written += due
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

    def __init__(self, path: Path, threshold: int, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.argv = [
            sys.executable, "-m", "retrywatch", "run",
            "--log", str(path), "--from", "beginning", "--timezone", "UTC",
            "--threshold", str(threshold), "--listen", f"127.0.0.1:{self.port}",
        ]  # fmt: skip
        self.stderr_path = workdir / f"retrywatch-{self.port}.err"
        self._err = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self._err,
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


# ------------------------------------------------------------------------ the parts


def part_latency(args: argparse.Namespace, workdir: Path, rate: int) -> dict[str, Any]:
    path = workdir / f"latency-{rate}.log"
    path.write_bytes(b"")
    lines = StormLines(args.seed, args.active, args.life, args.threshold)
    writer = Writer(path, lines)
    child = Child(path, args.threshold, workdir)
    result: dict[str, Any] = {"target_lines_per_s": rate, "duration_s": args.duration}
    try:
        child.wait_ready()
        stream = AlertStream(child.base)
        stream.start()
        sampler = LagSampler(child.base)
        sampler.start()
        log(f"latency: writing {rate:,} lines/s for {args.duration} s to {path}")
        spent = writer.run(rate, args.duration, args.batch_ms / 1000, threading.Event())
        sampler.stop()
        caught_up = wait_caught_up(child, path, args.drain_timeout)
        # Alerts of the last lines: wait (bounded) until every crossing was seen.
        deadline = time.perf_counter() + args.alert_timeout
        while time.perf_counter() < deadline and not writer.crossed.keys() <= stream.fired.keys():
            time.sleep(POLL_EVERY)
        lines_read, _ = wait_lines(child, writer.written, 3.0)
        rss = child.peak_rss_mib()
        stream.stop()
        latencies = [
            (stream.fired[key] - at) * 1000
            for key, at in writer.crossed.items()
            if key in stream.fired
        ]
        result.update(
            {
                "lines_written": writer.written,
                "bytes_written": writer.bytes,
                "write_seconds": round(spent, 3),
                "achieved_lines_per_s": round(writer.written / spent) if spent > 0 else None,
                "writer_capped_batches": writer.behind_batches,
                "connections_started": lines.started,
                "alerts_expected": len(writer.crossed),
                "alerts_measured": len(latencies),
                "alerts_missing": len(writer.crossed.keys() - stream.fired.keys()),
                "alerts_unexpected": len(stream.fired.keys() - writer.crossed.keys()),
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


def part_rotation(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    path = workdir / "error.log"
    for stale in (path, path.with_name("error.log.1")):
        stale.unlink(missing_ok=True)
    path.write_bytes(b"")
    lines = StormLines(args.seed + 1, args.active, args.life, args.threshold)
    writer = Writer(path, lines)
    child = Child(path, args.threshold, workdir)
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


def print_report(result: dict[str, Any], out: Any) -> None:
    def p(line: str = "") -> None:
        print(line, file=out)

    for r in result.get("latency", []):
        lat = r.get("latency_ms")
        p(f"detection latency at {r['target_lines_per_s']:,} lines/s for {r['duration_s']} s")
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
                f"(expected {r['alerts_expected']:,}, missing {r['alerts_missing']}, "
                f"unexpected {r['alerts_unexpected']})"
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
    rot = result.get("rotation")
    if rot:
        p(
            f"rotation under load: {rot['target_lines_per_s']:,} lines/s for "
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
            mark = "OK  " if rot["counted_equal_written"] else "FAIL"
            p(
                f"  [{mark}] lines written {rot['lines_written']:,}, counted by retrywatch "
                f"{rot['lines_read']:,}, difference {rot['difference']:+,} "
                f"(achieved {rot['achieved_lines_per_s']:,} lines/s)"
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--parts", default="latency,rotation", help="latency,rotation or one")
    ap.add_argument(
        "--rates",
        default="100000,400000",
        help="write rates of the latency part, lines/s (default 100000,400000)",
    )
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per rate (10)")
    ap.add_argument("--batch-ms", type=float, default=10.0, help="one write every N ms (10)")
    ap.add_argument("--threshold", type=int, default=10, help="failures that fire (10)")
    ap.add_argument("--active", type=int, default=8, help="runaway connections at once (8)")
    ap.add_argument("--life", type=int, default=1000, help="failures per runaway connection (1000)")
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
    ap.add_argument("--drain-timeout", type=float, default=60.0, help="max wait to catch up (60)")
    ap.add_argument(
        "--alert-timeout", type=float, default=5.0, help="max wait for the last alerts (5)"
    )
    ap.add_argument("--seed", type=int, default=20190917)
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("RETRYWATCH_BENCH_DIR") or tempfile.gettempdir()),
        help="where the log files are written, in a new temporary directory "
        "(default $RETRYWATCH_BENCH_DIR or the system's); must be outside the repository",
    )
    ap.add_argument("--keep", action="store_true", help="keep the log files")
    ap.add_argument(
        "--json", action="store_true", help="print the figures as JSON (report on stderr)"
    )
    args = ap.parse_args(argv)
    args.part_set = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not args.part_set or not args.part_set <= {"latency", "rotation"}:
        ap.error("--parts takes latency, rotation or both")
    try:
        args.rate_list = [int(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        ap.error("--rates takes comma-separated integers")
    numbers = [
        *args.rate_list,
        args.duration,
        args.batch_ms,
        args.threshold,
        args.active,
        args.life,
        args.rotation_rate,
        args.rotation_duration,
        args.drain_timeout,
    ]
    if any(x <= 0 for x in numbers) or args.rotations < 0 or args.reopen_delay < 0:
        ap.error("rates, durations and counts must be positive")
    if args.life < args.threshold:
        ap.error("--life must be at least --threshold (a connection must fire)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.data_dir.resolve().is_relative_to(REPO_ROOT):
        log(f"bench: --data-dir {args.data_dir} is inside the repository; use a path outside it")
        return 2
    args.data_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="retrywatch-live-", dir=args.data_dir))
    result: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "settings": {
            k: v
            for k, v in vars(args).items()
            if k not in ("part_set", "data_dir", "json", "rate_list")
        },
        "note": "latency: from the write of the batch holding a connection's "
        f"{args.threshold}th failure to its `fired` event on /api/v1/alerts/stream",
    }
    failed = False
    try:
        if "latency" in args.part_set:
            result["latency"] = []
            for rate in args.rate_list:
                try:
                    result["latency"].append(part_latency(args, workdir, rate))
                except RuntimeError as exc:
                    log(f"bench: {exc}")
                    result["latency"].append(
                        {"target_lines_per_s": rate, "duration_s": args.duration, "error": str(exc)}
                    )
                    failed = True
        if "rotation" in args.part_set:
            try:
                result["rotation"] = part_rotation(args, workdir)
            except RuntimeError as exc:
                log(f"bench: {exc}")
                result["rotation"] = {
                    "target_lines_per_s": args.rotation_rate,
                    "duration_s": args.rotation_duration,
                    "rotations_planned": args.rotations,
                    "error": str(exc),
                }
                failed = True
    finally:
        if args.keep:
            log(f"files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print_report(result, sys.stderr)
        print(json.dumps(result, indent=2, default=str))
    else:
        print_report(result, sys.stdout)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
