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

Every case runs once, in a module fixture, several at a time (a case is a ``python -m buildtool``
process, mostly start-up); the test per case then checks its outcome. A bomb's limit is on bt's
evaluation, not on start-up or on waiting for a core of a loaded machine: it is measured in CPU
seconds of the bt process, which must stay within those of the costliest of a few runs of a
valid ``bt query //...`` (spread among the cases) plus ``BOMB_SECONDS``.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
BASELINE_RUNS = 3
WORKERS = 4


def load_cases() -> dict[str, dict[str, Any]]:
    return {
        path.name: tomllib.loads((path / "case.toml").read_text())
        for path in sorted(CASES.iterdir())
    }


def build_workspace(root: Path, case: dict[str, Any]) -> None:
    root.mkdir(parents=True)
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


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    cpu: float  # user + system seconds of the bt process
    before: dict[str, str]
    after: dict[str, str]


def run_case(home: Path, case: dict[str, Any]) -> Outcome:
    """Run the case's command in a fresh workspace under ``home``."""
    root = home / "ws"
    cache = home / "xdg-cache"
    build_workspace(root, case)
    cache.mkdir()
    before = snapshot(root, cache)
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "HOME": str(home)}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "buildtool", *case["args"]],
            cwd=root,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        watchdog = threading.Timer(60, process.kill)
        watchdog.start()
        _, status, usage = os.wait4(process.pid, 0)  # the child's own CPU time, unlike run()
        watchdog.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    cpu = usage.ru_utime + usage.ru_stime
    return Outcome(process.returncode, stdout, stderr, cpu, before, snapshot(root, cache))


@dataclass(frozen=True)
class Corpus:
    outcomes: dict[str, Outcome]
    baseline: float  # CPU seconds of the costliest valid `bt query //...`


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    base = tmp_path_factory.mktemp("bad_inputs")
    cases = load_cases()
    valid = {"args": ["query", "//..."]}

    def run(name: str) -> Outcome:
        return run_case(base / name, cases.get(name, valid))

    names = list(cases)
    step = len(names) // BASELINE_RUNS + 1
    for i in range(BASELINE_RUNS):
        names.insert(i * step, f"baseline-{i}")
    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes = dict(zip(names, pool.map(run, names), strict=True))
    baselines = [outcomes.pop(f"baseline-{i}") for i in range(BASELINE_RUNS)]
    for outcome in baselines:
        assert outcome.returncode == 0, outcome.stderr
    return Corpus(outcomes, max(outcome.cpu for outcome in baselines))


def test_the_corpus_holds_at_least_80_cases() -> None:
    assert len(load_cases()) >= 80


@pytest.mark.parametrize("name", sorted(load_cases()))
def test_bad_input_is_refused_with_one_clean_line_and_changes_nothing(
    name: str, corpus: Corpus
) -> None:
    case = load_cases()[name]
    outcome = corpus.outcomes[name]
    stderr = outcome.stderr.strip()
    assert outcome.returncode == 2, stderr
    assert "Traceback" not in outcome.stderr + outcome.stdout
    assert 1 <= len(stderr.splitlines()) <= 3, stderr
    assert re.search(case["message"], stderr), stderr
    assert case["file"] in stderr, stderr
    if "line" in case:
        assert f"{case['file']}:{case['line']}:" in stderr, stderr
    if case.get("bomb"):
        limit = corpus.baseline + BOMB_SECONDS
        assert outcome.cpu < limit, f"took {outcome.cpu:.2f} CPU s (limit {limit:.2f} s)"
    assert outcome.after == outcome.before
