"""Headless Chromium for the tests that render a page: found on PATH, run in a session of
its own (on a timeout the browser and its helpers all stop), every host but 127.0.0.1
unreachable."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs chromium on PATH (apt-get install chromium "
                             "fonts-dejavu-core; ./dev test installs it)")

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-dev-shm-usage", "--hide-scrollbars",
          "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


def headless(args: list[str], profile: Path, *, timeout: float, doing: str) -> str:
    """Run Chromium with ``args`` after the common flags; its stdout. Fails the test when it
    does not finish within ``timeout`` seconds (``doing`` says what it was at) or exits
    non-zero (its stderr's tail in the message)."""
    assert CHROMIUM is not None
    cmd = [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"headless chromium did not {doing} within {timeout:g} s")
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")
