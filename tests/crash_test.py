"""Invariant 4, proven by killing bt: `bt build //... --push`, `bt merge` and `bt lock merge`
are killed with SIGKILL at seeded random instants on a workspace of chained images built for
two platforms and pushed to the registry, and what they leave is checked (tests/crashing.py).

BT_CRASH_TRIALS sets the number of build trials (default 20; bench/crash_trials.py runs more
and prints the figures, on two engines), BT_CRASH_SEED the seed, BT_CRASH_LANES how many
workspaces run their trials side by side (default 2: a trial mostly waits for the engine).

Both platforms build on the second engine (each its own builder): the trials tag and push
a hundred images, and on a shared machine the first engine is the one every other test fills,
where each tag rewrites its store of every tag.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from chained import renew
from crashing import (
    Findings,
    Lane,
    builds,
    check_state,
    kill_after,
    kill_instants,
    run_bt,
    timed,
    trials_in_lanes,
    warm_lanes,
)

pytestmark = pytest.mark.engine

TRIALS = int(os.environ.get("BT_CRASH_TRIALS", "20"))
SEED = int(os.environ.get("BT_CRASH_SEED", "16"))
LANES = int(os.environ.get("BT_CRASH_LANES", "2"))


@pytest.fixture(scope="module")
def lanes(
    tmp_path_factory: pytest.TempPathFactory, engine2: str, registry: str
) -> Iterator[list[Lane]]:
    """The warm workspaces every test of this file kills bt in (each test renews the keys)."""
    yield warm_lanes(tmp_path_factory.mktemp("crash"), LANES, engine2, engine2, registry)


def test_sigkill_at_random_instants_of_a_pushing_build_loses_and_fakes_nothing(
    lanes: list[Lane], registry: str
) -> None:
    delays = kill_instants(lanes, TRIALS, SEED)
    results = trials_in_lanes(lanes, registry, delays)
    assert len(results) == TRIALS >= 1
    for trial, result in enumerate(results):
        assert result.findings.problems() == [], f"trial {trial} (killed at {result.delay:.2f} s)"
    recorded = [result.recorded for result in results]
    # The instants reach into the run: some kills found builds recorded, some found none.
    assert min(recorded) < len(builds()) and max(recorded) > 0, recorded


def test_sigkill_of_bt_merge_leaves_every_index_agreeing_with_the_builds(
    lanes: list[Lane], registry: str
) -> None:
    lane = lanes[0]
    root, cache, env = lane.root, lane.cache, lane.env
    renew(root)
    (root / "frag.lock").unlink(missing_ok=True)
    # --lock-out makes a partial run: built and recorded, no index put.
    timed(["build", "//...", "--push", "--lock-out", "frag.lock"], root, env)
    seconds, _ = timed(["merge", "//...", "--dry-run"], root, env)
    rng = random.Random(SEED)
    for trial in range(3):
        findings = Findings()
        kill_after(["merge", "//..."], root, env, rng.uniform(0.1, seconds + 0.5))
        check_state(root, cache, registry, findings)
        findings.after_kill()
        code, _, err = run_bt(["merge", "//..."], root, env)
        assert code == 0, err
        check_state(root, cache, registry, findings)
        assert findings.problems() == [], f"trial {trial}"


def test_sigkill_of_bt_lock_merge_leaves_the_old_or_the_new_lockfile(
    lanes: list[Lane], registry: str
) -> None:
    lane = lanes[-1]
    root, cache, env = lane.root, lane.cache, lane.env
    lockfile = root / "images.lock"
    old = lockfile.read_bytes()
    renew(root)
    (root / "frag.lock").unlink(missing_ok=True)
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
        assert findings.problems() == [], f"trial {trial}"
    assert outcomes, outcomes
