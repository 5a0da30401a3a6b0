"""Layer reuse from the last record, measured on an engine that never built the image.

An image whose unchanged `RUN` sleeps --sleep seconds (default 20) and whose last `COPY`
changed: engine 1 builds version 1 and pushes it (its record in images.lock); the workspace then
moves to engine 2 (a fresh CI runner) and app.txt changes, so the one build is stale. Timed
there: `bt build` with layer reuse (the record offered as `--cache-from`) and without
(`--no-cache`). Each side has a workspace of its own, with a `RUN` no engine has run before, so
neither side reuses the other's layers or an earlier run's. Each starts FROM a base of its own
(busybox and one file) pushed to the registry, which both engines pull, as CI runners do.

Printed and written to bench/results/layers.md: the build's time (bt's job time, from its
--json events), the whole `bt build` command's time, and whether BuildKit reported the RUN step
CACHED, from the build log.

Usage: python bench/bench_layers.py [--sleep S] [--runs N]
Needs .ci/setup's two engines and registry (BT_TEST_ENGINE, BT_TEST_ENGINE2, BT_TEST_REGISTRY).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOCKER = "/usr/bin/docker"
ENGINE = os.environ.get("BT_TEST_ENGINE", "unix:///run/bt-test/engine1.sock")
ENGINE2 = os.environ.get("BT_TEST_ENGINE2", "unix:///run/bt-test/engine2.sock")
REGISTRY = os.environ.get("BT_TEST_REGISTRY", "127.0.0.1:5000")


def docker(engine: str, *args: str) -> str:
    done = subprocess.run([DOCKER, "-H", engine, *args], capture_output=True, text=True, check=True)
    return done.stdout


def fresh_base(base: Path, ref: str) -> None:
    """A base no engine holds, pushed to ``ref`` and removed from engine 1, so both engines pull
    it as fresh CI runners do (BuildKit 20.10 matched inline cache only on an engine that pulled
    the base for the build, not on one that held it already)."""
    context = base / "base"
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM bt-test/busybox:latest\nCOPY id.txt /\n")
    (context / "id.txt").write_text(f"{ref} {uuid.uuid4().hex}\n")
    os.environ["DOCKER_BUILDKIT"] = "1"
    docker(ENGINE, "build", "-q", "--network=none", "-t", ref, str(context))
    docker(ENGINE, "push", ref)
    docker(ENGINE, "rmi", ref)


def write_workspace(root: Path, url: str, engine: str, token: str, sleep: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / ".cache-spec").write_text(
        'platforms = ["linux/amd64"]\n'
        f'[registry]\nurl = "{url}"\npush = true\n'
        f'[builders."linux/amd64"]\nhost = "{engine}"\nnetwork = "none"\n'
    )
    (root / "BUILD.images").write_text('image(name = "slow")\n')
    (root / "Dockerfile").write_text(
        f"FROM {url}/busybox:base\nRUN sleep {sleep} && echo {token} > /token\n"
        "COPY app.txt /app.txt\n"
    )
    if not (root / "app.txt").exists():
        (root / "app.txt").write_text("version 1\n")


def bt(root: Path, cache: Path, *args: str) -> tuple[float, list[dict[str, object]]]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(REPO)}
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "buildtool", "build", "//...", "--json", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"bt build failed in {root}:\n{done.stdout}\n{done.stderr}")
    return took, [json.loads(line) for line in done.stdout.splitlines()]


def run_cached(log: Path) -> bool:
    text = log.read_text()
    step = re.search(r"^(#\d+) \[2/3\] RUN sleep", text, re.M)
    return step is not None and f"{step.group(1)} CACHED" in text.splitlines()


def one_side(base: Path, reuse: bool, sleep: int) -> tuple[float, float, bool]:
    """(job seconds, command seconds, RUN cached) of the stale build on engine 2."""
    url = f"{REGISTRY}/bt-bench-layers-{uuid.uuid4().hex[:12]}"
    fresh_base(base, f"{url}/busybox:base")
    token = uuid.uuid4().hex
    root, cache = base / "ws", base / "cache"
    write_workspace(root, url, ENGINE, token, sleep)
    bt(root, cache)  # version 1, built and pushed from engine 1
    write_workspace(root, url, ENGINE2, token, sleep)
    (root / "app.txt").write_text("version 2\n")
    took, events = bt(root, cache, *(() if reuse else ("--no-cache",)))
    job = next(float(str(e["seconds"])) for e in events if e["event"] == "finished")
    key = json.loads((root / "images.lock").read_text())["builds"]["//:slow"]["linux/amd64"]["key"]
    (log,) = cache.rglob(f"linux-amd64-{key[:16]}.log")
    return job, took, run_cached(log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sleep", type=int, default=20)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    found: dict[bool, list[tuple[float, float, bool]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for reuse in (True, False):
                found[reuse].append(one_side(Path(tmp, f"{run}-{reuse}"), reuse, args.sleep))
    lines = [
        f"Stale build on engine 2 of an image whose unchanged RUN takes {args.sleep} s and whose "
        f"last COPY changed, record pushed from engine 1 (medians of {args.runs}):",
        "",
        "| layer reuse | build | whole `bt build` | RUN step |",
        "| --- | ---: | ---: | --- |",
    ]
    for reuse in (True, False):
        sides = found[reuse]
        job = statistics.median(s[0] for s in sides)
        took = statistics.median(s[1] for s in sides)
        cached = "CACHED" if all(s[2] for s in sides) else "ran"
        name = "on (default)" if reuse else "off (`--no-cache`)"
        lines.append(f"| {name} | {job:.1f} s | {took:.1f} s | {cached} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "layers.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
