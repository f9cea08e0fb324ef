"""Replay the logs a real nginx recorded (sample_logs/; no nginx is started here: see
test_e2e_nginx.py and test_busy_or_runaway.py for that) against their ground truth.

The logs were written by a real nginx 1.22.1 with lua-nginx-module 0.10.23 (see
sample_logs/README.md). The truth files were built from the scenario design and nginx's
access log, not by parsing the error log. The timestamps are UTC.
"""

from __future__ import annotations

import functools
import gzip
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from retrywatch.detect.core import DetectorConfig
from retrywatch.forensics.replay import ReplayResult, replay

SAMPLE_LOGS = Path(__file__).resolve().parent.parent / "sample_logs"
SCENARIOS = ("stream-plain", "stream-multi", "http-lua-storm", "http-normal")
UTC = ZoneInfo("UTC")
LOG_SECOND = "%Y/%m/%d %H:%M:%S"  # the keys of a truth record's failures_per_log_second

# What retrywatch counts as a connect failure, in the truth's per-connection
# ``expected`` keys. The truth's ``failures`` counts only the first two.
# ``upstream_timed_out`` counts only "while connecting", and the truth does not split it
# from "while reading response header" (see _connect_failures).
CONNECT_FAILURE_KINDS = ("connect_failed", "connect_to_failed", "no_live_upstreams")


def log_path(scenario: str) -> Path:
    return SAMPLE_LOGS / f"scenario-{scenario}.error.log.gz"


@functools.cache
def truth(scenario: str) -> dict[str, Any]:
    path = SAMPLE_LOGS / f"scenario-{scenario}.truth.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def run(path: Path) -> ReplayResult:
    return replay([str(path)], tz=UTC, config=DetectorConfig())


@functools.cache
def replayed(scenario: str) -> ReplayResult:
    """One replay per scenario, shared by the tests (they only read it)."""
    return run(log_path(scenario))


def runaway_cases() -> list[Any]:
    return [
        pytest.param(scenario, rec["id"], id=f"{scenario}-{rec['id']}")
        for scenario in SCENARIOS
        for rec in truth(scenario)["runaway_connections"]
    ]


def _connect_failures(rec: dict[str, Any]) -> int:
    """The truth's count for one connection, counted as retrywatch counts it."""
    expected = rec["expected"]
    # The truth's own ``failures`` is connect() failed + connect() to X failed.
    assert rec["failures"] == expected["connect_failed"] + expected["connect_to_failed"]
    if expected["upstream_timed_out"]:
        pytest.fail(f"*{rec['id']}: the truth counts 'upstream timed out' without saying "
                    "whether it was while connecting, so it cannot be compared")
    return sum(expected[kind] for kind in CONNECT_FAILURE_KINDS)


def _expected_diagnosis(scenario: str, rec: dict[str, Any]) -> str:
    expected = rec["expected"]
    one_second = len(rec["failures_per_log_second"]) == 1
    if expected["connect_to_failed"] == rec["failures"] and one_second:
        # An immediate failure (a stale unix socket) retried inside one event: every
        # line carries the same, frozen second.
        return "synchronous_loop"
    if scenario.startswith("stream-"):
        return "stream_retry_loop"
    return "http_retry_loop"


def _log_second(text: str) -> datetime:
    return datetime.strptime(text, LOG_SECOND).replace(tzinfo=UTC)


def _timed_out_while_connecting(scenario: str) -> int:
    """Lines of 'upstream timed out ... while connecting to upstream' (a grep, as the truth's
    own cross-check does: the truth's log_summary does not split the timeouts)."""
    with gzip.open(log_path(scenario), "rt", encoding="utf-8") as f:
        return sum(
            1 for line in f
            if " upstream timed out (" in line and "while connecting to upstream" in line
        )


# -- the whole log ------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_line_read_and_parsed(scenario: str) -> None:
    summary = truth(scenario)["log_summary"]
    stats = replayed(scenario).stats()
    assert stats["lines_read"] == summary["lines"]
    assert stats["lines_unparsed"] == 0, stats["unparsed_by_reason"]
    assert stats["lines_parsed"] == summary["lines"]
    assert stats["bytes_read"] == summary["bytes"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_connect_failure_total(scenario: str) -> None:
    t = truth(scenario)
    by_message = t["log_summary"]["by_message"]
    # The truth's own total, which counts connect() failed + connect() to X failed.
    assert (by_message["connect_failed"] + by_message["connect_to_failed"]
            == t["counts"]["expected_connect_failure_lines"])
    expected = sum(by_message[kind] for kind in CONNECT_FAILURE_KINDS)
    expected += _timed_out_while_connecting(scenario)
    assert replayed(scenario).stats()["connect_failures"] == expected


# -- the alerts ---------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_alerts_are_exactly_the_runaway_connections(scenario: str) -> None:
    alerts = replayed(scenario).alerts
    cids = [alert.cid for alert in alerts]
    assert sorted(cids) == sorted(truth(scenario)["runaway_ids"])  # no others, no duplicates


@pytest.mark.parametrize(("scenario", "cid"), runaway_cases())
def test_runaway_connection_matches_truth(scenario: str, cid: int) -> None:
    rec = next(r for r in truth(scenario)["runaway_connections"] if r["id"] == cid)
    [alert] = [a for a in replayed(scenario).alerts if a.cid == cid]
    d = alert.to_dict()

    assert alert.pid == rec["worker_pid"]
    assert d["pid"] == rec["worker_pid"]
    assert d["cid"] == cid
    assert d["failures"] == _connect_failures(rec)
    assert d["kinds"] == {k: n for k, n in rec["expected"].items()
                          if n and k in CONNECT_FAILURE_KINDS}
    assert d["upstreams"] == rec["upstreams"]
    assert d["client"] == rec["client"]
    assert d["server"] == rec["server"]
    if scenario.startswith("http-"):
        assert d["subsystem"] == "http"
        assert d["request"] == rec["request"]
    else:
        assert d["subsystem"] == "stream"
        assert d["request"] is None

    # Event time is the log's own second, read as UTC.
    per_second = rec["failures_per_log_second"]
    assert sum(per_second.values()) == rec["failures"]
    assert datetime.fromisoformat(d["first_seen"]) == _log_second(min(per_second))
    assert datetime.fromisoformat(d["last_seen"]) == _log_second(max(per_second))
    assert d["peak_per_second"] == max(per_second.values())

    assert d["diagnosis"]["code"] == _expected_diagnosis(scenario, rec)
    assert d["diagnosis"]["cause"]
    assert d["diagnosis"]["fix"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_normal_connections_get_no_alert(scenario: str) -> None:
    normal = truth(scenario)["normal_connections"]
    assert normal
    assert all(rec["failures"] <= 3 for rec in normal)
    normal_keys = {(rec["worker_pid"], rec["id"]) for rec in normal}
    alerted = {(alert.pid, alert.cid) for alert in replayed(scenario).alerts}
    assert not alerted & normal_keys
    assert not {cid for _, cid in alerted} & {rec["id"] for rec in normal}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_gzip_and_plain_give_identical_alerts(scenario: str, tmp_path: Path) -> None:
    # Both files in one directory have the same source name (error.log.gz and
    # error.log are one nginx's log), so even the alert ids must match.
    gz = tmp_path / log_path(scenario).name
    shutil.copyfile(log_path(scenario), gz)
    plain = tmp_path / gz.name.removesuffix(".gz")
    with gzip.open(gz, "rb") as src, plain.open("wb") as dst:
        shutil.copyfileobj(src, dst)

    from_gz, from_plain = run(gz), run(plain)
    assert [a.to_dict() for a in from_plain.alerts] == [a.to_dict() for a in from_gz.alerts]
    assert from_plain.stats() == from_gz.stats()
    assert len(from_gz.alerts) == len(truth(scenario)["runaway_ids"])
