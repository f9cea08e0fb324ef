#!/usr/bin/env python3
"""API benchmark: do readers of the HTTP API slow ingest down?

A real ``retrywatch run`` child on 127.0.0.1 follows a file; a generated retry storm
(``gen_logs.Storm``: ``--storm-lines`` lines, one runaway connection every ``--life``
failures, about 1,000 alerts with the defaults) is appended to it in one burst, with the
child stopped (SIGSTOP) during the copy, and the time until
``retrywatch_source_lines_read_total`` counts every line is the ingest time. Scenarios,
each on a fresh child, ``--repeat`` times:

``none``
    nobody reads the API (but the one poll of ``/metrics`` every 20 ms that times it);
``stream-N``
    N clients (``--streams``, default 50 and 500) hold ``/api/v1/alerts/stream`` open
    and read it, each counting its ``fired`` events;
``kept``
    ``--kept`` alerts (10,000) are made first (a storm of short runaway connections, all
    resolved before the measured storm), nobody reads;
``kept+pollers``
    the same with ``--pollers`` (8) clients asking ``GET /api/v1/alerts`` in a loop, as
    fast as they are answered.

The stream clients and pollers run in a helper process (this script with ``--role``), so
their reading does not share this process's interpreter with the timing loop. The report
gives, per scenario, the median ingest time and its ratio to the median of its
reference (``none`` for the stream scenarios, ``kept`` for the pollers), the processor
seconds the child used meanwhile (all its threads: less noisy than wall time on a shared
machine), its peak RSS, the stream clients dropped by the server, how many clients saw
every ``fired`` event and when the last one had them all (events are paced behind
ingest), and the pollers' requests during the storm. Exit status: 0 when every run read
every line and no stream client missed an event without being dropped, 1 otherwise (or
when a child could not be started), 2 on a usage error. The 10 % target is reported
(``ok``/``OVER``), not enforced.
"""

from __future__ import annotations

import argparse
import asyncio
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
from pathlib import Path
from typing import Any

import gen_logs  # bench/gen_logs.py, beside this script
import httpx
from bench_replay import retrywatch_base

HERE = Path(__file__).resolve()
REPO_ROOT = HERE.parent.parent
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
POLL_EVERY = 0.02  # seconds between two reads of the lines counter
PER_SECOND = 4000  # lines per second of log time
TARGET = 0.10  # within 10 % of the reference


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ------------------------------------------------------------------------ the logs


def write_lines(path: Path, gen: gen_logs.Workload, start: int, *, lines: int | None = None,
                fired: int | None = None, per_second: int = PER_SECOND) -> tuple[int, int]:
    """Append ``gen``'s lines to ``path``, ``per_second`` to a second of log time from
    ``start``, until ``lines`` are written or ``fired`` runaway connections reached the
    threshold; return (lines written, the next free second)."""
    written = 0
    sec = start
    with path.open("ab") as out:
        while True:
            if lines is not None and written >= lines:
                break
            if fired is not None and sum(r.n >= gen.threshold for r in gen.runaways) >= fired:
                break
            n = per_second if lines is None else min(per_second, lines - written)
            part, _ = gen.batch(n, float(sec - start), gen_logs.stamp_of(sec))
            out.write("".join(part).encode("ascii"))
            written += len(part)
            sec += 1
    return written, sec


def runaways_fired(gen: gen_logs.Workload) -> int:
    return sum(r.n >= gen.threshold for r in gen.runaways)


# ------------------------------------------------------------------- the child


class Child:
    """One ``retrywatch run`` following ``path`` on a free port of 127.0.0.1."""

    def __init__(self, rw: list[str], path: Path, workdir: Path, extra: list[str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [*rw, "run", "--log", str(path), "--from", "beginning", "--timezone", "UTC",
                "--listen", f"127.0.0.1:{self.port}", *extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYWATCH_")}
        self.err_path = workdir / f"retrywatch-{self.port}.err"
        self._err = self.err_path.open("wb")
        self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._err, env=env)
        self.http = httpx.Client(base_url=self.base, timeout=30.0)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"retrywatch exited ({self.proc.returncode}): {self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/healthz").status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"retrywatch not ready after {STARTUP_TIMEOUT:.0f} s: {self.tail()}")

    def tail(self) -> str:
        self._err.flush()
        text = self.err_path.read_text(errors="replace").strip()
        return text.splitlines()[-1] if text else "(no output)"

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics summed by family name (labels dropped)."""
        out: dict[str, float] = {}
        for line in self.http.get("/metrics").text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            name = name.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
        return out

    def lines_read(self) -> int:
        return int(self.metrics().get("retrywatch_source_lines_read_total", 0))

    def total_alerts(self) -> int:
        return int(self.http.get("/api/v1/alerts", params={"limit": 1}).json()["total"])

    def cpu_s(self) -> float:
        """Processor seconds the child has used (user and system, every thread)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float | None:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return None

    def stop(self) -> int | None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self._err.close()
        return self.proc.returncode


def wait_lines(child: Child, want: int, timeout: float) -> tuple[int, float | None]:
    """Poll the lines counter until it reaches ``want``: (lines, seconds or None)."""
    start = time.perf_counter()
    got = -1
    while time.perf_counter() - start < timeout:
        with contextlib.suppress(httpx.HTTPError):
            got = child.lines_read()
            if got >= want:
                return got, time.perf_counter() - start
        time.sleep(POLL_EVERY)
    return got, None


# ------------------------------------------------------- the helper process (--role)


async def _reader(port: int, token: str | None, stats: dict[str, Any], i: int,
                  ready: asyncio.Event, count: list[int], want: int) -> None:
    """One event-stream client over a raw socket (HTTP/1.0: the body ends when the
    server closes), counting ``fired`` events."""
    me = stats["clients"][i]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        me["error"] = f"connect: {exc}"
        count[0] += 1
        if count[0] >= want:
            ready.set()
        return
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(f"GET /api/v1/alerts/stream HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode())
    counted = False
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        me["status"] = int(head.split(b" ", 2)[1])
        carry = b""
        while True:
            data = await reader.read(1 << 16)
            if not data:
                me["closed"] = True
                break
            me["bytes"] += len(data)
            buf = carry + data
            cut = buf.rfind(b"\n") + 1
            whole, carry = buf[:cut], buf[cut:]
            me["fired"] += whole.count(b"event: fired\n")
            me["resolved"] += whole.count(b"event: resolved\n")
            if not counted and b": retrywatch alert stream" in whole:
                counted = True
                count[0] += 1
                if count[0] >= want:
                    ready.set()
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        me["error"] = f"{type(exc).__name__}: {exc}"
        me["closed"] = True
    finally:
        if not counted:
            count[0] += 1
            if count[0] >= want:
                ready.set()
        writer.close()


async def run_readers(port: int, n: int, token: str | None) -> dict[str, Any]:
    stats: dict[str, Any] = {"clients": [{"fired": 0, "resolved": 0, "bytes": 0, "closed": False,
                                          "status": None, "error": None} for _ in range(n)]}
    ready = asyncio.Event()
    count = [0]
    tasks = [asyncio.create_task(_reader(port, token, stats, i, ready, count, n))
             for i in range(n)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ready.wait(), STARTUP_TIMEOUT)
    print(json.dumps({"ready": count[0]}), flush=True)
    loop = asyncio.get_running_loop()
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "stats":
        print(json.dumps({"fired": [c["fired"] for c in stats["clients"]],
                          "closed": [c["closed"] for c in stats["clients"]]}), flush=True)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return stats


def run_pollers(port: int, n: int, token: str | None) -> dict[str, Any]:
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(n)]
    errors = [0] * n
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def poll(i: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120.0,
                          headers=headers) as client:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    client.get("/api/v1/alerts").raise_for_status()
                    latencies[i].append(time.perf_counter() - t0)
                except httpx.HTTPError:
                    errors[i] += 1
                    stop.wait(0.1)

    threads = [threading.Thread(target=poll, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    print(json.dumps({"ready": n}), flush=True)
    sys.stdin.readline()  # "stop"
    stop.set()
    for t in threads:
        t.join(130)
    flat = sorted(x for lat in latencies for x in lat)
    return {"requests": len(flat), "errors": sum(errors),
            "p50_ms": round(statistics.median(flat) * 1000, 1) if flat else None,
            "max_ms": round(flat[-1] * 1000, 1) if flat else None}


def helper_main(args: argparse.Namespace) -> int:
    if args.role == "readers":
        stats = asyncio.run(run_readers(args.port, args.n, args.token))
    else:
        stats = run_pollers(args.port, args.n, args.token)
    print(json.dumps(stats), flush=True)
    return 0


class Helper:
    """This script as ``--role readers|pollers`` against ``port``."""

    def __init__(self, role: str, port: int, n: int, token: str | None) -> None:
        argv = [sys.executable, str(HERE), "--role", role, "--port", str(port), "--n", str(n)]
        if token:
            argv += ["--token", token]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.ready = int(json.loads(line)["ready"]) if line else 0

    def stats(self) -> dict[str, Any]:
        """The readers' counts now."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def finish(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
            out, _ = self.proc.communicate(timeout=150)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            self.proc.kill()
            self.proc.wait()
            return {"error": "helper did not finish"}
        lines = [x for x in out.splitlines() if x.strip()]
        return dict(json.loads(lines[-1])) if lines else {"error": "no output"}


# ------------------------------------------------------------------------ one run


def one_run(args: argparse.Namespace, rw: list[str], workdir: Path, scenario: str,
            streams: int, pollers: int, kept: int, seed: int) -> dict[str, Any]:
    path = workdir / f"{scenario}-{seed}.log"
    path.write_bytes(b"")
    start = gen_logs.parse_stamp(gen_logs.STORM_START)
    preload = 0
    if kept:
        # Short runaway connections (each just past the threshold), all resolved before
        # the storm: `kept` alerts in the API, none firing.
        pre = gen_logs.Storm(seed + 1, active=50, retries=(12, 12), track=False)
        preload, start = write_lines(path, pre, start, fired=kept, per_second=5000)
        more, start = write_lines(path, pre, start + 2 * 60 + 5, lines=50)
        preload += more
        start += 1
    extra = ["--max-stream-clients", str(max(streams, 1))] if args.cap_flag else []
    child = Child(rw, path, workdir, extra)
    result: dict[str, Any] = {"scenario": scenario, "streams": streams, "pollers": pollers,
                              "kept": kept}
    helper: Helper | None = None
    try:
        child.wait_ready()
        if preload:
            got, spent = wait_lines(child, preload, args.drain_timeout)
            if spent is None:
                raise RuntimeError(f"preload: {got:,} of {preload:,} lines read")
            deadline = time.monotonic() + 30
            while child.total_alerts() < kept and time.monotonic() < deadline:
                time.sleep(0.1)
            result["alerts_kept"] = child.total_alerts()
        storm = gen_logs.Storm(seed, active=args.active, retries=(args.life, args.life),
                               track=False)
        staged = workdir / f"storm-{seed}.log"
        staged.write_bytes(b"")
        lines, _ = write_lines(staged, storm, start, lines=args.storm_lines)
        expected_fired = runaways_fired(storm)
        before = child.metrics()
        if streams:
            helper = Helper("readers", child.port, streams, args.token)
            result["streams_connected"] = helper.ready
        elif pollers:
            helper = Helper("pollers", child.port, pollers, args.token)
        child.proc.send_signal(signal.SIGSTOP)
        try:
            with staged.open("rb") as src, path.open("ab") as dst:
                shutil.copyfileobj(src, dst, 4 << 20)
            cpu = child.cpu_s()
        finally:
            child.proc.send_signal(signal.SIGCONT)
        got, spent = wait_lines(child, preload + lines, args.drain_timeout)
        result.update({"lines": lines, "lines_read": got - preload,
                       "ingest_s": None if spent is None else round(spent, 3),
                       "ingest_cpu_s": round(child.cpu_s() - cpu, 3),
                       "runaways": expected_fired})
        after = child.metrics()
        fired = int(after.get("retrywatch_alerts_fired_total", 0)
                    - before.get("retrywatch_alerts_fired_total", 0))
        result["alerts_fired"] = fired
        if spent is not None and streams and helper is not None:
            # Events are paced behind ingest: wait (bounded) until every client still
            # connected has every fired event.
            started = time.perf_counter() - spent
            deadline = time.perf_counter() + args.settle
            while True:
                now = helper.stats()
                done = all(f >= fired or c for f, c in zip(now["fired"], now["closed"],
                                                            strict=True))
                if done or time.perf_counter() > deadline:
                    break
                time.sleep(0.1)
            result["streams_delivered_s"] = (round(time.perf_counter() - started, 2)
                                             if done else None)
            after = child.metrics()
        result["stream_clients_dropped"] = int(
            after.get("retrywatch_stream_clients_dropped_total", 0))
        result["peak_rss_mib"] = child.peak_rss_mib()
        if helper is not None:
            stats = helper.finish()
            helper = None
            if streams:
                clients = stats.get("clients", [])
                result["streams_saw_every_fired"] = sum(c["fired"] == fired for c in clients)
                result["streams_closed_by_server"] = sum(bool(c["closed"]) for c in clients)
                result["streams_refused"] = sum(c["status"] not in (None, 200) for c in clients)
                short = [c for c in clients if c["fired"] != fired and not c["closed"]]
                result["streams_missing_events_not_dropped"] = len(short)
            else:
                result["polls"] = stats
    finally:
        if helper is not None:
            helper.finish()
        result["exit_code"] = child.stop()
        if not args.keep:
            path.unlink(missing_ok=True)
            (workdir / f"storm-{seed}.log").unlink(missing_ok=True)
    return result


# ------------------------------------------------------------------------ the report


def scenarios(args: argparse.Namespace) -> list[tuple[str, int, int, int, str]]:
    """(name, streams, pollers, kept, reference)."""
    out = [("none", 0, 0, 0, "none")]
    out += [(f"stream-{n}", n, 0, 0, "none") for n in args.streams]
    if args.pollers:
        out += [("kept", 0, 0, args.kept, "kept"),
                ("kept+pollers", 0, args.pollers, args.kept, "kept")]
    return out


def report(rows: list[dict[str, Any]], out: Any) -> None:
    medians = {r["scenario"]: r["median_s"] for r in rows}
    head = ("scenario", "ingest runs (s)", "median", "vs ref", "target", "CPU s", "RSS MiB",
            "dropped", "streams ok", "delivered s", "polls", "poll p50/max ms")
    widths = (14, 24, 7, 8, 7, 6, 8, 8, 11, 12, 6, 16)
    print(" ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(), file=out)
    for r in rows:
        ref = medians.get(r["reference"])
        own = r["scenario"] == r["reference"]
        ratio = None if own or not r["median_s"] or not ref else r["median_s"] / ref - 1
        polls = r.get("polls") or {}
        cells = (
            r["scenario"],
            ", ".join("-" if x is None else f"{x:.2f}" for x in r["ingest_s"]),
            "-" if r["median_s"] is None else f"{r['median_s']:.2f}",
            "" if ratio is None else f"{ratio:+.1%}",
            "" if ratio is None else ("ok" if ratio <= TARGET else "OVER"),
            "-" if r["cpu_s"] is None else f"{r['cpu_s']:.2f}",
            r["rss"],
            str(r["dropped"]),
            f"{r['streams_ok']}/{r['streams'] * len(r['ingest_s'])}" if r["streams"] else "",
            "" if not r["streams"] else (
                "-" if r["delivered_s"] is None else f"{r['delivered_s']:.1f}"),
            str(polls.get("requests", "")),
            f"{polls['p50_ms']}/{polls['max_ms']}" if polls else "",
        )
        print(" ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip(),
              file=out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--storm-lines", type=int, default=200_000, help="lines (200000)")
    ap.add_argument("--life", type=int, default=170,
                    help="failures of each runaway connection (170: ~1,000 alerts)")
    ap.add_argument("--active", type=int, default=8, help="runaways at once (8)")
    ap.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",") if x],
                    default=[50, 500], help="stream client counts (50,500)")
    ap.add_argument("--pollers", type=int, default=8, help="pollers (8; 0: no poller runs)")
    ap.add_argument("--kept", type=int, default=10_000, help="alerts kept for the pollers")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each scenario (3)")
    ap.add_argument("--settle", type=float, default=60.0,
                    help="seconds the stream clients are given, at most, after the last "
                         "line to have every fired event (60)")
    ap.add_argument("--drain-timeout", type=float, default=120.0, help="max ingest wait (120)")
    ap.add_argument("--cap-flag", action=argparse.BooleanOptionalAction, default=True,
                    help="pass --max-stream-clients (off for a build without it)")
    ap.add_argument("--token", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", type=Path,
                    default=Path(os.environ.get("TMPDIR", "/tmp")) / "retrywatch-bench")
    ap.add_argument("--keep", action="store_true", help="keep the followed files")
    ap.add_argument("--json", action="store_true", help="every run as JSON on stdout")
    ap.add_argument("--seed", type=int, default=gen_logs.DEFAULT_SEED)
    ap.add_argument("--role", choices=("readers", "pollers"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role is None and (args.storm_lines <= 0 or args.life < gen_logs.THRESHOLD
                              or args.repeat < 1 or args.kept < 0 or args.pollers < 0
                              or any(n < 1 for n in args.streams)):
        ap.error("counts must be positive and --life at least the threshold (10)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role is not None:
        return helper_main(args)
    if args.data_dir.resolve().is_relative_to(REPO_ROOT):
        log(f"bench: {args.data_dir} is inside the repository; use a path outside it")
        return 2
    rw, why = retrywatch_base()
    if rw is None:
        log(f"bench: retrywatch cannot run: {why}")
        return 1
    args.data_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="retrywatch-api-", dir=args.data_dir))
    runs: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    failed = False
    try:
        # Round-robin (each repetition runs every scenario once): a machine that gets
        # busier or quieter meanwhile shifts every scenario alike.
        plan = scenarios(args)
        results: dict[str, list[dict[str, Any]]] = {p[0]: [] for p in plan}
        for k in range(args.repeat):
            for name, streams, pollers, kept, _ in plan:
                log(f"{name}: run {k + 1} of {args.repeat}")
                try:
                    r = one_run(args, rw, workdir, name, streams, pollers, kept, args.seed + k)
                except RuntimeError as exc:
                    log(f"bench: {exc}")
                    r = {"scenario": name, "error": str(exc), "ingest_s": None}
                    failed = True
                log(f"  {json.dumps(r)}")
                results[name].append(r)
                if r.get("ingest_s") is None or r.get("streams_missing_events_not_dropped"):
                    failed = True
        for name, streams, _, _, reference in plan:
            got = results[name]
            runs += got
            times = [r.get("ingest_s") for r in got]
            done = [t for t in times if t is not None]
            rss = [r["peak_rss_mib"] for r in got if r.get("peak_rss_mib")]
            polls = [r["polls"] for r in got if r.get("polls")]
            delivered = [r["streams_delivered_s"] for r in got
                         if r.get("streams_delivered_s") is not None]
            rows.append({
                "scenario": name, "reference": reference, "streams": streams,
                "ingest_s": times,
                "median_s": statistics.median(done) if len(done) == len(times) else None,
                "rss": f"{max(rss):.0f}" if rss else "-",
                "cpu_s": (statistics.median(c) if (c := [
                    r["ingest_cpu_s"] for r in got if r.get("ingest_cpu_s") is not None])
                    else None),
                "dropped": sum(r.get("stream_clients_dropped", 0) for r in got),
                "streams_ok": sum(r.get("streams_saw_every_fired", 0) for r in got),
                "polls": polls[len(polls) // 2] if polls else None,
                "alerts": [r.get("alerts_fired") for r in got],
                "delivered_s": (statistics.median(delivered)
                                if delivered and len(delivered) == len(got) else None),
            })
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    out = sys.stderr if args.json else sys.stdout
    print(f"retrywatch {' '.join(rw)}; python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs; storm {args.storm_lines:,} lines, "
          f"alerts per run {rows[0]['alerts']}", file=out)
    report(rows, out)
    if args.json:
        print(json.dumps({"rows": rows, "runs": runs}, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
