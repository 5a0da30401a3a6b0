"""Peak memory (maximum resident set size, `/usr/bin/time -v`) of `bt plan //...` on generated
workspaces (as bench_plan.py makes them: N targets x 2 platforms over 100,000 files, target i
reading data/<i % 1,000>/):

- cold: an empty cache directory, nothing recorded;
- warm no-op: every build recorded, the caches warm (the kept answer of the last plan given);
- warm no-op, planned: the same with BT_NO_KEPT_ANSWER=1, so that the graph, file sets, keys
  and plan are made and held (what the plan keeps per build).

From a fresh venv holding only bt (`bench/cleanvenv.py`); `--before REV` adds one of that
revision. Medians of --runs for the warm figures.

Usage: python bench/bench_memory.py [--sizes 10000,50000] [--runs N] [--before REV] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_plan import generate_large, record_all, run_env
from cleanvenv import Interpreter, interpreters

from buildtool.state.hashing import RACY_WINDOW_NS

TIME = "/usr/bin/time"


def peak_mb(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    """The command's maximum resident set size in MB, as GNU time reports it."""
    out = subprocess.run([TIME, "-v", *cmd], cwd=cwd, env=env, check=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
    if found is None:
        raise SystemExit(f"{TIME} -v printed no maximum resident set size")
    return int(found.group(1)) / 1024


def measure(interp: Interpreter, root: Path, cache: Path, runs: int) -> tuple[float, ...]:
    env = run_env(interp, cache)
    planned_env = {**env, "BT_NO_KEPT_ANSWER": "1"}
    bt = [*interp.bt, "plan", "//..."]
    shutil.rmtree(cache, ignore_errors=True)
    cold = peak_mb(bt, root, env)
    record_all(root, env, interp.python)
    time.sleep(RACY_WINDOW_NS / 1e9)  # so that the next plan's answer is kept
    subprocess.run(bt, cwd=root, env=env, check=True, capture_output=True)
    subprocess.run(bt, cwd=root, env=planned_env, check=True, capture_output=True)
    warm = statistics.median(peak_mb(bt, root, env) for _ in range(runs))
    planned = statistics.median(peak_mb(bt, root, planned_env) for _ in range(runs))
    return cold, warm, planned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", metavar="REV")
    parser.add_argument("--keep", type=Path, help="generate workspaces here and reuse them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        spaces = args.keep or base
        found = [i for i in interpreters(base, os.environ.copy(), args.before) if "venv" in i.label]
        print(f"peak RSS of `bt plan //...` (MB), median of {args.runs} for the warm figures")
        for targets in (int(s) for s in args.sizes.split(",")):
            root = spaces / f"ws-{targets}"
            if not (root / "BUILD.images").exists():
                root.mkdir(parents=True, exist_ok=True)
                generate_large(root, targets)
            for i, interp in enumerate(found):
                cache = base / f"cache-{targets}-{i}"
                cold, warm, planned = measure(interp, root, cache, args.runs)
                print(f"{targets:>6} targets, {interp.label:<24} cold {cold:6.0f}   warm no-op "
                      f"{warm:6.0f}   warm no-op, planned {planned:6.0f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
