"""Following files on disk (retrywatch/sources/follow.py): every rotation kind, globs,
waiting for a file, where reading starts, resuming from a checkpoint, lag. Real files in
tmp_path; the follower is stepped by calling poll(): no test sleeps."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path

import pytest

from retrywatch.serve.state import StateStore
from retrywatch.sources.fingerprint import take
from retrywatch.sources.follow import (
    Chunk,
    FileFollower,
    ManualWaker,
    NotRegularFile,
    PollingWaker,
    Waker,
    WatchdogWaker,
    open_regular,
)


def lines(*numbers: int, tag: str = "a") -> bytes:
    return b"".join(b"2019/09/17 03:46:20 [error] line %s%d\n" % (tag.encode(), n)
                    for n in numbers)


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def data(chunks: list[Chunk]) -> bytes:
    return b"".join(c.data for c in chunks)


def test_from_end_skips_what_is_there(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(lines(1, 2))
    follower = FileFollower(str(log))
    first = follower.poll()
    assert data(first) == b""
    assert first[0].position.offset == log.stat().st_size
    append(log, lines(3))
    assert data(follower.poll()) == lines(3)


def test_from_end_starts_at_the_line_being_written(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(lines(1) + b"2019/09/17 03:46:20 [error] half")
    follower = FileFollower(str(log))
    assert data(follower.poll()) == b""
    append(log, b" a line\n")
    assert data(follower.poll()) == b"2019/09/17 03:46:20 [error] half a line\n"


def test_from_beginning(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(lines(1, 2))
    follower = FileFollower(str(log), from_end=False)
    chunks = follower.poll()
    assert data(chunks) == lines(1, 2)
    assert chunks[-1].source == str(log)
    assert chunks[-1].path == str(log)
    assert chunks[-1].position.offset == len(lines(1, 2))


def test_partial_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(lines(1) + b"partial")
    follower = FileFollower(str(log), from_end=False)
    assert data(follower.poll()) == lines(1)
    append(log, b" done\n")
    assert data(follower.poll()) == b"partial done\n"


def test_line_longer_than_the_budget_is_passed_on(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(b"x" * 100 + b"\n")
    follower = FileFollower(str(log), from_end=False)
    assert data(follower.poll(max_bytes=40)) == b"x" * 40
    assert data(follower.poll(max_bytes=40)) == b"x" * 40
    assert data(follower.poll(max_bytes=40)) == b"x" * 20 + b"\n"


def test_missing_file_is_waited_for_and_read_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    follower = FileFollower(str(log))  # from the end, but only for files there at start
    assert follower.poll() == []
    assert follower.status()[0].open is False
    log.write_bytes(lines(1))
    assert data(follower.poll()) == lines(1)


def test_rename_and_create_reads_the_old_file_to_its_end(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(b"")
    follower = FileFollower(str(log))
    follower.poll()
    with log.open("ab", buffering=0) as nginx:
        nginx.write(lines(1))
        assert data(follower.poll()) == lines(1)
        os.replace(log, tmp_path / "error.log.1")
        nginx.write(lines(2))  # nginx writes to the old file until it reopens
        append(log, lines(3, tag="new"))
        chunks = follower.poll()
    assert data(chunks) == lines(2) + lines(3, tag="new")
    assert [c.path for c in chunks if c.data] == [str(log), str(log)]
    assert chunks[-1].position.fingerprint.ino == log.stat().st_ino
    assert any(c.boundary for c in chunks)
    assert follower.status()[0].rotations == 1


def test_rename_then_create_later(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(b"")
    follower = FileFollower(str(log))
    follower.poll()
    append(log, lines(1))
    os.replace(log, tmp_path / "error.log.1")
    assert data(follower.poll()) == lines(1)  # missing path: drained, then waited for
    log.write_bytes(lines(2))
    assert data(follower.poll()) == lines(2)


def test_copytruncate(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(lines(1, 2))
    follower = FileFollower(str(log), from_end=False)
    assert data(follower.poll()) == lines(1, 2)
    shutil.copyfile(log, tmp_path / "error.log.1")
    os.truncate(log, 0)
    append(log, lines(3))
    chunks = follower.poll()
    assert data(chunks) == lines(3)
    assert follower.status()[0].truncations == 1


def test_copytruncate_then_longer_than_before(tmp_path: Path) -> None:
    """Truncated and written past the old offset before the next poll: the changed
    first bytes tell."""
    log = tmp_path / "error.log"
    log.write_bytes(lines(1))
    follower = FileFollower(str(log), from_end=False)
    assert data(follower.poll()) == lines(1)
    os.truncate(log, 0)
    append(log, lines(2, 3, 4, tag="b"))
    assert data(follower.poll()) == lines(2, 3, 4, tag="b")
    assert follower.status()[0].truncations == 1


def test_delete_and_recreate(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(b"")
    follower = FileFollower(str(log))
    follower.poll()
    append(log, lines(1))
    log.unlink()
    log.write_bytes(lines(2))
    assert data(follower.poll()) == lines(1) + lines(2)


def test_symlink_retarget(tmp_path: Path) -> None:
    a, b, link = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "error.log"
    a.write_bytes(b"")
    b.write_bytes(lines(1, tag="b"))
    link.symlink_to(a)
    follower = FileFollower(str(link))
    follower.poll()
    append(a, lines(1))
    assert data(follower.poll()) == lines(1)
    append(a, lines(2))
    tmp = tmp_path / "error.log.tmp"
    tmp.symlink_to(b)
    os.replace(tmp, link)
    assert data(follower.poll()) == lines(2) + lines(1, tag="b")
    assert follower.status()[0].rotations == 1
    # back to a: read on from where it was left, not again from 0
    append(a, lines(3))
    tmp.symlink_to(a)
    os.replace(tmp, link)
    assert data(follower.poll()) == lines(3)


def test_glob_picks_up_new_files(tmp_path: Path) -> None:
    (tmp_path / "one.log").write_bytes(lines(1))
    follower = FileFollower(str(tmp_path / "*.log"))
    assert data(follower.poll()) == b""  # from the end
    (tmp_path / "two.log").write_bytes(lines(2))
    chunks = follower.poll()
    assert data(chunks) == lines(2)
    assert {c.source for c in chunks} == {str(tmp_path / "two.log")}
    assert sorted(s.path for s in follower.status()) == [
        str(tmp_path / "one.log"), str(tmp_path / "two.log")]


def test_glob_matching_rotated_names_reads_each_line_once(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(b"")
    follower = FileFollower(str(tmp_path / "error.log*"))
    follower.poll()
    with log.open("ab", buffering=0) as nginx:
        nginx.write(lines(1))
        os.replace(log, tmp_path / "error.log.1")
        got = data(follower.poll())  # error.log gone: drained and closed
        got += data(follower.poll())  # error.log.1: the same file, from where it was left
        nginx.write(lines(2))  # still writing to the old file: the glob keeps it
        got += data(follower.poll())
    assert got == lines(1, 2)


def test_glob_drops_deleted_files(tmp_path: Path) -> None:
    (tmp_path / "one.log").write_bytes(b"")
    follower = FileFollower(str(tmp_path / "*.log"), grace=0)
    follower.poll()
    (tmp_path / "one.log").unlink()
    follower.poll()  # seen deleted: read for the grace period (none here)
    follower.poll()
    assert follower.status() == []


def test_lines_written_to_the_old_file_after_the_switch_are_read(tmp_path: Path) -> None:
    """nginx writes to the renamed file until it reopens its logs, after the new file
    exists: those lines are read during the grace period, then the old file is let go."""
    now = [1000.0]
    log = tmp_path / "error.log"
    log.write_bytes(b"")
    follower = FileFollower(str(log), from_end=False, grace=5.0, clock=lambda: now[0])
    follower.poll()
    with log.open("ab", buffering=0) as nginx:
        nginx.write(lines(1))
        os.replace(log, tmp_path / "error.log.1")
        log.write_bytes(b"")  # logrotate creates the new file
        got = data(follower.poll())  # the old file drained, the new one opened
        nginx.write(lines(2))  # nginx has not reopened yet
        got += data(follower.poll())
    with log.open("ab", buffering=0) as reopened:
        reopened.write(lines(3))
    got += data(follower.poll())
    now[0] += 6  # the grace period is over: the old file is released
    got += data(follower.poll())
    assert sorted(got.splitlines()) == sorted(lines(1, 2, 3).splitlines())
    assert [s.path for s in follower.status()] == [str(log)]


def test_budget_is_shared_and_files_take_turns(tmp_path: Path) -> None:
    busy, quiet = tmp_path / "busy.log", tmp_path / "quiet.log"
    busy.write_bytes(lines(*range(1000)))
    quiet.write_bytes(lines(1, tag="q"))
    follower = FileFollower(str(tmp_path / "*.log"), from_end=False)
    seen: set[str] = set()
    for _ in range(2):
        chunks = follower.poll(max_bytes=4096)
        assert len(data(chunks)) <= 4096
        seen |= {c.path for c in chunks if c.data}
    assert str(quiet) in seen


def test_lag_in_bytes_and_seconds(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(b"")
    now = [1000.0]
    follower = FileFollower(str(log), clock=lambda: now[0])
    follower.poll()
    append(log, lines(*range(100)))
    size = log.stat().st_size
    follower.poll(max_bytes=1000)
    now[0] += 7.0
    status = follower.status()[0]
    assert status.size == size
    assert status.lag_bytes == size - status.offset > 0
    assert status.lag_seconds == 7.0
    follower.poll()
    status = follower.status()[0]
    assert (status.lag_bytes, status.lag_seconds, status.last_error) == (0, 0.0, None)


def test_resume_from_a_checkpoint_exactly(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(lines(*range(50)))
    store = StateStore(tmp_path / "state")
    follower = FileFollower(str(log), from_end=False, checkpoints=store.load())
    got = b""
    for chunk in follower.poll(max_bytes=300):  # consumed, then committed
        got += chunk.data
        store.save([chunk.position])
    follower.poll(max_bytes=300)  # read but never consumed: the crash
    append(log, lines(50, 51))
    store.close()

    store = StateStore(tmp_path / "state")
    follower = FileFollower(str(log), from_end=True, checkpoints=store.load())
    got += data(follower.poll())
    assert got == lines(*range(52))
    store.close()


def test_rotated_while_down_reads_the_rest_of_the_old_file_first(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(lines(1, 2))
    follower = FileFollower(str(log), from_end=False)
    chunks = follower.poll()
    saved = {chunks[-1].position.path: chunks[-1].position}
    follower.close()
    append(log, lines(3))
    os.replace(log, tmp_path / "error.log.1")
    log.write_bytes(lines(4, tag="new"))
    follower = FileFollower(str(log), checkpoints=saved)
    chunks = follower.poll()
    assert data(chunks) == lines(3) + lines(4, tag="new")
    assert [c.path for c in chunks if c.data] == [str(tmp_path / "error.log.1"), str(log)]


def test_rotated_while_down_and_old_file_gone_reads_the_new_one_from_0(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(lines(1, 2))
    follower = FileFollower(str(log), from_end=False)
    saved = {p.path: p for p in (follower.poll()[-1].position,)}
    follower.close()
    log.unlink()
    log.write_bytes(lines(3))
    follower = FileFollower(str(log), checkpoints=saved)  # from_end: not for this path
    assert data(follower.poll()) == lines(3)


def test_checkpoint_of_a_truncated_file_restarts_at_0(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(lines(1, 2))
    follower = FileFollower(str(log), from_end=False)
    saved = {p.path: p for p in (follower.poll()[-1].position,)}
    follower.close()
    os.truncate(log, 0)
    log.write_bytes(lines(3, tag="x"))
    follower = FileFollower(str(log), checkpoints=saved)
    assert data(follower.poll()) == lines(3, tag="x")


def test_incomplete_fingerprint_grows_with_the_file(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(b"short\n")
    follower = FileFollower(str(log), from_end=False)
    first = follower.poll()[-1].position.fingerprint
    assert not first.complete()
    append(log, lines(*range(20)))
    last = follower.poll()[-1].position.fingerprint
    assert last.complete()
    with log.open("rb") as f:
        assert last == take(f.fileno())


def test_watch_dirs(tmp_path: Path) -> None:
    (tmp_path / "pods" / "a").mkdir(parents=True)
    follower = FileFollower(str(tmp_path / "pods" / "*" / "*.log"))
    assert follower.watch_dirs() == {str(tmp_path / "pods"), str(tmp_path / "pods" / "a")}
    missing = FileFollower(str(tmp_path / "nope" / "error.log"))
    assert missing.watch_dirs() == {str(tmp_path)}


def test_manual_and_polling_wakers() -> None:
    waker = ManualWaker()
    assert waker.wait(0) is False
    waker.wake()
    assert waker.wait(0) is True
    assert waker.wait(0) is False
    waker.watch(["/tmp"])
    assert waker.watched == {"/tmp"}
    timer = PollingWaker(interval=0.0)
    assert timer.wait(60) is False  # returns after the interval, not the timeout


def test_watchdog_waker_is_woken_by_a_write(tmp_path: Path) -> None:
    waker: Waker = WatchdogWaker()
    try:
        waker.watch([str(tmp_path)])
        (tmp_path / "error.log").write_bytes(lines(1))
        assert waker.wait(10) is True  # woken by the event, long before the timeout
        waker.watch([])
    finally:
        waker.close()


# -- fast rotation: files that came and went between two looks ------------------------
def shift(log: Path, keep: int = 5) -> None:
    """logrotate's renames: ``error.log.N`` to ``.N+1``, then ``error.log`` to ``.1``."""
    for n in range(keep - 1, 0, -1):
        older = log.with_name(f"{log.name}.{n}")
        if older.exists():
            os.replace(older, log.with_name(f"{log.name}.{n + 1}"))
    os.replace(log, log.with_name(f"{log.name}.1"))


def copytruncate(log: Path) -> None:
    """logrotate's copytruncate: the rotated names shifted, a copy, then a truncation."""
    for n in range(4, 0, -1):
        older = log.with_name(f"{log.name}.{n}")
        if older.exists():
            os.replace(older, log.with_name(f"{log.name}.{n + 1}"))
    shutil.copyfile(log, log.with_name(f"{log.name}.1"))
    os.truncate(log, 0)


def drain(follower: FileFollower, polls: int = 4) -> bytes:
    return b"".join(data(follower.poll()) for _ in range(polls))


def test_a_file_created_and_renamed_between_two_looks_is_read(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(lines(1))
    follower = FileFollower(str(log), from_end=False)
    assert data(follower.poll()) == lines(1)
    append(log, lines(2))
    shift(log)
    log.write_bytes(lines(3, tag="b"))  # a file appears...
    shift(log)  # ...and is renamed away before the follower looks
    log.write_bytes(lines(4, tag="c"))
    assert drain(follower) == lines(2) + lines(3, tag="b") + lines(4, tag="c")
    follower.close()


def test_several_files_missed_between_two_looks_are_read_oldest_first(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(lines(0))
    follower = FileFollower(str(log), from_end=False)
    follower.poll()
    for tag in "bcd":
        shift(log)
        log.write_bytes(lines(1, 2, tag=tag))
    assert drain(follower) == lines(1, 2, tag="b") + lines(1, 2, tag="c") + lines(1, 2, tag="d")
    follower.close()


def test_copytruncate_recovers_what_was_not_read_from_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(lines(1))
    follower = FileFollower(str(log), from_end=False)
    assert data(follower.poll()) == lines(1)
    append(log, lines(2, 3))  # written, not read yet when the file is truncated
    copytruncate(log)
    append(log, lines(4, tag="new"))
    assert drain(follower) == lines(2, 3) + lines(4, tag="new")
    status = follower.status()[0]
    assert (status.truncations, status.lag_bytes) == (1, 0)
    follower.close()


def test_two_copytruncates_between_two_looks(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(lines(1))
    follower = FileFollower(str(log), from_end=False)
    follower.poll()
    append(log, lines(2))
    copytruncate(log)
    log.write_bytes(lines(3, tag="b"))  # a whole generation, copied and truncated unseen
    copytruncate(log)
    append(log, lines(4, tag="c"))
    assert drain(follower) == lines(2) + lines(3, tag="b") + lines(4, tag="c")
    follower.close()


def test_rotated_files_there_before_the_follower_are_not_read(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    (tmp_path / "error.log.1").write_bytes(lines(1, tag="old"))
    (tmp_path / "error.log.2").write_bytes(lines(2, tag="old"))
    (tmp_path / "error.log.3.gz").write_bytes(b"\x1f\x8b not read")
    log.write_bytes(lines(1))
    follower = FileFollower(str(log), from_end=False)
    assert data(follower.poll()) == lines(1)
    shift(log)
    log.write_bytes(lines(2))
    assert drain(follower) == lines(2)
    follower.close()


def test_rotated_twice_while_down_reads_every_file_in_order(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(lines(1, 2))
    follower = FileFollower(str(log), from_end=False)
    saved = {p.path: p for p in (follower.poll()[-1].position,)}
    follower.close()
    append(log, lines(3))
    shift(log)
    log.write_bytes(lines(4, tag="b"))
    shift(log)
    log.write_bytes(lines(5, tag="c"))
    follower = FileFollower(str(log), checkpoints=saved)
    assert drain(follower) == lines(3) + lines(4, tag="b") + lines(5, tag="c")
    follower.close()


def test_copytruncate_while_down_reads_the_rest_from_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(lines(1, 2))
    follower = FileFollower(str(log), from_end=False)
    saved = {p.path: p for p in (follower.poll()[-1].position,)}
    follower.close()
    append(log, lines(3))
    copytruncate(log)
    append(log, lines(4, tag="new"))
    follower = FileFollower(str(log), checkpoints=saved)
    assert drain(follower) == lines(3) + lines(4, tag="new")
    follower.close()


# -- what a glob matches that is no regular file --------------------------------------
def poll_within(follower: FileFollower, seconds: float = 10.0) -> list[Chunk]:
    """One poll, in a thread: a poll blocked (in open() of a FIFO) fails the test."""
    got: list[list[Chunk]] = []
    thread = threading.Thread(target=lambda: got.append(follower.poll()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert got, f"poll() still blocked after {seconds} s"
    return got[0]


def test_a_fifo_under_the_glob_is_skipped_and_blocks_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(lines(1))
    fifo = tmp_path / "b.log"
    os.mkfifo(fifo)
    (tmp_path / "c.log").mkdir()  # a directory the glob matches too
    follower = FileFollower(str(tmp_path / "*.log"), from_end=False)
    try:
        assert data(poll_within(follower)) == lines(1)
        status = {Path(s.path).name: s for s in follower.status()}
        assert status["b.log"].skipped == "a FIFO, not a regular file"
        assert status["b.log"].last_error == "skipped: a FIFO, not a regular file"
        assert status["c.log"].skipped == "a directory, not a regular file"
        assert not status["b.log"].open and status["a.log"].open
        append(tmp_path / "a.log", lines(2))
        assert data(poll_within(follower)) == lines(2)
        fifo.unlink()
        fifo.write_bytes(lines(3, tag="b"))  # a regular file under that name now: read
        assert data(poll_within(follower)) == lines(3, tag="b")
        status = {Path(s.path).name: s for s in follower.status()}
        assert status["b.log"].skipped is None and status["b.log"].last_error is None
    finally:
        with contextlib.suppress(OSError):  # release a poll blocked in open() (main)
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        follower.close()


def test_a_fifo_swapped_in_after_the_check_is_caught(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fifo = tmp_path / "error.log"
    os.mkfifo(fifo)
    regular = os.stat_result((0o100644, *os.stat(tmp_path)[1:]))
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: regular if str(p) == str(fifo)
                        else real_stat(p, *a, **k))
    with pytest.raises(NotRegularFile, match="FIFO"):  # and open() did not block
        os.close(open_regular(str(fifo)))
