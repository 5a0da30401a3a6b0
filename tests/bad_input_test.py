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
evaluation, not on interpreter start-up on a loaded machine: bombs run in a phase of their own
next to runs of a valid ``bt query //...``, and a bomb must finish within the slowest of those
runs plus ``BOMB_SECONDS``.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
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
    result: subprocess.CompletedProcess[str]
    elapsed: float
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
    return Outcome(result, elapsed, before, snapshot(root, cache))


@dataclass(frozen=True)
class Corpus:
    outcomes: dict[str, Outcome]
    baseline: float  # the slowest valid `bt query //...` run next to the bombs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    base = tmp_path_factory.mktemp("bad_inputs")
    cases = load_cases()
    valid = {"args": ["query", "//..."]}

    def run(name: str) -> Outcome:
        return run_case(base / name, cases.get(name, valid))

    plain = [name for name, case in cases.items() if not case.get("bomb")]
    bombs = [name for name, case in cases.items() if case.get("bomb")]
    outcomes: dict[str, Outcome] = {}
    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes.update(zip(plain, pool.map(run, plain), strict=True))
    # Bombs two at a time, with the baseline runs spread among them.
    step = max(len(bombs) // BASELINE_RUNS, 1)
    timed = list(bombs)
    for i in range(BASELINE_RUNS):
        timed.insert(i * (step + 1), f"baseline-{i}")
    with ThreadPoolExecutor(2) as pool:
        outcomes.update(zip(timed, pool.map(run, timed), strict=True))
    baselines = [outcomes.pop(f"baseline-{i}") for i in range(BASELINE_RUNS)]
    for outcome in baselines:
        assert outcome.result.returncode == 0, outcome.result.stderr
    return Corpus(outcomes, max(outcome.elapsed for outcome in baselines))


def test_the_corpus_holds_at_least_80_cases() -> None:
    assert len(load_cases()) >= 80


@pytest.mark.parametrize("name", sorted(load_cases()))
def test_bad_input_is_refused_with_one_clean_line_and_changes_nothing(
    name: str, corpus: Corpus
) -> None:
    case = load_cases()[name]
    outcome = corpus.outcomes[name]
    result = outcome.result
    stderr = result.stderr.strip()
    assert result.returncode == 2, stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert 1 <= len(stderr.splitlines()) <= 3, stderr
    assert re.search(case["message"], stderr), stderr
    assert case["file"] in stderr, stderr
    if "line" in case:
        assert f"{case['file']}:{case['line']}:" in stderr, stderr
    if case.get("bomb"):
        limit = corpus.baseline + BOMB_SECONDS
        assert outcome.elapsed < limit, f"took {outcome.elapsed:.2f} s (limit {limit:.2f} s)"
    assert outcome.after == outcome.before
