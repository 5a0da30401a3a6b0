"""`bt completion`: the scripts, sourced in a real bash, complete commands, options and the
workspace's labels and patterns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from btrun import REPO, bt, write_tree

from buildtool.cli.completion import complete_labels

# Completes one line as bash does on TAB: the words and the cursor at the end of the line.
COMPLETE = """\
source <(bt completion bash)
COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMPREPLY=()
_bt_completion bt
printf '%s\\n' "${COMPREPLY[@]}"
"""


def complete_in_bash(line: str, cwd: Path, tmp_path: Path) -> list[str]:
    """What `bt completion bash`, sourced in bash, offers for ``line``, with `bt` on PATH
    being this checkout's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "bt"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m buildtool "$@"\n')
    script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.setdefault("XDG_CACHE_HOME", str(tmp_path / "cache"))
    result = subprocess.run(
        ["bash", "-c", COMPLETE, "complete", line],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [word for word in result.stdout.splitlines() if word]


def test_bash_completes_a_package_of_the_example_workspace(tmp_path: Path) -> None:
    assert complete_in_bash("bt build //mat", REPO, tmp_path) == ["//matrix:"]


def test_bash_completes_a_label_after_the_colon_it_splits_words_at(tmp_path: Path) -> None:
    # Bash splits `//matrix:large-v3-z` at the colon: the reply completes the part after it.
    assert complete_in_bash("bt build //matrix:large-v3-z", REPO, tmp_path) == ["large-v3-zh"]


def test_bash_completes_commands_and_options(tmp_path: Path) -> None:
    assert complete_in_bash("bt import-", REPO, tmp_path) == ["import-bake"]
    assert complete_in_bash("bt build --progr", REPO, tmp_path) == ["--progress"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_gets_a_script_naming_bts_completion_variable(
    shell: str, tmp_path: Path
) -> None:
    result = bt("completion", shell, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "_BT_COMPLETE" in result.stdout
    if shell == "bash":
        syntax = subprocess.run(["bash", "-n"], input=result.stdout, capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr


def test_labels_complete_from_packages_to_targets(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            ".cache-spec": "",
            "BUILD.images": 'image(name = "top")\n',
            "model/BUILD.images": 'image(name = "tiny")\nimage(name = "large")\n',
            "model/cuda/BUILD.images": 'image(name = "tiny")\n',
        },
    )
    assert complete_labels(root, "//") == [
        "//...", "//:", "//model/", "//model/...", "//model/cuda:", "//model:"
    ]  # fmt: skip
    assert complete_labels(root, "//model:") == ["//model:all", "//model:large", "//model:tiny"]
    assert complete_labels(root, "//model:t") == ["//model:tiny"]
    assert complete_labels(root, "//:") == ["//:all", "//:top"]
    assert complete_labels(root, "//nothing") == []


def test_a_broken_workspace_completes_nothing_and_prints_nothing(tmp_path: Path) -> None:
    write_tree(tmp_path, {".cache-spec": "", "BUILD.images": "image(\n"})
    assert complete_in_bash("bt build //", tmp_path, tmp_path) == []
