"""The command line's own surface: help, version, exit codes."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import click
import pytest
from btrun import REPO, bt, write_tree

from buildtool import __version__
from buildtool.cli.main import COMMANDS, ENVVAR_PREFIX, cli
from buildtool.state.cachedir import MARK, MARK_NAME, crash_log_path


def test_version() -> None:
    result = bt("--version", cwd=REPO, check=True)
    assert result.stdout.strip() == f"bt {__version__}"


def test_top_level_help_lists_every_command_with_its_summary() -> None:
    out = bt("--help", cwd=REPO, check=True).stdout
    assert "Usage: bt [OPTIONS] COMMAND [ARGS]..." in out
    for name, (_, summary) in COMMANDS.items():
        assert f"{name}" in out and summary in out, name
    assert "Exit codes: 0 ok, 1 a build failed, 2 usage or configuration error" in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str) -> None:
    result = bt(name, "--help", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: bt {name}")
    # every option is documented
    for line in result.stdout.splitlines():
        if line.strip().startswith("--"):
            assert len(line.split(None, 1)) == 2, f"undocumented option in bt {name}: {line}"


def every_option() -> list[tuple[str, click.Option, click.Context]]:
    """(command path, option, its context) for every option of every command and subcommand,
    with the contexts `bt` runs them in (show_default and the BT prefix inherited)."""
    found = []
    top = click.Context(cli, info_name="bt", auto_envvar_prefix=ENVVAR_PREFIX)
    stack: list[tuple[click.Command, click.Context]] = [
        (command, click.Context(command, parent=top, info_name=name))
        for name in COMMANDS
        if (command := cli.get_command(top, name)) is not None
    ]
    stack.append((cli, top))
    while stack:
        command, ctx = stack.pop()
        if isinstance(command, click.Group) and command is not cli:
            for name, sub in command.commands.items():
                stack.append((sub, click.Context(sub, parent=ctx, info_name=name)))
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in ("help", "version"):
                found.append((ctx.command_path, param, ctx))
    return found


def test_every_option_names_its_default_and_its_environment_variable() -> None:
    for path, option, ctx in every_option():
        record = option.get_help_record(ctx)
        assert record is not None, (path, option.name)
        text = record[1]
        assert "env var: BT_" in text, (path, option.name, text)
        if option.is_flag and not option.secondary_opts:
            continue  # a flag is off unless given
        assert "default:" in text, (path, option.name, text)


def test_options_come_from_bt_variables(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    as_json = bt("plan", "//...", cwd=root, env={"BT_PLAN_FORMAT": "json"})
    assert as_json.returncode == 0, as_json.stderr
    assert [p["label"] for p in json.loads(as_json.stdout)] == ["//:a"]
    elsewhere = bt("query", "//...", cwd=tmp_path, env={"BT_DIRECTORY": str(root)})
    assert (elsewhere.returncode, elsewhere.stdout) == (0, "//:a\n")
    bad = bt("build", "//...", cwd=root, env={"BT_JOBS": "0"})
    assert bad.returncode == 2
    assert "0 is not in the range x>=1" in bad.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = bt("biuld", cwd=REPO)
    assert result.returncode == 2
    assert "No such command 'biuld'" in result.stderr


# -- exit codes: 0 ok, 1 a build failed, 2 usage or configuration error, 3 a bug, 130 Ctrl-C --

WORKSPACE = {
    ".cache-spec": 'platforms = ["linux/amd64"]\n[builders."*"]\nnetwork = "none"\n',
    "BUILD.images": 'image(name = "a")\n',
    "Dockerfile": "FROM scratch\nCOPY a.txt /a.txt\n",
    "a.txt": "a\n",
}


def workspace(tmp_path: Path, changed: dict[str, str] | None = None) -> Path:
    return write_tree(tmp_path / "ws", {**WORKSPACE, **(changed or {})})


def test_a_bad_label_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = bt("plan", "//:b", cwd=workspace(tmp_path))
    assert (result.returncode, result.stderr) == (2, "no target //:b (did you mean //:a?)\n")


def test_a_registry_that_cannot_be_reached_during_a_build_fails_the_build_exit_1(
    tmp_path: Path, engine: str
) -> None:
    port = closed_port()
    spec = WORKSPACE[".cache-spec"] + f'[registry]\nurl = "127.0.0.1:{port}/bt"\n'
    root = workspace(tmp_path, {".cache-spec": spec, "a.txt": uuid.uuid4().hex})
    result = bt("build", "//...", "--push", "--retries", "0", cwd=root, env={"DOCKER_HOST": engine})
    assert result.returncode == 1, result.stderr
    # The remote action cache asks the registry before the build: that is where it fails.
    assert f"cannot ask the registry for 127.0.0.1:{port}/bt/a:bt-" in result.stderr
    assert "connection refused" in result.stderr.lower()
    assert result.stderr.splitlines()[-1] == "1 platform builds failed, 0 skipped"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_bug_prints_one_line_naming_a_log_under_the_cache_dir_and_exits_3(
    tmp_path: Path,
) -> None:
    # A directory where the lock file of the Dockerfile analysis cache belongs: opening it is an
    # error bt does not expect, so it surfaces as a bug, not as a message about the workspace.
    root = workspace(tmp_path, {".cache-spec": 'cache_dir = ".bt"\n' + WORKSPACE[".cache-spec"]})
    (root / ".bt/analysis.msgpack.lock").mkdir(parents=True)
    (root / ".bt" / MARK_NAME).write_bytes(MARK)  # a cache directory bt made
    result = bt("plan", "//...", cwd=root)
    assert result.returncode == 3
    assert len(result.stderr.splitlines()) == 1, result.stderr
    logs = list((root / ".bt/logs").glob("crash-*.log"))
    assert len(logs) == 1
    assert result.stderr == (
        "bt: internal error (IsADirectoryError: [Errno 21] Is a directory: "
        f"'{root}/.bt/analysis.msgpack.lock'); the traceback is in {logs[0]}\n"
    )
    log = logs[0].read_text()
    assert "command: bt plan //...\n" in log
    assert "Traceback (most recent call last)" in log and "IsADirectoryError" in log


def test_a_cache_dir_that_cannot_be_made_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # cache_dir under a regular file: the configuration loads, but its cache cannot be made.
    root = workspace(
        tmp_path, {".cache-spec": 'cache_dir = "a.txt/c"\n' + WORKSPACE[".cache-spec"]}
    )
    xdg = tmp_path / "xdg"
    result = bt("plan", "//...", cwd=root, env={"XDG_CACHE_HOME": str(xdg)})
    assert result.returncode == 2
    assert result.stderr == f"{root}/a.txt/c: cannot use the cache directory: Not a directory\n"
    assert not xdg.exists()


def test_crash_logs_are_named_by_time_under_the_cache_dir_or_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.datetime(2024, 5, 6, 7, 8, 9, 12345)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert (
        crash_log_path(tmp_path / "c", now) == tmp_path / "c/logs/crash-20240506T070809-012345.log"
    )
    assert crash_log_path(None, now) == tmp_path / "xdg/bt/crash-20240506T070809-012345.log"


def test_ctrl_c_exits_130(tmp_path: Path) -> None:
    # A broken BUILD.images: watch reports it and waits for a fix, no engine needed.
    root = workspace(tmp_path, {"BUILD.images": "image(\n"})
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "buildtool", "watch", "//...", "--json"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        events = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert [e["event"] for e in events] == ["watch_error", "watching"]
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert stderr == "interrupted: finished builds are recorded\n"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["frob"], "bt: No such command 'frob'. (see bt --help)"),
        (
            ["-C", "/nonexistent", "plan"],
            "bt: Invalid value for '-C': Directory '/nonexistent' does not exist. (see bt --help)",
        ),
        (
            ["build", "--jobs", "0", "//..."],
            "bt build: Invalid value for '-j' / '--jobs' (env var: 'BT_JOBS'): 0 is not in the range x>=1. (see bt build --help)",
        ),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(tmp_path: Path, args: list[str], line: str) -> None:
    result = bt(*args, cwd=tmp_path)
    assert (result.returncode, result.stderr.splitlines()) == (2, [line])
