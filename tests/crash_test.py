"""Invariant 4, proven by killing bt: `bt build //... --push`, `bt merge` and `bt lock merge`
are killed with SIGKILL at seeded random instants on a workspace of chained images built on
two engines and pushed to the registry, and what they leave is checked (tests/crashing.py).

BT_CRASH_TRIALS sets the number of build trials (default 20; bench/crash_trials.py runs more
and prints the figures), BT_CRASH_SEED the seed.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from chained import all_builds, chained_workspace
from crashing import Findings, build_trial, check_state, kill_after, run_bt, timed

pytestmark = pytest.mark.engine

TRIALS = int(os.environ.get("BT_CRASH_TRIALS", "20"))
SEED = int(os.environ.get("BT_CRASH_SEED", "16"))
# One chain of three images and two loners, on two platforms: 10 platform builds.
CHAINS = ("a",)


@pytest.fixture()
def world(
    tmp_path: Path, engine: str, engine2: str, registry: str
) -> tuple[Path, Path, dict[str, str]]:
    root = chained_workspace(tmp_path / "ws", engine, engine2, registry, CHAINS)
    cache = tmp_path / "xdg"
    return root, cache, {"XDG_CACHE_HOME": str(cache)}


def test_sigkill_at_random_instants_of_a_pushing_build_loses_and_fakes_nothing(
    world: tuple[Path, Path, dict[str, str]], registry: str
) -> None:
    root, cache, env = world
    seconds, _ = timed(["build", "//...", "--push"], root, env)
    rng = random.Random(SEED)
    recorded = []
    for trial in range(TRIALS):
        delay = rng.uniform(0.2, seconds)
        result = build_trial(root, cache, env, registry, CHAINS, delay)
        assert result.findings.problems() == [], f"trial {trial} (killed at {delay:.2f} s)"
        recorded.append(result.recorded)
    # The instants reach into the run: some kills found builds recorded, some found none.
    assert 0 in recorded or min(recorded) < len(all_builds(CHAINS)), recorded
    assert max(recorded) > 0, recorded


def test_sigkill_of_bt_merge_leaves_every_index_agreeing_with_the_builds(
    world: tuple[Path, Path, dict[str, str]], registry: str
) -> None:
    root, cache, env = world
    # --lock-out makes a partial run: built and recorded, no index put.
    timed(["build", "//...", "--push", "--lock-out", "frag.lock"], root, env)
    seconds, _ = timed(["merge", "//...", "--dry-run"], root, env)
    rng = random.Random(SEED)
    for trial in range(3):
        findings = Findings()
        kill_after(["merge", "//..."], root, env, rng.uniform(0.1, seconds + 0.5))
        check_state(root, cache, registry, findings)
        code, _, err = run_bt(["merge", "//..."], root, env)
        assert code == 0, err
        check_state(root, cache, registry, findings)
        assert findings.problems() == [], f"trial {trial}"


def test_sigkill_of_bt_lock_merge_leaves_the_old_or_the_new_lockfile(
    world: tuple[Path, Path, dict[str, str]], registry: str
) -> None:
    root, cache, env = world
    lockfile = root / "images.lock"
    timed(["build", "//...", "--push"], root, env)
    old = lockfile.read_bytes()
    (root / "nonce.txt").write_text("another revision\n")
    timed(["build", "//...", "--push", "--lock-out", "frag.lock"], root, env)
    rng = random.Random(SEED)
    outcomes = set()
    for trial in range(6):
        lockfile.write_bytes(old)
        kill_after(["lock", "merge", "frag.lock"], root, env, rng.uniform(0.05, 0.8))
        left = lockfile.read_bytes()
        code, _, err = run_bt(["lock", "merge", "frag.lock"], root, env)
        assert code == 0, err
        new = lockfile.read_bytes()
        assert left in (old, new), f"trial {trial}: a lockfile neither old nor new"
        outcomes.add("old" if left == old else "new")
        findings = Findings()
        check_state(root, cache, registry, findings)
        assert findings.problems() == [] and findings.leftovers == [], f"trial {trial}"
    assert outcomes, outcomes
