"""Mutation testing: how many one-change mutants of the code that decides the tests kill.

    ./dev mutants                       # both parts below, then the scores
    ./dev mutants --part rust --file src/window.rs
    ./dev mutants --part python --jobs 2    # mutmut's processes (Rust: one at a time)

A mutant is the source with one change (``>=`` to ``>``, a ``+`` to ``-``, a body replaced
by a default, a condition negated, ...); a test suite that still passes has not looked at
what the change breaks. The score is killed / (killed + survived): a timeout counts as
killed (the mutant loops), a mutant that does not compile (Rust) counts for nothing.

- Rust (``cargo mutants``, installed with ``cargo install --locked cargo-mutants`` when
  missing): the core's per-line decisions (``RUST_FILES``: framing, the head parse, the
  window, the tracker, the per-peer counts), tested by ``cargo test``. ``src/py.rs`` (the
  Python boundary) is left out: its behaviour is tested from Python.
- Python (``mutmut``, of the ``dev`` extra): the modules in ``[tool.mutmut] only_mutate``
  of pyproject.toml (the detection wrapper, alerts, checkpoints and the state store, the
  delivery channel, the disk forecast, a file's growth and the upstream anomalies), tested
  by the in-process tests listed there. mutmut switches a mutant on inside the test
  process, so a test that runs ``retrywatch`` in a subprocess cannot see one: those are
  not listed. A mutant no listed
  test reaches is "no tests" and counts as survived.

Prints per file: mutants, killed, survived, timeouts, unviable, the score, and every
survivor (Rust: file, line and change; Python: mutmut's name, ``mutmut show NAME`` prints
its diff). Exits 1 when a part's score is under ``--min-score`` (default 90). The work
folders (core/mutants.out, mutants/) are ignored by git; mutmut resumes from its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"
#: The core's files whose mutants count (relative to core/).
RUST_FILES = ("src/framing.rs", "src/head.rs", "src/window.rs", "src/tracker.rs",
              "src/upstreams.rs")
#: Mutants that change no behaviour, each with why: reported apart, not in the score.
#: Matched against cargo-mutants' description without its line and column (they move).
RUST_EQUIVALENT = {
    "src/head.rs: replace starts_failure -> bool with true":
        "a prefilter only: every [kinds] pattern of parsers/nginx_error.toml begins with one "
        "of its three prefixes, so where it says false kind_at finds nothing either",
    "src/head.rs: replace < with == in py_isdigit":
        "the ASCII fast path: DIGIT_RANGES, searched otherwise, holds the ASCII digits "
        "(0x30-0x39) and gives the same answer below 0x80",
    "src/head.rs: replace < with <= in py_isdigit":
        "the ASCII fast path taken for 0x80 too, which is no digit either way",
    "src/tracker.rs: replace < with <= in Conn::add":
        "ts == first sets first to what it is",
    "src/tracker.rs: replace new_map -> Map<K, V> with Default::default()":
        "the default of Map's hasher type is the hasher new_map builds",
    # remove_source runs between batches (its contract), when finish_batch has taken
    # every touched key: the list it filters is empty
    "src/tracker.rs: replace && with || in Detector::remove_source":
        "filters the touched keys, empty between batches",
    "src/tracker.rs: replace != with == in Detector::remove_source":
        "filters the touched keys, empty between batches",
    # a loaded key's generation need only differ from those handed out later, which
    # count up from the loaded counter (a firing key is compared with itself otherwise)
    # both > of Peer::sketch (one description): the oldest slice kept is compared only
    # when no sketch holds this line's slice; a register set to a rank it already has
    # is unchanged
    "src/upstreams.rs: replace > with >= in Peer::sketch":
        "never equal in the slice branch; an equal rank leaves the register as it is",
    "src/upstreams.rs: replace >> with << in mix":
        "z ^ (z << k) is as invertible as z ^ (z >> k): still a mix, and the keys spread "
        "over the registers as well (connection_keys_spread_over_the_registers)",
    # the first > of count_all (its second is tested): a failure of the newest second
    # itself has nothing to clear
    "src/upstreams.rs: replace > with >= in Upstreams::count_all":
        "at the newest second the ring has nothing to clear and keeps its newest",
    "src/upstreams.rs: replace < with <= in Upstreams::victim":
        "touch marks are all different (one per failure counted): never equal",
    "src/upstreams.rs: replace > with >= in Upstreams::settle":
        "at its newest second a peer has learnt every second before it already",
    "src/upstreams.rs: replace - with + in Peer::sketch":
        "the rank's cap matters only for a hash whose low 54 bits are all zero (1 in 2^54)",
    "src/tracker.rs: replace == with != in Detector::load":
        "generations of loaded keys: any values below the counter do",
    "src/tracker.rs: replace += with *= in Detector::load":
        "generations of loaded keys: any values below the counter do",
}
#: Python mutants that change no behaviour, by mutmut's name (its number counts the mutants
#: of one function in order: it moves when that function changes, and then this list must
#: be looked at again: a name that no longer survives is reported as stale).
_CAST = "typing.cast returns its value whatever its type argument (which is for mypy)"
_ORDER = ("Engine._order holds one entry per alert, keyed by (fired_at, id): two "
          "entries never compare equal")
_OUTCOME = ("deliver() tests an outcome for \"ok\" and \"rejected\" only: any other "
            "string is a retry")
_HEADERS = "httpx's response headers are read in any letter case"
_LEVEL = "zlib's level changes the size and speed, not the bytes read back"
_EXISTED = "existed is only tested for truth: None and False both mean a new database"
_NAIVE = ("a naive local datetime names the same instant: astimezone reads it as the "
          "process's local time (only a day before the machine's own DST change would "
          "move by its hour)")
_PROBE = "the probe file is removed at once: its mode is never seen"
_UNREACHABLE = ("human_bytes returns at \"TiB\", the last unit, at the latest: the "
                "AssertionError after the loop is never raised")
PYTHON_EQUIVALENT = {
    "retrywatch.detect.alerts.xǁAlertǁfrom_state__mutmut_94": _CAST,
    "retrywatch.detect.alerts.xǁAlertǁto_dict__mutmut_38": _CAST,
    # `reason or "quiet"`: the core gives every resolved change its reason (tracker.rs:
    # quiet, connection_ended, source_removed), so the default is never taken
    "retrywatch.detect.engine.x_apply_changes__mutmut_43": "the core names every resolve",
    "retrywatch.detect.engine.x_apply_changes__mutmut_44": "the core names every resolve",
    "retrywatch.detect.engine.xǁEngineǁend__mutmut_1":
        "end() flushed the source: an idle flush of it later finds nothing to release",
    "retrywatch.detect.engine.xǁEngineǁtick__mutmut_14":
        "_last_ts and _last_ts_at are set together: one is None only when both are",
    "retrywatch.detect.engine.xǁEngineǁ_index__mutmut_3": _ORDER,
    "retrywatch.detect.engine.xǁEngineǁevent_now__mutmut_1":
        "_last_ts and _last_ts_at are set together: one is None only when both are",
    "retrywatch.detect.engine.xǁEngineǁcount_upstreams__mutmut_6":
        "seeding is a no-op without saved baselines or while not counting",
    "retrywatch.detect.engine.xǁEngineǁcount_upstreams__mutmut_13":
        "_saved_baselines is only tested for truth: None after use does as [] does",
    "retrywatch.detect.engine.xǁEngineǁrunaway_upstreams__mutmut_3":
        "every alert's snapshot has its upstreams (refresh writes them; a saved alert is "
        "read with {} by default): the default is never taken",
    "retrywatch.detect.engine.xǁEngineǁrunaway_upstreams__mutmut_5":
        "every alert's snapshot has its upstreams: the default is never taken",
    "retrywatch.detect.engine.xǁEngineǁ__init____mutmut_40":
        "_saved_baselines is only tested for truth before it is set to []: None does the same",
    # detect/upstreams.py
    "retrywatch.detect.upstreams.xǁPeerǁto_dict__mutmut_20":
        "recent failures (an integer) over the core's 10 s have one decimal: 2 or 3 digits "
        "round alike",
    "retrywatch.detect.upstreams.xǁUpstreamWatchǁevaluate__mutmut_63":
        "a new alert's figures are set by _update right after it is made",
    "retrywatch.serve.state.x__prepare_directory__mutmut_4":
        "os.chmod(0o700) follows mkdir: the mode is 0700 whatever mkdir's mode",
    "retrywatch.serve.state.x__prepare_directory__mutmut_6":
        "os.chmod(0o700) follows mkdir: the mode is 0700 whatever mkdir's mode",
    "retrywatch.serve.state.x__lock__mutmut_38":
        "the pid written next at offset 0 is longer than the 1 byte a truncation to 1 keeps",
    # delivery/channel.py
    "retrywatch.delivery.channel.xǁChannelǁ__init____mutmut_7":
        "Condition(None) makes an RLock: the channel never takes its lock twice",
    "retrywatch.delivery.channel.xǁChannelǁ__init____mutmut_9":
        "_draining is only tested for truth: None and False both mean not draining",
    "retrywatch.delivery.channel.xǁChannelǁ_take__mutmut_11":
        "popitem(last=None): None is false, the oldest is taken as with False",
    "retrywatch.delivery.channel.xǁChannelǁ_attempt__mutmut_8": _OUTCOME,
    "retrywatch.delivery.channel.xǁChannelǁ_attempt__mutmut_9": _OUTCOME,
    "retrywatch.delivery.channel.xǁChannelǁ_attempt__mutmut_37": _OUTCOME,
    "retrywatch.delivery.channel.xǁChannelǁ_attempt__mutmut_38": _OUTCOME,
    "retrywatch.delivery.channel.xǁChannelǁ_attempt__mutmut_34": _HEADERS,
    "retrywatch.delivery.channel.xǁChannelǁ_attempt__mutmut_35": _HEADERS,
    # serve/state.py
    "retrywatch.serve.state.xǁTransactionǁsave_engine__mutmut_13": _LEVEL,
    "retrywatch.serve.state.xǁTransactionǁsave_engine__mutmut_14": _LEVEL,
    "retrywatch.serve.state.xǁStateStoreǁ__init____mutmut_18":
        'float("-INF") is float("-inf")',
    "retrywatch.serve.state.xǁStateStoreǁ_open__mutmut_9": _EXISTED,
    "retrywatch.serve.state.xǁStateStoreǁ_open__mutmut_24": _EXISTED,
    "retrywatch.serve.state.xǁStateStoreǁ_open__mutmut_16":
        "the size is only read when the database existed (_said_on_open returns first)",
    "retrywatch.serve.state.x_same_instants__mutmut_9": _NAIVE,
    "retrywatch.serve.state.x_same_instants__mutmut_11": _NAIVE,
    "retrywatch.serve.state.x_same_instants__mutmut_16": _NAIVE,
    "retrywatch.serve.state.x__prepare_directory__mutmut_23": _PROBE,
    "retrywatch.serve.state.x__prepare_directory__mutmut_26": _PROBE,
    "retrywatch.serve.state.x__lock__mutmut_27":
        "a pid has at most 7 digits: 32 or 33 bytes of the lock file read the same",
    "retrywatch.serve.state.x__connect__mutmut_6":
        "every write is in an explicit BEGIN IMMEDIATE … COMMIT: the sqlite3 module's "
        "implicit transactions (isolation_level '') never begin",
    "retrywatch.serve.state.x__error_name__mutmut_5": '`None or ""` and `"" or ""` are ""',
    # table names in `SELECT 1 FROM {table}`: SQLite reads names in any case
    "retrywatch.serve.state.x__has_rows__mutmut_4": "the letter case of an SQL table name",
    "retrywatch.serve.state.x__has_rows__mutmut_6": "the letter case of an SQL table name",
    "retrywatch.serve.state.x__has_rows__mutmut_8": "the letter case of an SQL table name",
    # detect/disk.py
    "retrywatch.detect.disk.x_human_bytes__mutmut_31": _UNREACHABLE,
    "retrywatch.detect.disk.x_human_bytes__mutmut_32": _UNREACHABLE,
    "retrywatch.detect.disk.x_human_bytes__mutmut_33": _UNREACHABLE,
    "retrywatch.detect.disk.xǁDiskWatchǁ_forecast__mutmut_25": 'float("INF") is float("inf")',
    # sources/growth.py
    "retrywatch.sources.growth.xǁGrowthǁ__init____mutmut_6": 'float("-INF") is float("-inf")',
    "retrywatch.sources.growth.xǁGrowthǁ__init____mutmut_10":
        'float("-INF") is float("-inf")',
    "retrywatch.sources.growth.xǁGrowthǁobserve__mutmut_36":
        "with two samples, samples[1] is the one just taken (its time is now): now - "
        "samples[1][0] is 0, under any positive span (the service's is RATE_SPAN, 60 s)",
}
#: cargo-mutants' outcome files (mutants.out/*.txt), one mutant per line.
RUST_OUTCOMES = {"caught": "killed", "missed": "survived", "timeout": "timeout",
                 "unviable": "unviable"}
#: mutmut's statuses, as the score counts them.
PYTHON_STATUS = {"killed": "killed", "caught by type check": "killed", "timeout": "timeout",
                 "survived": "survived", "no tests": "survived", "suspicious": "survived",
                 "segfault": "killed", "skipped": "unviable", "not checked": "unviable"}
_PY_MUTANT = re.compile(r"^\s+(?P<name>[\w.ǁ]+__mutmut_\d+): (?P<status>.+)$")
_RUST_MUTANT = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):")


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    survivors: list[str] = field(default_factory=list)
    equivalent: list[str] = field(default_factory=list)

    @property
    def killed(self) -> int:
        return self.counts["killed"] + self.counts["timeout"]

    @property
    def score(self) -> float | None:
        """None when no mutant was judged (none made, or none checked yet)."""
        judged = self.killed + self.counts["survived"]
        return 100.0 * self.killed / judged if judged else None

    @property
    def shown(self) -> str:
        return "   n/a" if self.score is None else f"{self.score:>5.1f}%"


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=cwd, env=env, check=False).returncode


def rust(files: list[str], timeout: float) -> dict[str, Tally]:
    if (shutil.which("cargo-mutants") is None
            and _run(["cargo", "install", "--locked", "cargo-mutants"], ROOT) != 0):
        sys.exit("cargo-mutants could not be installed (cargo install cargo-mutants)")
    # The core's tests read ../parsers/ (the wrappers' spec), which cargo-mutants' copy of
    # the crate would not have: the crate and parsers/ are copied side by side into a
    # folder of our own, whose sources cargo-mutants then mutates in place (one at a time).
    with tempfile.TemporaryDirectory(prefix="retrywatch-mutants-") as tmp:
        crate = Path(tmp) / "core"
        shutil.copytree(CORE, crate, ignore=shutil.ignore_patterns("target", "mutants.out*"))
        shutil.copytree(ROOT / "parsers", Path(tmp) / "parsers")
        cmd = ["cargo", "mutants", "--in-place", "--no-shuffle", "--timeout", str(timeout),
               "--output", str(CORE)]
        for f in files:
            cmd += ["--file", f]
        # exit 2: some mutants were missed, 3: some timed out (the figures below say which)
        if _run(cmd, crate) not in (0, 2, 3):
            sys.exit("cargo mutants failed before testing mutants (its output is above)")
    out = CORE / "mutants.out"
    tallies: dict[str, Tally] = defaultdict(Tally)
    for name, status in RUST_OUTCOMES.items():
        path = out / f"{name}.txt"
        for line in path.read_text().splitlines() if path.exists() else []:
            m = _RUST_MUTANT.match(line)
            tally = tallies[m["file"] if m else "?"]
            why = RUST_EQUIVALENT.get(re.sub(r":\d+:\d+:", ":", line, count=1))
            if status == "survived" and why is not None:
                tally.counts["equivalent"] += 1
                tally.equivalent.append(f"{line}: {why}")
                continue
            tally.counts[status] += 1
            if status == "survived":
                tally.survivors.append(line)
    return tallies


def python(jobs: int) -> dict[str, Tally]:
    mutmut = Path(sys.executable).parent / "mutmut"
    if not mutmut.exists():
        sys.exit("mutmut is not installed: pip install -e '.[dev]'")
    if _run([str(mutmut), "run", "--max-children", str(jobs)], ROOT) != 0:
        sys.exit("mutmut run failed (its output is above)")
    listing = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    tallies: dict[str, Tally] = defaultdict(Tally)
    for line in listing.splitlines():
        m = _PY_MUTANT.match(line)
        if m is None:
            continue
        name = m["name"]
        module = name.split(".xǁ")[0].split(".x_")[0]
        status = PYTHON_STATUS.get(m["status"], "survived")
        why = PYTHON_EQUIVALENT.get(name)
        if status == "survived" and why is None:
            why = _sql_case_only(mutmut, name)
        if status == "survived" and why is not None:
            tallies[module].counts["equivalent"] += 1
            tallies[module].equivalent.append(f"{name}: {why}")
            continue
        if why is not None and status == "killed":
            print(f"stale: {name} is listed as equivalent but was killed (its number moved?)")
        tallies[module].counts[status] += 1
        if status == "survived":
            tallies[module].survivors.append(f"{name} ({m['status']})")
    return tallies


_SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|PRAGMA|BEGIN|COMMIT|ROLLBACK"
                  r"|VALUES)\b")


def _sql_case_only(mutmut: Path, name: str) -> str | None:
    """Why a survivor is equivalent when all it changes is the letter case of SQL text
    (mutmut upper- and lower-cases strings; SQLite reads keywords, names and pragma values
    in any case), else None."""
    diff = subprocess.run([str(mutmut), "show", name], cwd=ROOT, capture_output=True,
                          text=True, check=False).stdout.splitlines()
    old = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    new = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    if (old and len(old) == len(new) and all(a != b and a.lower() == b.lower()
                                             for a, b in zip(old, new, strict=True))
            and all(_SQL.search(a.upper()) for a in old)):
        return "the letter case of SQL text (SQLite reads it in any case)"
    return None


def report(part: str, tallies: dict[str, Tally]) -> Tally:
    total = Tally()
    print(f"\n{part}: file, mutants, killed, survived, timeouts, unviable or unchecked, "
          "equivalent, score")
    for name in sorted(tallies):
        t = tallies[name]
        total.counts.update(t.counts)
        total.survivors += t.survivors
        total.equivalent += t.equivalent
        print(f"  {name:<40} {sum(t.counts.values()):>5} {t.counts['killed']:>6} "
              f"{t.counts['survived']:>8} {t.counts['timeout']:>8} {t.counts['unviable']:>8} "
              f"{t.counts['equivalent']:>10} {t.shown}")
    print(f"  {'all':<40} {sum(total.counts.values()):>5} {total.counts['killed']:>6} "
          f"{total.counts['survived']:>8} {total.counts['timeout']:>8} "
          f"{total.counts['unviable']:>8} {total.counts['equivalent']:>10} {total.shown}")
    if total.survivors:
        print(f"{part} survivors:")
        for s in total.survivors:
            print("  " + s)
    if total.equivalent:
        print(f"{part} equivalent (not in the score):")
        for s in total.equivalent:
            print("  " + s)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("rust", "python", "both"), default="both")
    ap.add_argument("--file", action="append", dest="files",
                    help=f"a core file to mutate (relative to core/; default {RUST_FILES})")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="mutmut's test processes at once (Rust mutants go one at a time)")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="seconds a Rust mutant's tests may take, more is a timeout (the "
                         "unmutated tests take about 1 s)")
    ap.add_argument("--min-score", type=float, default=90.0)
    args = ap.parse_args()
    scores: dict[str, float | None] = {}
    if args.part in ("rust", "both"):
        scores["rust"] = report("rust", rust(args.files or list(RUST_FILES),
                                             args.timeout)).score
    if args.part in ("python", "both"):
        scores["python"] = report("python", python(args.jobs)).score
    print("\nscores: " + json.dumps({k: None if v is None else round(v, 1)
                                     for k, v in scores.items()}))
    return 0 if all(v is not None and v >= args.min_score for v in scores.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
