"""``retrywatch demo``: the live service following a real storm as it is written.

A bundled log written by a real nginx (``sample_logs/``) is appended to a temporary log
file at the pace of its own timestamps (one log second per wall second, each second's
lines in small batches), while the real follower tails that file and the real service
serves the API and metrics. Alerts print as they fire and resolve.
"""

from __future__ import annotations

import gzip
import signal
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
from retrywatch.detect.disk import DiskChange
from retrywatch.detect.engine import Engine, Subscriber
from retrywatch.detect.upstreams import UpstreamChange
from retrywatch.serve.api import create_app
from retrywatch.serve.http import listen_socket
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


def _printer(console: Console) -> Subscriber:
    """Print each alert as it fires, is confirmed, changes diagnosis, and resolves (an
    upstream or disk alert: as it fires and resolves, with its cause)."""
    said: dict[str, str] = {}  # alert id -> the diagnosis code last printed

    def show(change: AlertChange | DiskChange | UpstreamChange) -> None:
        if not isinstance(change, AlertChange):
            what = (f"upstream {change.data['peer']}" if isinstance(change, UpstreamChange)
                    else f"disk {change.data['mount']}")
            color = "red" if change.kind == "fired" else "green"
            console.print(f"[{color}]{change.kind.upper():<9}[/{color}] {what}: "
                          f"{change.data['diagnosis']['cause']}")
            return
        d = change.alert.to_dict()
        code = d["diagnosis"]["code"] if d["diagnosis"] else ""
        ups = ", ".join(list(d["upstreams"])[:2])
        head = f"*{d['cid']} pid {d['pid']}"
        if change.kind == "fired":
            console.print(f"[red]FIRED[/red]     {head} -> {ups}: {d['failures']:,} failures "
                          f"so far, {code} ({d['confidence']})")
        elif change.kind == "confirmed":
            console.print(f"[red]CONFIRMED[/red] {head}: {'; '.join(d['evidence'])}")
        elif change.kind == "resolved":
            console.print(f"[green]RESOLVED[/green]  {head}: {d['failures']:,} failures in "
                          f"{d['duration_seconds']} s (peak {d['peak_per_second']:,}/s), "
                          f"{code}, {d['resolved_reason']}")
        elif said.get(d["id"], code) != code:
            console.print(f"[yellow]CHANGED[/yellow]   {head}: {said[d['id']]} -> {code} at "
                          f"{d['failures']:,} failures")
        said[d["id"]] = code
    return show


def _summary(console: Console, engine: Engine) -> None:
    """Every alert's final state, one line each."""
    for d in sorted(engine.alerts(), key=lambda a: a["fired_at"]):
        code = d["diagnosis"]["code"] if d["diagnosis"] else ""
        console.print(f"  *{d['cid']:<6} {d['state']:<8} {d['confidence']:<9} {code:<18} "
                      f"{d['failures']:>7,} failures, peak {d['peak_per_second']:,}/s")


def _terminate(_signum: int, _frame: object) -> None:
    raise SystemExit(143)  # unwinds like Ctrl-C: the temporary folder is removed


def run_demo(*, listen: str, keep_serving: bool, sample: Path = SAMPLE,
             out: TextIO | None = None) -> int:
    """Run the demo; returns the number of alerts fired."""
    console = Console(file=out, highlight=False)
    total = sum(len(g) for g in _seconds(sample))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="retrywatch-demo-") as tmp:
        log = Path(tmp) / "error.log"
        log.touch()
        settings = Settings.model_validate(
            {"log": [str(log)], "listen": listen, "timezone": "UTC", "from": "beginning"})
        service = Service(settings)
        engine = service.engine
        engine.subscribe(_printer(console))
        host, port = settings.host_port()
        sock = listen_socket(host, port)  # ListenError now, not uvicorn's in its thread
        server = uvicorn.Server(uvicorn.Config(create_app(engine), host=host, port=port,
                                               log_level="warning",
                                               timeout_graceful_shutdown=1))
        web = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="http",
                               daemon=True)
        service.start()
        web.start()
        base = f"http://{host}:{port}"
        console.print(f"retrywatch is following {log}\nreplaying {total:,} lines of "
                      f"{sample.name} (a real nginx retry storm) at its own pace\n"
                      f"API: {base}/api/v1/alerts   metrics: {base}/metrics\n")
        console.print(f"The pace: one log second per wall second, written in "
                      f"{BATCHES_PER_SECOND} batches; a storm writes thousands of lines a "
                      "second, so an alert fires with the failures of the batch that crossed "
                      "the threshold (10), not at 10.\n")
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
            fired = engine.published.get("fired", 0)
            console.print(f"\n{total:,} lines written and read; {fired} runaway connections "
                          f"found, {len(engine.firing)} still firing:")
            _summary(console, engine)
            console.print(f"  {base}/ (the live page)\n"
                          f"  {base}/api/v1/alerts\n  {base}/api/v1/connections\n"
                          f"  {base}/api/v1/sources\n  {base}/metrics\n  {base}/docs")
            if keep_serving:
                console.print("serving until interrupted (Ctrl-C)")
                while web.is_alive():
                    web.join(1)
            return fired
        except KeyboardInterrupt:
            stop.set()
            return engine.published.get("fired", 0)
        except SystemExit:
            stop.set()
            raise
        finally:
            server.should_exit = True
            web.join(5)
            service.stop()
