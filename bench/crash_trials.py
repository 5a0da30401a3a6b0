"""SIGKILL trials of `bt build //... --push` on tests/crash_test.py's workspace (a chain of
three images and two loners, two platforms on .ci/setup's two engines, pushed to its
registry), and the figures: trials, torn files, bad records, indexes not listing their builds,
reruns that built more (or less) than the remainder, reruns blocked by a dead run's lock, and
temporary files left by the kills.

Usage: python bench/crash_trials.py [--trials N] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from chained import chained_workspace
from crashing import build_trial, timed

ENGINE = os.environ.get("BT_TEST_ENGINE", "unix:///run/bt-test/engine1.sock")
ENGINE2 = os.environ.get("BT_TEST_ENGINE2", "unix:///run/bt-test/engine2.sock")
REGISTRY = os.environ.get("BT_TEST_REGISTRY", "127.0.0.1:5000")
CHAINS = ("a",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    totals = {"torn": 0, "bad records": 0, "bad indexes": 0, "rerun not the remainder": 0}
    totals |= {"rerun blocked by a dead lock": 0, "temporary files left": 0}
    recorded = []
    with tempfile.TemporaryDirectory(prefix="bt-crash-") as tmp:
        root = chained_workspace(Path(tmp) / "ws", ENGINE, ENGINE2, REGISTRY, CHAINS)
        cache = Path(tmp) / "xdg"
        env = {"XDG_CACHE_HOME": str(cache)}
        seconds, _ = timed(["build", "//...", "--push"], root, env)
        print(f"a whole run takes {seconds:.1f} s; killing at uniform instants in it")
        rng = random.Random(args.seed)
        started = time.monotonic()
        for trial in range(args.trials):
            delay = rng.uniform(0.2, seconds)
            result = build_trial(root, cache, env, REGISTRY, CHAINS, delay)
            found = result.findings
            totals["torn"] += len(found.torn)
            totals["bad records"] += len(found.bad_records)
            totals["bad indexes"] += len(found.bad_indexes)
            totals["rerun not the remainder"] += bool(found.rerun)
            totals["rerun blocked by a dead lock"] += bool(found.blocked)
            totals["temporary files left"] += len(found.leftovers)
            recorded.append(result.recorded)
            for problem in found.problems():
                print(f"trial {trial} (killed at {delay:.2f} s): {problem}")
    print(f"trials: {args.trials} in {time.monotonic() - started:.0f} s (seed {args.seed})")
    print(
        f"builds recorded by the killed run: min {min(recorded)}, max {max(recorded)}, "
        f"none in {recorded.count(0)} trials, all in {recorded.count(max(recorded))}"
    )
    for name, count in totals.items():
        print(f"{name}: {count}")


if __name__ == "__main__":
    main()
