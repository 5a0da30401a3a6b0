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
    assert "\\b" not in result.stdout  # click's no-rewrap marker, never printed
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
    as_json = bt("plan", "//...", cwd=root, env={"BT_FORMAT": "json"})
    assert as_json.returncode == 0, as_json.stderr
    assert [p["label"] for p in json.loads(as_json.stdout)] == ["//:a"]
    elsewhere = bt("query", "//...", cwd=tmp_path, env={"BT_DIRECTORY": str(root)})
    assert (elsewhere.returncode, elsewhere.stdout) == (0, "//:a\n")
    bad = bt("build", "//...", cwd=root, env={"BT_JOBS": "0"})
    assert bad.returncode == 2
    assert "0 is not in the range x>=1" in bad.stderr


def long_flags(option: click.Option) -> set[str]:
    return {flag for flag in (*option.opts, *option.secondary_opts) if flag.startswith("--")}


# The one option spelt alike on two commands with two meanings: a format to `bt query`, the
# file to write to `bt import-bake`. Each reads its own variable.
MEANING_DIFFERS = {"--output"}


def test_an_option_several_commands_share_reads_one_variable_on_every_command() -> None:
    readers: dict[str, dict[str, object]] = {}
    for path, option, _ in every_option():
        if path == "bt":
            continue
        for flag in long_flags(option) or {"-C"}:
            readers.setdefault(flag, {})[path] = option.envvar
    shared = {flag: by_path for flag, by_path in readers.items() if len(by_path) > 1}
    assert set(shared) - MEANING_DIFFERS == {
        "-C", "--platform", "--push", "--no-push", "--progress", "--json", "--format",
        "--dry-run", "--builds-per-job", "--event", "--tag-template", "--trace",
    }  # fmt: skip
    for flag, by_path in shared.items():
        names = set(by_path.values())
        if flag in MEANING_DIFFERS:
            assert len(names) == len(by_path), (flag, by_path)
        elif flag == "-C":  # read once, by `bt` itself, wherever -C is written
            assert names == {None}, by_path
        else:
            assert len(names) == 1 and None not in names, (flag, by_path)
    commands = {path for path, _, _ in every_option() if path != "bt"}
    assert set(readers["-C"]) == commands  # every command takes -C after its name


def readme_table(heading_row: str) -> list[list[str]]:
    """The rows of the README table whose header row is ``heading_row``, as cells."""
    text = (REPO / "README.md").read_text()
    lines = text[text.index(heading_row) :].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_the_readmes_command_table_names_exactly_the_options_of_each_command() -> None:
    import re

    by_command: dict[str, set[str]] = {}
    for path, option, _ in every_option():
        if path != "bt":
            by_command.setdefault(path, set()).update(long_flags(option))
    documented: dict[str, set[str]] = {}
    for first, what in readme_table("| command | what it does |"):
        words = first.strip("`").split()
        path = " ".join(w for w in words if re.fullmatch(r"[a-z][a-z-]*", w))
        # The options in code spans that start with one (`--push/--no-push`, `--shard I/N`);
        # other spans may name other commands' options (`bt build --lock-out`).
        spans = re.findall(r"`(--[^`]*)`", what)
        documented[path] = {f for span in spans for f in re.findall(r"--[a-z][a-z-]*", span)}
    groups = {"bt ci", "bt lock"}  # their subcommands have the rows
    assert documented == {path: flags for path, flags in by_command.items() if path not in groups}


def test_the_readmes_environment_table_is_what_help_says(tmp_path: Path) -> None:
    rows = readme_table("| variable | option |")
    assert rows, "no environment table"
    for variable_cell, option_cell in rows:
        variable = variable_cell.strip("`")
        if not option_cell.startswith("`-"):
            continue  # a setting, not an option (BT_CACHE_DIR)
        flag = option_cell.split("`")[1].split()[0].split("/")[0]
        if flag == "-C":
            helps = [bt("--help", cwd=REPO, check=True).stdout]
            helps += [bt(name, "--help", cwd=REPO, check=True).stdout for name in COMMANDS]
        else:
            names = option_cell.split(" of ", 1)[1].split(" (")[0].split(", ")
            helps = [bt(*name.split(), "--help", cwd=REPO, check=True).stdout for name in names]
            assert all(flag in text for text in helps), (variable, flag)
        for text in helps:
            assert variable in " ".join(text.split()), (variable, text)


def test_dash_c_works_before_and_after_the_command(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    before = bt("-C", str(root), "plan", "//...", cwd=tmp_path)
    after = bt("plan", "-C", str(root), "//...", cwd=tmp_path)
    last = bt("plan", "//...", "-C", str(root), cwd=tmp_path)
    assert before.returncode == 0, before.stderr
    assert before.stdout.startswith("stale  //:a  linux/amd64")
    assert (after.returncode, after.stdout) == (0, before.stdout)
    assert (last.returncode, last.stdout) == (0, before.stdout)
    nested = bt("-C", str(tmp_path), "query", "-C", root.name, "//...", cwd=REPO)
    assert (nested.returncode, nested.stdout) == (0, "//:a\n")  # relative to the first -C


def test_bt_platform_selects_the_platform_of_why_and_inputs(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    (root / ".cache-spec").write_text('platforms = ["linux/amd64", "linux/arm64"]\n')
    env = {"BT_PLATFORM": "linux/arm64"}
    why = bt("why", "//:a", cwd=root, env=env)
    assert why.returncode == 0, why.stderr
    assert why.stdout.splitlines()[0] == "//:a linux/arm64: stale"
    assert why.stdout == bt("why", "//:a", "--platform", "linux/arm64", cwd=root).stdout
    inputs = bt("inputs", "//:a", "--format", "json", cwd=root, env=env)
    assert inputs.returncode == 0, inputs.stderr
    assert json.loads(inputs.stdout)["platform"] == "linux/arm64"
    both = bt("inputs", "//:a", cwd=root, env={"BT_PLATFORM": "linux/arm64 linux/amd64"})
    assert both.returncode == 2
    assert "one platform, not 'linux/arm64 linux/amd64'" in both.stderr


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
    assert result.stderr.splitlines()[-1] == "1 platform build failed, 0 skipped"


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
