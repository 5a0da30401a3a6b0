"""The bad-input corpus: every case in ``tests/bad_inputs/`` is refused with exit 2, one short
message naming the file (and line), no traceback, and nothing changed on disk.

A case is a folder holding ``case.toml``:

    args = ["plan", "//..."]       the bt command line
    message = "regex"              searched in stderr
    file = "BUILD.images"          what the message must name: a file, or the label, platform
                                   or query the command line gave
    line = 3                       optional: the message says ``file:3``
    bomb = true                    optional: a resource bomb, refused in under a second
    [files]    path = "text"       written over the default workspace
    [binary]   path = "hex"        bytes that are not text (non-UTF-8 content)
    [symlinks] path = "target"     symbolic links (git keeps them poorly)

The default workspace is a ``.cache-spec`` for linux/amd64, ``Dockerfile`` ``FROM scratch``
and a BUILD.images declaring ``//:app``.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

CASES = Path(__file__).parent / "bad_inputs"
DEFAULT_FILES = {
    ".cache-spec": 'platforms = ["linux/amd64"]\n',
    "Dockerfile": "FROM scratch\n",
    "BUILD.images": 'image(name = "app")\n',
}
BOMB_SECONDS = 1.0


def load_cases() -> list[Any]:
    return [
        pytest.param(tomllib.loads((path / "case.toml").read_text()), id=path.name)
        for path in sorted(CASES.iterdir())
    ]


def build_workspace(root: Path, case: dict[str, Any]) -> None:
    root.mkdir()
    files = {**DEFAULT_FILES, **case.get("files", {})}
    binary = {name: bytes.fromhex(text) for name, text in case.get("binary", {}).items()}
    for name, content in [*files.items(), *binary.items()]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for name, target in case.get("symlinks", {}).items():
        (root / name).symlink_to(target)


def snapshot(*roots: Path) -> dict[str, str]:
    """Every path under ``roots`` with its type and content digest (links by their target)."""
    found: dict[str, str] = {}
    for root in roots:
        for directory, dirs, files in os.walk(root):
            for name in dirs + files:
                path = Path(directory, name)
                if path.is_symlink():
                    found[str(path)] = "link:" + os.readlink(path)
                elif path.is_dir():
                    found[str(path)] = "dir"
                else:
                    found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_the_corpus_holds_at_least_80_cases() -> None:
    assert len(load_cases()) >= 80


@pytest.mark.parametrize("case", load_cases())
def test_bad_input_is_refused_with_one_clean_line_and_changes_nothing(
    case: dict[str, Any], tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    cache = tmp_path / "xdg-cache"
    cache.mkdir()
    build_workspace(root, case)
    before = snapshot(root, cache)
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "HOME": str(tmp_path)}

    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "buildtool", *case["args"]],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    elapsed = time.monotonic() - started

    stderr = result.stderr.strip()
    assert result.returncode == 2, stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert 1 <= len(stderr.splitlines()) <= 3, stderr
    assert re.search(case["message"], stderr), stderr
    assert case["file"] in stderr, stderr
    if "line" in case:
        assert f"{case['file']}:{case['line']}:" in stderr, stderr
    if case.get("bomb"):
        assert elapsed < BOMB_SECONDS, f"took {elapsed:.2f} s: {stderr}"
    assert snapshot(root, cache) == before
