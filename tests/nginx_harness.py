"""Run a private real nginx in a test: its own prefix, its own ports, stopped at the end.

    with closed_port() as dead, running_nginx(tmp_path, conf, ports=[listen]) as ngx:
        ...  # ngx.master, ngx.workers(), ngx.error_log

The configuration text is written as it is, with ``{prefix}`` replaced by the prefix
directory; the harness adds ``pid`` (never /run/nginx.pid) and ``load_module`` lines for
the dynamic modules asked for. nginx runs in the foreground (``daemon off``) in its own
process group, started with ``-e`` so not even its startup log touches /var/log/nginx,
and is stopped with SIGQUIT, then SIGKILL of the group. Every address in a test
configuration must be a loopback port that is closed or the test's own.

Tests that need nginx are skipped, with the reason, when the binary or a module is missing
(Debian: ``apt-get install nginx-light libnginx-mod-stream``).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = [
    "NGINX_MODULES",
    "Nginx",
    "closed_port",
    "free_port",
    "full_backlog_port",
    "http_temp_paths",
    "nginx_binary",
    "running_nginx",
    "wait_quiet",
]


def _modules_path() -> Path:
    """Where the nginx on PATH loads dynamic modules from (``nginx -V``: its
    ``--modules-path``); Debian's folder when it says none or there is no nginx."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if nginx is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            built = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=10,
                                   check=False)
            for arg in (built.stderr + built.stdout).split():
                if arg.startswith("--modules-path="):
                    return Path(arg.partition("=")[2])
    return Path("/usr/lib/nginx/modules")


NGINX_MODULES = _modules_path()
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_STEP = 0.02


def nginx_binary() -> str:
    """The nginx binary, or a pytest skip saying how to get it."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/nginx/sbin/nginx") if os.access(p, os.X_OK)),
        None)
    if found is None:
        pytest.skip("no nginx binary (Debian: apt-get install nginx-light libnginx-mod-stream)")
    return found


def _module(name: str) -> Path:
    """``stream`` → ngx_stream_module.so; ``ndk_http`` → ndk_http_module.so."""
    for path in (NGINX_MODULES / f"ngx_{name}_module.so", NGINX_MODULES / f"{name}_module.so"):
        if path.exists():
            return path
    pytest.skip(f"nginx module {name} missing in {NGINX_MODULES} "
                f"(Debian: libnginx-mod-{name.replace('_', '-')})")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (source ports and bind(0) ports)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a server to listen on).

    Chosen below the kernel's ephemeral range, and never twice in one run: between this
    check and the server's bind, no outgoing connection's source port, no ``bind(0)`` of
    another test and no other caller can take it (a port from ``bind(0)`` could be)."""
    low = _ephemeral_low()
    candidates = [p for p in range(max(10000, low - 12000), low) if p not in _handed_out]
    random.shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no room below the range
        s.bind(("127.0.0.1", 0))
        found: int = s.getsockname()[1]
        return found


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback TCP port that refuses connections and stays ours: bound, not listening,
    so nothing else can take it while the test runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@dataclass
class Nginx:
    """A running private nginx."""

    process: subprocess.Popen[bytes]
    prefix: Path
    conf: Path

    @property
    def master(self) -> int:
        return self.process.pid

    @property
    def stderr(self) -> Path:
        return self.prefix / "logs" / "stderr.log"

    @property
    def error_log(self) -> Path:
        """The startup log given with ``-e`` (a config's own error_log may differ)."""
        return self.prefix / "logs" / "error.log"

    def workers(self) -> list[int]:
        """The master's children now (workers, cache manager), from /proc."""
        children = Path(f"/proc/{self.master}/task/{self.master}/children")
        with contextlib.suppress(OSError):
            return [int(pid) for pid in children.read_text().split()]
        found = []  # a kernel without CONFIG_PROC_CHILDREN: scan for the parent id
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.master:
                    found.append(int(stat.parent.name))
        return sorted(found)

    def pids(self) -> list[int]:
        return [self.master, *self.workers()]

    def reload(self) -> None:
        os.kill(self.master, signal.SIGHUP)


def _listening(port: int) -> bool:
    """Whether a TCP socket listens on ``port``, read from /proc/net/tcp so that no probe
    connection reaches nginx (a probe would fail upstream and add a line to its log)."""
    suffix = f":{port:04X}"
    rows: list[str] = []
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            rows += Path("/proc/net", name).read_text().splitlines()[1:]
    if not rows:  # no /proc: probe (harmless for most configurations)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", port)) == 0
    return any(cols[1].endswith(suffix) and cols[3] == "0A"  # 0A: LISTEN
               for cols in map(str.split, rows) if len(cols) > 3)


def _wait_started(ngx: Nginx, ports: Sequence[int]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if ngx.process.poll() is not None:
            logs = [p.read_text(errors="replace") for p in (ngx.stderr, ngx.error_log)
                    if p.exists()]
            pytest.fail(f"nginx exited with {ngx.process.returncode}:\n" + "\n".join(logs))
        if all(map(_listening, ports)) and (not ports or ngx.workers()):
            return
        time.sleep(_STEP)
    pytest.fail(f"nginx did not listen on {list(ports)} within {_START_TIMEOUT} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGQUIT)  # graceful: workers finish, logs flushed
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(_STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the group
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(_STOP_TIMEOUT)


@contextlib.contextmanager
def running_nginx(prefix: Path, config: str, *, ports: Sequence[int] = (),
                  modules: Sequence[str] = ()) -> Iterator[Nginx]:
    """Start nginx with ``config`` in ``prefix``; wait until it listens on every port
    of ``ports`` (127.0.0.1) and has workers; stop it on exit."""
    binary = nginx_binary()
    loads = "".join(f"load_module {_module(m)};\n" for m in modules)
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "logs").mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    text = config.replace("{prefix}", str(prefix))
    conf.write_text(f"{loads}pid {prefix}/nginx.pid;\n{text}")
    with (prefix / "logs" / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            [binary, "-p", f"{prefix}/", "-c", str(conf),
             "-e", str(prefix / "logs" / "error.log"), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, start_new_session=True)
    ngx = Nginx(process, prefix, conf)
    try:
        _wait_started(ngx, ports)
        yield ngx
    finally:
        _stop(process)


def http_temp_paths(prefix: Path) -> str:
    """``*_temp_path`` lines for an http block, so nginx keeps off /var/lib/nginx."""
    return "".join(f"{kind}_temp_path {prefix}/{kind}_temp;\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


@contextlib.contextmanager
def full_backlog_port() -> Iterator[int]:
    """A loopback port whose accept queue is full, so the kernel drops further SYNs and a
    connect() there times out (checked with a probe); skipped where the kernel refuses
    instead. (The same as test_lint_real_nginx's, shared here.)"""
    abort = Path("/proc/sys/net/ipv4/tcp_abort_on_overflow")
    if abort.exists() and abort.read_text().strip() != "0":
        pytest.skip("net.ipv4.tcp_abort_on_overflow is set: a full queue refuses, not drops")
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        for _ in range(3):  # never accepted: the first fills the queue
            filler = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.3)
            try:
                probe.connect(("127.0.0.1", port))
            except TimeoutError:
                pass
            else:
                pytest.skip("this kernel accepted a connection past a full backlog")
        yield port


def wait_quiet(path: Path, timeout: float = 15.0) -> int:
    """The log's size once it stopped growing (every request over), bounded in time."""
    deadline = time.monotonic() + timeout
    size = -1
    while time.monotonic() < deadline:
        now = path.stat().st_size if path.exists() else 0
        if now == size:
            return size
        size = now
        time.sleep(0.15)
    pytest.fail(f"{path} still grows {timeout} s after the client is done")
