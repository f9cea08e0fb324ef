"""The state store (retrywatch/serve/state.py): its versioned schema and migrations (a
test per version), nothing executable, and what ``retrywatch run`` does with a state it
cannot use or that lost something: a database cut in half, garbage or a directory in its
place (moved aside, said, counted, started afresh), a write-ahead log lost after kill -9
(said, resumed), kill -9 in the first seconds (the start kept), another detector
setting or time zone (re-read or discarded, said), a state directory that cannot be
written (one line, exit 2), and checkpoints that fail while running (counted, shown,
one line, not ready).

Real processes on 127.0.0.1 where the issue used one; every wait a bounded poll."""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from run_harness import (
    ROOT,
    STATE_FILE,
    Run,
    append,
    poll,
    replay_alerts,
    saved,
    started,
    storm_lines,
)

from retrywatch.detect.core import DetectorConfig
from retrywatch.serve.state import (
    COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION,
    StateDirError,
    StateStore,
    same_instants,
    settings_record,
    zone_name,
)
from retrywatch.sources.checkpoint import Position
from retrywatch.sources.fingerprint import Fingerprint

FP = Fingerprint(dev=2049, ino=1 << 63 | 5, length=256, digest="ab" * 16)
UTC_ZONE = ZoneInfo("UTC")
#: A line before the storm: a file that already had content when the service started.
OLD = b"2026/11/25 17:00:00 [notice] 1#1: start worker processes\n"

# The layout of retrywatch before the schema had a version (user_version 0), verbatim:
# sources/checkpoint.py created file_positions, serve/service.py the two others.
LEGACY_DDL = (
    """CREATE TABLE IF NOT EXISTS file_positions (
    path TEXT PRIMARY KEY,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    fp_length INTEGER NOT NULL,
    fp_digest TEXT NOT NULL,
    offset INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS engine_state (
    id INTEGER PRIMARY KEY CHECK (id = 1), taken REAL NOT NULL, core BLOB NOT NULL,
    alerts BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS delivery_state (
    id INTEGER PRIMARY KEY CHECK (id = 1), state BLOB NOT NULL)""",
)


def pos(offset: int, path: str = "/var/log/nginx/error.log") -> Position:
    return Position(path, FP, offset)


def db_at_version(path: Path, version: int) -> None:
    """A database as retrywatch left it at schema ``version``, with a checkpoint."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    if version == 0:
        for sql in LEGACY_DDL:
            conn.execute(sql)
    for v in range(1, version + 1):
        for sql in MIGRATIONS[v]:
            conn.execute(sql)
        conn.execute(f"PRAGMA user_version = {v}")
    conn.execute("INSERT INTO file_positions VALUES ('/var/log/nginx/error.log', 2049, ?, "
                 "256, ?, 4096)", (-(1 << 63) + 5, "ab" * 16))
    columns = "id, taken, core, alerts" + (", settings" if version >= 1 else "")
    values = [1, 1700000000.5, zlib.compress(b"RWCORE\0core"), b'{"version": 1}']
    if version >= 1:
        values.append('{"window": 60, "timezone": "UTC"}')
    conn.execute(f"INSERT INTO engine_state ({columns}) VALUES "
                 f"({', '.join('?' * len(values))})", values)
    conn.execute("INSERT INTO delivery_state VALUES (1, ?)", (b'{"version": 1}',))
    conn.close()


# -- the schema ---------------------------------------------------------------------------
def test_migrations_cover_every_version() -> None:
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))


@pytest.mark.parametrize("version", range(SCHEMA_VERSION + 1))
def test_each_schema_version_opens_migrated_with_its_checkpoint(tmp_path: Path,
                                                                version: int) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db_at_version(state / STATE_FILE, version)
    with StateStore(state) as store:
        assert store.moved_aside is None and not store.wal_lost
        got = store.load_state()
        conn = store.connection
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        for table, columns in COLUMNS.items():
            assert tuple(r[1] for r in conn.execute(f"PRAGMA table_info({table})")) == columns
    assert got.positions == {pos(4096).path: pos(4096)}
    assert got.engine is not None
    assert (got.engine.taken, got.engine.core, got.engine.alerts) == (
        1700000000.5, b"RWCORE\0core", b'{"version": 1}')
    # Version 0 did not record the settings a snapshot was taken under.
    assert got.engine.settings == (None if version == 0 else {"window": 60, "timezone": "UTC"})
    assert got.delivery == b'{"version": 1}'


def test_legacy_database_without_a_checkpoint_migrates(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    conn = sqlite3.connect(state / STATE_FILE)
    conn.execute(LEGACY_DDL[0])  # the positions table only: stopped before a checkpoint
    conn.execute("INSERT INTO file_positions VALUES ('/a.log', 1, 2, 3, 'cd', 7)")
    conn.commit()
    conn.close()
    with StateStore(state) as store:
        got = store.load_state()
    assert got.positions["/a.log"].offset == 7
    assert (got.engine, got.delivery) == (None, None)


def test_round_trip_in_one_transaction(tmp_path: Path) -> None:
    settings = settings_record(DetectorConfig(threshold=20), UTC_ZONE)
    with StateStore(tmp_path / "state") as store:
        store.save_state([pos(10), pos(20, "/b.log")], b"RWCORE\0x", b"{}", settings,
                         b"deliveries", taken=5.0)
        with pytest.raises(RuntimeError), store.transaction() as tx:  # rolled back whole
            tx.save_positions([pos(99)])
            tx.save_engine(6.0, b"other", b"{}", settings)
            raise RuntimeError("a failure between the rows")
    with StateStore(tmp_path / "state") as store:
        got = store.load_state()
    assert got.positions == {pos(10).path: pos(10), "/b.log": pos(20, "/b.log")}
    assert got.engine is not None
    assert (got.engine.taken, got.engine.core, got.engine.settings) == (5.0, b"RWCORE\0x",
                                                                       settings)
    assert settings == {"window": 60, "threshold": 20, "min_repeat": 2, "resolve_after": 60,
                        "max_tracked": 100_000, "timezone": "UTC"}
    assert got.delivery == b"deliveries"


def test_state_directory_is_created_0700_and_used_by_one_service(tmp_path: Path) -> None:
    state = tmp_path / "a" / "state"
    old = os.umask(0)
    try:
        store = StateStore(state)
    finally:
        os.umask(old)
    try:
        assert state.stat().st_mode & 0o777 == 0o700
        in_use = rf"in use by another retrywatch \(pid {os.getpid()}\)"
        with pytest.raises(StateDirError, match=in_use):
            StateStore(state)
    finally:
        store.close()
    StateStore(state).close()  # released with the first


def test_nothing_executable_in_the_package() -> None:
    """No module that runs code it reads (pickle and kin) is imported anywhere."""
    forbidden = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "jsonpickle",
                 "marshal", "shelve"}
    found = []
    for path in sorted((ROOT / "retrywatch").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in forbidden]
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("eval", "exec"):
                found.append(f"{path.name}:{node.lineno}: {node.func.id}")  # type: ignore[attr-defined]
    assert found == []


def test_same_instants() -> None:
    taken = 1_764_000_000.0  # 2025-11-24
    assert same_instants("UTC", UTC_ZONE, taken)
    assert same_instants("Etc/UTC", UTC_ZONE, taken)  # an alias: same offsets
    assert same_instants("Europe/Paris", ZoneInfo("Europe/Berlin"), taken)
    assert not same_instants("UTC", ZoneInfo("Asia/Tokyo"), taken)
    assert not same_instants("Mars/Olympus", UTC_ZONE, taken)


#: Moscow left +04:00 for +03:00, for good, at 2014-10-25 22:00 UTC (tzdata).
MOSCOW_CHANGE = datetime(2014, 10, 25, 22, tzinfo=UTC).timestamp()
DAY = 86_400.0


@pytest.mark.parametrize(("taken", "same"), [
    (MOSCOW_CHANGE - 0.5 * DAY, False),  # the snapshot's own moment differs
    (MOSCOW_CHANGE + 0.5 * DAY, False),  # the day before it differs
    (MOSCOW_CHANGE + 1.5 * DAY, True),  # a day and more after the change: the same
])
def test_same_instants_looks_at_the_day_before_the_snapshot(taken: float, same: bool) -> None:
    """Europe/Moscow and a fixed +03:00 read the same seconds since 2014, not before: the
    saved event seconds cover the window before the snapshot, so that day counts too."""
    fixed = timezone(timedelta(hours=3))
    assert same_instants("Europe/Moscow", fixed, taken) is same
    assert same_instants("Europe/Moscow", ZoneInfo("Europe/Moscow"), taken)  # by name
    assert same_instants("UTC+03:00", fixed, taken)  # by name, though no IANA zone has it


def test_zone_names() -> None:
    assert zone_name(ZoneInfo("Asia/Kathmandu")) == "Asia/Kathmandu"
    assert zone_name(timezone(timedelta(hours=5, minutes=45))) == "UTC+05:45"
    assert zone_name(UTC) == "UTC"


# -- unreadable, empty, lost: in process ---------------------------------------------------
def garbage(db: Path) -> None:
    db.write_bytes(os.urandom(8192))


def cut_in_half(db: Path) -> None:
    db_at_version(db, SCHEMA_VERSION)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE filler (b BLOB)")
    conn.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(3000),)] * 64)
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    os.truncate(db, db.stat().st_size // 2)


def directory(db: Path) -> None:
    db.mkdir()
    (db / "x").write_text("not a database")


def newer_schema(db: Path) -> None:
    db_at_version(db, SCHEMA_VERSION)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()


def other_shape(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE engine_state (id INTEGER PRIMARY KEY, blob BLOB)")
    conn.close()


@pytest.mark.parametrize("damage", [garbage, cut_in_half, directory, newer_schema, other_shape],
                         ids=lambda f: f.__name__)
def test_unreadable_database_is_moved_aside(tmp_path: Path, damage: Any,
                                            caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    state.mkdir()
    damage(state / STATE_FILE)
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(state) as store:
        moved = store.moved_aside
        assert store.load_state().positions == {}
        store.save([pos(3)])
    assert moved is not None and moved.parent == state
    assert moved.name.startswith(f"{STATE_FILE}.corrupt-")
    assert moved.exists()
    said = [r for r in caplog.records if "moved aside" in r.getMessage()]
    assert len(said) == 1, caplog.text
    assert said[0].levelno == logging.ERROR and "\n" not in said[0].getMessage()
    with StateStore(state) as store:  # the new one is fine
        assert store.moved_aside is None
        assert store.load() == {pos(3).path: pos(3)}


def test_empty_database_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / STATE_FILE).write_bytes(b"")
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(state) as store:
        assert store.moved_aside is None
        assert store.load_state().engine is None
    assert [r.getMessage() for r in caplog.records if "is empty" in r.getMessage()]


def test_a_copy_without_its_write_ahead_log_is_said(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The database file of a running service copied alone (as after a kill -9 whose
    -wal is lost): the service's mark is in the file, the log is not."""
    settings = settings_record(DetectorConfig(), UTC_ZONE)
    store = StateStore(tmp_path / "a")
    store.save_state([pos(10)], b"first", b"{}", settings, None, taken=1.0)  # folded in
    store.save_state([pos(20)], b"second", b"{}", settings, None, taken=2.0)  # in the log
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / STATE_FILE, tmp_path / "b" / STATE_FILE)
    store.close()
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(tmp_path / "b") as copy:
        assert copy.wal_lost
        got = copy.load_state()
    assert got.positions == {pos(10).path: pos(10)}  # the checkpoint the file holds
    said = [r.getMessage() for r in caplog.records if "write-ahead log" in r.getMessage()]
    assert len(said) == 1 and "resuming from the checkpoint of" in said[0], caplog.text
    # A clean stop leaves nothing to say.
    caplog.clear()
    with caplog.at_level(logging.INFO, "retrywatch"), StateStore(tmp_path / "a") as again:
        assert not again.wal_lost
    assert "write-ahead" not in caplog.text


# -- retrywatch run: a state it cannot use ------------------------------------------------------
def run_args(log: Path, state: Path, start: str = "end", *extra: str) -> list[str]:
    return ["--log", str(log), "--from", start, "--timezone", "UTC", "--state-dir", str(state),
            *extra]


def no_traceback(run: Run) -> None:
    assert "Traceback" not in run.output, run.output


@pytest.fixture(scope="module")
def storm_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """The storm as a file, and the alerts replay finds in it."""
    path = tmp_path_factory.mktemp("storm") / "storm.log"
    path.write_bytes(b"".join(storm_lines()))
    return path, replay_alerts(path)


def real_database(state: Path, log: Path) -> None:
    """A state database as a real service leaves it (the storm read, stopped cleanly)."""
    with started(run_args(log, state, "beginning")) as run:
        run.wait_caught_up(log)
        poll("a checkpoint at the end of the file",
             lambda: (found := saved(state)) is not None
             and found[1].get(str(log)) == log.stat().st_size)
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.output


@pytest.mark.parametrize("damage", ["cut_in_half", "garbage", "directory"])
def test_run_moves_an_unreadable_database_aside(tmp_path: Path, damage: str,
                                                storm_log: tuple[Path, Any]) -> None:
    log, expected = storm_log
    state = tmp_path / "state"
    db = state / STATE_FILE
    if damage == "cut_in_half":
        real_database(state, log)
        assert not Path(f"{db}-wal").exists()  # folded in at the clean stop
        os.truncate(db, db.stat().st_size // 2)
    else:
        state.mkdir()
        garbage(db) if damage == "garbage" else directory(db)
    with started(run_args(log, state, "beginning")) as run:
        run.wait_caught_up(log)
        run.wait_alerts(expected)  # started afresh: the file read from its beginning
        assert run.metric("retrywatch_state_moved_aside_total") == 1
    said = [line for line in run.lines if "moved aside" in line]
    assert len(said) == 1, run.output
    no_traceback(run)
    assert len(list(state.glob(f"{STATE_FILE}.corrupt-*"))) == 1
    with started(run_args(log, state)) as again:  # the new database is fine
        assert again.metric("retrywatch_state_moved_aside_total") == 0
    assert "moved aside" not in again.output


def test_run_says_the_lost_write_ahead_log_and_resumes(tmp_path: Path,
                                                       storm_log: tuple[Path, Any]) -> None:
    storm, expected = storm_log
    log = tmp_path / "error.log"
    log.write_bytes(b"")
    state = tmp_path / "state"
    with started(run_args(log, state)) as run:
        append(log, storm.read_bytes())
        run.wait_caught_up(log)
        run.wait_alerts(expected)
        poll("a checkpoint at the end of the file",
             lambda: (found := saved(state)) is not None
             and found[1].get(str(log)) == log.stat().st_size)
        run.kill9()
    wal = Path(f"{state / STATE_FILE}-wal")
    assert wal.exists()
    wal.unlink()
    Path(f"{state / STATE_FILE}-shm").unlink(missing_ok=True)
    # --from end: a silent reset would read nothing and lose the alerts.
    with started(run_args(log, state)) as run:
        run.wait_caught_up(log)
        run.wait_alerts(expected)
    said = [line for line in run.lines if "write-ahead log" in line]
    assert len(said) == 1 and "missing" in said[0], run.output
    no_traceback(run)


def test_kill9_in_the_first_seconds_keeps_where_reading_started(
        tmp_path: Path, storm_log: tuple[Path, Any]) -> None:
    storm, _ = storm_log
    log = tmp_path / "error.log"
    log.write_bytes(OLD)
    state = tmp_path / "state"
    run = Run(run_args(log, state))
    try:
        poll("the file opened at its end",
             lambda: (src := run.file_source()) is not None and src["position"] == len(OLD))
        append(log, storm.read_bytes())
        run.kill9()  # well before the first periodic checkpoint (2 s)
    finally:
        run.stop()
    expected = replay_alerts(log)
    assert len(expected) == 5
    with started(run_args(log, state)) as again:  # --from end: only the checkpoint helps
        again.wait_caught_up(log)
        again.wait_alerts(expected)


# -- retrywatch run: settings of today ----------------------------------------------------------
def first_life(log: Path, state: Path, expected: list[dict[str, Any]]) -> None:
    with started(run_args(log, state, "beginning")) as run:
        run.wait_caught_up(log)
        run.wait_alerts(expected)
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.output


def test_other_detector_settings_are_read_under_todays(tmp_path: Path,
                                                       storm_log: tuple[Path, Any]) -> None:
    log, expected = storm_log
    state = tmp_path / "state"
    first_life(log, state, expected)
    assert sum(a["state"] == "firing" for a in expected) == 1
    # resolve_after 60 → 1: the alert still firing resolves within seconds (event time
    # moves on with the wall clock while nothing is read) under today's setting.
    with started(run_args(log, state, "end", "--resolve-after", "1", "--threshold",
                          "100000")) as run:
        poll("the firing alert resolved under today's resolve_after",
             lambda: all(a["state"] == "resolved" for a in run.alerts()), context=run.tail)
        alerts = run.alerts()
    firing = next(a for a in expected if a["state"] == "firing")
    assert len(alerts) == 5
    assert next(a for a in alerts if a["id"] == firing["id"])["resolved_reason"] == "quiet"
    said = [line for line in run.lines if "other detector settings" in line]
    assert len(said) == 1, run.output
    assert "threshold 10 → 100000" in said[0] and "resolve_after 60 → 1" in said[0]
    no_traceback(run)


def test_another_time_zone_discards_the_detector_state(tmp_path: Path,
                                                       storm_log: tuple[Path, Any]) -> None:
    log, expected = storm_log
    state = tmp_path / "state"
    first_life(log, state, expected)
    firing = next(a for a in expected if a["state"] == "firing")
    args = ["--log", str(log), "--from", "end", "--timezone", "Asia/Tokyo",
            "--state-dir", str(state)]
    with started(args) as run:
        alerts = run.alerts()
        src = run.wait_caught_up(log)  # the position was kept: nothing read again
        assert src["position"] == log.stat().st_size
        assert run.metric("retrywatch_alerts_fired_total") == 5  # counters kept
    assert len(alerts) == 5
    was_firing = next(a for a in alerts if a["id"] == firing["id"])
    assert (was_firing["state"], was_firing["resolved_reason"]) == ("resolved",
                                                                   "timezone_changed")
    said = [line for line in run.lines if "time zone" in line]
    assert len(said) == 1, run.output
    assert "UTC" in said[0] and "Asia/Tokyo" in said[0] and "discarded" in said[0]
    no_traceback(run)


# -- retrywatch run: a state directory it cannot write --------------------------------------------
def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                          capture_output=True, timeout=10, check=False)
    return done.returncode == 0


def read_only_prefix(directory: Path) -> list[str]:
    """A command prefix running the service in a mount namespace of its own where
    ``directory`` is mounted read-only (root), or nothing after a chmod (others)."""
    if os.geteuid() != 0:
        directory.chmod(0o500)
        return []
    if not _can_unshare():
        pytest.skip("root without unshare -m: a read-only directory cannot be made")
    script = f'mount --bind "{directory}" "{directory}" && ' \
             f'mount -o remount,bind,ro "{directory}" && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]


@pytest.mark.parametrize("case", ["under_a_file", "read_only", "in_use"])
def test_run_says_an_unusable_state_dir_in_one_line(tmp_path: Path, case: str) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(OLD)
    state = tmp_path / "state"
    prefix: list[str] = []
    holder = None
    if case == "under_a_file":
        (tmp_path / "file").write_text("")
        state = tmp_path / "file" / "state"
    elif case == "read_only":
        state.mkdir()
        prefix = read_only_prefix(state)
    else:
        holder = Run(run_args(log, state))
    try:
        run = Run(run_args(log, state), prefix=prefix, healthy=False)
        code = run.wait()
    finally:
        if holder is not None:
            holder.stop()
        with contextlib.suppress(OSError):
            state.chmod(0o700)
    lines = [line for line in run.lines if line.strip()]
    assert code == 2, run.output
    assert len(lines) == 1, run.output
    assert lines[0].startswith("Error: --state-dir: "), run.output
    expected = {"under_a_file": "cannot be written", "read_only": "cannot be written",
                "in_use": "in use by another retrywatch"}[case]
    assert expected in lines[0]


# -- retrywatch run: checkpoints failing while running ---------------------------------------------
def _fsize(pid: int, soft: int) -> None:
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (min(soft, hard) if hard != resource.RLIM_INFINITY
                                                  else soft, hard))


def test_checkpoints_failing_while_running_are_counted_shown_and_said_once(
        tmp_path: Path, storm_log: tuple[Path, Any]) -> None:
    """Writes to the state fail (the file size limit lowered under the running service:
    EFBIG, as a full disk gives ENOSPC): no traceback every 2 s but one line, /readyz
    fails, /api/v1/sources and the metrics say it; then writes work again."""
    log, _ = storm_log
    state = tmp_path / "state"
    with started(run_args(log, state, "beginning")) as run:
        run.wait_caught_up(log)
        assert run.client.get("/readyz").status_code == 200
        pid = run.process.pid
        _fsize(pid, 1)  # any write past the first byte of a file fails
        failing = poll("/readyz failing", lambda: (
            r := run.client.get("/readyz")).status_code == 503 and r.json(), context=run.tail)
        assert any("checkpoints failing" in d for d in failing["detail"]), failing
        last_success = run.metric("retrywatch_checkpoint_last_success_timestamp_seconds")
        # three failed checkpoints, at least (one every 2 s): then "said once" means once
        sources = poll("three failed checkpoints", lambda: (
            r := run.get("/api/v1/sources"))["checkpoint"]["failures"] >= 3 and r,
            context=run.tail)
        assert sources["checkpoint"]["failures"] >= 3, sources
        assert sources["checkpoint"]["last_error"], sources
        assert sources["sources"][0]["last_error"].startswith("checkpoint failing"), sources
        assert run.metric("retrywatch_checkpoint_failures_total") >= 3
        stale = run.metric("retrywatch_checkpoint_last_success_timestamp_seconds")
        assert 0 < stale == last_success < time.time()  # no success since they failed
        assert run.client.get("/healthz").status_code == 200  # alive all the same
        said = [line for line in run.lines if "checkpoint" in line and " INFO " not in line]
        assert len(said) == 1 and "checkpoint failed" in said[0], run.output
        _fsize(pid, resource.RLIM_INFINITY)
        poll("/readyz ready again", lambda: run.client.get("/readyz").status_code == 200,
             context=run.tail)
        assert run.get("/api/v1/sources")["checkpoint"]["last_error"] is None
        assert run.metric("retrywatch_checkpoint_last_success_timestamp_seconds") > stale
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.output
    assert any("checkpoints written again" in line for line in run.lines), run.output
    no_traceback(run)


def test_disk_full_while_running(tmp_path: Path, storm_log: tuple[Path, Any]) -> None:
    """The state directory on a small tmpfs (in the service's own mount namespace) that
    fills up: ENOSPC, then room again (root only)."""
    if not _can_unshare():
        pytest.skip("needs root and unshare -m (a tmpfs of its own)")
    log, _ = storm_log
    state = tmp_path / "state"
    state.mkdir()
    script = f'mount -t tmpfs -o size=4m,mode=0700 tmpfs "{state}" && exec "$@"'
    prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]
    with started(run_args(log, state, "beginning"), prefix=prefix) as run:
        run.wait_caught_up(log)
        inside = Path(f"/proc/{run.process.pid}/root") / str(state).lstrip("/")
        assert (inside / STATE_FILE).exists() and not (state / STATE_FILE).exists()
        filler = inside / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:  # until the disk is full
            while True:
                f.write(b"\0" * (1 << 16))
        poll("/readyz failing", lambda: run.client.get("/readyz").status_code == 503,
             context=run.tail)
        sources = run.get("/api/v1/sources")
        assert "full" in sources["checkpoint"]["last_error"], sources
        filler.unlink()
        poll("/readyz ready again", lambda: run.client.get("/readyz").status_code == 200,
             context=run.tail)
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.output
    said = [line for line in run.lines if "checkpoint failed" in line]
    assert len(said) == 1, run.output
    no_traceback(run)


def test_the_state_holds_data_only(tmp_path: Path, storm_log: tuple[Path, Any]) -> None:
    """What a real service writes: the core's versioned bytes, JSON, and the settings."""
    log, _ = storm_log
    state = tmp_path / "state"
    real_database(state, log)
    conn = sqlite3.connect(state / STATE_FILE)
    core, alerts, settings = conn.execute(
        "SELECT core, alerts, settings FROM engine_state").fetchone()
    delivery = conn.execute("SELECT state FROM delivery_state").fetchone()[0]
    conn.close()
    assert zlib.decompress(core).startswith(b"RWCORE\0")
    assert orjson.loads(alerts)["version"] == 1
    assert orjson.loads(delivery)["version"] == 1
    assert orjson.loads(settings) == settings_record(DetectorConfig(), UTC_ZONE)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
