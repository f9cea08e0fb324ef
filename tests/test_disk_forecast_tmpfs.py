"""The disk forecast against a real small filesystem: a 4 MiB tmpfs, mounted by the test,
filled by a storm of one connection's connect() failures while a `retrywatch run`
follows the log on it.

The storm is written at a steady pace (bounded in lines and time) so the forecast can be
checked against what happens: the test writes until the kernel answers ENOSPC, and the
moment predicted when the alert fired must be that moment, within a few seconds. Then the
log is truncated (as the alert's fix says) and the alert resolves. A real webhook receiver
(json) and an event-stream client hear it fire and resolve.

Mounting needs root (CI runs as root); elsewhere the test is skipped, which CI counts as a
failure (RETRYWATCH_NO_SKIP).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from bounds_harness import Run, poll, running
from conftest import TMPFS_SIZE
from webhook_receiver import WebhookReceiver, receiving

from retrywatch.sources.growth import filesystem_of

SIZE = TMPFS_SIZE  # the tmpfs fixture's (tests/conftest.py)
STORM_CID = 4242
UPSTREAM = "127.0.0.1:5555"
#: lines a second: the storm's and the others' (one request each, distinct connections)
STORM_RATE, OTHER_RATE = 300, 30
WRITE_FOR = 120.0  # seconds at most, whatever happens


def line(cid: int, when: datetime) -> bytes:
    stamp = when.strftime("%Y/%m/%d %H:%M:%S")
    return (f"{stamp} [error] 2454#2454: *{cid} connect() failed (111: Connection refused) "
            f"while connecting to upstream, client: 10.0.0.{cid % 250}, server: shop, "
            f'request: "GET /cart HTTP/1.1", upstream: "http://{UPSTREAM}/cart", '
            f'host: "shop"\n').encode()


@dataclass
class Writer:
    """Appends the storm and the other traffic at a steady pace until ENOSPC (or the
    bound); what it wrote, and when the disk was full."""

    path: Path
    written: int = 0
    full_at: float | None = None  # wall clock
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    #: set once the stream answered: the client is subscribed from then on
    connected: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            self._write()
        except BaseException as exc:  # (seen by the test)
            self.error = exc

    def _write(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        other = 100_000
        started = time.monotonic()
        try:
            tick = 0
            while not self.stop.is_set() and time.monotonic() - started < WRITE_FOR:
                now = datetime.now(UTC)
                batch = [line(STORM_CID, now) for _ in range(STORM_RATE // 10)]
                for _ in range(OTHER_RATE // 10):
                    other += 1
                    batch.append(line(other, now))
                data = b"".join(batch)
                try:
                    self.written += os.write(fd, data)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    self.full_at = time.time()
                    return
                tick += 1
                # ten batches a second, on the schedule (not drifting with the writes)
                time.sleep(max(0.0, started + tick / 10 - time.monotonic()))
        finally:
            os.close(fd)



def test_one_filesystem_through_a_bind_mount_and_a_symlink_is_one_device(
        tmpfs: Path, tmp_path: Path) -> None:
    """A file read through a bind mount, or through a symbolic link into the tmpfs, is on
    the tmpfs's device (one forecast), named by its real mount point; findmnt agrees."""
    (tmpfs / "logs").mkdir()
    log = tmpfs / "logs" / "error.log"
    log.write_bytes(b"x" * 5000)
    bound = tmp_path / "bound"
    bound.mkdir()
    subprocess.run(["mount", "--bind", str(tmpfs), str(bound)], check=True, timeout=30)
    try:
        link = tmp_path / "link"
        link.symlink_to(tmpfs / "logs")
        direct = filesystem_of(str(log))
        via_bind = filesystem_of(str(bound / "logs" / "error.log"))
        via_link = filesystem_of(str(link / "error.log"))
        assert direct.dev == via_bind.dev == via_link.dev == os.stat(tmpfs).st_dev
        assert direct.mount == via_link.mount == str(tmpfs)
        assert via_bind.mount == str(bound)
        assert direct.size_bytes == SIZE and direct.file_size == 5000
        findmnt = subprocess.run(["findmnt", "-n", "-o", "TARGET", "-T", str(link / "error.log")],
                                 check=True, capture_output=True, text=True).stdout.strip()
        assert findmnt == str(tmpfs)
        # A path moved onto another filesystem is looked up again, not named by the cache.
        elsewhere = tmp_path / "error.log"
        elsewhere.write_bytes(b"y")
        moved = filesystem_of(str(elsewhere), (direct.dev, direct.mount))
        assert moved.dev != direct.dev and moved.mount != str(tmpfs)
    finally:
        subprocess.run(["umount", "-l", str(bound)], check=True, timeout=30)


def disk(svc: Run) -> dict[str, Any]:
    found: dict[str, Any] = svc.get("/api/v1/disk")
    return found


@dataclass
class Listener:
    """An event-stream client in a thread: the names and data of the events it reads."""

    url: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    #: set once the stream answered: the client is subscribed from then on
    connected: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with contextlib.suppress(httpx.TransportError):  # the service stopped: it is over
            self._read()

    def _read(self) -> None:
        with httpx.stream("GET", self.url, timeout=httpx.Timeout(5.0, read=None)) as r:
            self.connected.set()
            name = ""
            for text in r.iter_lines():
                if text.startswith("event: "):
                    name = text[len("event: "):]
                elif text.startswith("data: ") and name:
                    self.events.append((name, json.loads(text[len("data: "):])))
                if self.stop.is_set():
                    return


def delivered(hook: WebhookReceiver) -> list[tuple[str, str, str]]:
    """(alertname, change, state) of each alert the json receiver got, in order."""
    return [(a.get("alertname", "runaway"), a["change"], a["state"])
            for r in hook.ok for a in r.json()["alerts"]]


def test_a_storm_filling_a_tmpfs_is_forecast_alerted_and_resolved(tmpfs: Path,
                                                                   tmp_path: Path) -> None:
    log = tmpfs / "error.log"
    log.touch()
    writer = Writer(log)
    thread = threading.Thread(target=writer.run, daemon=True)
    with receiving() as hook:
        config = tmp_path / "retrywatch.json"
        config.write_text(json.dumps({"receivers": [
            {"name": "hook", "url": f"{hook.url}/hook", "format": "json", "group_wait": 0.2,
             "external_url": "http://retrywatch.test:8734"}]}))
        with running(["--log", str(log), "--from", "beginning", "--timezone", "UTC",
                      "--config", str(config)], tmp_path / "run") as svc:
            listener = Listener(f"http://127.0.0.1:{svc.port}/api/v1/alerts/stream")
            reading = threading.Thread(target=listener.run, daemon=True)
            reading.start()
            assert listener.connected.wait(10), "the event stream did not answer"
            thread.start()
            try:
                storm(svc, writer, thread, hook, listener, tmpfs, log)
            finally:
                writer.stop.set()
                listener.stop.set()
                thread.join(10)
        text = svc.log_text()
    assert f"{tmpfs} will be full in about" in text
    assert "resolved (not_growing)" in text


def storm(svc: Run, writer: Writer, thread: threading.Thread, hook: WebhookReceiver,
          listener: Listener, tmpfs: Path, log: Path) -> None:
    """The storm written, forecast, alerted, filling the disk, truncated, resolved."""
    alert = poll("the disk alert", lambda: next(iter(disk(svc)["alerts"]), None),
                 timeout=40)
    fired = time.time()
    assert writer.full_at is None, "the disk was full before the alert fired"
    predicted = fired + alert["forecast"]["seconds_to_full"]
    assert alert["state"] == "firing"
    assert alert["mount"] == str(tmpfs)
    assert alert["horizon_seconds"] == 1800
    forecast = alert["forecast"]
    assert forecast["sources"] == [str(log)]
    assert forecast["size_bytes"] == SIZE
    # the pace written: (300 + 30) lines of ~236 bytes a second
    pace = (STORM_RATE + OTHER_RATE) * len(line(STORM_CID, datetime.now(UTC)))
    assert 0.8 * pace < forecast["bytes_per_second"] < 1.2 * pace, (forecast, pace)
    assert 0.8 * 330 < forecast["lines_per_second"] < 1.2 * 330, forecast
    # what writes: the storm's connection, most of the lines, against its upstream
    top = alert["connections"][0]
    assert (top["cid"], top["pid"], top["source"]) == (STORM_CID, 2454, str(log))
    assert 0.7 < top["share"] <= 1.0, top
    assert UPSTREAM in next(iter(alert["upstreams"]))
    diagnosis = alert["diagnosis"]
    assert diagnosis["code"] == "log_fills_disk"
    assert diagnosis["docs"] == "docs/lint/log_fills_disk.md"
    assert f"*{STORM_CID} (pid 2454) writes" in diagnosis["cause"]
    assert str(tmpfs) in diagnosis["cause"]
    assert "truncate -s 0" in diagnosis["fix"]
    # the same forecast in /api/v1/sources and on /metrics
    source = svc.source("file")
    assert source["growth"]["filesystem"]["mount"] == str(tmpfs)
    assert source["growth"]["bytes_per_second"] > 0.8 * pace
    assert svc.metric("retrywatch_disk_alerts_firing") == 1
    assert svc.metric("retrywatch_filesystem_size_bytes", mount=str(tmpfs)) == SIZE
    assert 0 < svc.metric("retrywatch_filesystem_full_in_seconds",
                          mount=str(tmpfs)) <= 1800
    # The disk fills when the forecast said (the rate is steady: a few seconds).
    thread.join(WRITE_FOR)
    assert writer.error is None, writer.error
    assert writer.full_at is not None, "the bound came before ENOSPC"
    assert abs(writer.full_at - predicted) < 6.0, (writer.full_at - fired,
                                                   predicted - fired)
    # Full: the forecast says 0 and the alert goes on firing, though the log
    # stopped growing (the writes fail); the service is fine.
    poll("the forecast at 0", lambda: disk(svc)["filesystems"][0]["seconds_to_full"]
         == 0)
    assert disk(svc)["alerts"][0]["state"] == "firing"
    assert "it is full now" in disk(svc)["alerts"][0]["diagnosis"]["cause"]
    assert svc.healthy()
    # The fix: truncated, the space is back, nothing grows: resolved.
    os.truncate(log, 0)
    resolved = poll("the alert resolved", lambda: (
        a := disk(svc)["alerts"][0])["state"] == "resolved" and a, timeout=60)
    assert resolved["id"] == alert["id"]
    assert resolved["resolved_reason"] == "not_growing"
    assert svc.metric("retrywatch_disk_alerts_firing") == 0
    assert svc.metric("retrywatch_disk_alerts_fired_total") == 1
    # The receiver heard the disk alert fire and resolve (beside the storm's own
    # runaway alert), and so did the event stream.
    hook.wait_for("the disk alert's resolve delivered", lambda: (
        "RetrywatchDiskFilling", "resolved", "resolved") in delivered(hook))
    mine = [d for d in delivered(hook) if d[0] == "RetrywatchDiskFilling"]
    assert mine == [("RetrywatchDiskFilling", "fired", "firing"),
                    ("RetrywatchDiskFilling", "resolved", "resolved")]
    assert ("runaway", "fired", "firing") in delivered(hook)
    body = next(a for r in hook.ok for a in r.json()["alerts"]
                if a.get("alertname") == "RetrywatchDiskFilling")
    assert body["id"] == alert["id"] and body["mount"] == str(tmpfs)
    assert body["connections"][0]["cid"] == STORM_CID
    poll("the stream's disk events", lambda: [
        n for n, _ in listener.events if n.startswith("disk_")] == [
        "disk_fired", "disk_resolved"], timeout=10)
    assert any(n == "fired" for n, _ in listener.events)  # the storm's own alert
