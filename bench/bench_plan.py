"""Whole-process timings of a no-op `bt plan //...`.

1. The example workspace: cold (no stat cache) and warm, against `python -c pass` as the
   baseline of interpreter start-up measured in the same run.
2. A generated workspace of 10,000 targets x 2 platforms over 100,000 small files.

Medians of several runs; each run is a fresh `python -m buildtool` process.
Usage: python bench/bench_plan.py [--runs N] [--skip-large]
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


def record_all(root: Path, env: dict[str, str]) -> None:
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
    subprocess.run([sys.executable, "-c", code, str(root)], env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    bt = [sys.executable, "-m", "buildtool", "plan", "//..."]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        env = bench_env(base / "cache")
        ws = base / "example"
        ws.mkdir()
        copy_example(ws)
        baseline = [timed([sys.executable, "-c", "pass"], ws, env) for _ in range(args.runs)]
        cold = []
        for _ in range(args.runs):
            shutil.rmtree(base / "cache", ignore_errors=True)
            cold.append(timed(bt, ws, env))
        record_all(ws, env)
        timed(bt, ws, env)
        warm = [timed(bt, ws, env) for _ in range(args.runs)]
        ratio = ratios(warm, baseline)
        print(f"example workspace (195 images, 390 platform builds), {args.runs} runs each")
        print(f"  python -c pass (baseline)   {median_ms(baseline)}")
        print(f"  bt plan //... cold cache    {median_ms(cold)}")
        print(f"  bt plan //... warm no-op    {median_ms(warm)}   {ratio} the baseline "
              "(target <= 3.0x)")  # fmt: skip
        if args.skip_large:
            return
        large = base / "large"
        large.mkdir()
        start = time.perf_counter()
        generate_large(large)
        print(f"generated 10,000 targets over 100,000 files in {time.perf_counter() - start:.1f} s")
        runs = max(3, args.runs // 2)
        cold_large = timed(bt, large, env)
        record_all(large, env)
        timed(bt, large, env)
        walk = [sys.executable, "-c", WALK, str(large)]
        floor, warm_large = [], []
        for _ in range(runs):
            floor.append(timed(walk, large, env))
            warm_large.append(timed(bt, large, env))
        ratio = ratios(warm_large, floor)
        print(f"large workspace (10,000 targets x 2 platforms), {runs} warm runs")
        print(f"  walk + lstat every file     {median_ms(floor)}   (the floor)")
        print(f"  bt plan //... cold cache    {median_ms([cold_large])} (one run)")
        print(f"  bt plan //... warm no-op    {median_ms(warm_large)}   {ratio} the floor "
              "(target <= 3.0x)")  # fmt: skip


if __name__ == "__main__":
    main()
