"""Whole-process timings of a no-op `bt plan //...`.

1. The example workspace: cold (no stat cache) and warm, against `python -c pass` as the
   baseline of interpreter start-up measured in the same run, from a fresh venv holding only
   bt (as pipx installs it; `bench/cleanvenv.py`), and for comparison from the development
   interpreter (labelled). `--before REV` adds a clean venv of that revision; the runs of every
   interpreter are interleaved, each with its own copy of the workspace and cache.
2. A generated workspace of 10,000 targets x 2 platforms over 100,000 small files, from the
   clean venv.

Medians of several runs; each run is a fresh `bt` process.
Usage: python bench/bench_plan.py [--runs N] [--skip-large] [--before REV]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cleanvenv import Interpreter, interpreters

REPO = Path(__file__).resolve().parent.parent


def bench_env(cache: Path) -> dict[str, str]:
    """The environment of timed runs: a private cache, and bytecode caches allowed (as an
    installed bt has them; PYTHONDONTWRITEBYTECODE would recompile every module each run)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


WALK = (
    "import os, sys\n"
    "def walk(d):\n"
    "    with os.scandir(d) as it:\n"
    "        for e in it:\n"
    "            walk(e.path) if e.is_dir(follow_symlinks=False) else os.lstat(e.path)\n"
    "walk(sys.argv[1])\n"
)


class Sample(NamedTuple):
    """One run: wall time, and CPU time (user + sys) of the process, in seconds. On a machine
    others load, CPU time is the steadier measure of what the run costs."""

    wall: float
    cpu: float


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> Sample:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Sample(wall, cpu)


def medians(samples: list[Sample]) -> Sample:
    return Sample(*(statistics.median(column) for column in zip(*samples, strict=True)))


def median_ms(samples: list[Sample]) -> str:
    wall, cpu = medians(samples)
    return f"{wall * 1000:8.1f} ms wall {cpu * 1000:8.1f} ms cpu"


def ratios(samples: list[Sample], baseline: list[Sample]) -> str:
    (wall, cpu), (base_wall, base_cpu) = medians(samples), medians(baseline)
    return f"{wall / base_wall:.1f}x wall, {cpu / base_cpu:.1f}x cpu"


def copy_example(dest: Path) -> None:
    for name in (".cache-spec", "BUILD.images", "docker"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        else:
            shutil.copy2(src, dest / name)


def generate_large(root: Path, targets: int = 10_000, files: int = 100_000) -> None:
    """Targets t0..tN; target i copies data/<i % dirs>/ (100 files each); every 100th target
    is a base that the next 99 build on, so the graph has depth and fan-out."""
    per_dir = 100
    dirs = files // per_dir
    (root / ".cache-spec").write_text('platforms = ["linux/amd64", "linux/arm64"]\n')
    (root / "Dockerfile").write_text(
        "ARG BASE=scratch\nFROM ${BASE}\nARG D\nCOPY common.txt /\nCOPY data/${D}/ /data/\n"
    )
    (root / "common.txt").write_text("common\n")
    for d in range(dirs):
        path = root / "data" / str(d)
        path.mkdir(parents=True)
        for f in range(per_dir):
            (path / f"f{f}.txt").write_text(f"{d}/{f}\n")
    (root / "BUILD.images").write_text(
        f"""
for i in range({targets}):
    if i % 100 == 0:
        image(name = "t%d" % i, args = {{"D": str(i % {dirs})}})
    else:
        image(
            name = "t%d" % i,
            args = {{"D": str(i % {dirs})}},
            parents = {{"BASE": ":t%d" % (i - i % 100)}},
        )
"""
    )


def record_all(root: Path, env: dict[str, str], python: str = sys.executable) -> None:
    """Record every platform build as built, so that the timed runs are true no-ops."""
    code = (
        "import sys; from pathlib import Path\n"
        "from buildtool.build.record import record_builds\n"
        "from buildtool.plan.session import Session, Workbench\n"
        "bench = Workbench(Session(Path(sys.argv[1])))\n"
        "planned = bench.plan(['//...'])\n"
        "record_builds(bench.config, bench.lock_path,"
        " [(p.manifest, 'sha256:' + p.key[:64], 'local/' + p.key[:12]) for p in planned])\n"
    )
    subprocess.run([python, "-c", code, str(root)], env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--before", metavar="REV", help="also time a clean venv of this revision")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        found = interpreters(base, os.environ.copy(), args.before)
        print(f"example workspace (195 images, 390 platform builds), {args.runs} runs each, "
              "interleaved")  # fmt: skip
        for line in example(base, found, args.runs):
            print(line)
        if not args.skip_large:
            large(base, found[0], args.runs)


def example(base: Path, found: list[Interpreter], runs: int) -> list[str]:
    """Cold and warm no-ops of each interpreter, and its `python -c pass`, one round of each
    after another."""
    spaces = []
    for i, interp in enumerate(found):
        ws = base / f"example-{i}"
        ws.mkdir()
        copy_example(ws)
        spaces.append((ws, run_env(interp, base / f"cache-{i}")))
    samples: list[dict[str, list[Sample]]] = [{"pass": [], "cold": [], "warm": []} for _ in found]
    for _ in range(runs):
        for interp, (ws, env), got in zip(found, spaces, samples, strict=True):
            got["pass"].append(timed([interp.python, "-c", "pass"], ws, env))
            shutil.rmtree(env["XDG_CACHE_HOME"], ignore_errors=True)
            got["cold"].append(timed([*interp.bt, "plan", "//..."], ws, env))
    for interp, (ws, env) in zip(found, spaces, strict=True):
        record_all(ws, env, interp.python)
    settle()
    for interp, (ws, env) in zip(found, spaces, strict=True):
        timed([*interp.bt, "plan", "//..."], ws, env)
    for _ in range(runs):
        for interp, (ws, env), got in zip(found, spaces, samples, strict=True):
            got["warm"].append(timed([*interp.bt, "plan", "//..."], ws, env))
    lines = []
    for interp, got in zip(found, samples, strict=True):
        lines += [
            f"{interp.label} ({interp.python})",
            f"  python -c pass (baseline)   {median_ms(got['pass'])}",
            f"  bt plan //... cold cache    {median_ms(got['cold'])}",
            f"  bt plan //... warm no-op    {median_ms(got['warm'])}   "
            f"{ratios(got['warm'], got['pass'])} the baseline (target <= 3.0x in a clean venv)",
        ]
    return lines


def settle() -> None:
    """Wait out the racy window (``hashing.RACY_WINDOW_NS``, 3 s) after writing the workspace
    and images.lock: a stat taken within it of a change is not trusted, so the no-op that
    follows could not keep its answer for the next (`plan/noop.py`), as none can just after an
    edit. A user's no-op is seldom within 3 s of the last write."""
    time.sleep(3.1)


def run_env(interp: Interpreter, cache: Path) -> dict[str, str]:
    """``bench_env`` over the interpreter's own environment (a clean venv has no PYTHONPATH)."""
    env = {**interp.env, "XDG_CACHE_HOME": str(cache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def large(base: Path, interp: Interpreter, runs: int) -> None:
    env = run_env(interp, base / "cache-large")
    bt = [*interp.bt, "plan", "//..."]
    root = base / "large"
    root.mkdir()
    start = time.perf_counter()
    generate_large(root)
    print(f"generated 10,000 targets over 100,000 files in {time.perf_counter() - start:.1f} s")
    runs = max(3, runs // 2)
    cold_large = timed(bt, root, env)
    record_all(root, env, interp.python)
    settle()
    timed(bt, root, env)
    walk = [interp.python, "-c", WALK, str(root)]
    floor, warm_large = [], []
    for _ in range(runs):
        floor.append(timed(walk, root, env))
        warm_large.append(timed(bt, root, env))
    ratio = ratios(warm_large, floor)
    print(f"large workspace (10,000 targets x 2 platforms), {runs} warm runs, {interp.label}")
    print(f"  walk + lstat every file     {median_ms(floor)}   (the floor)")
    print(f"  bt plan //... cold cache    {median_ms([cold_large])} (one run)")
    print(f"  bt plan //... warm no-op    {median_ms(warm_large)}   {ratio} the floor "
          "(target <= 2.0x)")  # fmt: skip


if __name__ == "__main__":
    main()
