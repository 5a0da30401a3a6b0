"""The kept answer of `bt plan PATTERN...` (plan/noop.py): given again only while every path the
answering run read is unchanged; every edit of the mutation suite that changes a key stops it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from btrun import bt, copy_example, write_tree
from mutation_test import DOCKERFILE_EDITS, MUTATIONS

from buildtool.build.record import record_builds
from buildtool.cli.main import cli
from buildtool.plan import noop
from buildtool.plan.session import Session, Workbench
from buildtool.state.hashing import RACY_WINDOW_NS
from buildtool.workspace.config import load_config

ARGV = ["plan", "//..."]


def record_everything(root: Path) -> None:
    """images.lock records every build of ``root`` as built: a plan of it is a no-op."""
    bench = Workbench(Session(root))
    planned = bench.plan(["//..."])
    record_builds(bench.config, bench.lock_path,
                  [(p.manifest, "sha256:" + p.key[:64], "local/" + p.key[:12]) for p in planned])  # fmt: skip


def plan_and_keep(capsys: pytest.CaptureFixture[str]) -> str:
    """Run `bt plan //...` in this process twice, the second time (with the graph kept by the
    first) recording what it reads, as if it had started after the racy window (a test cannot
    wait 3 s per case); its output."""
    cli.main(ARGV, standalone_mode=False)
    noop.record(ARGV)
    assert noop._recorder is not None
    noop._recorder.limit = time.time_ns() + RACY_WINDOW_NS  # nothing read counts as racy
    capsys.readouterr()
    cli.main(ARGV, standalone_mode=False)
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_example(tmp_path_factory.mktemp("pristine") / "ws")
    os.environ["XDG_CACHE_HOME"] = str(root.parent / "cache-record")
    try:
        record_everything(root)
    finally:
        del os.environ["XDG_CACHE_HOME"]
    return root


@pytest.fixture()
def workspace(pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "ws"
    shutil.copytree(pristine, root, symlinks=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(root)
    yield root
    if noop._recorder is not None:
        noop._recorder.stop()
    noop._recorder = None


EDITS = MUTATIONS + DOCKERFILE_EDITS


@pytest.mark.parametrize(("what", "mutate", "expected"), EDITS, ids=[m[0] for m in EDITS])
def test_every_mutation_that_changes_a_key_stops_the_kept_answer(
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
    what: str,
    mutate: Callable[[Path], None],
    expected: set[tuple[str, str]],
) -> None:
    assert plan_and_keep(capsys) == ""  # a no-op: nothing stale to list
    assert noop._kept_answer(ARGV) == ("", "0 of 390 platform builds stale\n")
    mutate(workspace)
    kept = noop._kept_answer(ARGV)
    if expected:
        assert kept is None
    else:
        assert kept in (None, ("", "0 of 390 platform builds stale\n"))


def test_an_answer_is_kept_per_command_line_and_environment(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan_and_keep(capsys)
    assert noop._kept_answer(["plan", "//matrix/..."]) is None
    monkeypatch.setenv("BT_SOMETHING", "1")
    assert noop._kept_answer(ARGV) is None
    monkeypatch.delenv("BT_SOMETHING")
    assert noop._kept_answer(ARGV) == ("", "0 of 390 platform builds stale\n")


def test_no_answer_is_kept_when_a_file_read_changed_within_the_racy_window(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli.main(ARGV, standalone_mode=False)
    noop.record(ARGV)
    (workspace / "docker" / "align" / "zh" / "vocab.json").write_text("new\n")
    cli.main(ARGV, standalone_mode=False)
    assert noop._kept_answer(ARGV) is None


def test_only_a_plain_plan_of_patterns_is_answered() -> None:
    assert noop.eligible(["plan", "//..."])
    assert noop.eligible(["plan", "//matrix/...", ":x"])
    assert not noop.eligible(["plan"])
    assert not noop.eligible(["plan", "//...", "--all"])
    assert not noop.eligible(["plan", "--format", "json", "//..."])
    assert not noop.eligible(["build", "//..."])


def test_the_default_cache_directory_is_the_configurations(tmp_path: Path) -> None:
    write_tree(tmp_path, {".cache-spec": 'platforms = ["linux/amd64"]\n'})
    assert noop.default_cache_dir(str(tmp_path)) == str(load_config(tmp_path).cache_dir)


def test_bt_plan_answers_from_the_kept_answer_and_sees_an_edit(tmp_path: Path) -> None:
    """End to end, as a user runs it: the first plan evaluates the workspace, the second (past
    the racy window, from the kept graph) keeps its answer, the third is answered without
    importing click; an edit is seen at once."""
    ws = write_tree(tmp_path / "ws", {
        ".cache-spec": 'platforms = ["linux/amd64"]\n',
        "BUILD.images": 'image(name = "app")\n',
        "Dockerfile": "FROM scratch\nCOPY app.txt /\n",
        "app.txt": "one\n",
    })  # fmt: skip
    time.sleep(RACY_WINDOW_NS / 1e9 + 0.1)
    bt(*ARGV, cwd=ws, check=True)
    first = bt(*ARGV, cwd=ws, check=True)
    assert first.stdout.startswith("stale  //:app  linux/amd64")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}
    answered = subprocess.run([sys.executable, "-X", "importtime", "-m", "buildtool", *ARGV],
                              cwd=ws, env=env, capture_output=True, text=True, check=True)  # fmt: skip
    assert answered.stdout == first.stdout
    assert "click" not in answered.stderr
    assert answered.stderr.endswith("1 of 1 platform build stale\n")
    (ws / "app.txt").write_text("two\n")
    edited = bt(*ARGV, cwd=ws, check=True)
    assert edited.stdout.split()[3] != first.stdout.split()[3]  # another key


def test_an_edit_behind_a_symlink_stops_the_kept_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = write_tree(tmp_path / "ws", {
        ".cache-spec": 'platforms = ["linux/amd64"]\n',
        "BUILD.images": 'image(name = "app")\n',
        "real/Dockerfile": "FROM scratch\nCOPY app.txt /\n",
        "app.txt": "one\n",
    })  # fmt: skip
    (ws / "Dockerfile").symlink_to("real/Dockerfile")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(ws)
    try:
        plan_and_keep(capsys)
        assert noop._kept_answer(ARGV) is not None
        with (ws / "real" / "Dockerfile").open("a") as f:
            f.write("COPY app.txt /again/\n")
        assert noop._kept_answer(ARGV) is None
    finally:
        noop._recorder = None


def test_a_plan_that_evaluates_the_workspace_keeps_no_answer(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It reads far more than the no-op after it: that no-op keeps the answer instead."""
    noop.record(ARGV)
    assert noop._recorder is not None
    noop._recorder.limit = time.time_ns() + RACY_WINDOW_NS
    cli.main(ARGV, standalone_mode=False)
    assert noop._kept_answer(ARGV) is None
