"""The command line's own surface: help, version, exit codes."""

from __future__ import annotations

import pytest
from btrun import REPO, bt

from buildtool import __version__
from buildtool.cli import COMMANDS


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


def test_unknown_command_is_a_usage_error() -> None:
    result = bt("biuld", cwd=REPO)
    assert result.returncode == 2
    assert "No such command 'biuld'" in result.stderr
