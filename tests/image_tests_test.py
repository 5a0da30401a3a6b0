"""Image tests on a real engine: a string runs through the image's shell, a list in exec form
after the image's ENTRYPOINT (Dockerfile's RUN/CMD forms); a recorded pass is keyed by the
build's key and the test's text, so an edited test runs again on an unchanged image."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from btrun import bt, write_tree

pytestmark = pytest.mark.engine

SPEC = (
    'platforms = ["linux/amd64"]\nglobal_inputs = ["nonce.txt"]\n[builders."*"]\nnetwork = "none"\n'
)


def workspace(tmp_path: Path, engine: str, build: str, **files: str) -> tuple[Path, dict[str, str]]:
    tree = {
        ".cache-spec": SPEC,
        "BUILD.images": build,
        "Dockerfile": "FROM bt-test/busybox:latest\nCOPY hello.txt /hello.txt\n",
        "hello.txt": "hello\n",
        "nonce.txt": uuid.uuid4().hex,
        **{name.replace("_", "."): text for name, text in files.items()},
    }
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return write_tree(tmp_path / "ws", tree), env


def events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


def image_test_events(stdout: str) -> list[tuple[object, ...]]:
    """(event, label, what it says) of the image-test events of a run."""
    found: list[tuple[object, ...]] = []
    for e in events(stdout):
        if e["event"] == "tests_passed":
            found.append(("passed", e["label"], e["tests"]))
        elif e["event"] == "tests_failed":
            found.append(("failed", e["label"], e["message"], e["log_tail"]))
        elif e["event"] == "failed":
            found.append(("build failed", e["label"], e["message"], e["log_tail"]))
    return found


def test_a_string_test_runs_through_the_shell_and_fails_with_the_commands_exit_code(
    tmp_path: Path, engine: str
) -> None:
    root, env = workspace(
        tmp_path, engine, 'image(name = "app", tests = ["echo hi && test -f /nonexist"])\n'
    )
    result = bt("build", "//...", "--json", cwd=root, env=env)
    assert result.returncode == 1, result.stderr
    assert image_test_events(result.stdout) == [
        (
            "build failed",
            "//:app",
            "test 'echo hi && test -f /nonexist' failed with exit code 1",
            "hi",
        )
    ]
    # A build whose test fails is not recorded (images.lock holds only the base image's pin).
    assert json.loads((root / "images.lock").read_text()).get("builds", {}) == {}


def test_a_list_test_runs_in_exec_form_after_the_images_entrypoint(
    tmp_path: Path, engine: str
) -> None:
    build = (
        'image(name = "plain", tests = [["cat", "/hello.txt"], "test $(cat /hello.txt) = hello"])\n'
        'image(name = "tool", dockerfile = "tool.Dockerfile",'
        ' tests = [["/hello.txt"], "test -f /hello.txt"])\n'
        'image(name = "scratch", dockerfile = "scratch.Dockerfile", tests = ["true"])\n'
    )
    root, env = workspace(
        tmp_path,
        engine,
        build,
        tool_Dockerfile='FROM bt-test/busybox:latest\nCOPY hello.txt /hello.txt\nENTRYPOINT ["cat"]\n',
        scratch_Dockerfile="FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    result = bt("build", "//...", "--json", cwd=root, env=env)
    assert result.returncode == 1, result.stderr
    found = image_test_events(result.stdout)
    # exec form: the list is the command (no ENTRYPOINT), or the ENTRYPOINT's arguments
    # (`cat /hello.txt`); shell form: `sh -c`, whatever the ENTRYPOINT.
    assert ("build failed", "//:plain") not in [f[:2] for f in found]
    assert ("build failed", "//:tool") not in [f[:2] for f in found]
    (scratch,) = found
    assert scratch[:3] == (
        "build failed",
        "//:scratch",
        "test 'true' needs the image's shell /bin/sh, which could not be run (exit code 127); "
        "write it as a list to run it in exec form",
    )
    assert sorted(json.loads((root / "images.lock").read_text())["builds"]) == [
        "//:plain",
        "//:tool",
    ]


def test_an_edited_test_runs_again_on_the_next_build_without_rebuilding(
    tmp_path: Path, engine: str
) -> None:
    root, env = workspace(tmp_path, engine, 'image(name = "app", tests = ["test -f /hello.txt"])\n')
    first = bt("build", "//...", "--json", cwd=root, env=env)
    assert first.returncode == 0, first.stderr
    assert [e["event"] for e in events(first.stdout)] == [
        "pinned",
        "run_started",
        "started",
        "finished",
        "run_finished",
    ]

    again = bt("build", "//...", "--json", cwd=root, env=env)  # nothing changed: no test runs
    assert [e["event"] for e in events(again.stdout)] == ["up_to_date"]

    (root / "BUILD.images").write_text('image(name = "app", tests = ["test -f /nonexist"])\n')
    edited = bt("build", "//...", "--json", cwd=root, env=env)
    assert edited.returncode == 1, edited.stderr
    assert events(edited.stdout) == [
        {"event": "up_to_date", "total": 1},
        {
            "event": "tests_failed",
            "label": "//:app",
            "platform": "linux/amd64",
            "message": "test 'test -f /nonexist' failed with exit code 1",
            "log_tail": "",
        },
        {"event": "tests_finished", "ran": 1, "failed": 1},
    ]
    assert edited.stderr.splitlines()[-1] == "1 platform build failed its tests"

    (root / "BUILD.images").write_text(
        'image(name = "app", tests = ["test -f /hello.txt", ["cat", "/hello.txt"]])\n'
    )
    fixed = bt("build", "//...", "--json", cwd=root, env=env)
    assert fixed.returncode == 0, fixed.stderr
    # Only the test with no recorded pass for this key runs.
    assert events(fixed.stdout)[1:] == [
        {"event": "tests_passed", "label": "//:app", "platform": "linux/amd64", "tests": 1},
        {"event": "tests_finished", "ran": 1, "failed": 0},
    ]
    rerun = bt("test", "//...", "--json", cwd=root, env=env)  # `bt test` runs them all
    assert rerun.returncode == 0, rerun.stderr
    assert events(rerun.stdout)[0]["tests"] == 2
