"""Finding log files behind PATH arguments: rotated sets, globs, folders, duplicates, pods."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from retrywatch.forensics.discover import LogFile, discover

LINE = b"2026/11/25 17:33:43 [notice] 1#1: start worker processes\n"


def touch(path: Path, mtime: float | None = None, data: bytes = LINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def names(files: list[LogFile]) -> list[str]:
    return [Path(f.path).name for f in files]


# -- rotated sets ---------------------------------------------------------------------------


def test_numbered_rotated_set_is_oldest_first(tmp_path: Path) -> None:
    # The modification times say the opposite of the names (a copy without -p, say):
    # the rotation numbers decide, and the live file comes last.
    for age, name in enumerate(["error.log", "error.log.1", "error.log.2.gz", "error.log.10"]):
        touch(tmp_path / name, mtime=1_700_000_000 + 100 * age)
    files = discover([str(tmp_path)])
    assert names(files) == ["error.log.10", "error.log.2.gz", "error.log.1", "error.log"]
    assert {f.source for f in files} == {str(tmp_path / "error.log")}


def test_number_ten_is_older_than_number_two(tmp_path: Path) -> None:
    # A string sort puts error.log.10 between error.log.1 and error.log.2.
    for name in ("error.log.1", "error.log.2", "error.log.10", "error.log.3"):
        touch(tmp_path / name)
    assert names(discover([str(tmp_path)])) == [
        "error.log.10", "error.log.3", "error.log.2", "error.log.1"]


def test_dated_rotated_set_is_oldest_first(tmp_path: Path) -> None:
    touch(tmp_path / "error.log", mtime=1_700_000_000)
    touch(tmp_path / "error.log-20240102", mtime=1_700_000_100)
    touch(tmp_path / "error.log-20240101.gz", mtime=1_700_000_200)
    files = discover([str(tmp_path)])
    assert names(files) == ["error.log-20240101.gz", "error.log-20240102", "error.log"]
    assert {f.source for f in files} == {str(tmp_path / "error.log")}


def test_files_named_in_any_order_are_still_ordered(tmp_path: Path) -> None:
    paths = [touch(tmp_path / n) for n in ("error.log", "error.log.1", "error.log.2.gz")]
    files = discover([str(p) for p in paths])
    assert names(files) == ["error.log.2.gz", "error.log.1", "error.log"]
    assert len({f.source for f in files}) == 1


def test_separate_logs_stay_separate_sources_in_argument_order(tmp_path: Path) -> None:
    for d in ("b", "a"):
        touch(tmp_path / d / "error.log")
        touch(tmp_path / d / "error.log.1")
    files = discover([str(tmp_path / "b"), str(tmp_path / "a")])
    assert [(Path(f.path).parent.name, Path(f.path).name) for f in files] == [
        ("b", "error.log.1"), ("b", "error.log"), ("a", "error.log.1"), ("a", "error.log")]
    assert [f.source for f in files] == [str(tmp_path / "b" / "error.log")] * 2 + [
        str(tmp_path / "a" / "error.log")] * 2


def test_log_file_records_size(tmp_path: Path) -> None:
    path = touch(tmp_path / "error.log", data=LINE * 3)
    [f] = discover([str(path)])
    assert f.size == len(LINE) * 3
    assert f.to_dict() == {"path": str(path), "source": str(path), "bytes": len(LINE) * 3}


# -- globs and folders ----------------------------------------------------------------------


def test_glob(tmp_path: Path) -> None:
    for name in ("error.log", "error.log.1", "error.log.2.gz", "notes.txt"):
        touch(tmp_path / name)
    files = discover([str(tmp_path / "error.log*")])
    assert names(files) == ["error.log.2.gz", "error.log.1", "error.log"]


def test_recursive_glob(tmp_path: Path) -> None:
    touch(tmp_path / "x" / "y" / "site.log")
    touch(tmp_path / "x" / "top.log")
    files = discover([str(tmp_path / "**" / "*.log")])
    assert sorted(names(files)) == ["site.log", "top.log"]


def test_glob_matching_nothing_finds_nothing(tmp_path: Path) -> None:
    assert discover([str(tmp_path / "*.log")]) == []


def test_folder_is_searched_recursively_for_log_files_only(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "b" / "c" / "error.log")
    touch(tmp_path / "a" / "error.log.1.gz")
    touch(tmp_path / "site.log")
    for other in ("notes.txt", "README.md", "a/b/truth.json.gz", "a/b/config.yaml"):
        touch(tmp_path / other)
    files = discover([str(tmp_path)])
    assert sorted(os.path.relpath(f.path, tmp_path) for f in files) == sorted([
        os.path.join("a", "b", "c", "error.log"), os.path.join("a", "error.log.1.gz"),
        "site.log"])


def test_empty_folder_finds_nothing(tmp_path: Path) -> None:
    touch(tmp_path / "notes.txt")
    assert discover([str(tmp_path)]) == []


# -- duplicates -----------------------------------------------------------------------------


def test_same_file_named_twice_is_listed_once(tmp_path: Path) -> None:
    path = touch(tmp_path / "error.log")
    files = discover([str(path), str(path), str(tmp_path), str(tmp_path / "*.log")])
    assert [f.path for f in files] == [str(path)]


def test_file_named_through_a_symlink_is_listed_once(tmp_path: Path) -> None:
    path = touch(tmp_path / "real" / "error.log")
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "error.log").symlink_to(path)
    files = discover([str(path), str(tmp_path / "link" / "error.log")])
    assert [f.path for f in files] == [str(path)]
    files = discover([str(tmp_path)])
    assert len(files) == 1


def test_same_file_through_relative_and_absolute_paths(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = touch(tmp_path / "error.log")
    monkeypatch.chdir(tmp_path)
    assert len(discover(["error.log", str(path), "./error.log"])) == 1


# -- Kubernetes -----------------------------------------------------------------------------


# /var/log/pods/NAMESPACE_POD_UID/CONTAINER/N.log
POD_DIR = ("ingress-nginx_ingress-nginx-controller-7d9f8b6c5-x2x4k_"
           "0f3c2a1e-4b5d-4e6f-8a9b-0c1d2e3f4a5b")


def test_kubernetes_pod_log_is_named_namespace_pod_container(tmp_path: Path) -> None:
    log = touch(tmp_path / "pods" / POD_DIR / "controller" / "0.log")
    [f] = discover([str(tmp_path / "pods")])
    assert f.path == str(log)
    assert f.source == "ingress-nginx/ingress-nginx-controller-7d9f8b6c5-x2x4k/controller"
    [g] = discover([str(log)])  # named directly: the same name
    assert g.source == f.source


def test_kubernetes_containers_are_separate_sources(tmp_path: Path) -> None:
    touch(tmp_path / "pods" / POD_DIR / "controller" / "0.log")
    touch(tmp_path / "pods" / POD_DIR / "sidecar" / "0.log")
    touch(tmp_path / "pods" / "default_web-0_1234abcd-0000-1111-2222-333344445555" / "nginx"
          / "0.log")
    sources = {f.source for f in discover([str(tmp_path)])}
    assert sources == {
        "ingress-nginx/ingress-nginx-controller-7d9f8b6c5-x2x4k/controller",
        "ingress-nginx/ingress-nginx-controller-7d9f8b6c5-x2x4k/sidecar",
        "default/web-0/nginx",
    }


def test_kubernetes_restarts_are_one_source(tmp_path: Path) -> None:
    touch(tmp_path / "pods" / POD_DIR / "controller" / "0.log", mtime=1_700_000_000)
    touch(tmp_path / "pods" / POD_DIR / "controller" / "1.log", mtime=1_700_000_100)
    files = discover([str(tmp_path)])
    assert names(files) == ["0.log", "1.log"]
    assert len({f.source for f in files}) == 1


# -- errors ---------------------------------------------------------------------------------


def test_missing_named_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        discover([str(tmp_path / "missing.log")])


def test_missing_named_file_among_others_raises(tmp_path: Path) -> None:
    touch(tmp_path / "error.log")
    with pytest.raises(FileNotFoundError):
        discover([str(tmp_path / "error.log"), str(tmp_path / "nope" / "error.log")])
