"""``retrywatch demo``, run as a user runs it: a real subprocess writing the bundled storm at
its own pace (about 10 s) while the live service follows it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from nginx_harness import free_port

from retrywatch.serve.demo import SAMPLE

DEMO_TIMEOUT = 90.0
STORM_CIDS = {73, 20137, 20302, 41557, 49447}


def start(port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "120", "TERM": "dumb"}
    return subprocess.Popen([sys.executable, "-m", "retrywatch", "demo", "--listen",
                             f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def test_demo_tells_each_alert_its_changes_and_the_end() -> None:
    assert SAMPLE.is_file()
    with start(free_port()) as demo:
        out, _ = demo.communicate(timeout=DEMO_TIMEOUT)
    assert demo.returncode == 0, out
    fired = {int(c) for c in re.findall(r"^FIRED\s+\*(\d+)", out, re.M)}
    assert fired == STORM_CIDS, out
    assert "The pace: one log second per wall second" in out
    # the synchronous loop is first seen in a batch of its one second, then diagnosed for what
    # it is: the console says so instead of ending on a diagnosis it never printed
    assert re.search(r"^(CHANGED|CONFIRMED)\s+\*49447", out, re.M), out
    summary = out[out.index("runaway connections found"):]
    for cid in STORM_CIDS:
        assert re.search(rf"^\s+\*{cid}\s+(firing|resolved)\s+confirmed\s", summary, re.M), cid
    assert re.search(r"^\s+\*49447\s+\w+\s+confirmed\s+synchronous_loop", summary, re.M)


def test_sigterm_removes_the_temporary_folder() -> None:
    with start(free_port()) as demo:
        assert demo.stdout is not None
        folder: Path | None = None
        deadline = time.monotonic() + DEMO_TIMEOUT
        for line in demo.stdout:
            found = re.search(r"following (\S+)/error\.log", line)
            if found:
                folder = Path(found.group(1))
            if line.startswith("FIRED") or time.monotonic() > deadline:
                break
        assert folder is not None and folder.is_dir()
        demo.send_signal(signal.SIGTERM)
        demo.communicate(timeout=30)
    assert demo.returncode == 143
    assert not folder.exists()
