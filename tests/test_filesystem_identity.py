"""The filesystem a file input reads (sources/growth.py), in-process against real
filesystems: a tmpfs mounted by the test (root) and the one holding the test's temporary
folder: its device, mount point, sizes, the reading's time and the file's size, and the
mount point found before used again only while the device is the same."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import TMPFS_SIZE

from retrywatch.sources.growth import filesystem_of, mount_point

SIZE = TMPFS_SIZE  # the tmpfs fixture's (tests/conftest.py)



def test_a_mount_points_own_directory_is_its_mount_point(tmpfs: Path) -> None:
    """The tmpfs's root directory, a file on it and a folder in it all lie on the tmpfs
    mounted there (not on the filesystem holding the mount point's directory)."""
    (tmpfs / "logs").mkdir()
    log = tmpfs / "logs" / "error.log"
    log.write_bytes(b"x" * 10)
    assert mount_point(str(tmpfs)) == str(tmpfs)
    assert mount_point(str(tmpfs / "logs")) == str(tmpfs)
    assert mount_point(str(log)) == str(tmpfs)
    assert mount_point(str(tmpfs.parent)) != str(tmpfs)


def test_the_reading_of_a_file_on_a_tmpfs(tmpfs: Path) -> None:
    """Its device is the file's st_dev; size and free space are statvfs's (an empty 4 MiB
    tmpfs: all of it free but the file's two pages); read_at is the ``now`` given (0 by
    default); file_size is the file's size then."""
    log = tmpfs / "error.log"
    log.write_bytes(b"x" * 5000)
    fs = filesystem_of(str(log), now=123.5)
    vfs = os.statvfs(log)
    assert fs.dev == os.stat(log).st_dev == os.stat(tmpfs).st_dev
    assert fs.mount == str(tmpfs)
    assert fs.size_bytes == SIZE
    assert fs.free_bytes == vfs.f_bavail * vfs.f_frsize == SIZE - 2 * 4096
    assert fs.read_at == 123.5
    assert fs.file_size == 5000
    default = filesystem_of(str(log))
    assert default.read_at == 0.0 and default.file_size == 5000


def test_the_mount_point_known_is_used_again_only_on_the_same_device(tmp_path: Path) -> None:
    """``known``: (device, mount) found before. The same device: that mount is the answer
    (not looked up again); another device: looked up again."""
    log = tmp_path / "error.log"
    log.write_bytes(b"x" * 7)
    dev = os.stat(log).st_dev
    real = mount_point(str(log))
    assert filesystem_of(str(log), (dev, "/known/before")).mount == "/known/before"
    assert filesystem_of(str(log), (dev + 1, "/known/before")).mount == real
    assert filesystem_of(str(log), None).mount == real
    fs = filesystem_of(str(log), (dev, "/known/before"), now=7.0)
    assert (fs.dev, fs.read_at, fs.file_size) == (dev, 7.0, 7)
