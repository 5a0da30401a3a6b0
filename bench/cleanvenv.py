"""Interpreters to time bt from: a fresh venv holding only bt, as pipx installs it (the floor a
user's `python -c pass` has), and the development interpreter, labelled as such.

A crowded site-packages makes every start-up slower (each `.pth` file runs at start), so a
ratio against the development interpreter's `python -c pass` flatters bt; the clean venv is
where users run it. `--before REV` installs a second venv from that git revision of this
repository (`git archive`), for before/after figures in one run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent


class Interpreter(NamedTuple):
    """A python to time, how bt is started from it, and the environment it runs with."""

    label: str
    python: str
    bt: list[str]
    env: dict[str, str]


def clean_venv(dest: Path, tree: Path) -> Path:
    """``python -m venv dest`` and ``pip install tree`` (not editable) into it; its python."""
    subprocess.run([sys.executable, "-m", "venv", str(dest)], check=True)
    python = dest / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(tree)],
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    return python


def export_revision(rev: str, dest: Path) -> Path:
    """The tree of ``rev`` of this repository, written under ``dest``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev],
        check=True,
        capture_output=True,
    ).stdout
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(dest, filter="data")
    return dest


def interpreters(base: Path, env: dict[str, str], before: str | None) -> list[Interpreter]:
    """The clean venv of this tree, the one of ``before`` if given, and the development
    interpreter running this tree (PYTHONPATH)."""
    clean_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    found = []
    python = clean_venv(base / "venv-now", REPO)
    found.append(Interpreter("clean venv", str(python), [str(python.parent / "bt")], clean_env))
    if before:
        tree = export_revision(before, base / f"src-{before}")
        python = clean_venv(base / "venv-before", tree)
        found.append(
            Interpreter(
                f"clean venv, {before}", str(python), [str(python.parent / "bt")], clean_env
            )
        )
    dev_env = {**env, "PYTHONPATH": str(REPO)}
    found.append(
        Interpreter(
            "development interpreter", sys.executable, [sys.executable, "-m", "buildtool"], dev_env
        )
    )
    return found
