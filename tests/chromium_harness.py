"""Headless Chromium for the tests that render a page: found on PATH, run in a session of
its own (on a timeout the browser and its helpers all stop), every host but 127.0.0.1
unreachable.

:func:`headless` runs it once (``--dump-dom``, ``--screenshot``); :func:`devtools` keeps
it running and drives a page over the DevTools protocol (a websocket on 127.0.0.1), for a
page that must change while the test watches."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

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


class Page:
    """One tab, driven over the DevTools protocol (flat sessions on the browser's socket)."""

    def __init__(self, ws: ClientConnection, session: str) -> None:
        self.ws = ws
        self.session = session
        self._ids = itertools.count(1)

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """A command's result (its error fails the test); events in between are skipped."""
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            answer = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if answer.get("id") == call_id:
                if "error" in answer:
                    pytest.fail(f"devtools {method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            pytest.fail(f"in the page: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, what: str, expression: str, timeout: float = 30.0) -> Any:
        """Evaluate ``expression`` until it is truthy (bounded); its value. (A DOM node
        comes back as ``{}``, which is falsy here: test for one with ``!!``.)"""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"the page did not show {what} within {timeout:g} s "
                            f"(last: {value!r})")
            time.sleep(0.1)

    def goto(self, url: str) -> None:
        """Load ``url`` and wait until it has loaded."""
        self.call("Page.navigate", url=url)
        self.wait(f"{url} loaded", f"location.href === {json.dumps(url)} &&"
                                   " document.readyState === 'complete'")

    def size(self, width: int, height: int, *, mobile: bool = False) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=mobile)

    def screenshot(self, path: Path) -> bytes:
        """The page as a PNG, written to ``path`` too."""
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(data)
        return data


@contextmanager
def devtools(profile: Path, *, timeout: float = 30.0) -> Iterator[Page]:
    """Headless Chromium with one blank tab to drive (:class:`Page`); stopped at the end.
    Its DevTools socket is on 127.0.0.1 (``--remote-debugging-port=0``: the port it
    picked is in the profile's DevToolsActivePort file)."""
    assert CHROMIUM is not None
    profile.mkdir(parents=True, exist_ok=True)
    log = (profile / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--remote-debugging-address=127.0.0.1", "about:blank"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("headless chromium did not open its DevTools socket: "
                            + (profile / "chromium.log").read_text(errors="replace")[-2000:])
            time.sleep(0.05)
        port, path = active.read_text().splitlines()[:2]
        with connect(f"ws://127.0.0.1:{port}{path}", max_size=None,
                     open_timeout=timeout) as ws:
            browser = Page(ws, "")
            target = browser.call("Target.createTarget", url="about:blank")["targetId"]
            session = browser.call("Target.attachToTarget", targetId=target,
                                   flatten=True)["sessionId"]
            page = Page(ws, session)
            page.call("Page.enable")
            page.call("Runtime.enable")
            yield page
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        log.close()
