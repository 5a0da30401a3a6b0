"""Described file sets kept between runs: reused while unchanged, never stale."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from btrun import new_workspace

from buildtool.inputs import setcache
from buildtool.plan.session import Session, Workbench

FILES = {
    ".cache-spec": 'platforms = ["linux/amd64"]\n',
    "BUILD.images": 'image(name = "app")\nimage(name = "other", dockerfile = "Other")\n',
    "Dockerfile": "FROM scratch\nCOPY data/ /data/\nCOPY top.txt /\n",
    "Other": "FROM scratch\nCOPY top.txt /\n",
    "top.txt": "top\n",
    "data/a.txt": "a\n",
    "data/sub/b.txt": "b\n",
}


def keys(root: Path) -> tuple[dict[str, str], int]:
    """Keys of every build, and how many file sets were taken from the cache."""
    bench = Workbench(Session(root))
    planned = bench.plan(["//..."])
    return {str(p.label): p.key for p in planned}, bench.computer.filesets.kept.reused


def cold_keys(root: Path, cache: Path) -> dict[str, str]:
    shutil.rmtree(cache, ignore_errors=True)
    return keys(root)[0]


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return new_workspace(tmp_path, monkeypatch, FILES, cache="cache")


def test_a_kept_set_is_reused_until_any_change_that_can_change_a_key(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Files made by a test are always racy; a zero window lets their sets be kept.
    monkeypatch.setattr(setcache, "RACY_WINDOW_NS", 0)
    data = workspace / "data"
    edits: list[Callable[[], object]] = [
        lambda: (data / "a.txt").write_text("A\n"),  # same size
        lambda: (data / "sub" / "c.txt").write_text("new\n"),  # a file added below
        lambda: os.chmod(data / "a.txt", 0o755),  # the executable bit
        lambda: (data / "sub" / "b.txt").unlink(),
        lambda: os.symlink("a.txt", data / "link"),
        lambda: (workspace / ".dockerignore").write_text("data/a.txt\n"),
        lambda: (workspace / "top.txt").write_text("changed\n"),
    ]
    before, _ = keys(workspace)
    assert keys(workspace) == (before, 2)  # both sets from the cache, same keys
    for edit in edits:
        edit()
        after, _ = keys(workspace)
        assert after != before
        assert after == cold_keys(workspace, tmp_path / "cache")
        before = after


def test_an_edit_in_the_same_instant_as_the_plan_is_seen(workspace: Path) -> None:
    first, _ = keys(workspace)
    path = workspace / "data" / "a.txt"
    stat = path.stat()
    path.write_text("b\n")  # same size, and the same mtime as before
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second, reused = keys(workspace)
    assert second["//:app"] != first["//:app"]
    assert second["//:other"] == first["//:other"]
    assert reused == 0  # racy sets were never kept


def test_a_corrupt_cache_file_is_recomputed(workspace: Path, tmp_path: Path) -> None:
    first, _ = keys(workspace)
    for path in (tmp_path / "cache").rglob("filesets.msgpack"):
        path.write_bytes(b"\x93garbage")
    assert keys(workspace)[0] == first
