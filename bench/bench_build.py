"""A full cold `bt build //...` of the example workspace, then the no-op `bt build //...`
against what a user does without bt: `docker build` of each of the 390 platform builds with a
warm layer cache. All in one run, on the engine of DOCKER_HOST (default: .ci/setup's engine 1).

Usage: python bench/bench_build.py [--runs N] [--docker-runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCKER = "/usr/bin/docker"  # the CLI that drives the engine's BuildKit with DOCKER_BUILDKIT=1


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def docker_builds(ws: Path, env: dict[str, str]) -> list[list[str]]:
    """The 390 `docker build` commands a user would run, parents passed by local tag."""
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
        cmd = [DOCKER, "build", "-q", "--network=none", "--platform", platform,
               "-f", str(ws / target["dockerfile"]), "-t", tag]  # fmt: skip
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="no-op bt build runs")
    parser.add_argument("--docker-runs", type=int, default=1, help="warm 390-build docker runs")
    args = parser.parse_args()
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    env.setdefault("DOCKER_HOST", "unix:///run/bt-test/engine1.sock")
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "example"
        ws.mkdir()
        for name in (".cache-spec", "BUILD.images", "docker"):
            src = REPO / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, ws / name)
        # New keys: the engine's key-derived tags would otherwise turn the cold run into hits.
        with (ws / "docker/common/versions.txt").open("a") as f:
            f.write(f"# bench {uuid.uuid4().hex}\n")
        env["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        bt = [sys.executable, "-m", "buildtool", "build", "//...", "--no-push"]
        cold = run(bt, ws, env)
        noop = [run(bt, ws, env) for _ in range(args.runs)]
        commands = docker_builds(ws, env)
        for cmd in commands:  # warm the layer cache with the same builds
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        warm_docker = []
        for _ in range(args.docker_runs):
            start = time.perf_counter()
            for cmd in commands:
                subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            warm_docker.append(time.perf_counter() - start)
        noop_median = statistics.median(noop)
        docker_median = statistics.median(warm_docker)
        print(f"example workspace, 390 platform builds, engine {env['DOCKER_HOST']}")
        print(f"  bt build //... cold                      {cold:9.2f} s")
        print(f"  bt build //... no-op (median of {args.runs})        {noop_median * 1000:9.1f} ms")
        print(f"  390 x docker build, warm layer cache     {docker_median:9.2f} s")
        print(f"  ratio                                    {docker_median / noop_median:9.0f} x")


if __name__ == "__main__":
    main()
