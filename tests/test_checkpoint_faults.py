"""Faults inside a checkpoint: a write that fails between the positions and the engine
state, and a process killed there. The positions and the state they produced are one
transaction (serve/state.py): whatever happens inside it, the database holds the previous
checkpoint whole, and a restart reads every line exactly once.

The faults are injected into a real ``retrywatch run`` through a ``sitecustomize`` module
on its ``PYTHONPATH`` (nothing in the product knows of them): it wraps
``Transaction.save_engine``, which runs after the positions were written in the same
transaction, and on the checkpoints it is told raises an I/O error there or kills the
process with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import textwrap
import zlib
from pathlib import Path

import httpx
import pytest
from test_service import (
    Service,
    append,
    checkpointed,
    clean_env,
    poll,
    replay_alerts,
    running,
    service_args,
    storm_lines,
    wait_alerts,
    wait_caught_up,
)

from retrywatch.serve.state import StateStore
from retrywatch.sources.checkpoint import Position
from retrywatch.sources.fingerprint import Fingerprint

FP = Fingerprint(1, 2, 4, "0" * 32)

HOOK = textwrap.dedent('''
    import os, signal, sqlite3
    from retrywatch.serve import state

    _save = state.Transaction.save_engine
    _mode, _, _which = os.environ["RETRYWATCH_TEST_FAULT"].partition(":")
    _first, _, _last = _which.partition("-")
    _calls = [0]

    def save_engine(self, *args, **kwargs):
        _calls[0] += 1
        if int(_first) <= _calls[0] <= int(_last or _first):
            # the positions of this checkpoint are written, its engine state is not
            if _mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return _save(self, *args, **kwargs)

    state.Transaction.save_engine = save_engine
''')


def faulty_env(tmp_path: Path, fault: str) -> dict[str, str]:
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(HOOK)
    env = clean_env(RETRYWATCH_TEST_FAULT=fault)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hooks), env.get("PYTHONPATH")) if p)
    return env


def failed_checkpoints(svc: Service) -> float | None:
    """``retrywatch_checkpoint_failures_total``, or None once the service is gone."""
    try:
        return svc.metric("retrywatch_checkpoint_failures_total")
    except httpx.TransportError:
        # Killed inside a checkpoint: the connection may break before the process is
        # reaped. Gone within a few seconds, it was the kill; alive after them, a failure.
        try:
            svc.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise
        return None


def feed_in_batches(svc: Service, log: Path, lines: list[bytes], batches: int,
                    state: Path) -> None:
    """Append ``lines`` in batches, each after the service has read the one before and a
    checkpoint has been tried since (a success or a failure: the taken time or the failure
    count moves on); once the service is dead, the rest at once."""
    size = -(-len(lines) // batches)
    for i in range(0, len(lines), size):
        before = checkpointed(state)
        failures = failed_checkpoints(svc)
        if failures is None:
            append(log, lines[i:])
            return
        append(log, lines[i:i + size])

        def tried(before: object = before, failures: float = failures) -> bool:
            now = failed_checkpoints(svc)
            return now is None or now > failures or checkpointed(state) != before

        poll("a checkpoint tried after the batch", tried)


def assert_restart_reads_every_line_once(tmp_path: Path, log: Path, state: Path,
                                         lines: list[bytes]) -> None:
    expected = replay_alerts(log)
    assert expected
    with running(service_args(log, state, "end"), tmp_path) as svc:
        src = wait_caught_up(svc, log, len(lines))
        wait_alerts(svc, expected)
        # the lines counted before the crash and after it: each line once
        assert svc.lines_metric() == {src["name"]: len(lines)}
        assert src["lines_unparsed"] == 0


def test_killed_inside_a_checkpoint(tmp_path: Path) -> None:
    """SIGKILL after the positions of the third checkpoint were written, before its engine
    state: the restart starts from the second one, whole."""
    lines = storm_lines()
    log, state = tmp_path / "error.log", tmp_path / "state"
    third = len(lines) // 3
    append(log, lines[:third])
    svc = Service(service_args(log, state, "beginning"), tmp_path,
                  env=faulty_env(tmp_path, "kill:3"))
    try:
        wait_caught_up(svc, log, third)
        feed_in_batches(svc, log, lines[third:2 * third], 6, state)
        poll("the service killed inside its third checkpoint",
             lambda: svc.process.poll() is not None)
        assert svc.process.returncode == -signal.SIGKILL
    finally:
        svc.stop()
    saved = checkpointed(state)
    assert saved is not None and saved[1][str(log)] < log.stat().st_size
    append(log, lines[2 * third:])
    assert_restart_reads_every_line_once(tmp_path, log, state, lines)


def test_checkpoints_failing_between_their_writes_then_killed(tmp_path: Path) -> None:
    """Every checkpoint after the first fails after writing its positions (rolled back);
    the service goes on reading; it is killed after three failures, so the database holds
    the first checkpoint: the restart reads everything after it once."""
    lines = storm_lines()
    log, state = tmp_path / "error.log", tmp_path / "state"
    quarter = len(lines) // 4
    append(log, lines[:quarter])
    svc = Service(service_args(log, state, "beginning"), tmp_path,
                  env=faulty_env(tmp_path, "fail:2-1000000"))
    try:
        wait_caught_up(svc, log, quarter)
        first = poll("the first checkpoint", lambda: checkpointed(state))
        feed_in_batches(svc, log, lines[quarter:2 * quarter], 4, state)
        poll("three failed checkpoints", lambda: (failed_checkpoints(svc) or 0) >= 3)
        svc.kill9()
    finally:
        svc.stop()
    # nothing of the failed ones stuck: the first checkpoint, positions and state alike
    assert checkpointed(state) is not None
    saved = checkpointed(state)
    assert saved is not None and saved[1] == first[1]
    append(log, lines[2 * quarter:])
    assert_restart_reads_every_line_once(tmp_path, log, state, lines)


@pytest.mark.parametrize("where", ["engine", "delivery", "commit"])
def test_a_failed_checkpoint_leaves_the_last_one_whole(tmp_path: Path, where: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, each write of a checkpoint failing in turn: the store still holds the
    previous checkpoint's positions and engine state, and the next checkpoint works."""
    from retrywatch.serve import state as state_module

    settings = {"window": 10}
    with StateStore(tmp_path / "state") as store:
        store.save_state([Position("/l", FP, 100)], b"core-1", b"[]", settings,
                         b"delivery-1", taken=1.0)

        def fail(*_: object) -> None:
            raise sqlite3.OperationalError("disk I/O error (injected)")

        if where == "engine":
            monkeypatch.setattr(state_module.Transaction, "save_engine", fail)
        elif where == "delivery":
            monkeypatch.setattr(state_module.Transaction, "save_delivery", fail)
        else:
            real = store._conn

            class FailingCommit:
                def __getattr__(self, name: str) -> object:
                    return getattr(real, name)

                def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
                    if sql == "COMMIT":
                        fail()
                    return real.execute(sql, *args)

                def executemany(self, sql: str, *args: object) -> sqlite3.Cursor:
                    return real.executemany(sql, *args)

            monkeypatch.setattr(store, "_conn", FailingCommit())
        with pytest.raises(sqlite3.OperationalError):
            store.save_state([Position("/l", FP, 200)], b"core-2", b"[]", settings,
                             b"delivery-2", taken=2.0)
        monkeypatch.undo()
        saved = store.load_state()
        assert {p: pos.offset for p, pos in saved.positions.items()} == {"/l": 100}
        assert saved.engine is not None and saved.engine.core == b"core-1"
        assert saved.delivery == b"delivery-1"
        # and the store still works
        store.save_state([Position("/l", FP, 300)], b"core-3", b"[]", settings,
                         b"delivery-3", taken=3.0)
        assert store.load_state().positions["/l"].offset == 300
    raw = sqlite3.connect(tmp_path / "state" / "retrywatch.sqlite3")
    try:
        core = raw.execute("SELECT core FROM engine_state").fetchone()[0]
    finally:
        raw.close()
    assert zlib.decompress(core) == b"core-3"
