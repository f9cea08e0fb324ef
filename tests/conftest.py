"""Suite-wide switches.

``RETRYWATCH_NO_SKIP=1`` (set by ``.ci/run``): a skipped test is a failure. CI's machine is
set up by ``./dev test``, which installs every real component a test drives (nginx and its
modules, promtool, Prometheus, Alertmanager, Chromium, h2load, systemd-analyze, kubectl,
hadolint): a skip there means a component went missing, and the suite must not pass
without it. What cannot exist on any machine (a module Debian does not package) is not a
skipped test but a test of the rejection.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Generator
from pathlib import Path

import pytest

NO_SKIP = os.environ.get("RETRYWATCH_NO_SKIP", "") not in ("", "0")


def _as_failure(report: pytest.TestReport | pytest.CollectReport) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
    report.outcome = "failed"
    report.longrepr = f"skipped, and RETRYWATCH_NO_SKIP is set: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        _as_failure(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if NO_SKIP and report.skipped:
        _as_failure(report)


@pytest.fixture
def away_from_utc() -> Generator[None, None, None]:
    """The process's own time zone set to Asia/Kathmandu (+05:45, no summer time) for the
    test. Every machine here runs UTC: a time read or written in local time by mistake
    looks right there, and wrong by 5 h 45 min under this fixture."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kathmandu"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


#: The size of the ``tmpfs`` fixture's filesystem, bytes.
TMPFS_SIZE = 4 << 20


@pytest.fixture
def tmpfs(tmp_path: Path) -> Generator[Path, None, None]:
    """A real 4 MiB tmpfs mounted on a folder of ``tmp_path`` for the test, unmounted
    after it (mounting needs root: CI runs as root; elsewhere the test is skipped, which
    CI would count as a failure)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount)],
                   check=True, timeout=30)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True, timeout=30)
