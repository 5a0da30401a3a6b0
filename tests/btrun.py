"""Helpers shared by tests: copies of the example workspace and running ``bt`` as a process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_FILES = (".cache-spec", "BUILD.images", "docker")


def copy_example(dest: Path) -> Path:
    """A private copy of the example workspace at ``dest`` (created)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in EXAMPLE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, symlinks=True)
        else:
            shutil.copy2(source, dest / name)
    return dest


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative path -> text) under ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def keep_mtime(path: Path, text: str) -> None:
    """Write ``text`` and give the file back its mtime, as a same-second edit leaves it: only
    its content says it changed."""
    stat = path.stat()
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def bt(
    *args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m buildtool ARGS`` in ``cwd`` as a separate process."""
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("XDG_CACHE_HOME", str(cwd.parent / "xdg-cache"))
    result = subprocess.run(
        [sys.executable, "-m", "buildtool", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"bt {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result
