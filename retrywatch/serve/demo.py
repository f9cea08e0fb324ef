"""``retrywatch demo``: the live service following a real storm as it is written.

A bundled log written by a real nginx (``sample_logs/``) is appended to a temporary log
file at the pace of its own timestamps (one log second per wall second, each second's
lines in small batches), while the real follower tails that file and the real service
serves the API and metrics. Alerts print as they fire and resolve.
"""

from __future__ import annotations

import gzip
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from retrywatch.detect.alerts import AlertChange
from retrywatch.serve.api import create_app
from retrywatch.serve.service import Service
from retrywatch.serve.settings import Settings

__all__ = ["SAMPLE", "run_demo"]

_NAME = "scenario-http-lua-storm.error.log.gz"
_PACKAGE = Path(__file__).resolve().parent.parent
#: The wheel carries the sample as retrywatch/samples/ (a link to sample_logs/ in a
#: checkout, which is the fallback).
SAMPLE = next((p for p in (_PACKAGE / "samples" / _NAME, _PACKAGE.parent / "sample_logs" / _NAME)
               if p.is_file()), _PACKAGE.parent / "sample_logs" / _NAME)
BATCHES_PER_SECOND = 20


def _seconds(sample: Path) -> Iterator[list[bytes]]:
    """The sample's lines grouped by their timestamp (one group per log second)."""
    group: list[bytes] = []
    stamp = b""
    with gzip.open(sample, "rb") as f:
        for line in f:
            if line[:19] != stamp and group:
                yield group
                group = []
            stamp = line[:19]
            group.append(line)
    if group:
        yield group


def _write(path: Path, sample: Path, progress: Progress, task: TaskID,
           stop: threading.Event) -> None:
    with path.open("ab", buffering=0) as out:
        for group in _seconds(sample):
            step = max(1, len(group) // BATCHES_PER_SECOND)
            started = time.monotonic()
            for i in range(0, len(group), step):
                if stop.is_set():
                    return
                part = group[i:i + step]
                out.write(b"".join(part))
                progress.advance(task, len(part))
                delay = started + (i + step) / len(group) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)


def _printer(console: Console) -> object:
    def show(change: AlertChange) -> None:
        d = change.alert.to_dict()
        code = (d["diagnosis"] or {}).get("code", "")
        ups = ", ".join(list(d["upstreams"])[:2])
        if change.kind == "fired":
            console.print(f"[red]FIRED[/red]    *{d['cid']} pid {d['pid']} -> {ups}: "
                          f"{d['failures']:,} failures, {code}")
        elif change.kind == "resolved":
            console.print(f"[green]RESOLVED[/green] *{d['cid']} pid {d['pid']}: "
                          f"{d['failures']:,} failures in {d['duration_seconds']} s "
                          f"(peak {d['peak_per_second']:,}/s), {d['resolved_reason']}")
    return show


def run_demo(*, listen: str, keep_serving: bool, sample: Path = SAMPLE,
             out: TextIO | None = None) -> int:
    """Run the demo; returns the number of alerts fired."""
    console = Console(file=out, highlight=False)
    total = sum(len(g) for g in _seconds(sample))
    with tempfile.TemporaryDirectory(prefix="retrywatch-demo-") as tmp:
        log = Path(tmp) / "error.log"
        log.touch()
        settings = Settings.model_validate(
            {"log": [str(log)], "listen": listen, "timezone": "UTC", "from": "beginning"})
        service = Service(settings)
        engine = service.engine
        engine.subscribe(_printer(console))  # type: ignore[arg-type]
        host, port = settings.host_port()
        server = uvicorn.Server(uvicorn.Config(create_app(engine), host=host, port=port,
                                               log_level="warning",
                                               timeout_graceful_shutdown=1))
        web = threading.Thread(target=server.run, name="http", daemon=True)
        service.start()
        web.start()
        base = f"http://{host}:{port}"
        console.print(f"retrywatch is following {log}\nreplaying {total:,} lines of "
                      f"{sample.name} (a real nginx retry storm) at its own pace\n"
                      f"API: {base}/api/v1/alerts   metrics: {base}/metrics\n")
        stop = threading.Event()
        try:
            with Progress(TextColumn("writing the log"), BarColumn(), MofNCompleteColumn(),
                          console=console, transient=True) as progress:
                task = progress.add_task("lines", total=total)
                _write(log, sample, progress, task, stop)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and sum(
                    s.lines_read for _, s in engine.source_stats()) < total:
                time.sleep(0.1)
            time.sleep(1.5)  # the held last line is released after a quiet second
            fired = engine.detector_stats().fired
            console.print(f"\n{total:,} lines written and read; {fired} runaway connections "
                          f"found, {len(engine.firing)} still firing.")
            console.print(f"  {base}/api/v1/alerts\n  {base}/api/v1/connections\n"
                          f"  {base}/api/v1/sources\n  {base}/metrics\n  {base}/docs")
            if keep_serving:
                console.print("serving until interrupted (Ctrl-C)")
                while web.is_alive():
                    web.join(1)
            return fired
        except KeyboardInterrupt:
            stop.set()
            return engine.detector_stats().fired
        finally:
            server.should_exit = True
            web.join(5)
            service.stop()
