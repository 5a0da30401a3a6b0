"""No recursion limit on user data: directory trees are walked with a stack of bt's own, and
JSON nested absurdly deep is refused with one line (exit 2), never a RecursionError."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from btrun import bt, write_tree

from buildtool.errors import BtError
from buildtool.state.jsonvalue import MAX_DEPTH, load_json, nesting

DEPTH = 1999  # nested directories: past Python's default recursion limit of 1000


def test_a_copied_folder_nesting_1999_directories_is_planned_and_listed(tmp_path: Path) -> None:
    assert sys.getrecursionlimit() < DEPTH
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": 'platforms = ["linux/amd64"]\n',
            "BUILD.images": 'image(name = "app")\n',
            "Dockerfile": "FROM scratch\nCOPY d/ /d/\n",
        },
    )
    (root / "d").mkdir()
    fd = os.open(root / "d", os.O_RDONLY)
    for _ in range(DEPTH):  # relative to the last one: the whole path is 4,000 bytes long
        os.mkdir("a", dir_fd=fd)
        parent, fd = fd, os.open("a", os.O_RDONLY, dir_fd=fd)
        os.close(parent)
    with os.fdopen(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
        f.write("deep\n")
    os.close(fd)
    leaf = "d/" + "a/" * DEPTH + "leaf"

    try:
        plan = bt("plan", "//...", cwd=root)
        inputs = bt("inputs", "//:app", cwd=root)
    finally:
        remove_chain(root / "d")
    assert plan.returncode == 0, plan.stderr
    assert inputs.returncode == 0, inputs.stderr
    listed = [line[19:].rsplit("  <- ", 1)[0] for line in inputs.stdout.splitlines()]
    assert len(listed) == 1 + 1 + DEPTH + 1  # the Dockerfile, d, each a, the leaf
    assert listed[-1] == leaf


def remove_chain(top: Path) -> None:
    """Remove ``top``/a/a/.../leaf deepest first (pytest's clean-up recurses, and would fail)."""
    fds = [os.open(top, os.O_RDONLY)]
    while "a" in os.listdir(fds[-1]):
        fds.append(os.open("a", os.O_RDONLY, dir_fd=fds[-1]))
    os.unlink("leaf", dir_fd=fds[-1])
    for child, parent in zip(reversed(fds[1:]), reversed(fds[:-1]), strict=True):
        os.close(child)
        os.rmdir("a", dir_fd=parent)
    os.close(fds[0])


def test_nesting_is_measured_without_recursion() -> None:
    deep: list[object] = []
    for _ in range(50_000):
        deep = [deep]
    assert nesting(deep) == 50_001
    assert nesting({"a": [1, {"b": []}]}) == 4
    assert nesting("text") == 0


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 20_000])
def test_json_nested_past_the_bound_is_refused_with_one_line(depth: int) -> None:
    text = "[" * depth + "]" * depth
    with pytest.raises(BtError) as refused:
        load_json(text, "bake.json", "not bake's JSON")
    assert str(refused.value) == (
        f"bake.json: not bake's JSON: nested more than {MAX_DEPTH} levels deep"
    )
    assert load_json("[" * MAX_DEPTH + "]" * MAX_DEPTH, "bake.json") is not None
