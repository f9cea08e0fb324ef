#!/usr/bin/env python3
"""Fast rotation under load: lines lost or doubled while the followed file rotates.

Each run follows a fresh file from its beginning with retrywatch's live service, in this
process (``Service``: the ingest loop, the file source and its thread, the watchdog
waker and the engine of ``retrywatch run``), while a writer *process* appends numbered
nginx error lines (``… seq=000012345``) at ``--rate`` lines/s, in one ``write(2)`` every
``--batch-ms``, and rotates the file every ``--every`` seconds, ``--rotations`` times:

``rename``
    logrotate's rename and create (and kubelet's CRI log rotation): ``error.log.N`` are
    shifted to ``.N+1`` (``--keep`` kept), ``error.log`` renamed to ``error.log.1``, a new
    ``error.log`` created and written at once.
``copytruncate``
    logrotate's copytruncate: the shifted names, a copy of ``error.log`` to
    ``error.log.1``, then ``error.log`` truncated under the writer's ``O_APPEND``
    descriptor. The writer pauses for the copy, so no line falls between the copy and
    the truncation (logrotate's own window, which no reader can close).

``--stall-ms`` pauses the reader every ``--stall-every`` chunks it feeds (a busy engine,
a descheduled process): rotations then happen between two looks of the follower, so
files come and go unseen.

Every chunk the engine is fed is scanned for whole lines' sequence numbers. Once the
writer is done and the service has fed every number or nothing for ``--settle``
seconds, the run counts **lost** (numbers written, never fed) and **doubled** (fed more
than once). One line per run, then the totals per kind; ``--json`` prints them as one
JSON document instead. Exit status 1 when a line was lost or doubled, 2 on a usage
error. Bounded: each run lasts ``--rotations`` x ``--every`` seconds plus at most
``--settle`` seconds (and 30 s more for a writer that does not stop).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path
from typing import Any

KINDS = ("rename", "copytruncate")
LINE = (b"2026/01/02 03:04:05 [error] 7#7: *%d connect() failed (111: Connection refused) "
        b"while connecting to upstream, client: 10.0.0.1, server: bench, upstream: "
        b"\"10.0.0.2:80\", seq=%09d\n")
SEQ = re.compile(rb"seq=(\d{9})\n")  # a whole line's number only: a cut line is lost
WRITER_GRACE = 30.0


# -- the writer (a child process) ------------------------------------------------------
def shift(path: Path, keep: int) -> None:
    """``error.log.N`` to ``.N+1`` (the oldest beyond ``keep`` deleted)."""
    oldest = path.with_name(f"{path.name}.{keep}")
    if oldest.exists():
        oldest.unlink()
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))


def write(path: Path, kind: str, rate: int, every: float, rotations: int, batch_ms: float,
          keep: int) -> dict[str, Any]:
    """Append numbered lines at ``rate`` lines/s, rotating every ``every`` seconds."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    per_batch = max(1, round(rate * batch_ms / 1000))
    seq = 0
    start = time.monotonic()
    end = start + every * (rotations + 1)
    next_rotation = start + every
    done = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= next_rotation and done < rotations:
            shift(path, keep)
            if kind == "rename":
                os.replace(path, path.with_name(path.name + ".1"))
                old, fd = fd, os.open(path, flags, 0o644)
                os.close(old)
            else:
                shutil.copyfile(path, path.with_name(path.name + ".1"))
                os.ftruncate(fd, 0)
            done += 1
            next_rotation += every
        due = int((now - start) * rate)  # lines that should be written by now
        if due > seq:
            n = min(due - seq, per_batch * 4)
            os.write(fd, b"".join(LINE % (s % 97 + 1, s) for s in range(seq, seq + n)))
            seq += n
        time.sleep(batch_ms / 1000)
    os.close(fd)
    return {"lines": seq, "rotations": done, "seconds": round(time.monotonic() - start, 3)}


# -- the reader: retrywatch's live service in this process --------------------------------
def follow_run(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    from retrywatch.serve.service import Service
    from retrywatch.serve.settings import Settings

    logging.getLogger("watchdog").setLevel(logging.CRITICAL)  # its own shutdown races

    workdir = Path(tempfile.mkdtemp(prefix=f"retrywatch-rotation-{kind}-"))
    path = workdir / "error.log"
    expected = int(args.rate * args.every * (args.rotations + 1)) + args.rate
    counts = array("I", bytes(4 * expected))
    extra = 0  # numbers beyond what was expected (never: counted as doubled)
    fed = [0.0]  # when the engine was last fed
    lock = threading.Lock()
    settings = Settings(log=[str(path)], start_from="beginning", timezone="UTC")
    service = Service(settings)
    feed = service.engine.feed

    feeds = [0]

    def counting_feed(source: str, data: bytes) -> Any:
        nonlocal extra
        feeds[0] += 1
        if args.stall_ms and feeds[0] % args.stall_every == 0:
            time.sleep(args.stall_ms / 1000)  # a busy or descheduled reader
        with lock:
            for number in SEQ.findall(data):
                i = int(number)
                if i < expected:
                    counts[i] += 1
                else:
                    extra += 1
            fed[0] = time.monotonic()
        return feed(source, data)

    service.engine.feed = counting_feed  # type: ignore[method-assign]
    service.start()
    try:
        writer = subprocess.Popen(
            [sys.executable, __file__, "--writer", str(path), "--kind", kind,
             "--rate", str(args.rate), "--every", str(args.every),
             "--rotations", str(args.rotations), "--batch-ms", str(args.batch_ms),
             "--keep", str(args.keep)], stdout=subprocess.PIPE)
        out, _ = writer.communicate(timeout=args.every * (args.rotations + 1) + WRITER_GRACE)
        if writer.returncode != 0:
            raise RuntimeError(f"the writer exited with {writer.returncode}")
        wrote = json.loads(out)
        lines = wrote["lines"]
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline:
            with lock:
                seen = sum(1 for i in range(lines) if counts[i])
                quiet = time.monotonic() - fed[0]
            if seen == lines or quiet >= min(args.settle, 3.0):
                break
            time.sleep(0.1)
    finally:
        service.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    lost = sum(1 for i in range(lines) if counts[i] == 0)
    doubled = sum(counts[i] - 1 for i in range(lines) if counts[i] > 1) + extra
    return {"kind": kind, "lines": lines, "rotations": wrote["rotations"],
            "seconds": wrote["seconds"], "lost": lost, "doubled": doubled}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=[*KINDS, "both"], default="both")
    parser.add_argument("--runs", type=int, default=20, help="runs of each kind (20)")
    parser.add_argument("--rate", type=int, default=50_000, help="lines per second (50000)")
    parser.add_argument("--every", type=float, default=0.2,
                        help="seconds between rotations (0.2)")
    parser.add_argument("--rotations", type=int, default=25, help="rotations per run (25)")
    parser.add_argument("--batch-ms", type=float, default=2.0,
                        help="milliseconds between the writer's writes (2)")
    parser.add_argument("--keep", type=int, default=5, help="rotated files kept (5)")
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds at most to wait for the service after the writer")
    parser.add_argument("--stall-ms", type=float, default=0.0,
                        help="the reader pauses this long every --stall-every chunks, as "
                             "a busy or descheduled process would (0: never)")
    parser.add_argument("--stall-every", type=int, default=50, metavar="N")
    parser.add_argument("--json", action="store_true", help="one JSON document")
    parser.add_argument("--writer", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.writer:
        kind = args.kind if args.kind != "both" else "rename"
        print(json.dumps(write(Path(args.writer), kind, args.rate, args.every,
                               args.rotations, args.batch_ms, args.keep)))
        return 0
    if args.runs < 1 or args.rate < 1 or args.every <= 0 or args.rotations < 0:
        parser.error("--runs, --rate and --every must be positive")
    logging.basicConfig(level=logging.WARNING)
    kinds = KINDS if args.kind == "both" else (args.kind,)
    runs: list[dict[str, Any]] = []
    for kind in kinds:
        for n in range(1, args.runs + 1):
            run = follow_run(kind, args)
            run["run"] = n
            runs.append(run)
            if not args.json:
                print(f"{kind:12} run {n:2}: {run['lines']:8,} lines, {run['rotations']:3} "
                      f"rotations in {run['seconds']:5.2f} s: lost {run['lost']:6,}, "
                      f"doubled {run['doubled']:6,}", flush=True)
    totals = {kind: {key: sum(r[key] for r in runs if r["kind"] == kind)
                     for key in ("lines", "rotations", "lost", "doubled")}
              | {"runs": sum(1 for r in runs if r["kind"] == kind)} for kind in kinds}
    if args.json:
        print(json.dumps({"settings": {k: getattr(args, k) for k in (
            "rate", "every", "rotations", "batch_ms", "keep", "stall_ms", "stall_every")},
            "runs": runs,
            "totals": totals}, indent=2))
    else:
        for kind, t in totals.items():
            print(f"{kind:12} total: {t['runs']} runs, {t['lines']:,} lines, "
                  f"{t['rotations']} rotations: lost {t['lost']:,}, doubled {t['doubled']:,}")
    bad = any(t["lost"] or t["doubled"] for t in totals.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
