"""retrywatch's own log lines (serve/logs.py): text or JSON, RFC 3339 times, tracebacks
kept, uvicorn's records in the same format; and what ``retrywatch run`` says at start."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from nginx_harness import free_port
from run_harness import ROOT, clean_env, poll

from retrywatch.serve.logs import UVICORN_CONFIG, UVICORN_LOGGERS, configure

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d")
SECRET = "T0SECRET/B0SECRET"


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """Each test configures logging; what was there before comes back after it. The
    filters are set aside meanwhile: a server started in this process before (another
    test's) leaves its rate limit on ``uvicorn.error`` (serve/http.py), which would drop
    a message it has already let through in the last seconds."""
    names = ["", "retrywatch", *UVICORN_LOGGERS]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate, lg.filters[:])
             for lg in map(logging.getLogger, names)]
    for logger in map(logging.getLogger, names):
        logger.filters.clear()
    yield
    for logger, handlers, level, propagate, filters in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
        logger.filters[:] = filters


def records(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines()]


def assert_time(value: str) -> None:
    assert RFC3339.fullmatch(value), value
    assert datetime.fromisoformat(value).utcoffset() is not None


def fail() -> None:
    raise ZeroDivisionError("the cause")


# -- the formats --------------------------------------------------------------------------
def test_json_records_parse_with_time_level_and_logger(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure("json", "info")
    logging.getLogger("retrywatch").info("following %s", "/var/log/nginx/error.log")
    logging.getLogger("retrywatch").debug("not at info")
    (record,) = records(capsys.readouterr().err)
    assert_time(record.pop("time"))
    assert record == {"level": "INFO", "logger": "retrywatch",
                      "message": "following /var/log/nginx/error.log"}


def test_json_keeps_the_whole_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure("json", "info")
    try:
        fail()
    except ZeroDivisionError:
        logging.getLogger("retrywatch").exception("ingest loop")
    (record,) = records(capsys.readouterr().err)
    assert record["level"] == "ERROR" and record["message"] == "ingest loop"
    trace = record["exc_info"]
    assert trace.startswith("Traceback (most recent call last):"), trace
    assert "in fail" in trace and trace.endswith("ZeroDivisionError: the cause")


def test_text_lines_have_the_time_level_logger_and_traceback(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure("text", "debug")
    logging.getLogger("retrywatch").debug("checkpoint")
    try:
        fail()
    except ZeroDivisionError:
        logging.getLogger("retrywatch.serve").exception("source failed")
    lines = capsys.readouterr().err.splitlines()
    time, level, rest = lines[0].split(" ", 2)
    assert_time(time)
    assert (level, rest) == ("DEBUG", "retrywatch: checkpoint")
    time, level, rest = lines[1].split(" ", 2)
    assert_time(time)
    assert (level, rest) == ("ERROR", "retrywatch.serve: source failed")
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "ZeroDivisionError: the cause"


def test_configured_again_it_replaces_its_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure("text", "info")
    configure("json", "warning")
    log = logging.getLogger("retrywatch")
    log.info("not at warning")
    log.warning("once")
    (record,) = records(capsys.readouterr().err)
    assert record["message"] == "once"


# -- uvicorn ------------------------------------------------------------------------------
async def _app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    pass


@pytest.mark.parametrize("before", [False, True], ids=["fresh", "uvicorn-configured-before"])
def test_uvicorn_records_come_out_in_the_same_format(
        capsys: pytest.CaptureFixture[str], before: bool) -> None:
    """As serve() starts it: uvicorn.Config with UVICORN_CONFIG leaves its loggers alone;
    one configured before with its own handlers (its default) is taken back."""
    if before:
        uvicorn.Config(_app)  # uvicorn's own LOGGING_CONFIG: its handlers, no propagation
    configure("json", "info")
    uvicorn.Config(_app, log_level="warning", access_log=False, **UVICORN_CONFIG)
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    logging.getLogger("uvicorn.error").info("below uvicorn's level")
    try:
        fail()
    except ZeroDivisionError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    first, second = records(capsys.readouterr().err)
    assert_time(first.pop("time"))
    assert first == {"level": "WARNING", "logger": "uvicorn.error",
                     "message": "Invalid HTTP request received."}
    assert second["logger"] == "uvicorn.error"
    assert second["exc_info"].endswith("ZeroDivisionError: the cause")


# -- retrywatch run: the startup lines ------------------------------------------------------
def test_run_says_at_start_what_it_follows_where_it_listens_and_who_hears(
        tmp_path: Path) -> None:
    logs, empty = tmp_path / "logs", tmp_path / "empty"
    logs.mkdir()
    empty.mkdir()
    (logs / "error.log").write_bytes(b"")
    (logs / "other.log").write_bytes(b"")
    config = tmp_path / "retrywatch.yaml"
    config.write_text(yaml.safe_dump({"receivers": [
        {"name": "ops", "format": "slack",
         "url": f"https://hooks.slack.example/services/{SECRET}?token=s3cr3t"},
        {"name": "am", "format": "alertmanager", "url": "http://alertmanager:9093"}]}))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "retrywatch", "run", "--log", str(logs / "*.log"),
         "--log", str(empty / "*.log"), "--syslog", "udp://127.0.0.1:0", "--config",
         str(config), "--log-format", "json", "--listen", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env=clean_env(), text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
            poll("/healthz", lambda: process.poll() is None
                 and client.get("/healthz").status_code == 200)
            (empty / "late.log").write_bytes(b"")  # the empty glob is still followed

            def late() -> bool:
                sources = client.get("/api/v1/sources").json()["sources"]
                return any(s["name"].endswith("late.log") for s in sources)

            poll("the late file to be followed", late)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out == ""
    lines = records(err)
    for line in lines:
        assert_time(line["time"])
        assert line["logger"] == "retrywatch", line
    said = [(r["level"], r["message"]) for r in lines]
    assert ("INFO", f"following {logs}/*.log: 2 files match now") in said, said
    assert ("WARNING", f"following {empty}/*.log: no file matches it now; it is watched, "
                       "and read when a file appears") in said, said
    assert any(level == "INFO" and re.fullmatch(
        r"following syslog: listening on udp://127\.0\.0\.1:[1-9]\d*", m)
        for level, m in said), said
    assert ("INFO", f"API, metrics and health checks on http://127.0.0.1:{port} "
                    "(no API token)") in said, said
    assert ("INFO", "no state: positions and alerts are not kept across restarts "
                    "(--state-dir)") in said, said
    assert ("INFO", "receiver ops (slack): https://hooks.slack.example/**********"
                    "?token=**********") in said, said
    assert ("INFO", "receiver am (alertmanager): http://alertmanager:9093") in said, said
    assert SECRET not in err and "s3cr3t" not in err
