"""The live service's inputs (retrywatch/sources/source.py): one interface, one factory;
a source that fails or hangs stops no other; sources gone longer than the retention are
forgotten with their series. In-process services stepped with ``run_once()`` on real
files in tmp_path; every wait is bounded."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_harness import FakeClock

from retrywatch.serve.api import create_app
from retrywatch.serve.metrics import new_registry, render
from retrywatch.serve.service import Service
from retrywatch.serve.settings import Settings
from retrywatch.sources.follow import ManualWaker
from retrywatch.sources.source import (
    POLL_WAIT,
    FileInput,
    Source,
    StdinInput,
    SyslogInput,
    open_sources,
)

LINE = (b"2019/09/17 03:46:%02d [error] 2454#2454: *%d connect() failed (111: Connection "
        b"refused) while connecting to upstream, client: 10.0.0.1, server: a, upstream: "
        b"\"10.0.0.2:80\"\n")


def failures(cid: int, n: int, second: int = 20) -> bytes:
    return b"".join(LINE % (second, cid) for _ in range(n))


def service(tmp_path: Path, clock: FakeClock | None = None, **settings: Any) -> Service:
    values: dict[str, Any] = {"log": [str(tmp_path / "logs" / "*.log")], "from": "beginning",
                              "timezone": "UTC", **settings}
    return Service(Settings.model_validate(values), waker=ManualWaker(),
                   clock=clock or FakeClock())


def lines_read(svc: Service) -> dict[str, int]:
    return {info.name: stats.lines_read for info, stats in svc.engine.source_stats()}


def file_input(svc: Service, path: Path) -> FileInput:
    """The file input whose follower reads ``path`` (each test follows one glob per file
    when it needs to act on one input alone)."""
    return next(s for s in svc.followers if s.name == str(path))


def test_every_input_is_made_by_the_one_factory(tmp_path: Path) -> None:
    settings = Settings.model_validate({
        "log": [str(tmp_path / "a.log"), "-", str(tmp_path / "*.log")],
        "syslog": ["udp://127.0.0.1:0"]})
    sources: list[Source] = open_sources(settings)
    assert [type(s) for s in sources] == [FileInput, StdinInput, FileInput, SyslogInput]
    assert [s.kind for s in sources] == ["file", "stdin", "file", "syslog"]
    for source in sources:  # nothing was opened or bound: closing is all it takes
        assert source.positions() == []
        source.close()


def test_a_failing_source_stops_no_other(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "logs").mkdir()
    a, b = tmp_path / "logs" / "a.log", tmp_path / "logs" / "b.log"
    a.write_bytes(failures(1, 3))
    b.write_bytes(failures(2, 3))
    svc = service(tmp_path, log=[str(a), str(b)])
    broken = file_input(svc, a).follower

    def boom(*_: Any, **__: Any) -> Any:
        raise OSError(5, "Input/output error")

    broken.poll = boom  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.ERROR, logger="retrywatch"):
            for _ in range(5):
                svc.run_once()
        assert lines_read(svc).get(str(b)) == 3
        assert svc.source_failures == {str(a): 5}
        # The traceback is logged once a minute, not on every poll.
        assert [r.getMessage() for r in caplog.records] == [
            f"source {a} failed (1 times so far; the others go on)"]
    finally:
        svc.followers[1].close()


def test_a_stuck_source_stops_no_other(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    a, b = tmp_path / "logs" / "a.log", tmp_path / "logs" / "b.log"
    a.write_bytes(failures(1, 2))
    b.write_bytes(failures(2, 2))
    svc = service(tmp_path, log=[str(a), str(b)])
    stuck = file_input(svc, a)
    stuck.stuck_after = 0.2
    release = threading.Event()
    poll = stuck.follower.poll

    def hang(*args: Any, **kwargs: Any) -> Any:  # a dead NFS server
        release.wait(30)
        return poll(*args, **kwargs)

    stuck.follower.poll = hang  # type: ignore[method-assign]
    try:
        started = time.monotonic()
        svc.run_once()
        assert time.monotonic() - started < POLL_WAIT + 2
        assert lines_read(svc).get(str(b)) == 2
        b.write_bytes(failures(2, 5))
        started = time.monotonic()
        svc.run_once()  # not waited for again: quick
        assert time.monotonic() - started < POLL_WAIT / 2
        assert lines_read(svc)[str(b)] == 5
        release.set()  # it answers: its reads are taken, in order, by a later poll
        deadline = time.monotonic() + 10
        while lines_read(svc).get(str(a)) != 2 and time.monotonic() < deadline:
            svc.run_once()
            time.sleep(0.01)
        assert lines_read(svc)[str(a)] == 2
        assert svc.engine.info[str(a)].last_error is None
    finally:
        release.set()
        for follower in svc.followers:
            follower.close()


def test_a_stuck_source_is_reported(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    a = tmp_path / "logs" / "a.log"
    a.write_bytes(failures(1, 2))
    svc = service(tmp_path, log=[str(a)])
    svc.run_once()
    source = svc.followers[0]
    source.stuck_after, source.wait = 0.1, 0.05
    release = threading.Event()
    poll = source.follower.poll
    source.follower.poll = lambda *a, **k: (release.wait(30), poll(*a, **k))[1]  # type: ignore[method-assign]
    try:
        deadline = time.monotonic() + 10
        info = svc.engine.info[str(a)]
        while time.monotonic() < deadline:  # turns of the loop until it says so
            svc.run_once()
            info = svc.engine.info[str(a)]
            if info.last_error is not None:
                break
            time.sleep(0.01)
        assert info.last_error is not None and info.last_error.startswith("stuck: ")
        assert not info.caught_up
        ready = TestClient(create_app(svc.engine)).get("/readyz")
        assert ready.status_code == 503 and f"{a}: lagging" in ready.json()["detail"]
    finally:
        release.set()
        source.close()


def test_a_source_gone_longer_than_the_retention_is_forgotten_with_its_series(
        tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    a, b = tmp_path / "logs" / "a.log", tmp_path / "logs" / "b.log"
    a.write_bytes(failures(1, 2))
    b.write_bytes(failures(2, 30))  # an alert: it fires, then resolves
    clock = FakeClock()
    svc = service(tmp_path, clock, source_retention=3600)
    svc.followers[0].follower.grace = 0  # a deleted file is let go at once
    registry = new_registry(svc.engine)
    client = TestClient(create_app(svc.engine))
    try:
        svc.run_once()
        assert lines_read(svc) == {str(a): 2, str(b): 30}
        assert f'source="{b}"' in render(registry).decode()
        b.unlink()  # the pod is gone
        for _ in range(3):
            svc.run_once()
        info = svc.engine.info[str(b)]
        assert (info.open, info.caught_up) == (False, True)
        assert info.extra["gone_since"] > 0
        assert client.get("/readyz").status_code == 200  # gone is not "not open"
        clock.advance(3599)
        svc.run_once()
        assert str(b) in lines_read(svc)
        clock.advance(2)
        svc.run_once()
        assert lines_read(svc) == {str(a): 2}
        assert str(b) not in svc.engine.info
        assert svc.engine.core.sources == [str(a)]
        text = render(registry).decode()
        assert not re.search(rf'source="{re.escape(str(b))}"', text), text
        assert [s["name"] for s in client.get("/api/v1/sources").json()["sources"]] == [str(a)]
        # A file under the same name later is a new source, counted from 0.
        b.write_bytes(failures(3, 1))
        svc.run_once()
        assert lines_read(svc) == {str(a): 2, str(b): 1}
    finally:
        svc.followers[0].close()


def test_a_source_back_before_the_retention_is_kept(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    b = tmp_path / "logs" / "b.log"
    b.write_bytes(failures(2, 3))
    clock = FakeClock()
    svc = service(tmp_path, clock, source_retention=60)
    svc.followers[0].follower.grace = 0
    try:
        svc.run_once()
        b.unlink()
        svc.run_once()
        svc.run_once()
        assert "gone_since" in svc.engine.info[str(b)].extra
        clock.advance(30)
        b.write_bytes(failures(2, 1))
        svc.run_once()
        clock.advance(60)
        svc.run_once()
        assert lines_read(svc) == {str(b): 4}
        assert "gone_since" not in svc.engine.info[str(b)].extra
    finally:
        svc.followers[0].close()


def test_a_firing_alert_of_a_forgotten_source_resolves() -> None:
    from zoneinfo import ZoneInfo

    from retrywatch.detect.core import DetectorConfig
    from retrywatch.detect.engine import Engine

    engine = Engine(DetectorConfig(), ZoneInfo("UTC"))
    engine.add_source("gone", "file")
    engine.feed("gone", failures(7, 20))
    engine.end("gone")
    assert len(engine.firing) == 1
    changes = engine.remove_source("gone")
    assert [(c.kind, c.alert.resolved_reason) for c in changes] == [
        ("resolved", "source_removed")]
    assert engine.firing == {} and engine.source_stats() == []
    assert engine.detector_stats().by_source_kind == {}
