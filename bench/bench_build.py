"""Cold and no-op `bt build //...` of the example workspace against plain `docker build`, all in
one run, on the engine of DOCKER_HOST (default: .ci/setup's engine 1).

Cold: each of these runs on the same copy of the example, after a fresh nonce:
1. `bt build //... --no-push` with the default jobs of .cache-spec;
2. `bt build //... --no-push --jobs 1`;
3. the same platform builds as plain `docker build` commands (derived from `bt plan` and
   `bt query`, parents passed by local tag), one after another, as a user without bt would.
What makes it fair: before each of the three, a new nonce goes into docker/common/versions.txt (a
global input: fresh bt keys, so no key-derived tag or record turns a build into a hit) and into
a file of each docker/base/arch/<arch>/ (COPYed first by every build that has no parent; every
other build starts from a parent image that is itself new): no BuildKit layer from before the
run is reused, and neither side reuses the other's. What both sides still reuse is what the run
itself built: //base:runtime is a prefix of //base:no_model, and siblings COPY common/LICENSE
onto the same parent. The script counts the CACHED Dockerfile steps of each side to show it.
Both drive the engine through the same docker CLI with DOCKER_BUILDKIT=1, --network=none and
--progress=plain; the docker commands are derived before their timer starts. The example
declares no image tests. One difference stays, as it is what bt does: bt sends each build a tar
of its inputs on stdin, `docker build` syncs the whole docker/ context directory.

bt's own overhead per build:
- CPU: user + sys time of the bt process itself (its threads; not of its docker children),
  taken with getrusage(RUSAGE_SELF) at exit by a wrapper that runs bt in-process, / builds.
- wall: (cold `bt build --jobs 1` - the sequential docker builds) / builds. Split by the times
  the bench reads bt's --json events: start-up and plan (start -> run_started), between builds
  (the run window minus the sum of the builds' job times), within a build (the mean job time,
  which includes bt's image check and its record, minus the mean plain docker build: it holds
  the difference of the two contexts too, so it can come out negative), and after the last
  build (run_finished -> exit).
The requirement: bt (default jobs) is no slower than the sequential docker builds.

Then (unless --skip-warm) the no-op `bt build //...` against the same docker builds with a warm
layer cache, as before.

Usage: python bench/bench_build.py [--cold-runs N] [--runs N] [--docker-runs N] [--skip-warm]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

REPO = Path(__file__).resolve().parent.parent
DOCKER = "/usr/bin/docker"  # the CLI that drives the engine's BuildKit with DOCKER_BUILDKIT=1
ARCHES = ("amd64", "arm64")
# BuildKit's plain progress: "#7 [final 2/4] COPY ..." opens step 7, "#7 CACHED" is a hit.
STEP_TITLE = re.compile(r"^#(\d+) \[(?!internal\])\S+ \d+/\d+\] ", re.MULTILINE)
CACHED_STEP = re.compile(r"^#(\d+) CACHED$", re.MULTILINE)


def cached_steps(progress: str) -> int:
    """Dockerfile steps BuildKit took from its cache (not its internal context steps)."""
    return len(set(STEP_TITLE.findall(progress)) & set(CACHED_STEP.findall(progress)))


# Runs bt in this process and writes its own CPU time at exit (after click's sys.exit and the
# join of non-daemon threads); RUSAGE_SELF counts every thread, never a child process.
BT_UNDER_RUSAGE = """\
import atexit, json, resource, runpy, sys
out = sys.argv.pop(1)
def report():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(out, "w") as f:
        json.dump({"cpu": usage.ru_utime + usage.ru_stime}, f)
atexit.register(report)
runpy.run_module("buildtool", run_name="__main__", alter_sys=True)
"""


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def fresh_nonce(ws: Path) -> None:
    """New bt keys for every build, and a BuildKit layer miss for every root build."""
    nonce = uuid.uuid4().hex
    with (ws / "docker/common/versions.txt").open("a") as f:
        f.write(f"# bench {nonce}\n")
    for arch in ARCHES:
        (ws / "docker/base/arch" / arch / "bench-nonce").write_text(f"{nonce}\n")


def docker_builds(ws: Path, env: dict[str, str], quiet: bool = True) -> list[list[str]]:
    """The `docker build` commands a user would run, one per platform build, parents first and
    passed by local tag."""
    out = subprocess.run(
        [sys.executable, "-m", "buildtool", "plan", "//...", "--all", "--format", "json"],
        cwd=ws, env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    query = subprocess.run(
        [sys.executable, "-m", "buildtool", "query", "--output", "json", "//..."],
        cwd=ws, env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    targets = {t["label"]: t for t in json.loads(query)}
    commands = []
    for build in json.loads(out):
        target = targets[build["label"]]
        platform = build["platform"]
        tag = f"plain/{build['label'][2:].replace(':', '/')}:{platform.split('/')[1]}"
        cmd = [DOCKER, "build", "-q" if quiet else "--progress=plain", "--network=none",
               "--platform", platform, "-f", str(ws / target["dockerfile"]), "-t", tag]  # fmt: skip
        if target["stage"]:
            cmd += ["--target", target["stage"]]
        for name, value in target["args"].items():
            cmd += ["--build-arg", f"{name}={value}"]
        for arg, parent in target["parents"].items():
            parent_tag = f"plain/{parent[2:].replace(':', '/')}:{platform.split('/')[1]}"
            cmd += ["--build-arg", f"{arg}={parent_tag}"]
        cmd.append(str(ws / target["context"]))
        commands.append(cmd)
    return commands


class BtRun(NamedTuple):
    """One cold `bt build`, in seconds: whole process, its own CPU, and the spans its events
    mark (job_time: the sum of the finished builds' job times)."""

    wall: float
    cpu: float
    built: int
    cached: int
    plan: float
    window: float
    job_time: float
    after: float
    cached_steps: int


class DockerRun(NamedTuple):
    wall: float
    builds: int
    cached_steps: int


Run = TypeVar("Run", BtRun, DockerRun)


def build_logs(cache: Path) -> set[Path]:
    return set(cache.glob("**/logs/**/*.log"))


def bt_cold(ws: Path, env: dict[str, str], jobs: int | None, tmp: Path) -> BtRun:
    fresh_nonce(ws)
    cache = Path(env["XDG_CACHE_HOME"])
    logs_before = build_logs(cache)
    usage, stderr = tmp / "rusage.json", tmp / "bt-stderr.txt"
    cmd = [sys.executable, "-c", BT_UNDER_RUSAGE, str(usage),
           "build", "//...", "--no-push", "--json"]  # fmt: skip
    if jobs is not None:
        cmd += ["--jobs", str(jobs)]
    events: list[tuple[float, dict[str, Any]]] = []
    with stderr.open("w") as err:
        start = time.perf_counter()
        process = subprocess.Popen(cmd, cwd=ws, env=env, stdout=subprocess.PIPE, stderr=err)
        assert process.stdout is not None
        for line in iter(process.stdout.readline, b""):
            events.append((time.perf_counter() - start, json.loads(line)))
        code = process.wait()
        wall = time.perf_counter() - start
    if code != 0:
        sys.exit(f"bt build failed ({code}):\n{stderr.read_text()[-2000:]}")
    at = {record["event"]: when for when, record in events}
    finished = [record for _, record in events if record["event"] == "finished"]
    summary = next(record for _, record in events if record["event"] == "run_finished")
    new_logs = build_logs(cache) - logs_before
    steps = sum(cached_steps(log.read_text(errors="replace")) for log in new_logs)
    return BtRun(
        wall=wall,
        cpu=json.loads(usage.read_text())["cpu"],
        built=summary["built"],
        cached=summary["cached"],
        plan=at["run_started"],
        window=at["run_finished"] - at["run_started"],
        job_time=sum(record["seconds"] for record in finished),
        after=wall - at["run_finished"],
        cached_steps=steps,
    )


def docker_cold(ws: Path, env: dict[str, str]) -> DockerRun:
    fresh_nonce(ws)
    commands = docker_builds(ws, env, quiet=False)
    steps = 0
    start = time.perf_counter()
    for cmd in commands:
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout.decode(errors='replace')[-2000:]}")
        steps += cached_steps(done.stdout.decode(errors="replace"))
    return DockerRun(time.perf_counter() - start, len(commands), steps)


def median_run(runs: list[Run]) -> Run:
    """Field by field medians (of an even count, the higher middle value: counts stay whole)."""
    columns = zip(*runs, strict=True)
    return type(runs[0])(*(statistics.median_high(column) for column in columns))


def row(label: str, value: float, unit: str, note: str = "") -> None:
    print(f"  {label:<42}{value:9.{1 if unit == 'ms' else 2}f} {unit}{note}")


def report_cold(default: BtRun, one: BtRun, docker: DockerRun, runs: int) -> None:
    n = docker.builds
    print(f"cold{f' (medians of {runs})' if runs > 1 else ''}: built/cached by bt"
          f" {default.built}/{default.cached} (default jobs), {one.built}/{one.cached} (--jobs 1);"
          f" Dockerfile steps cached (by the run itself): bt {default.cached_steps} and"
          f" {one.cached_steps}, docker {docker.cached_steps}")  # fmt: skip
    row("bt build //... cold, default jobs", default.wall, "s")
    row("bt build //... cold, --jobs 1", one.wall, "s")
    row(f"{n} x docker build, one after another", docker.wall, "s")
    verdict = "no slower" if default.wall <= docker.wall else "SLOWER"
    row("bt (default jobs) / docker", default.wall / docker.wall, "x", f"   ({verdict})")
    row("bt --jobs 1 / docker", one.wall / docker.wall, "x")
    print(f"bt's own overhead per build ({n} builds)")
    row("CPU of the bt process, --jobs 1", one.cpu / n * 1000, "ms", f"   ({one.cpu:.2f} s)")
    row("CPU of the bt process, default jobs", default.cpu / n * 1000, "ms",
        f"   ({default.cpu:.2f} s)")  # fmt: skip
    row("wall, (bt --jobs 1 - docker) / builds", (one.wall - docker.wall) / n * 1000, "ms")
    row("  start-up and plan (to run_started)", one.plan / n * 1000, "ms", f"   ({one.plan:.2f} s)")
    row("  between builds (scheduling)", (one.window - one.job_time) / n * 1000, "ms")
    row("  in a build, vs its plain docker build", (one.job_time - docker.wall) / n * 1000, "ms",
        "   (image check, record; context)")  # fmt: skip
    row("  after the last build (to exit)", one.after / n * 1000, "ms")


def report_warm(noop: list[float], warm_docker: list[float], builds: int) -> None:
    noop_median, docker_median = statistics.median(noop), statistics.median(warm_docker)
    print("warm")
    row(f"bt build //... no-op (median of {len(noop)})", noop_median * 1000, "ms")
    row(f"{builds} x docker build, warm layer cache", docker_median, "s")
    row("ratio", docker_median / noop_median, "x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cold-runs", type=int, default=1, help="rounds of the three cold runs")
    parser.add_argument("--runs", type=int, default=7, help="no-op bt build runs")
    parser.add_argument("--docker-runs", type=int, default=1, help="warm docker build rounds")
    parser.add_argument("--skip-warm", action="store_true", help="only the cold runs")
    args = parser.parse_args()
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    env.setdefault("DOCKER_HOST", "unix:///run/bt-test/engine1.sock")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed bt has its bytecode cached
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "example"
        ws.mkdir()
        for name in (".cache-spec", "BUILD.images", "docker"):
            src = REPO / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, ws / name)
        env["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        bt = [sys.executable, "-m", "buildtool", "build", "//...", "--no-push"]
        defaults, ones, dockers, noop = [], [], [], []
        for round_ in range(args.cold_runs):
            defaults.append(bt_cold(ws, env, None, Path(tmp)))
            if round_ == 0 and not args.skip_warm:  # the no-op right after a full build
                noop = [run(bt, ws, env) for _ in range(args.runs)]
            ones.append(bt_cold(ws, env, 1, Path(tmp)))
            dockers.append(docker_cold(ws, env))
        docker = median_run(dockers)
        print(f"example workspace, {docker.builds} platform builds, engine {env['DOCKER_HOST']}")
        report_cold(median_run(defaults), median_run(ones), docker, args.cold_runs)
        if args.skip_warm:
            return
        commands = docker_builds(ws, env)
        for cmd in commands:  # warm the layer cache with the same builds
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        warm_docker = []
        for _ in range(args.docker_runs):
            start = time.perf_counter()
            for cmd in commands:
                subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            warm_docker.append(time.perf_counter() - start)
        report_warm(noop, warm_docker, len(commands))


if __name__ == "__main__":
    main()
