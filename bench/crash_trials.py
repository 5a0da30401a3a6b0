"""SIGKILL trials of `bt build //... --push` on tests/crash_test.py's workspace (tests/crashing.py:
a chain of two images on two platforms, on .ci/setup's two engines, pushed to its registry),
and the figures: trials, torn files, bad records, indexes not listing their builds, reruns
that built more (or less) than the remainder, reruns blocked by a dead run's lock, temporary
files the kills left and temporary files still there after the reruns.

Usage: python bench/crash_trials.py [--trials N] [--seed S] [--lanes L]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from crashing import kill_instants, trials_in_lanes, warm_lanes

ENGINE = os.environ.get("BT_TEST_ENGINE", "unix:///run/bt-test/engine1.sock")
ENGINE2 = os.environ.get("BT_TEST_ENGINE2", "unix:///run/bt-test/engine2.sock")
REGISTRY = os.environ.get("BT_TEST_REGISTRY", "127.0.0.1:5000")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--lanes", type=int, default=4, help="workspaces run side by side")
    args = parser.parse_args()
    totals = {"torn": 0, "bad records": 0, "bad indexes": 0, "rerun not the remainder": 0}
    totals |= {"rerun blocked by a dead lock": 0, "temporary files left by the kills": 0}
    totals |= {"temporary files left after the reruns": 0, "build lock files left": 0}
    with tempfile.TemporaryDirectory(prefix="bt-crash-") as tmp:
        lanes = warm_lanes(Path(tmp), args.lanes, ENGINE, ENGINE2, REGISTRY)
        seconds = [round(lane.seconds, 1) for lane in lanes]
        print(f"a whole run takes {seconds} s; killing at uniform instants in it", flush=True)
        delays = kill_instants(lanes, args.trials, args.seed)
        started = time.monotonic()
        results = trials_in_lanes(lanes, REGISTRY, delays)
        for trial, result in enumerate(results):
            found = result.findings
            totals["torn"] += len(found.torn)
            totals["bad records"] += len(found.bad_records)
            totals["bad indexes"] += len(found.bad_indexes)
            totals["rerun not the remainder"] += bool(found.rerun)
            totals["rerun blocked by a dead lock"] += bool(found.blocked)
            totals["temporary files left by the kills"] += found.killed_left
            totals["temporary files left after the reruns"] += len(found.leftovers)
            for problem in found.problems():
                print(f"trial {trial} (killed at {result.delay:.2f} s): {problem}")
        # Lock files of builds nobody runs any more (a flock dies with its process; the file
        # is removed by the next process that takes the lock).
        totals["build lock files left"] = sum(
            len(list(lane.cache.rglob("builds/*.lock"))) for lane in lanes
        )
    recorded = [result.recorded for result in results]
    print(f"trials: {args.trials} in {time.monotonic() - started:.0f} s (seed {args.seed})")
    print(
        f"builds recorded by the killed run: min {min(recorded)}, max {max(recorded)}, "
        f"none in {recorded.count(0)} trials, all in {recorded.count(max(recorded))}"
    )
    for name, count in totals.items():
        print(f"{name}: {count}")


if __name__ == "__main__":
    main()
