"""Rotation decisions (retrywatch/sources/rotation.py): every case of the pure function
without a disk, then a model-based test of the follower over write / rotate / truncate /
delete sequences on real files: every line written is read exactly once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from retrywatch.sources.checkpoint import Position
from retrywatch.sources.follow import FileFollower
from retrywatch.sources.rotation import Action, FileStat, decide

pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")

OPEN = FileStat(dev=1, ino=10, size=100, mtime=5.0)


def clean_env() -> dict[str, str]:
    """This process's environment without any RETRYWATCH_* setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RETRYWATCH_")}


def grown(size: int) -> FileStat:
    return FileStat(OPEN.dev, OPEN.ino, size, 6.0)


def test_idle_when_read_to_the_end() -> None:
    assert decide(OPEN, OPEN, OPEN, 100) is Action.IDLE


def test_read_when_the_file_grew() -> None:
    assert decide(OPEN, grown(150), grown(150), 100) is Action.READ


def test_read_when_behind_without_growth() -> None:
    assert decide(OPEN, OPEN, OPEN, 40) is Action.READ


def test_truncated_when_shorter_than_the_offset() -> None:
    assert decide(OPEN, grown(10), grown(10), 100) is Action.TRUNCATED


def test_truncated_to_zero() -> None:
    assert decide(OPEN, grown(0), grown(0), 100) is Action.TRUNCATED


def test_truncated_when_shrunk_since_last_look_even_if_past_the_offset() -> None:
    # behind at 40, the file shrank from 100 to 60 (copytruncate, then new writes)
    assert decide(OPEN, grown(60), grown(60), 40) is Action.TRUNCATED


def test_truncated_when_the_head_changed_and_regrown_past_the_offset() -> None:
    assert decide(OPEN, grown(300), grown(300), 100, head_changed=True) is Action.TRUNCATED


def test_truncation_wins_over_rotation() -> None:
    other = FileStat(1, 11, 0)
    assert decide(OPEN, grown(0), other, 100) is Action.TRUNCATED


def test_rotated_when_the_path_names_another_inode() -> None:
    assert decide(OPEN, OPEN, FileStat(1, 11, 0), 100) is Action.ROTATED


def test_rotated_even_with_unread_bytes_in_the_old_file() -> None:
    action = decide(OPEN, grown(200), FileStat(1, 11, 0), 100)
    assert action is Action.ROTATED
    assert action.drains


def test_rotated_when_another_device_has_the_same_inode() -> None:
    # a symlink retargeted to a file on another filesystem with the same inode number
    assert decide(OPEN, OPEN, FileStat(2, 10, 100), 100) is Action.ROTATED


def test_deleted_when_the_path_is_missing() -> None:
    action = decide(OPEN, OPEN, None, 100)
    assert action is Action.DELETED
    assert action.drains


def test_deleted_with_unread_bytes() -> None:
    assert decide(OPEN, grown(180), None, 100) is Action.DELETED


def test_read_and_idle_do_not_drain() -> None:
    assert not Action.READ.drains
    assert not Action.IDLE.drains
    assert not Action.TRUNCATED.drains


def test_stats_of_two_files_are_refused() -> None:
    with pytest.raises(ValueError, match="different files"):
        decide(OPEN, FileStat(1, 11, 100), OPEN, 0)


def test_filestat_of_os_stat(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"abc")
    st_ = os.stat(path)
    fs = FileStat.of(st_)
    assert (fs.dev, fs.ino, fs.size, fs.mtime) == (st_.st_dev, st_.st_ino, 3, st_.st_mtime)


# -- model-based: the follower over sequences of writes and rotations ---------------
class FollowMachine(RuleBasedStateMachine):
    """Lines are numbered; the follower is polled between steps with a small budget.
    What it read must be every line written, each once, in order per file."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="retrywatch-follow-")
        self.path = os.path.join(self.dir, "error.log")
        # No grace period here: rotations follow each other within milliseconds, and a
        # copy written over a file still in its grace period cannot be told from nginx's
        # late lines (tests/test_follow.py covers the grace period).
        self.follower = FileFollower(self.path, from_end=False, grace=0)
        self.handle = open(self.path, "ab", buffering=0)  # noqa: SIM115 - the writer's fd
        self.next_line = 0
        self.written: list[bytes] = []
        self.lost: set[bytes] = set()
        self.read = bytearray()
        self.saved: dict[str, Position] = {}  # what a checkpoint store would hold
        self.looked = False  # this follower has polled once
        self.unseen = False  # a rotation since its last poll

    def teardown(self) -> None:
        self.handle.close()
        self.follower.close()
        shutil.rmtree(self.dir)

    def _poll(self, max_bytes: int) -> None:
        self.looked, self.unseen = True, False
        for chunk in self.follower.poll(max_bytes=max_bytes):
            self.read += chunk.data
            self.saved[chunk.position.path] = chunk.position  # consumed: committed

    @rule(n=st.integers(1, 5))
    def write(self, n: int) -> None:
        for _ in range(n):
            line = b"line %06d connect() failed\n" % self.next_line
            self.next_line += 1
            self.handle.write(line)
            self.written.append(line)

    @rule(max_bytes=st.sampled_from([31, 64, 1000, 1 << 20]))
    def poll(self, max_bytes: int) -> None:
        self._poll(max_bytes)

    @rule(keep_writing_old=st.booleans())
    def rename_and_create(self, keep_writing_old: bool) -> None:
        # The follower has to see the old file before it is renamed away: a poll with a
        # full budget (the live loop polls far more often than logrotate rotates).
        self._poll(1 << 20)
        os.replace(self.path, self.path + ".1")
        if keep_writing_old:  # nginx writes to the old file until it reopens
            self.write(2)
        self._poll(1 << 20)  # drained to its end now: later writes to it are not seen
        self.handle.close()
        self.handle = open(self.path, "ab", buffering=0)  # noqa: SIM115

    @rule()
    def copytruncate(self) -> None:
        self._poll(1 << 20)
        # A new file replaces the last copy, as logrotate's does (never written over in
        # place: a file still being read would seem to grow).
        shutil.copyfile(self.path, self.path + ".copy")
        os.replace(self.path + ".copy", self.path + ".1")
        os.truncate(self.path, 0)

    @precondition(lambda self: self.looked)
    @rule(kind=st.sampled_from(["rename", "copytruncate"]))
    def rotate_unseen(self, kind: str) -> None:
        """A rotation the follower did not look at first (fast, under load): the rotated
        names shift as logrotate's do (nothing is deleted), and what was not read is in
        the rotated file or the copy. (After a first look: before it, the rotated files
        are older than the follower; tests/test_follow.py covers rotations while down.)"""
        rotated = sorted((int(n.rpartition(".")[2]) for n in os.listdir(self.dir)
                          if n.rpartition(".")[2].isdigit()), reverse=True)
        for n in rotated:
            os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
        if kind == "rename":
            os.replace(self.path, self.path + ".1")
            self.handle.close()
            self.handle = open(self.path, "ab", buffering=0)  # noqa: SIM115
        else:
            shutil.copyfile(self.path, self.path + ".1")
            os.truncate(self.path, 0)
        self.unseen = True

    @rule()
    def delete_and_recreate(self) -> None:
        self._poll(1 << 20)
        os.unlink(self.path)
        self._poll(1 << 20)
        self.handle.close()
        self.handle = open(self.path, "ab", buffering=0)  # noqa: SIM115

    # (Not right after an unseen rotation: a restart knows the files only by the
    # checkpoint, and a file that came and went unseen is newer than it only by time.)
    @precondition(lambda self: bool(self.saved) and not self.unseen)
    @rule()
    def crash_and_resume(self) -> None:
        """A new follower from the positions of the chunks consumed (from the end for
        files without one: there are none)."""
        self.follower.close()
        self.follower = FileFollower(self.path, from_end=True, checkpoints=dict(self.saved),
                                     grace=0)
        self.looked = False

    @invariant()
    def read_is_a_prefix_of_written(self) -> None:
        expected = b"".join(self.written)
        assert expected.startswith(bytes(self.read))

    def teardown_check(self) -> None:
        self._poll(1 << 30)
        assert bytes(self.read) == b"".join(self.written)


def test_follow_machine() -> None:
    class Machine(FollowMachine):
        def teardown(self) -> None:
            try:
                self.teardown_check()
            finally:
                super().teardown()

    runner = Machine.TestCase
    runner.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
    runner().runTest()


# -- fast rotation under load (bench/bench_rotation.py, bounded) ---------------------------
def test_fast_rotation_under_load_loses_and_doubles_nothing() -> None:
    """A writer process appends numbered lines at 20,000 lines/s and rotates every 0.1 s
    (10 rotations a run, 2 runs of each kind: rename and copytruncate) while the live
    service follows; the reader pauses now and then (as a busy one would), so files come
    and go between two looks. Every line is fed to the engine exactly once."""
    bench = Path(__file__).parent.parent / "bench" / "bench_rotation.py"
    result = subprocess.run(
        [sys.executable, str(bench), "--json", "--runs", "2", "--rate", "20000",
         "--every", "0.1", "--rotations", "10", "--stall-ms", "150", "--stall-every", "20",
         "--keep", "20", "--settle", "10"],
        check=False, capture_output=True, text=True, timeout=120, env=clean_env())
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    for run in report["runs"]:
        assert (run["lost"], run["doubled"]) == (0, 0), run
        assert run["rotations"] == 10 and run["lines"] > 15_000, run
    assert set(report["totals"]) == {"rename", "copytruncate"}
