"""The README's walkthroughs, run as written: the Quick start on a fresh copy of the example
workspace and "Your first workspace" in an empty directory. A string in quotes in a comment of
theirs is what that command prints; each is checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from btrun import REPO, copy_example

pytestmark = pytest.mark.engine

MARK = "@@bt-readme-step@@"


def readme_block(heading: str) -> str:
    """The first ```sh block after the line starting with ``heading`` in README.md."""
    text = (REPO / "README.md").read_text()
    after = text[text.index(f"\n{heading}") :]
    start = after.index("```sh\n") + len("```sh\n")
    return after[start : after.index("```\n", start)]


def steps(block: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """The block as a script that marks where each command starts, and per command its line
    and the strings its comment quotes. Heredoc bodies are passed through untouched."""
    script = ["set -eu", "exec 2>&1"]
    found: list[tuple[str, list[str]]] = []
    heredoc_end = None
    for line in block.splitlines():
        if heredoc_end is not None:
            script.append(line)
            if line == heredoc_end:
                heredoc_end = None
            continue
        command, _, comment = line.partition("  # ")
        script += [f"echo {MARK}", line]
        found.append((command.strip(), re.findall(r'"([^"]*)"', comment)))
        opened = re.search(r"<<'(\w+)'", command)
        if opened:
            heredoc_end = opened.group(1)
    return "\n".join(script) + "\n", found


def run_block(block: str, cwd: Path, tmp_path: Path, least_claims: int = 8) -> None:
    """Run ``block`` with bash in ``cwd``, `bt` being this checkout's, and check every quoted
    string of each command's comment in that command's output."""
    shim = tmp_path / "bin" / "bt"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m buildtool "$@"\n')
    shim.chmod(0o755)
    script, commands = steps(block)
    env = {
        **os.environ,
        "PATH": f"{shim.parent}:{os.environ['PATH']}",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "BT_PROGRESS": "plain",
    }
    done = subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    outputs = done.stdout.split(f"{MARK}\n")[1:]
    assert done.returncode == 0, done.stdout[-3000:]
    assert len(outputs) == len(commands), done.stdout[-3000:]
    for (command, claims), output in zip(commands, outputs, strict=True):
        for claim in claims:
            assert claim in output, f"{command}: {claim!r} not in its output:\n{output}"
    assert sum(len(quoted) for _, quoted in commands) >= least_claims


def test_the_quick_start_runs_as_written_and_prints_its_numbers(
    tmp_path: Path, engine: str
) -> None:
    block = readme_block("## Quick start\n")
    assert f"export DOCKER_HOST={engine}" in block
    root = copy_example(tmp_path / "clone")
    run_block(block, root, tmp_path)


def test_your_first_workspace_runs_as_written_and_prints_its_numbers(
    tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = readme_block("## Your first workspace\n")
    (tmp_path / "work").mkdir()
    monkeypatch.setenv("DOCKER_HOST", engine)  # "the local engine" of a usual installation
    run_block(block, tmp_path / "work", tmp_path)


def test_the_block_without_github_actions_runs_as_written(
    tmp_path: Path, engine: str, engine2: str, registry: str
) -> None:
    import json
    import uuid

    from btrun import write_tree

    block = readme_block("Without GitHub Actions, by hand or on other CI systems")
    url = f"{registry}/bt-readme-{uuid.uuid4().hex[:12]}"
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": f'[registry]\nurl = "{url}"\n'
            f'[builders."linux/amd64"]\nhost = "{engine}"\nnetwork = "none"\n'
            f'[builders."linux/arm64"]\nhost = "{engine2}"\nnetwork = "none"\n',
            "BUILD.images": 'image(name = "app", tags = ["v1"])\n',
            "Dockerfile": "FROM scratch\nCOPY a.txt /a.txt\n",
            "a.txt": uuid.uuid4().hex,
        },
    )
    run_block(block, root, tmp_path, least_claims=0)
    lock = json.loads((root / "images.lock").read_text())
    assert sorted(lock["builds"]["//:app"]) == ["linux/amd64", "linux/arm64"]
    assert lock["images"]["//:app"]["tags"] == [f"{url}/app:v1"]
