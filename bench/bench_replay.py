#!/usr/bin/env python3
"""Replay benchmark: `retrywatch replay` against wc, grep and mtail on one storm file.

Generates (or reuses) the deterministic 2,000,000-line retry-storm log of
``shared/bench/gen_storm.py`` outside the repository, runs every tool as a child
process pinned to one core, interleaved, ``--repeat`` times, and prints the median
wall time as lines per second, the ratio to ``grep -c``, and the child's peak RSS.
Then it checks the tools' answers against the generator's ground-truth summary.

Exit status: 0, also when a tool is missing; 1 only when retrywatch ran and did not
flag exactly the runaway connections (or gave no answer that could be read); 2 on a
usage error (e.g. a data directory inside the repository).
"""

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

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LINES = 2_000_000
SEED = 20190917
GREP_PATTERN = "connect() failed"
MIB = 1024 * 1024
BLOCK = 4 * MIB

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


# --------------------------------------------------------------------------- data


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def data_paths(data_dir: Path, lines: int) -> tuple[Path, Path]:
    stem = "storm" if lines == DEFAULT_LINES else f"storm-{lines}"
    return data_dir / f"{stem}.log", data_dir / f"{stem}.summary.json"


def load_summary(path: Path) -> Summary | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def count_lines(path: Path) -> int:
    """Count newlines; the read also puts the file in the page cache for the runs."""
    buf = bytearray(BLOCK)
    n = 0
    with path.open("rb", buffering=0) as f:
        while got := f.readinto(buf):
            n += buf.count(b"\n", 0, got)
    return n


def generate(gen: Path, lines: int, log_path: Path, summary_path: Path) -> None:
    log(f"generating {lines:,} lines with {gen} (seed {SEED}) into {log_path} ...")
    tmp_log = log_path.with_name(log_path.name + ".tmp")
    tmp_sum = summary_path.with_name(summary_path.name + ".tmp")
    t0 = time.perf_counter()
    with tmp_sum.open("wb") as err:
        cmd = [sys.executable, str(gen), "-n", str(lines), "--seed", str(SEED), "-o", str(tmp_log)]
        subprocess.run(cmd, stderr=err, check=True)
    os.replace(tmp_log, log_path)
    os.replace(tmp_sum, summary_path)
    log(f"generated in {time.perf_counter() - t0:.1f} s")


def prepare_data(data_dir: Path, gen: Path, lines: int) -> tuple[Path, Summary]:
    """Reuse the storm file when it and its summary match ``lines``; else generate it."""
    log_path, summary_path = data_paths(data_dir, lines)
    summary = load_summary(summary_path) if log_path.is_file() else None
    if summary and summary.get("lines") == lines and summary.get("seed") == SEED:
        if count_lines(log_path) == lines:
            log(f"reusing {log_path}")
            return log_path, summary
        log(f"{log_path} does not have {lines:,} lines: regenerating")
    data_dir.mkdir(parents=True, exist_ok=True)
    generate(gen, lines, log_path, summary_path)
    summary = load_summary(summary_path)
    if summary is None:
        raise SystemExit(f"bench: no readable summary in {summary_path}")
    count_lines(log_path)  # warm the page cache like the reuse path does
    return log_path, summary


# ------------------------------------------------------------------ child processes


def run_child(argv: list[str], out: Path, err: Path, cwd: Path) -> Sample:
    """Run ``argv`` once; return wall time and the child's own resource usage.

    A plain fork, not subprocess' vfork/posix_spawn: after a vfork the exec'd child
    inherits the *parent's* peak RSS as its own ru_maxrss. After a fork it inherits only
    the pages copied at fork (about the size of this script's interpreter), which the
    ``true`` row of the run reports as the floor.
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
    return [taskset, "-c", cpu], f"pinned to CPU {cpu} with taskset"


def retrywatch_tool(file: Path, command: str = "replay", key: str = "retrywatch") -> Tool:
    """The console script if it answers ``COMMAND --help``, else ``python -m retrywatch``."""
    label = f"retrywatch {command} --format json"
    candidates: list[list[str]] = []
    script = shutil.which("retrywatch")
    if script:
        candidates.append([script])
    candidates.append([sys.executable, "-m", "retrywatch"])
    notes = []
    for base in candidates:
        ok, detail = probe([*base, command, "--help"])
        if ok:
            return Tool(key, label, [*base, command, "--format", "json", str(file)])
        notes.append(f"`{shlex.join([*base, command, '--help'])}` failed: {detail}")
    return Tool(key, label, None, note="; ".join(notes))


def make_tools(file: Path, shared: Path, wanted: set[str]) -> list[Tool]:
    f = str(file)
    tools = [
        Tool("true", "true (RSS floor)", [shutil.which("true") or "true"]),
        Tool("wc", "wc -l", ["wc", "-l", f]),
        Tool(
            "grep",
            f"grep -c -F '{GREP_PATTERN}'",
            ["grep", "-c", "-F", GREP_PATTERN, f],
            "",
            (0, 1),
        ),
    ]
    mtail = shutil.which("mtail")
    progs = shared / "bench" / "mtail"
    if "mtail" in wanted and mtail and progs.is_dir():
        argv = [mtail, "--one_shot", "--progs", f"{progs}/", "--logs", f, "--logtostderr"]
        tools.append(Tool("mtail", "mtail --one_shot", argv, note=probe([mtail, "--version"])[1]))
    elif "mtail" in wanted:
        why = "mtail not found (apt-get install mtail)" if not mtail else f"no {progs}"
        tools.append(Tool("mtail", "mtail --one_shot", None, note=why))
    if "retrywatch" in wanted:
        tools.append(retrywatch_tool(file))
    if "analyze" in wanted:
        tools.append(retrywatch_tool(file, "analyze", "analyze"))
    return [t for t in tools if t.key in wanted or t.key == "true"]


def measure(tools: list[Tool], prefix: list[str], repeat: int, outdir: Path) -> None:
    """Run every available tool ``repeat`` times, interleaved so drift hits all alike."""
    for rep in range(1, repeat + 1):
        for tool in tools:
            if tool.argv is None:
                continue
            argv = [*prefix, *tool.argv]
            s = run_child(argv, outdir / f"{tool.key}.out", outdir / f"{tool.key}.err", REPO_ROOT)
            tool.samples.append(s)
            log(
                f"  run {rep}/{repeat} {tool.key:<10} {s.wall_s:8.3f} s  "
                f"{s.maxrss_kib / 1024:8.1f} MiB  exit {s.exit_code}"
            )


# ------------------------------------------------------------------------ checks


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


def canon_hash(counts: dict[str, int]) -> str:
    """The generator's ``per_cid_sha256``: sha256 over "<cid> <count>\\n", numeric order."""
    h = hashlib.sha256()
    for cid in sorted(counts, key=int):
        h.update(f"{cid} {counts[cid]}\n".encode())
    return h.hexdigest()


def mtail_counts(doc: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for metric in doc["nginx_connect_failed_total"]:
        for lv in metric["LabelValues"]:
            cid = str(lv["Labels"][0])
            counts[cid] = counts.get(cid, 0) + int(lv["Value"]["Value"])
    return counts


def check_mtail(outdir: Path, summary: Summary) -> list[Check]:
    try:
        counts = mtail_counts(json.loads((outdir / "mtail.out").read_bytes()))
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        return [Check("mtail", "count", None, f"could not read mtail's JSON output: {exc!r}")]
    total, want = sum(counts.values()), summary["connect_failed_all"]
    digest = canon_hash(counts)
    return [
        Check("mtail", "sum == connect_failed_all", total == want, f"{total} vs {want}"),
        Check(
            "mtail",
            "per-cid counts sha256",
            digest == summary["per_cid_sha256"],
            f"{len(counts)} cids, {digest[:12]} vs {summary['per_cid_sha256'][:12]}",
        ),
    ]


def flagged_cids(alerts: Any) -> set[str]:
    cids = set()
    for alert in alerts:
        cid = alert["cid"]
        if isinstance(cid, bool) or not isinstance(cid, int | str):
            raise TypeError(f"alert cid {cid!r} is not an int")
        cids.add(str(int(cid)))
    return cids


def sample_of(cids: set[str], k: int = 5) -> str:
    return ", ".join(sorted(cids, key=int)[:k]) + (" ..." if len(cids) > k else "")


def check_retrywatch(outdir: Path, summary: Summary, key: str = "retrywatch") -> list[Check]:
    try:
        doc = json.loads((outdir / f"{key}.out").read_bytes())
        flagged = flagged_cids(doc["alerts"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [
            Check(
                key,
                "flagged == runaway",
                False,
                f"could not read {{'alerts': [...]}} from its output: {exc!r}",
            )
        ]
    truth = set(summary["runaway"])
    missing, extra = truth - flagged, flagged - truth
    detail = f"{len(flagged)} flagged ({len(doc['alerts'])} alerts), {len(truth)} runaway"
    if missing:
        detail += f"; missing {len(missing)}: {sample_of(missing)}"
    if extra:
        detail += f"; extra {len(extra)}: {sample_of(extra)}"
    checks = [
        Check(key, "flagged cids == runaway cids", not missing and not extra, detail)
    ]
    # The generator counts the two connect() forms; retrywatch also counts "no live
    # upstreams" and timeouts while connecting, so compare the two forms by kind.
    stats = (doc.get("stats") or doc.get("summary")) if isinstance(doc, dict) else None
    by_kind = stats.get("connect_failures_by_kind") if isinstance(stats, dict) else None
    got = (
        by_kind.get("connect_failed", 0) + by_kind.get("connect_to_failed", 0)
        if isinstance(by_kind, dict)
        else None
    )
    want = summary["connect_failed_all"]
    checks.append(
        Check(
            key,
            "connect_failed + connect_to_failed == connect_failed_all",
            None if got is None else got == want,
            f"{got} vs {want}",
        )
    )
    failures = {str(a.get("cid")): a.get("failures") for a in doc["alerts"]}
    wrong = {cid for cid in truth & flagged if failures.get(cid) != summary["runaway"][cid]}
    checks.append(
        Check(
            key,
            "each alert's failures == the generator's count",
            not wrong,
            f"{len(truth & flagged) - len(wrong)} of {len(truth & flagged)} equal",
        )
    )
    return checks


CHECKERS: dict[str, Callable[[Path, Summary], list[Check]]] = {
    "wc": check_wc,
    "grep": check_grep,
    "mtail": check_mtail,
    "retrywatch": check_retrywatch,
    "analyze": lambda outdir, summary: check_retrywatch(outdir, summary, "analyze"),
}


def run_checks(tools: list[Tool], outdir: Path, summary: Summary) -> list[Check]:
    checks: list[Check] = []
    for tool in tools:
        checker = CHECKERS.get(tool.key)
        if checker is None or not tool.samples:
            continue
        bad = [s.exit_code for s in tool.samples if s.exit_code not in tool.ok_codes]
        if bad:
            err = (outdir / f"{tool.key}.err").read_text(errors="replace").strip()
            last = err.splitlines()[-1] if err else ""
            checks.append(Check(tool.key, "exit status", False, f"exit {bad[-1]}: {last}"))
        checks.extend(checker(outdir, summary))
    return checks


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


def human_rate(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.1f} M"
    return f"{x / 1e3:.0f} k" if x >= 1e4 else f"{x / 1e3:.1f} k"


def human_ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"


def human_rss(mib: float, floor: float | None) -> str:
    if floor is not None and mib <= floor + 0.5:
        return f"<= {floor:.1f}"
    return f"{mib:.1f}"


def print_table(result: dict[str, Any], out: Any) -> None:
    def p(line: str = "") -> None:
        print(line, file=out)

    d = result["data"]
    p(
        f"file: {d['file']} ({d['lines']:,} lines, {d['bytes'] / MIB:.1f} MiB), "
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
            f"(a child's peak RSS includes ~{floor:.1f} MiB copied from this script at fork, "
            "measured with `true`; '<=' marks figures at that floor)"
        )
    for key, fig in result["tools"].items():
        if key != "true" and fig["available"] and fig["note"]:
            p(f"{key}: {fig['note']}")
    p()
    for c in result["checks"]:
        mark = {True: "OK  ", False: "FAIL", None: "??  "}[c["ok"]]
        p(f"[{mark}] {c['tool']}: {c['what']}: {c['detail']}")


# -------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument(
        "-n",
        "--lines",
        type=int,
        default=DEFAULT_LINES,
        help=f"lines in the storm file (default {DEFAULT_LINES})",
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; median reported")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("RETRYWATCH_BENCH_DIR") or "/tmp/retrywatch-bench"),
        help="where the storm file lives (default $RETRYWATCH_BENCH_DIR "
        "or /tmp/retrywatch-bench); must be outside the repository",
    )
    ap.add_argument(
        "--shared",
        type=Path,
        default=REPO_ROOT.parent / "shared",
        help="the shared/ directory holding bench/gen_storm.py (default ../shared)",
    )
    ap.add_argument(
        "--cpu", default="0", help="CPU list for taskset -c (default 0); 'none' to not pin"
    )
    ap.add_argument(
        "--tools",
        default="wc,grep,mtail,retrywatch,analyze",
        help="comma-separated subset of wc,grep,mtail,retrywatch,analyze",
    )
    ap.add_argument(
        "--json",
        action="store_true",
        help="print the figures as JSON on stdout (the table goes to stderr)",
    )
    args = ap.parse_args(argv)
    if args.lines < 1 or args.repeat < 1:
        ap.error("--lines and --repeat must be positive")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if inside(args.data_dir, REPO_ROOT):
        log(f"bench: --data-dir {args.data_dir} is inside the repository; use a path outside it")
        return 2
    gen = args.shared / "bench" / "gen_storm.py"
    if not gen.is_file():
        log(f"bench: {gen} not found (use --shared DIR)")
        return 2
    wanted = {t.strip() for t in args.tools.split(",") if t.strip()} | {"true"}
    file, summary = prepare_data(args.data_dir, gen, args.lines)
    prefix, pinning = pin_prefix(None if args.cpu == "none" else args.cpu)
    tools = make_tools(file, args.shared, wanted)
    for t in tools:
        if t.argv is None:
            log(f"skipping {t.key}: {t.note}")
    log(f"timing {', '.join(t.key for t in tools if t.argv)} x{args.repeat}, {pinning}")
    with tempfile.TemporaryDirectory(prefix="out-", dir=args.data_dir) as tmp:
        outdir = Path(tmp)
        measure(tools, prefix, args.repeat, outdir)
        checks = run_checks(tools, outdir, summary)  # parsed only after all timings

    grep = next((t for t in tools if t.key == "grep" and t.samples), None)
    grep_wall = statistics.median(s.wall_s for s in grep.samples) if grep else None
    figs = {t.key: figures(t, summary["lines"], grep_wall) for t in tools}
    result: dict[str, Any] = {
        "data": {
            "file": str(file),
            "lines": summary["lines"],
            "seed": summary["seed"],
            "bytes": file.stat().st_size,
        },
        "repeat": args.repeat,
        "pinning": pinning,
        "environment": environment(),
        "rss_floor_mib": figs["true"].get("peak_rss_mib"),
        "tools": figs,
        "checks": [vars(c) for c in checks],
    }
    if args.json:
        print_table(result, sys.stderr)
        print(json.dumps(result, indent=2))
    else:
        print_table(result, sys.stdout)
    rw_bad = any(
        c.tool in ("retrywatch", "analyze") and c.what.startswith("flagged") and c.ok is False
        for c in checks
    )
    return 1 if rw_bad else 0


if __name__ == "__main__":
    sys.exit(main())
