"""The suite's own switches (tests/conftest.py), run on a throwaway test module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent

MODULE = '''
import pytest

def test_passes():
    pass

def test_skips_inside():
    pytest.skip("no thing here")

@pytest.mark.skipif(True, reason="a marker")
def test_skipped_by_marker():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False
'''


def run(tmp_path: Path, no_skip: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(MODULE)
    env = {k: v for k, v in os.environ.items() if k != "RETRYWATCH_NO_SKIP"}
    if no_skip is not None:
        env["RETRYWATCH_NO_SKIP"] = no_skip
    # the suite's conftest as a plugin, on a module outside the suite
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
         "-rA", str(tmp_path / "test_sample.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("value", [None, "", "0"])
def test_skips_are_skips_without_the_switch(tmp_path: Path, value: str | None) -> None:
    done = run(tmp_path, value)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in done.stdout


def test_a_skip_is_a_failure_under_the_switch(tmp_path: Path) -> None:
    done = run(tmp_path, "1")
    assert done.returncode == 1, done.stdout
    # a skip inside the test fails it; a skipping marker errors its setup; xfail is kept
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in done.stdout, done.stdout
    assert "RETRYWATCH_NO_SKIP is set: Skipped: no thing here" in done.stdout
    assert "RETRYWATCH_NO_SKIP is set: Skipped: a marker" in done.stdout


def test_ci_sets_the_switch() -> None:
    ci = (TESTS.parent / ".ci" / "run").read_text()
    assert "RETRYWATCH_NO_SKIP=1" in ci
