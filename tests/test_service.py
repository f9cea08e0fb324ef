"""``retrywatch run`` as a real process: restart and resume after kill -9, stdin, Kubernetes
CRI files, and ``retrywatch config``. Everything on 127.0.0.1; every wait is a bounded
poll of the REST API, the metrics or the state directory."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from nginx_harness import free_port

ROOT = Path(__file__).parent.parent
STORM = ROOT / "sample_logs" / "scenario-http-lua-storm.error.log.gz"
WAIT = 30.0  # seconds: the bound of every wait below
STEP = 0.05
STOP_TIMEOUT = 10.0
STATE_FILE = "retrywatch.sqlite3"
#: What an alert must agree on, live against replay of the same file (ids included: the
#: same in every process). A source read as stdin or through CRI files has another name
#: than the file replayed, so another id: those compare FIELDS without it.
FIELDS = ("id", "cid", "failures", "first_seen", "last_seen", "state")
OTHER_SOURCE = FIELDS[1:]

T = TypeVar("T")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any RETRYWATCH_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYWATCH_")}
    env.update(extra)
    return env


def poll(what: str, probe: Callable[[], T | None], timeout: float = WAIT) -> T:
    """``probe()`` until it returns something other than None/False, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(STEP)


class Service:
    """One ``retrywatch run`` subprocess listening on a free 127.0.0.1 port."""

    def __init__(self, args: list[str], workdir: Path, *, stdin: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.output = workdir / f"retrywatch-{self.port}.out"
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "retrywatch", "run", *args,
                 "--listen", f"127.0.0.1:{self.port}"],
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env or clean_env())
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5.0)
        poll("the service to answer /healthz", self._healthy)

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"retrywatch run exited with {self.process.returncode}:\n"
                        + self.output.read_text(errors="replace"))
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response.json() if "json" in response.headers["content-type"] else response.text

    def alerts(self, **params: Any) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/alerts", limit=1000, **params)["alerts"])

    def source(self, kind: str) -> dict[str, Any] | None:
        found = [s for s in self.get("/api/v1/sources")["sources"] if s["kind"] == kind]
        assert len(found) <= 1, found
        return found[0] if found else None

    def lines_metric(self) -> dict[str, float]:
        """``retrywatch_source_lines_read_total`` by source."""
        text = self.get("/metrics")
        return {m.group(1): float(m.group(2)) for m in re.finditer(
            r'^retrywatch_source_lines_read_total\{source="([^"]*)"\} (\S+)$', text, re.M)}

    def metric(self, name: str) -> float:
        """The sum of every series of ``name`` on /metrics."""
        text = self.get("/metrics")
        return sum(float(m.group(1)) for m in re.finditer(
            rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)
        self.client.close()

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()


@contextlib.contextmanager
def running(args: list[str], workdir: Path, **kwargs: Any) -> Iterator[Service]:
    service = Service(args, workdir, **kwargs)
    try:
        yield service
    finally:
        service.stop()


def storm_lines() -> list[bytes]:
    return gzip.decompress(STORM.read_bytes()).splitlines(keepends=True)


def replay_alerts(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "retrywatch", "replay", "--format", "json", "--timezone", "UTC",
         str(path)], capture_output=True, check=True, cwd=ROOT, env=clean_env(), timeout=60)
    return list(json.loads(out.stdout)["alerts"])


def key(alerts: list[dict[str, Any]],
        fields: tuple[str, ...] = FIELDS) -> list[tuple[Any, ...]]:
    return sorted(tuple(a[f] for f in fields) for a in alerts)


def wait_caught_up(svc: Service, path: Path, lines: int) -> dict[str, Any]:
    """The file source at the file's end with ``lines`` lines read."""
    size = path.stat().st_size

    def probe() -> dict[str, Any] | None:
        src = svc.source("file")
        return src if src is not None and src["position"] == size and src["caught_up"] else None

    src = poll(f"{path} read to its end", probe)
    # The lines are counted as they are fed, before the position moves on.
    assert src["lines_read"] == lines, src
    return src


def wait_alerts(svc: Service, expected: list[dict[str, Any]],
                fields: tuple[str, ...] = FIELDS) -> list[dict[str, Any]]:
    """Poll until the live alerts equal ``expected`` on FIELDS (the last held line is
    released after the idle flush); on timeout, the comparison shows the difference."""
    want = key(expected, fields)
    live: list[dict[str, Any]] = []

    def probe() -> bool:
        nonlocal live
        live = svc.alerts()
        return key(live, fields) == want

    with contextlib.suppress(pytest.fail.Exception):
        poll("the live alerts to equal replay's", probe, timeout=10.0)
    assert key(live, fields) == want
    return live


def checkpointed(state_dir: Path) -> tuple[float, dict[str, int]] | None:
    """The last checkpoint in the state directory: when its engine snapshot was taken,
    and the file positions saved with it (None: no checkpoint yet)."""
    db = state_dir / STATE_FILE
    if not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
        try:
            row = conn.execute("SELECT taken FROM engine_state WHERE id = 1").fetchone()
            positions = dict(conn.execute("SELECT path, offset FROM file_positions"))
        except sqlite3.OperationalError:  # the tables are created with the first checkpoint
            return None
    return (float(row[0]), positions) if row else None


def wait_checkpoint(state_dir: Path, log: Path, after: float) -> None:
    """A checkpoint taken after ``after`` (wall clock) at the end of ``log`` (the service
    checkpoints every 2 s)."""
    size = log.stat().st_size

    def probe() -> bool:
        found = checkpointed(state_dir)
        return found is not None and found[0] > after and found[1].get(str(log)) == size

    poll(f"a checkpoint at the end of {log}", probe)


def append(path: Path, lines: list[bytes]) -> None:
    with path.open("ab") as f:
        f.write(b"".join(lines))


# -- restart and resume ---------------------------------------------------------------------
def service_args(log: Path, state: Path, start: str) -> list[str]:
    return ["--log", str(log), "--from", start, "--timezone", "UTC", "--state-dir", str(state)]


def test_restart_after_kill9_resumes_exactly(tmp_path: Path) -> None:
    lines = storm_lines()
    half = len(lines) // 2
    log = tmp_path / "error.log"
    state = tmp_path / "state"
    append(log, lines[:half])

    svc = Service(service_args(log, state, "beginning"), tmp_path)
    try:
        wait_caught_up(svc, log, half)
        wait_checkpoint(state, log, after=time.time())
        before = {a["id"] for a in svc.alerts()}
        assert before, "the first half already holds runaway connections"
        svc.kill9()
    finally:
        svc.stop()

    append(log, lines[half:])
    expected = replay_alerts(log)
    assert len(expected) == 5
    # --from end: a restart that ignored its checkpoint would read nothing.
    with running(service_args(log, state, "end"), tmp_path) as svc:
        src = wait_caught_up(svc, log, len(lines))
        live = wait_alerts(svc, expected)
        assert svc.lines_metric() == {src["name"]: len(lines)}
        assert src["lines_unparsed"] == 0
    assert len({a["id"] for a in live}) == len(live)  # no duplicate alert for one key
    # the alerts of the first life kept their ids across the kill (and equal replay's)
    assert before <= {a["id"] for a in live}


def test_kill9_while_the_file_is_appended(tmp_path: Path) -> None:
    """The second half in batches; the service is killed after each one, either at once
    (before or while it reads the batch) or once it has read some of it (before the next
    checkpoint, most likely). Every life of the service first writes a checkpoint of its
    own, so each restart resumes from a checkpoint that a restarted service wrote."""
    lines = storm_lines()
    half = len(lines) // 2
    log = tmp_path / "error.log"
    state = tmp_path / "state"
    append(log, lines[:half])
    rest = lines[half:]
    n_batches = 4
    size = -(-len(rest) // n_batches)
    batches = [rest[i:i + size] for i in range(0, len(rest), size)]
    assert len(batches) == n_batches

    svc = Service(service_args(log, state, "beginning"), tmp_path)
    try:
        written = half
        for i, batch in enumerate(batches):
            before = wait_caught_up(svc, log, written)["lines_read"]
            wait_checkpoint(state, log, after=time.time())
            append(log, batch)
            written += len(batch)
            if i % 2:

                def progressed(svc: Service = svc, start: int = before) -> bool:
                    return bool((svc.source("file") or {}).get("lines_read", 0) > start)

                poll("some of the batch to be read", progressed)
            svc.kill9()
            svc = Service(service_args(log, state, "end"), tmp_path)
        assert written == len(lines)
        expected = replay_alerts(log)
        src = wait_caught_up(svc, log, written)
        wait_alerts(svc, expected)
        assert svc.lines_metric() == {src["name"]: len(lines)}
    finally:
        svc.stop()


# -- stdin ------------------------------------------------------------------------------------
def test_stdin_pipe(tmp_path: Path) -> None:
    lines = storm_lines()
    plain = tmp_path / "storm.log"
    plain.write_bytes(b"".join(lines))
    expected = replay_alerts(plain)
    args = ["--log", "-", "--timezone", "UTC"]
    with running(args, tmp_path, stdin=subprocess.PIPE) as svc:
        pipe = svc.process.stdin
        assert pipe is not None
        errors: list[BaseException] = []

        def write() -> None:
            try:
                pipe.write(b"".join(lines))
                pipe.flush()
            except OSError as exc:  # the service died: reported by the checks below
                errors.append(exc)

        writer = threading.Thread(target=write, name="stdin-writer", daemon=True)
        writer.start()
        src = poll("stdin read to its end", lambda: (
            (s := svc.source("stdin")) is not None and s["lines_read"] == len(lines) and s))
        writer.join(WAIT)
        assert not writer.is_alive() and not errors
        live = wait_alerts(svc, expected, OTHER_SOURCE)  # the pipe is still open
        assert {a["source"] for a in live} == {"stdin"}
        assert any(a["state"] == "firing" for a in live)
        assert src["lines_unparsed"] == 0
        assert svc.lines_metric() == {"stdin": len(lines)}


# -- Kubernetes CRI files ----------------------------------------------------------------------
def cri(lines: list[bytes]) -> bytes:
    """The lines as the kubelet writes them; every 97th line split in P and F pieces."""
    out = []
    for i, line in enumerate(lines):
        body = line.rstrip(b"\n")
        stamp = b"2026-11-25T17:33:43.%09dZ stderr " % (i + 1)
        if i % 97 == 0 and len(body) > 20:
            cut = len(body) // 3
            out += [stamp + b"P " + body[:cut] + b"\n", stamp + b"P " + body[cut:2 * cut]
                    + b"\n", stamp + b"F " + body[2 * cut:] + b"\n"]
        else:
            out.append(stamp + b"F " + body + b"\n")
    return b"".join(out)


def test_kubernetes_cri_files(tmp_path: Path) -> None:
    lines = storm_lines()
    plain = tmp_path / "storm.log"
    plain.write_bytes(b"".join(lines))
    expected = replay_alerts(plain)
    container = tmp_path / "pods" / "ingress-nginx_ctrl-abc_0123-4567" / "controller"
    container.mkdir(parents=True)
    log = container / "0.log"
    log.write_bytes(cri(lines))
    args = ["--log", str(tmp_path / "pods" / "*" / "*" / "*.log"), "--from", "beginning",
            "--timezone", "UTC"]
    with running(args, tmp_path) as svc:
        src = poll("the CRI file read to its end", lambda: (
            (s := svc.source("file")) is not None and s["position"] == log.stat().st_size
            and s["caught_up"] and s))
        live = wait_alerts(svc, expected, OTHER_SOURCE)
        sources = {a["source"] for a in live}
        assert src["lines_unparsed"] == 0
    # The issue: "the source is named namespace/pod/container from the path".
    assert sources == {"ingress-nginx/ctrl-abc/controller"}, sources
    assert src["name"] == "ingress-nginx/ctrl-abc/controller"


# -- retrywatch config -----------------------------------------------------------------------
def config(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "retrywatch", "config", *args],
                          capture_output=True, text=True, cwd=ROOT, env=clean_env(**env),
                          timeout=60, check=False)


def test_config_masks_secrets() -> None:
    result = config(RETRYWATCH_API_TOKEN="x-very-secret-token")
    assert result.returncode == 0, result.stderr
    assert "x-very-secret-token" not in result.stdout + result.stderr
    assert json.loads(result.stdout)["api_token"] == "**********"
    assert json.loads(config().stdout)["api_token"] is None


def test_config_file_environment_and_flags(tmp_path: Path) -> None:
    yaml_file = tmp_path / "retrywatch.yaml"
    yaml_file.write_text("threshold: 7\nwindow: 30\nlog: [/var/log/nginx/error.log]\n"
                         "listen: 127.0.0.1:18734\napi_token: from-the-file\n")
    result = config("--config", str(yaml_file), "--window", "45",
                    RETRYWATCH_RESOLVE_AFTER="9", RETRYWATCH_THRESHOLD="8")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["threshold"] == 8  # environment over the file
    assert data["window"] == 45  # flag over the file
    assert data["resolve_after"] == 9
    assert data["log"] == ["/var/log/nginx/error.log"]
    assert data["listen"] == "127.0.0.1:18734"
    assert data["api_token"] == "**********"
    assert "from-the-file" not in result.stdout

    toml_file = tmp_path / "retrywatch.toml"
    toml_file.write_text('timezone = "UTC"\nmin_repeat = 3\n')
    result = config(RETRYWATCH_CONFIG=str(toml_file), RETRYWATCH_LOG='["-"]')
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["timezone"], data["min_repeat"], data["log"]) == ("UTC", 3, ["-"])


@pytest.mark.parametrize(("args", "env", "file", "message"), [
    (["--listen", "nowhere"], {}, None, "listen must be HOST:PORT"),
    (["--listen", "127.0.0.1:99999"], {}, None, "listen must be HOST:PORT"),
    (["--timezone", "Mars/Olympus"], {}, None, "Mars/Olympus"),
    ([], {"RETRYWATCH_THRESHOLD": "0"}, None, "threshold"),
    ([], {"RETRYWATCH_WINDOW": "soon"}, None, "window"),
    ([], {"RETRYWATCH_LOG": "not json"}, None, "log"),
    ([], {}, ("yaml", "thresold: 5\n"), "thresold"),
    ([], {}, ("yaml", "threshold: [1, 2\n"), "retrywatch.yaml"),  # not YAML
    ([], {}, ("toml", "threshold = \n"), "line 1"),  # not TOML
    ([], {}, ("yaml", "syslog: [http://127.0.0.1:5514]\n"), "udp://HOST:PORT"),
    (["--config", "/nonexistent/retrywatch.yaml"], {}, None, "does not exist"),
], ids=["listen-no-port", "listen-port-range", "timezone", "env-threshold-0", "env-window-text",
        "env-log-not-json", "yaml-unknown-key", "yaml-malformed", "toml-malformed",
        "yaml-syslog-scheme", "config-missing"])
def test_config_bad_values_exit_clearly(tmp_path: Path, args: list[str], env: dict[str, str],
                                        file: tuple[str, str] | None, message: str) -> None:
    if file is not None:
        path = tmp_path / f"retrywatch.{file[0]}"
        path.write_text(file[1])
        args = [*args, "--config", str(path)]
    result = config(*args, **env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    assert result.stdout == ""


# -- sources never block each other ---------------------------------------------------------
def sources_by_name(svc: Service) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in svc.get("/api/v1/sources")["sources"]}


def test_a_fifo_under_the_glob_blocks_no_source(tmp_path: Path) -> None:
    """A FIFO appears under the followed glob: it is skipped (said in /api/v1/sources and
    /readyz), every other file keeps being read, and a regular file under its name later
    is read. (Today's follower blocked in open() forever: every source stopped.)"""
    logs = tmp_path / "logs"
    logs.mkdir()
    a, fifo = logs / "a.log", logs / "b.log"
    a.write_bytes(b"")
    lines = storm_lines()[:3000]
    args = ["--log", str(logs / "*.log"), "--from", "beginning", "--timezone", "UTC"]
    try:
        with running(args, tmp_path) as svc:
            append(a, lines[:1000])
            poll("a.log read", lambda: sources_by_name(svc).get(str(a), {}).get("lines_read")
                 == 1000)
            os.mkfifo(fifo)
            append(a, lines[1000:2000])

            def fifo_skipped_and_a_read() -> bool:
                found = sources_by_name(svc)
                return (found.get(str(a), {}).get("lines_read") == 2000
                        and found.get(str(fifo), {}).get("last_error") is not None)

            poll("a.log read past the FIFO", fifo_skipped_and_a_read, timeout=15.0)
            skipped = sources_by_name(svc)[str(fifo)]
            assert skipped["last_error"] == "skipped: a FIFO, not a regular file", skipped
            assert (skipped["open"], skipped["lines_read"]) == (False, 0)
            ready = svc.client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert f"{fifo}: skipped (a FIFO, not a regular file)" in ready.json()["detail"]
            fifo.unlink()
            fifo.write_bytes(b"".join(lines[2000:2100]))  # a regular file by that name now
            append(a, lines[2100:])
            poll("both files read", lambda: {n: s["lines_read"] for n, s in
                                             sources_by_name(svc).items()}
                 == {str(a): 2900, str(fifo): 100}, timeout=15.0)
            assert sources_by_name(svc)[str(fifo)]["last_error"] is None
            assert svc.client.get("/readyz").status_code == 200
    finally:
        with contextlib.suppress(OSError):  # a follower blocked in open() (before the fix)
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
