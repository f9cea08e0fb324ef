"""TCP syslog under pressure (issue 10): idle clients cannot lock the others out (they
time out; past ``max_clients`` a client is refused and counted), over-long frames are
counted, and running out of descriptors backs ``accept`` off instead of spinning, with
log lines rate-limited. In-process listeners, a listener in a child process whose
descriptor limit runs out for real, and a real ``retrywatch run`` under ``ulimit -n
1024`` with 1,100 idle clients; all on loopback, every wait bounded."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bounds_harness import poll, raise_nofile, running
from nginx_harness import free_port
from service_harness import FakeClock

from retrywatch.sources.syslog import FD_RESERVE, LogThrottle, Record, SyslogListener

WAIT = 20.0
LINE = b"2026/11/25 17:33:44 [error] 1#1: *7 connect() failed (111: Connection refused)"


def collect(listener: SyslogListener, n: int, timeout: float = WAIT) -> list[Record]:
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(records) < n and (left := deadline - time.monotonic()) > 0:
        records += listener.poll(min(left, 0.2))
    return records


@contextlib.contextmanager
def clients(port: int, n: int) -> Iterator[list[socket.socket]]:
    """``n`` TCP clients connected to ``port`` that send nothing."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def closed_by_peer(s: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the server closed this connection (EOF or reset) within ``timeout``."""
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_clients_time_out_and_the_cap_refuses_and_counts() -> None:
    """1,100 idle clients against a cap of 1,024. The listener's clock is ours: nobody
    times out until it is moved on, however slowly the machine connects them."""
    raise_nofile(4096)
    now = [0.0]
    with SyslogListener("tcp://127.0.0.1:0", max_clients=1024, idle_timeout=3.0,
                        clock=lambda: now[0]) as listener, \
            clients(listener.port, 1100) as idle:
        stats = listener.stats
        poll("1,024 accepted, 76 refused",
             lambda: (stats.clients == 1024 and stats.refused == 76) or None, timeout=WAIT)
        assert stats.connections == 1024
        # The refused ones are told at once (closed), not left hanging.
        assert sum(closed_by_peer(s, 0.5) for s in idle[1024:]) == 76
        # While the idle ones hold every place, one more is refused and counted...
        with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as late:
            assert closed_by_peer(late)
        assert stats.refused == 77
        assert not any(closed_by_peer(s, 0.001) for s in idle[:10])
        # ...until they time out: then a newcomer gets in, and its records arrive.
        now[0] = 3.0
        poll("the idle clients closed", lambda: stats.timed_out == 1024 and stats.clients == 0,
             timeout=WAIT)
        assert all(closed_by_peer(s, 1.0) for s in idle[:1024])
        with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as fresh:
            fresh.sendall(LINE + b"\n")
            records = collect(listener, 1)
            summary = listener.summary()
        assert [r.data for r in records] == [LINE]
        assert summary["refused"] == 77 and summary["timed_out"] == 1024
        assert summary["max_clients"] == 1024 and summary["clients"] == 1


class CountingClock(FakeClock):
    """The listener's clock, moved by the test; ``reads`` counts the listener's looks at
    it, so a test knows its loop has run with the time set (:meth:`settle`)."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now

    def settle(self) -> None:
        """Wait until the listener's loop has looked at the time three more times: one
        whole turn (select's timeout, the housekeeping) ran with the time set now."""
        seen = self.reads
        poll("the listener's loop to turn", lambda: self.reads >= seen + 3, timeout=WAIT)


def test_a_client_that_talks_is_not_timed_out() -> None:
    """Idle time on the listener's clock, moved by the test: a client that sends a line
    every half timeout is never closed, a silent one is closed once the timeout passed."""
    clock = CountingClock()
    with SyslogListener("tcp://127.0.0.1:0", idle_timeout=1.0, clock=clock) as listener, \
            socket.create_connection(("127.0.0.1", listener.port), timeout=5) as talker, \
            socket.create_connection(("127.0.0.1", listener.port), timeout=5) as silent:
        stats = listener.stats
        poll("both accepted", lambda: stats.connections == 2, timeout=WAIT)
        records: list[Record] = []
        for step in range(1, 7):  # 3 s, three times the timeout
            clock.now = step * 0.5
            talker.sendall(LINE + b"\n")
            records += collect(listener, 1)  # read (its idle time starts again now)
            clock.settle()
            assert stats.timed_out == (0 if step < 2 else 1), (step, stats.timed_out)
        assert closed_by_peer(silent, 1.0)
        assert stats.timed_out == 1 and stats.clients == 1
        # A line without LF of a client timed out is still delivered, as at close.
        talker.sendall(b"no newline yet")
        poll("the piece read", lambda: stats.bytes == 6 * (len(LINE) + 1) + 14, timeout=WAIT)
        clock.now = 3.999
        clock.settle()
        assert stats.timed_out == 1 and stats.clients == 1  # not yet: 1 ms short
        clock.now = 4.0
        records += collect(listener, 1)
        assert [r.data for r in records] == [LINE] * 6 + [b"no newline yet"]
        assert closed_by_peer(talker, 3.0)
        assert stats.timed_out == 2


def test_over_long_frames_are_skipped_and_counted() -> None:
    with SyslogListener("tcp://127.0.0.1:0", max_record=600) as listener, \
            socket.create_connection(("127.0.0.1", listener.port), timeout=5) as s:
        s.sendall(b"x" * 700 + b"\n" + b"1000 " + b"y" * 1000 + b"5 short" + LINE + b"\n")
        records = collect(listener, 2)
        assert [r.data for r in records] == [b"short", LINE]
        assert listener.stats.too_long == 2
        assert listener.summary()["frames_too_long"] == 2


class _Exhausted(SyslogListener):
    """A listener whose accept() fails with EMFILE while ``exhausted`` is set."""

    exhausted = True
    calls = 0

    def _accept_one(self) -> tuple[socket.socket, object]:
        self.calls += 1
        if self.exhausted:
            raise OSError(errno.EMFILE, "Too many open files")
        return super()._accept_one()


def test_out_of_descriptors_backs_accept_off(caplog: pytest.LogCaptureFixture) -> None:
    """EMFILE from accept(): not tried again until a pause has passed on the listener's
    clock (moved by the test), the pause doubling from 50 ms to at most 1 s; one log line
    for them all; once descriptors are back, the client waiting in the backlog gets in.
    (That no processor is spun meanwhile is measured against a real descriptor limit below.)"""
    caplog.set_level(logging.WARNING, "retrywatch")
    clock = CountingClock()
    with _Exhausted("tcp://127.0.0.1:0", clock=clock) as listener, \
            socket.create_connection(("127.0.0.1", listener.port), timeout=5) as waiting:
        poll("the first accept to fail", lambda: listener.calls == 1, timeout=WAIT)
        assert listener.summary()["accepting"] is False
        at = 0.0
        for tries, pause in enumerate((0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0), start=1):
            clock.now = at + pause - 0.001
            clock.settle()
            assert listener.calls == tries, f"tried again before its {pause} s pause ended"
            at = clock.now = at + pause
            poll(f"try {tries + 1}", lambda n=tries + 1: listener.calls == n, timeout=WAIT)
        assert listener.stats.accept_errors == listener.calls == 8
        logged = [r.getMessage() for r in caplog.records if "cannot accept" in r.getMessage()]
        assert len(logged) == 1  # one line per LOG_EVERY seconds, however many failures
        assert "Too many open files" in logged[0] and "not accepting for 0.05 s" in logged[0]
        # Descriptors back: the client waiting in the backlog gets in after the pause.
        listener.exhausted = False
        clock.now = at + 1.0
        poll("the waiting client accepted", lambda: listener.stats.clients == 1, timeout=WAIT)
        assert listener.summary()["accepting"] is True
        waiting.sendall(LINE + b"\n")
        assert [r.data for r in collect(listener, 1)] == [LINE]


def test_log_throttle_says_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "retrywatch")
    now = [0.0]
    throttle = LogThrottle(10.0, clock=lambda: now[0])
    for i in range(100):
        now[0] = i * 0.25  # 25 s of a failure every 250 ms
        throttle(logging.WARNING, "trouble %d", i)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["trouble 0", "trouble 40 (and 39 more like it in the last 10 s)",
                        "trouble 80 (and 39 more like it in the last 10 s)"]


# -- a real descriptor limit --------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import json, sys, time, logging
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    from retrywatch.sources.syslog import SyslogListener
    listener = SyslogListener("tcp://127.0.0.1:0", idle_timeout=3.0)
    listener.start()
    listener.max_clients = 100000  # no cap: let the descriptors run out
    print(listener.port, flush=True)
    for line in sys.stdin:  # one line asked: the figures now
        print(json.dumps(listener.summary()), flush=True)
""")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_real_descriptor_limit_backs_accept_off(tmp_path: Path) -> None:
    """A listener without a client cap in a process limited to 64 descriptors, 150
    clients: accept() really fails with EMFILE; the process does not
    spin, logs a line or two, and takes the waiting clients once the idle ones time out."""
    raise_nofile(1024)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    err = tmp_path / "child.err"
    with err.open("wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=stderr, text=True, preexec_fn=limit)  # noqa: PLW1509 (only setrlimit)
    assert child.stdin is not None and child.stdout is not None
    try:
        port = int(child.stdout.readline())

        def figures() -> dict[str, object]:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("\n")
            child.stdin.flush()
            return dict(json.loads(child.stdout.readline()))

        with clients(port, 150) as socks:
            poll("accept to fail", lambda: figures()["accept_errors"] or None, timeout=WAIT)
            held = figures()["clients"]
            assert isinstance(held, int) and 30 < held < 64
            before = _cpu_seconds(child.pid)
            time.sleep(2.0)
            assert _cpu_seconds(child.pid) - before < 0.3  # no busy loop on EMFILE
            # The idle ones time out (3 s), and the ones waiting in the backlog get in.
            poll("the waiting clients accepted", lambda: ((f := figures())["timed_out"] >= held
                 and f["connections"] > held) or None, timeout=WAIT)
            late = socks[-1]
            late.sendall(LINE + b"\n")
            poll("the last client's record", lambda: figures()["records"] == 1, timeout=WAIT)
    finally:
        child.stdin.close()
        child.wait(10)
        child.stdout.close()
    lines = err.read_text().splitlines()
    assert 1 <= sum("cannot accept" in line for line in lines) <= 2, lines
    assert len(lines) <= 5, lines


# -- retrywatch run under ulimit -n 1024 ------------------------------------------------

def test_1100_idle_clients_against_run_under_ulimit_1024(tmp_path: Path) -> None:
    """The issue's row: 1,100 idle TCP syslog clients, `retrywatch run` limited to 1,024
    descriptors. Its client cap is lowered to leave room for HTTP clients and the rest
    (and says so), the others are refused and counted; no processor spin; /healthz
    answers throughout; the log holds a few lines; once the idle ones time out, a new
    client gets in."""
    raise_nofile(4096)
    port = free_port()
    cap = (1024 - FD_RESERVE) // 2  # half of what is left is for HTTP clients
    # The idle timeout must outlast connecting 1,100 clients and the checks below on a
    # slow machine (at 8 s a CI run saw 241 of the 448 time out before the gauge was read).
    idle_timeout = 25.0
    opened = time.monotonic()  # before the service and the first client: errs long
    with running(["--syslog", f"tcp://127.0.0.1:{port}", "--syslog-idle-timeout",
                  str(idle_timeout), "--timezone", "UTC"], tmp_path, nofile=1024) as svc, \
            clients(port, 1100) as idle:
        poll("the cap reached and the rest refused", lambda: (
            s := svc.source("syslog")["syslog"]) and s["clients"] == cap
             and s["refused"] == 1100 - cap
             and svc.metric("retrywatch_syslog_clients") == cap, timeout=WAIT)
        before = svc.cpu_seconds()
        started = time.monotonic()
        for _ in range(10):
            t = time.monotonic()
            assert svc.client.get("/healthz").status_code == 200
            assert time.monotonic() - t < 1.0
            time.sleep(0.2)
        spent = svc.cpu_seconds() - before
        assert spent < 0.5 * (time.monotonic() - started), f"{spent:.2f} s of processor"
        assert svc.metric("retrywatch_syslog_clients_refused_total") == 1100 - cap
        assert svc.metric("retrywatch_syslog_clients") == cap
        # One more while they hold every place: refused, counted, told at once.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as late:
            assert closed_by_peer(late)
        elapsed = time.monotonic() - opened
        assert elapsed < idle_timeout, f"the checks took {elapsed:.1f} s: the timeout came first"
        # The idle ones time out; then a new client's line is read.
        poll("the idle clients closed", lambda: (s := svc.source("syslog")["syslog"])
             and s["timed_out"] == cap and s["clients"] == 0, timeout=idle_timeout + WAIT)
        assert all(closed_by_peer(s, 1.0) for s in idle[:cap])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as fresh:
            fresh.sendall(LINE + b"\n")
            poll("the new client's line read", lambda: svc.source("syslog")["lines_read"] == 1)
        figures = svc.source("syslog")["syslog"]
        assert figures["refused"] == 1100 - cap + 1
        assert figures["max_clients"] == cap
        assert figures["accept_errors"] == 0
    log = svc.log_text()
    # Said once each, not once per client: the limit, the first refusal (and the startup
    # and stop lines, INFO).
    warned = [line for line in log.splitlines() if " INFO " not in line]
    assert len(log) < 4000 and len(warned) <= 3, log
    assert f"at most {cap} TCP clients at once, not 1024" in log
