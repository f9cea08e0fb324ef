#!/usr/bin/env python3
"""Replay benchmark: `retrywatch replay` and `analyze` against grep and mtail, two workloads.

For each workload (``storm``: the incident's retry storm; ``flood``: every request of a
busy ingress failing once, with one slow runaway hidden in it), generates the log with
``bench/gen_logs.py`` (deterministic, seeded) outside the repository, or reuses it, and
runs every tool as a child process pinned to one core, interleaved, ``--repeat`` times.
It prints the median wall time as lines per second, the ratio to ``grep -c`` of the same
run, and the child's peak RSS. Then the same workload in two files (two halves generated
with other seeds), ``retrywatch replay`` of both files pinned to two cores and to one
core. Last, every answer is checked against the generator's ground truth.

Exit status: 0 when every check passed (or could not be made because a tool is
missing); 1 when a check failed (e.g. retrywatch did not flag exactly the runaway
connections); 2 on a usage error (e.g. a data directory inside the repository). No
assertion is ever made on a timing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gen_logs  # bench/gen_logs.py, beside this script

REPO_ROOT = Path(__file__).resolve().parent.parent
MTAIL_PROGS = Path(__file__).resolve().parent / "mtail"
MTAIL_METRIC = "retrywatch_bench_connect_failures_total"
DEFAULT_LINES = 2_000_000  # storm
DEFAULT_SECONDS = 180  # flood
GREP_PATTERN = "connect() failed"
MIB = 1024 * 1024
TOOLS = ("wc", "grep", "mtail", "retrywatch", "analyze")

Summary = dict[str, Any]


@dataclass
class Sample:
    """One timed run of one child process."""

    wall_s: float
    maxrss_kib: int
    cpu_s: float
    exit_code: int


@dataclass
class Tool:
    """A command to time; ``argv`` is None when the tool is not available."""

    key: str
    label: str
    argv: list[str] | None
    note: str = ""
    ok_codes: tuple[int, ...] = (0,)
    samples: list[Sample] = field(default_factory=list)


@dataclass
class Check:
    """One comparison of a tool's answer with the ground truth."""

    tool: str
    what: str
    ok: bool | None  # None: could not be checked
    detail: str


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ child processes


def run_child(argv: list[str], out: Path, err: Path, cwd: Path) -> Sample:
    """Run ``argv`` once; return wall time and the child's own resource usage.

    A plain fork, not subprocess' vfork/posix_spawn: after a vfork the exec'd child
    inherits the *parent's* peak RSS as its own ru_maxrss. After a fork it inherits only
    the pages resident at fork (about the size of this script's interpreter), which the
    ``true`` row of the run reports as the floor. This script never holds a log or a
    tool's output in its own memory (the checks run in a child, ``in_child``), so the
    floor stays that small.
    """
    fds = [
        os.open(os.devnull, os.O_RDONLY),
        os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: never returns
        try:
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            os.chdir(cwd)
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(2, f"bench: cannot run {argv[0]}: {exc}\n".encode())
        os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    for fd in fds:
        os.close(fd)
    cpu = usage.ru_utime + usage.ru_stime
    return Sample(wall, usage.ru_maxrss, cpu, os.waitstatus_to_exitcode(status))


def in_child(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a forked child, its JSON-able result sent back through a pipe, so
    that parsing a large output never grows this process (whose resident pages every
    later child's peak RSS would include)."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            data = json.dumps({"ok": fn(*args)}).encode()
        except Exception as exc:  # reported by the parent
            data = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()
            code = 1
        with os.fdopen(w, "wb") as pipe:
            pipe.write(data)
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    try:
        reply = json.loads(data)
    except ValueError:
        reply = {"error": "the checking child died"}
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return reply["ok"]


def probe(argv: list[str]) -> tuple[bool, str]:
    """Run a quick command; return (success, first line of its output or error)."""
    try:
        proc = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    if proc.returncode == 0:
        return True, lines[0] if lines else ""
    return False, lines[-1] if lines else f"exit {proc.returncode}"


def pin_prefix(cpu: str | None) -> tuple[list[str], str]:
    if cpu is None:
        return [], "not pinned (--cpu none)"
    taskset = shutil.which("taskset")
    if taskset is None:
        return [], "not pinned (taskset not found)"
    ok, detail = probe([taskset, "-c", cpu, "true"])
    if not ok:
        return [], f"not pinned (taskset -c {cpu} failed: {detail})"
    what = "CPU" if cpu.isdigit() else "CPUs"
    return [taskset, "-c", cpu], f"pinned to {what} {cpu} with taskset"


def retrywatch_base() -> tuple[list[str] | None, str]:
    """The console script (beside this Python, in the repository's .venv, or on PATH)
    if it answers ``replay --help``, else ``python -m retrywatch``."""
    candidates: list[list[str]] = []
    for script in (
        Path(sys.executable).parent / "retrywatch",
        REPO_ROOT / ".venv" / "bin" / "retrywatch",
        Path(shutil.which("retrywatch") or "/nonexistent"),
    ):
        if script.is_file() and [str(script)] not in candidates:
            candidates.append([str(script)])
    candidates.append([sys.executable, "-m", "retrywatch"])
    notes = []
    for base in candidates:
        ok, detail = probe([*base, "replay", "--help"])
        if ok:
            return base, ""
        notes.append(f"`{shlex.join([*base, 'replay', '--help'])}` failed: {detail}")
    return None, "; ".join(notes)


def make_tools(file: Path, wanted: set[str], rw: list[str] | None, rw_note: str) -> list[Tool]:
    f = str(file)
    tools = [
        Tool("true", "true (RSS floor)", [shutil.which("true") or "true"]),
        Tool("wc", "wc -l", ["wc", "-l", f]),
        Tool("grep", f"grep -c -F '{GREP_PATTERN}'", ["grep", "-c", "-F", GREP_PATTERN, f],
             ok_codes=(0, 1)),
    ]  # fmt: skip
    mtail = shutil.which("mtail")
    if mtail:
        argv = [
            mtail, "--one_shot", "--address", "127.0.0.1", "--port", "0",
            "--progs", f"{MTAIL_PROGS}/", "--logs", f, "--logtostderr",
        ]  # fmt: skip
        tools.append(Tool("mtail", "mtail --one_shot", argv, note=probe([mtail, "--version"])[1]))
    else:
        why = "not found (apt-get install mtail)"
        tools.append(Tool("mtail", "mtail --one_shot", None, note=why))
    for key, command in (("retrywatch", "replay"), ("analyze", "analyze")):
        label = f"retrywatch {command} --format json"
        rw_argv = None if rw is None else [*rw, command, "--format", "json", "--timezone", "UTC", f]
        tools.append(Tool(key, label, rw_argv, note=rw_note))
    return [t for t in tools if t.key in wanted or t.key == "true"]


def measure(tools: list[Tool], prefix: list[str], repeat: int, outdir: Path, what: str) -> None:
    """Run every available tool ``repeat`` times, interleaved so drift hits all alike."""
    for rep in range(1, repeat + 1):
        for tool in tools:
            if tool.argv is None:
                continue
            argv = [*prefix, *tool.argv]
            s = run_child(argv, outdir / f"{tool.key}.out", outdir / f"{tool.key}.err", REPO_ROOT)
            tool.samples.append(s)
            log(
                f"  {what} run {rep}/{repeat} {tool.key:<10} {s.wall_s:8.3f} s  "
                f"{s.maxrss_kib / 1024:8.1f} MiB  exit {s.exit_code}"
            )


# ------------------------------------------------------------------------ checks
# Each checker runs in a child (in_child) and returns a list of Check dicts.


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def check_wc(outdir: Path, summary: Summary) -> list[Check]:
    got = read_int(outdir / "wc.out")
    return [Check("wc", "lines", got == summary["lines"], f"{got} vs {summary['lines']}")]


def check_grep(outdir: Path, summary: Summary) -> list[Check]:
    got, want = read_int(outdir / "grep.out"), summary["connect_failed_literal"]
    return [Check("grep", "count == connect_failed_literal", got == want, f"{got} vs {want}")]


def check_mtail(outdir: Path, summary: Summary) -> list[Check]:
    try:
        doc = json.loads((outdir / "mtail.out").read_bytes())
        counts: dict[int, int] = {}
        for metric in doc[MTAIL_METRIC]:
            for lv in metric["LabelValues"]:
                cid = int(lv["Labels"][0])
                counts[cid] = counts.get(cid, 0) + int(lv["Value"]["Value"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        return [Check("mtail", "counts", False, f"could not read mtail's JSON output: {exc!r}")]
    h = hashlib.sha256()
    for cid in sorted(counts):
        h.update(f"{cid} {counts[cid]}\n".encode())
    total, want = sum(counts.values()), summary["connect_failures_total"]
    digest = h.hexdigest()
    return [
        Check("mtail", "sum == connect_failures_total", total == want, f"{total} vs {want}"),
        Check(
            "mtail",
            "per-cid counts sha256",
            digest == summary["per_cid_sha256"],
            f"{len(counts)} cids, {digest[:12]} vs {summary['per_cid_sha256'][:12]}",
        ),
    ]


def sample_of(keys: set[str], k: int = 5) -> str:
    return ", ".join(sorted(keys)[:k]) + (" ..." if len(keys) > k else "")


def alert_key(alert: dict[str, Any], by_source: bool) -> str:
    cid = alert["cid"]
    if isinstance(cid, bool) or not isinstance(cid, int | str):
        raise TypeError(f"alert cid {cid!r} is not an int")
    key = str(int(cid))
    return f"{Path(str(alert.get('source'))).name}:{key}" if by_source else key


Counts = dict[str, int]


def truth_of(summaries: dict[str, Summary]) -> tuple[Counts, Counts, Counts]:
    """The runaway connections (keyed ``cid``, or ``file:cid`` for several files), their
    pids, and the connect failures by kind, over ``{file name: summary}``."""
    by_source = len(summaries) > 1
    runaway: dict[str, int] = {}
    pids: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for name, s in summaries.items():
        for cid, n in s["runaway"].items():
            key = f"{name}:{cid}" if by_source else cid
            runaway[key] = n
            pids[key] = s["runaway_detail"][cid]["pid"]
        for kind, n in s["connect_failures"].items():
            if n:
                kinds[kind] = kinds.get(kind, 0) + n
    return runaway, pids, kinds


def check_retrywatch(outdir: Path, summaries: dict[str, Summary], key: str) -> list[Check]:
    runaway, pids, kinds = truth_of(summaries)
    by_source = len(summaries) > 1
    try:
        doc = json.loads((outdir / f"{key}.out").read_bytes())
        alerts = doc["alerts"]
        flagged: dict[str, list[dict[str, Any]]] = {}
        for a in alerts:
            flagged.setdefault(alert_key(a, by_source), []).append(a)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = f"no {{'alerts': [...]}} in its output: {exc!r}"
        return [Check(key, "flagged connections == runaway connections", False, why)]
    truth, got = set(runaway), set(flagged)
    missing, extra = truth - got, got - truth
    detail = f"{len(got)} flagged ({len(alerts)} alerts), {len(truth)} runaway"
    if len(truth) == 1 and not by_source:
        detail += f" (*{next(iter(truth))})"
    if missing:
        detail += f"; MISSING {len(missing)}: {sample_of(missing)}"
    if extra:
        detail += f"; EXTRA {len(extra)}: {sample_of(extra)}"
    checks = [Check(key, "flagged connections == runaway connections", not missing and not extra,
                    detail)]  # fmt: skip
    both = truth & got
    wrong = {
        k
        for k in both
        if sum(a.get("failures", 0) for a in flagged[k]) != runaway[k]
        or any(a.get("pid") != pids[k] for a in flagged[k])
    }
    multi = {k for k in both if len(flagged[k]) > 1}
    checks.append(
        Check(
            key,
            "each runaway's failures and pid == the generator's",
            not wrong,
            f"{len(both) - len(wrong)} of {len(both)} equal"
            + (f" ({len(multi)} in several alerts)" if multi else "")
            + (f"; differ: {sample_of(wrong)}" if wrong else ""),
        )
    )
    stats = doc.get("stats") or doc.get("summary")
    by_kind = stats.get("connect_failures_by_kind") if isinstance(stats, dict) else None
    if isinstance(by_kind, dict):
        by_kind = {k: v for k, v in by_kind.items() if v}
        checks.append(
            Check(key, "connect failures by kind == the generator's", by_kind == kinds,
                  f"{by_kind} vs {kinds}" if by_kind != kinds else f"{sum(kinds.values())} in all")
        )  # fmt: skip
    else:
        checks.append(Check(key, "connect failures by kind", None, "no connect_failures_by_kind"))
    return checks


def check_all(
    outdir: Path, keys: list[str], summary: Summary, halves: dict[str, Summary]
) -> dict[str, Any]:
    checks: list[Check] = []
    own: dict[str, float | None] = {}
    for key in keys:
        if key in ("retrywatch", "analyze"):
            own[key] = own_rate(outdir, key)
        if key == "wc":
            checks += check_wc(outdir, summary)
        elif key == "grep":
            checks += check_grep(outdir, summary)
        elif key == "mtail":
            checks += check_mtail(outdir, summary)
        elif key in ("retrywatch", "analyze"):
            checks += check_retrywatch(outdir, {"": summary}, key)
        elif key in ("two_core", "one_core"):
            checks += check_retrywatch(outdir, halves, key)
    return {"checks": [vars(c) for c in checks], "own": own}


def run_checks(
    tools: list[Tool], outdir: Path, summary: Summary, halves: dict[str, Summary]
) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    checks: list[dict[str, Any]] = []
    keys = []
    for tool in tools:
        if tool.key == "true" or not tool.samples:
            continue
        bad = [s.exit_code for s in tool.samples if s.exit_code not in tool.ok_codes]
        if bad:
            err = (outdir / f"{tool.key}.err").read_text(errors="replace").strip()
            last = err.splitlines()[-1] if err else ""
            checks.append(vars(Check(tool.key, "exit status", False, f"exit {bad[-1]}: {last}")))
        keys.append(tool.key)
    try:
        done = in_child(check_all, outdir, keys, summary, halves)
    except RuntimeError as exc:
        checks.append(vars(Check(",".join(keys), "checks", False, f"checking failed: {exc}")))
        return checks, {}
    return checks + done["checks"], done["own"]


# ----------------------------------------------------------------------- figures


def figures(tool: Tool, lines: int, grep_wall: float | None) -> dict[str, Any]:
    if not tool.samples:
        return {"label": tool.label, "available": False, "note": tool.note}
    wall = statistics.median(s.wall_s for s in tool.samples)
    reader = tool.key != "true"  # `true` only measures the RSS floor: no rate
    return {
        "label": tool.label,
        "available": True,
        "argv": tool.argv,
        "note": tool.note,
        "wall_s": [round(s.wall_s, 4) for s in tool.samples],
        "median_wall_s": round(wall, 4),
        "median_cpu_s": round(statistics.median(s.cpu_s for s in tool.samples), 4),
        "lines_per_s": round(lines / wall) if reader and wall > 0 else None,
        "x_grep": round(wall / grep_wall, 2) if reader and grep_wall else None,
        "peak_rss_mib": round(statistics.median(s.maxrss_kib for s in tool.samples) / 1024, 1),
        "exit_codes": [s.exit_code for s in tool.samples],
    }


def own_rate(outdir: Path, key: str) -> float | None:
    """retrywatch's own ``lines_per_second`` (without process start) from its output."""
    try:
        doc = json.loads((outdir / f"{key}.out").read_bytes())
        stats = doc.get("stats") or doc.get("summary")
        return float(stats["lines_per_second"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def human_rate(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    return f"{x / 1e3:.0f} k" if x >= 1e4 else f"{x / 1e3:.1f} k"


def human_ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"


def human_rss(mib: float, floor: float | None) -> str:
    if floor is not None and mib <= floor + 0.5:
        return f"<= {floor:.1f}"
    return f"{mib:.1f}"


def print_workload(name: str, result: dict[str, Any], out: Any) -> None:
    def p(line: str = "") -> None:
        print(line, file=out)

    d = result["data"]
    p(
        f"== {name}: {d['file']} ({d['lines']:,} lines, {d['bytes'] / MIB:.1f} MiB, "
        f"{d['seconds']} s of log time, {len(d['runaway'])} runaway), "
        f"median of {result['repeat']} runs, {result['pinning']}"
    )
    floor = result["rss_floor_mib"]
    p(f"{'tool':<36} {'lines/s':>10} {'x grep':>8} {'peak RSS MiB':>13}")
    for key, fig in result["tools"].items():
        if key == "true":
            continue
        if not fig["available"]:
            p(f"{fig['label']:<36} {'skipped':>10}   {fig['note']}")
            continue
        p(
            f"{fig['label']:<36} {human_rate(fig['lines_per_s']):>10} "
            f"{human_ratio(fig['x_grep']):>8} {human_rss(fig['peak_rss_mib'], floor):>13}"
        )
    if floor is not None:
        p(
            f"(a child's peak RSS includes ~{floor:.1f} MiB resident in this script at fork, "
            "measured with `true`; '<=' marks figures at that floor)"
        )
    for key, fig in result["tools"].items():
        if key == "mtail" and fig["available"] and fig["note"]:
            p(f"mtail: {fig['note']}")
    for key, rate in result.get("own_rates", {}).items():
        if rate:
            p(f"{key}: its own stats say {human_rate(rate)} lines/s (without process start)")
    two = result.get("two_core")
    if two:
        p()
        p(
            f"2 files ({two['lines']:,} lines, {two['bytes'] / MIB:.1f} MiB: "
            f"{', '.join(two['files'])}), `retrywatch replay --format json A B`:"
        )
        for key in ("two_core", "one_core"):
            fig = two["tools"].get(key)
            if not fig or not fig["available"]:
                p(f"  {key}: skipped {fig['note'] if fig else ''}")
                continue
            p(
                f"  {fig['label']:<46} {human_rate(fig['lines_per_s']):>10} lines/s "
                f"{fig['median_wall_s']:8.3f} s {human_rss(fig['peak_rss_mib'], floor):>9} MiB"
            )
        if two.get("speedup") is not None:
            p(f"  2 cores vs 1 core: {two['speedup']:.2f}x (1-core wall time / 2-core wall time)")
    p()
    for c in result["checks"]:
        mark = {True: "OK  ", False: "FAIL", None: "??  "}[c["ok"]]
        p(f"[{mark}] {c['tool']}: {c['what']}: {c['detail']}")
    p()


# -------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--workload", choices=("storm", "flood", "both"), default="both")
    ap.add_argument(
        "-n", "--lines", type=int, default=DEFAULT_LINES,
        help=f"lines of the storm (default {DEFAULT_LINES:,})",
    )  # fmt: skip
    ap.add_argument(
        "--seconds", type=int, default=DEFAULT_SECONDS,
        help=f"seconds of the flood, 16,700 lines each (default {DEFAULT_SECONDS})",
    )  # fmt: skip
    ap.add_argument("--seed", type=int, default=gen_logs.DEFAULT_SEED)
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; median reported")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("RETRYWATCH_BENCH_DIR") or "/tmp/retrywatch-bench"),
        help="where the logs live (default $RETRYWATCH_BENCH_DIR or /tmp/retrywatch-bench); "
        "must be outside the repository",
    )
    ap.add_argument("--cpu", default="0", help="CPU for taskset -c (default 0); 'none': no pinning")
    ap.add_argument("--cpus", default="0,1", help="the 2-core figure's CPU list (default 0,1)")
    ap.add_argument(
        "--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}"
    )
    ap.add_argument("--no-two-core", dest="two_core", action="store_false",
                    help="skip the 2-file, 2-core figure")  # fmt: skip
    ap.add_argument(
        "--json", action="store_true", help="print the figures as JSON (the table goes to stderr)"
    )
    args = ap.parse_args(argv)
    if args.lines < 2 or args.seconds < 2 or args.repeat < 1:
        ap.error("--lines and --seconds must be at least 2, --repeat positive")
    args.tool_set = {t.strip() for t in args.tools.split(",") if t.strip()}
    if not args.tool_set <= set(TOOLS):
        ap.error(f"--tools takes a subset of {','.join(TOOLS)}")
    return args


def inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "locale": os.environ.get("LC_ALL") or os.environ.get("LANG") or "",
    }


def run_workload(
    name: str, args: argparse.Namespace, rw: list[str] | None, rw_note: str
) -> dict[str, Any]:
    size = {"lines": args.lines} if name == "storm" else {"seconds": args.seconds}
    half = {k: v // 2 for k, v in size.items()}
    file, summary = gen_logs.ensure(args.data_dir, name, seed=args.seed, log=log, **size)
    halves: dict[str, Summary] = {}
    half_files: list[Path] = []
    if args.two_core and rw is not None:
        for seed in (args.seed + 1, args.seed + 2):
            f, s = gen_logs.ensure(args.data_dir, name, seed=seed, log=log, **half)
            half_files.append(f)
            halves[f.name] = s
    prefix, pinning = pin_prefix(None if args.cpu == "none" else args.cpu)
    tools = make_tools(file, args.tool_set | {"true"}, rw, rw_note)
    for t in tools:
        if t.argv is None:
            log(f"skipping {t.key}: {t.note}")
    two_tools: list[Tool] = []
    if half_files and rw is not None:
        p2, pin2 = pin_prefix(args.cpus)
        p1, pin1 = pin_prefix(args.cpu)
        cmd = [*rw, "replay", "--format", "json", "--timezone", "UTC", *map(str, half_files)]
        two_tools = [
            Tool("two_core", f"2 cores ({pin2})", [*p2, *cmd]),
            Tool("one_core", f"1 core ({pin1})", [*p1, *cmd]),
        ]
    log(f"{name}: timing {', '.join(t.key for t in tools if t.argv)} x{args.repeat}, {pinning}")
    with tempfile.TemporaryDirectory(prefix="out-", dir=args.data_dir) as tmp:
        outdir = Path(tmp)
        measure(tools, prefix, args.repeat, outdir, name)
        if two_tools:
            log(f"{name}: 2 files, replay on {args.cpus} and on {args.cpu}, x{args.repeat}")
            measure(two_tools, [], args.repeat, outdir, name)
        checks, own = run_checks(tools + two_tools, outdir, summary, halves)  # after timings

    grep = next((t for t in tools if t.key == "grep" and t.samples), None)
    grep_wall = statistics.median(s.wall_s for s in grep.samples) if grep else None
    figs = {t.key: figures(t, summary["lines"], grep_wall) for t in tools}
    result: dict[str, Any] = {
        "data": {
            "file": str(file),
            "lines": summary["lines"],
            "bytes": summary["bytes"],
            "seconds": summary["seconds"],
            "seed": summary["seed"],
            "runaway": summary["runaway"],
        },
        "repeat": args.repeat,
        "pinning": pinning,
        "rss_floor_mib": figs["true"].get("peak_rss_mib"),
        "tools": figs,
        "own_rates": own,
        "checks": checks,
    }
    if two_tools:
        lines = sum(s["lines"] for s in halves.values())
        two_figs = {t.key: figures(t, lines, None) for t in two_tools}
        walls = [two_figs[k].get("median_wall_s") for k in ("two_core", "one_core")]
        result["two_core"] = {
            "files": [str(f) for f in half_files],
            "lines": lines,
            "bytes": sum(s["bytes"] for s in halves.values()),
            "tools": two_figs,
            "speedup": round(walls[1] / walls[0], 3) if walls[0] and walls[1] else None,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if inside(args.data_dir, REPO_ROOT):
        log(f"bench: --data-dir {args.data_dir} is inside the repository; use a path outside it")
        return 2
    args.data_dir.mkdir(parents=True, exist_ok=True)
    rw: list[str] | None = None
    rw_note = ""
    if args.tool_set & {"retrywatch", "analyze"} or args.two_core:
        rw, rw_note = retrywatch_base()
        if rw is None:
            log(f"bench: retrywatch cannot run: {rw_note}")
    workloads = ["storm", "flood"] if args.workload == "both" else [args.workload]
    results = {name: run_workload(name, args, rw, rw_note) for name in workloads}
    doc = {
        "environment": environment(),
        "settings": {
            "seed": args.seed,
            "storm_lines": args.lines,
            "flood_seconds": args.seconds,
            "repeat": args.repeat,
            "cpu": args.cpu,
            "cpus": args.cpus,
        },
        "workloads": results,
    }
    out = sys.stderr if args.json else sys.stdout
    for name, result in results.items():
        print_workload(name, result, out)
    failed = [
        f"{name}: {c['tool']}: {c['what']}"
        for name, r in results.items()
        for c in r["checks"]
        if c["ok"] is False
    ]
    if failed:
        print(f"CHECK FAILED ({len(failed)}): " + "; ".join(failed), file=out)
    if args.json:
        print(json.dumps(doc, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
