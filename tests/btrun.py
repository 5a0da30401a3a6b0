"""Helpers shared by tests: workspaces of their own (the example's copy or files of a test),
records standing in for builds, repositories of their own, and running ``bt`` as a process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

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


def new_workspace(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, str] | None = None,
    cache: str = "xdg-cache",
) -> Path:
    """A workspace of the test's own at ``tmp_path/ws``: ``files`` written, or a copy of the
    example when there are none; bt's cache directory under ``tmp_path/cache`` (XDG_CACHE_HOME)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / cache))
    if files is None:
        return copy_example(tmp_path / "ws")
    return write_tree(tmp_path / "ws", files)


def own_repository(registry: str, prefix: str) -> str:
    """A repository no other test (or earlier run) pushed to: ``REGISTRY/PREFIX-<12 hex>``."""
    return f"{registry}/{prefix}-{uuid.uuid4().hex[:12]}"


def record_all_as_built(root: Path) -> None:
    """Stand-in for `bt build`: record every platform build with a made-up digest."""
    from buildtool.build.record import record_builds
    from buildtool.plan.session import Session, Workbench

    bench = Workbench(Session(root))
    planned = bench.plan(["//..."])
    record_builds(
        bench.config,
        bench.lock_path,
        [(p.manifest, f"sha256:{p.key[:64]}", f"local/{p.key[:12]}") for p in planned],
    )


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
