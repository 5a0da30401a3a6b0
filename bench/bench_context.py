"""What a build sends its engine: bt's hermetic context (the key's file set as a tar) against
`docker build` of the same directory, for both builders, in one run. BuildKit keeps the last
context of a directory and sends only what changed, so `docker build` is also timed on a fresh
copy per run (what a CI runner or a new clone sends).

The context holds a 2 GB file no instruction reads (sparse: made with truncate, deleted at the
end) next to the Dockerfile and a few small files the Dockerfile copies. Each bt run gets a new
key (a global input changes) so it really builds; every run of either tool finds its layers in
the engine's cache, so the time is the context's transfer plus a fixed cost. Bytes sent: for
`docker build`, what the CLI reports ("Sending build context" for the classic builder,
"transferring context" for BuildKit); for bt, the size of the tar it streams.

Usage: python bench/bench_context.py [--runs N] [--size-gb G]
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

REPO = Path(__file__).resolve().parent.parent
DOCKER = "/usr/bin/docker"  # drives the engine's BuildKit with DOCKER_BUILDKIT=1
BASE = "bt-test/busybox:latest"
_UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1024, "MiB": 1 << 20,
          "GiB": 1 << 30}  # fmt: skip


def write_workspace(root: Path, backend: str, size: int) -> None:
    root.mkdir(parents=True)
    (root / ".cache-spec").write_text(
        'global_inputs = ["nonce.txt"]\nplatforms = ["linux/amd64"]\n'
        f'[builders."*"]\nbackend = "{backend}"\nnetwork = "none"\n'
    )
    (root / "BUILD.images").write_text('image(name = "app")\n')
    (root / "Dockerfile").write_text(f"FROM {BASE}\nCOPY app.py config.json /app/\n")
    (root / "app.py").write_text("print('hello')\n" * 50)
    (root / "config.json").write_text('{"model": "tiny"}\n')
    (root / "README.md").write_text("notes\n" * 100)
    (root / "nonce.txt").write_text(uuid.uuid4().hex)
    with (root / "model.bin").open("wb") as f:
        f.truncate(size)  # sparse: no instruction reads it, so only its size matters


def sent_by_bt(root: Path) -> int:
    """The size of the tar bt streams for //:app (the key's file set and the Dockerfile)."""
    sys.path.insert(0, str(REPO))
    here = os.getcwd()
    os.chdir(root)
    try:
        from buildtool.build.builders.context import sent_context, tar_chunks
        from buildtool.cli.commands.common import Workbench

        bench = Workbench.open()
        planned = bench.plan(["//:app"])[0]
        fileset = planned.fileset
        sent = sent_context(fileset, root, root / fileset.dockerfile)
        return sum(len(chunk) for chunk in tar_chunks(sent))
    finally:
        os.chdir(here)


def parse_size(text: str) -> int:
    number, unit = re.fullmatch(r"([\d.]+)\s*([A-Za-z]+)", text.strip()).groups()  # type: ignore[union-attr]
    return int(float(number) * _UNITS[unit])


def docker_build(root: Path, env: dict[str, str], buildkit: bool) -> tuple[float, int]:
    tag = f"bench-context/plain:{uuid.uuid4().hex[:12]}"
    cmd = [DOCKER, "build", "--network=none", "-t", tag, str(root)]
    if buildkit:
        cmd.insert(2, "--progress=plain")
    run_env = {**env, "DOCKER_BUILDKIT": "1" if buildkit else "0"}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=run_env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    subprocess.run([DOCKER, "rmi", tag], env=env, capture_output=True, check=False)
    out = done.stdout + done.stderr
    if buildkit:
        sizes = re.findall(r"transferring context: ([\d.]+\s*[kKMG]?i?B)", out)
        return seconds, parse_size(sizes[-1]) if sizes else 0
    match = re.search(r"Sending build context to Docker daemon\s+([\d.]+\s*[kKMG]?i?B)", out)
    return seconds, parse_size(match.group(1)) if match else 0


def bt_build(root: Path, env: dict[str, str]) -> tuple[float, float]:
    """Seconds of the whole `bt build` process, and of its build job alone."""
    (root / "nonce.txt").write_text(uuid.uuid4().hex)  # a new key: bt really builds
    start = time.perf_counter()
    command = [sys.executable, "-m", "buildtool", "build", "//:app", "--json"]
    done = subprocess.run(command, cwd=root, env=env, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    finished = [json.loads(line) for line in done.stdout.splitlines() if '"finished"' in line]
    return seconds, float(finished[0]["seconds"])


def medians(runs: list[tuple[float, int]]) -> tuple[int, float]:
    """(bytes, seconds) medians of (seconds, bytes) runs."""
    return int(statistics.median(b for _, b in runs)), statistics.median(t for t, _ in runs)


def human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size:.0f} B"
        size /= 1000
    return f"{size} GB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-gb", type=float, default=2.0)
    args = parser.parse_args()
    host = os.environ.get("DOCKER_HOST", "unix:///run/bt-test/engine1.sock")
    tmp = Path(tempfile.mkdtemp(prefix="bt-bench-context-"))
    env = {**os.environ, "DOCKER_HOST": host, "XDG_CACHE_HOME": str(tmp / "cache"),
           "PYTHONPATH": str(REPO)}  # fmt: skip
    os.environ["XDG_CACHE_HOME"] = env["XDG_CACHE_HOME"]  # for the in-process plan
    rows: list[tuple[str, str, int, float]] = []
    size = int(args.size_gb * 1e9)
    try:
        for backend, buildkit in (("buildkit", True), ("engine", False)):
            builder = "BuildKit" if buildkit else "classic (Engine API)"
            root = tmp / backend
            write_workspace(root, backend, size)
            bt_build(root, env)  # warm the engine's layer cache and bt's stat cache
            docker_build(root, env, buildkit)
            bt_times = [bt_build(root, env) for _ in range(args.runs)]
            same = [docker_build(root, env, buildkit) for _ in range(args.runs)]
            if buildkit:
                # BuildKit keeps the last context of a directory and sends only what changed:
                # a fresh checkout (a CI runner, a new clone) sends it all.
                fresh = []
                for run in range(args.runs):
                    write_workspace(tmp / f"fresh-{run}", backend, size)
                    fresh.append(docker_build(tmp / f"fresh-{run}", env, buildkit))
                    shutil.rmtree(tmp / f"fresh-{run}")
                rows.append((builder, "docker build, fresh checkout", *medians(fresh)))
                rows.append((builder, "docker build, same directory", *medians(same)))
            else:
                rows.append((builder, "docker build", *medians(same)))
            bt_bytes = sent_by_bt(root)
            rows.append((builder, "bt build (build job)", bt_bytes,
                         statistics.median(job for _, job in bt_times)))  # fmt: skip
            rows.append((builder, "bt build (whole process)", bt_bytes,
                         statistics.median(whole for whole, _ in bt_times)))  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"context: {args.size_gb:g} GB file no instruction reads + 4 small files; "
          f"medians of {args.runs} runs")  # fmt: skip
    print(f"{'builder':<22} {'tool':<30} {'bytes sent':>12} {'s/build':>8}")
    for builder, tool, sent, seconds in rows:
        print(f"{builder:<22} {tool:<30} {human(sent):>12} {seconds:>8.2f}")
    for builder, tool, sent, seconds in rows:
        if not tool.startswith("bt build"):
            bt_row = next(r for r in rows if r[0] == builder and r[1] == "bt build (build job)")
            print(f"{builder}, {tool}: {sent / max(bt_row[2], 1):,.1f}x the bytes bt sends, "
                  f"{seconds / bt_row[3]:.2f}x the time of bt's build job")  # fmt: skip


if __name__ == "__main__":
    main()
