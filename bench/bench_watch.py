"""Save -> build-start latency of `bt watch`: the time from writing an input file to the first
`started` event of the rebuild it causes, median over many edits, on the engine of DOCKER_HOST
(default: .ci/setup's engine 1); also the CPU time bt watch spent in that interval.

Two workspaces: the example (`bt watch //matrix:tiny-en`, editing one alignment file), and with
--targets N one generated as bench_plan.py does (N targets x 2 platforms over 10 N files, all
recorded as built) plus one target reading a file of its own, watched whole (`bt watch //...`),
each edit appending to that file: every round plans all 2 N + 1 builds and runs one.

Usage: python bench/bench_watch.py [--edits N] [--targets N] [--target LABEL] [--file PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_plan import generate_large, record_all

from tests.btrun import copy_example


def workspace(dest: Path) -> Path:
    """A copy of the example whose keys are new, so builds are not action-cache hits."""
    copy_example(dest)
    with (dest / "docker/common/versions.txt").open("a") as f:
        f.write(f"# bench {uuid.uuid4().hex}\n")
    return dest


def large_workspace(dest: Path, targets: int, env: dict[str, str]) -> None:
    """Generated as bench_plan.py does, plus one target that reads one file of its own,
    edited.txt (so that a round runs one build, not the ones of 10 targets and their children
    that any data file has); every build recorded as built."""
    dest.mkdir(parents=True)
    generate_large(dest, targets, targets * 10)
    (dest / "Edited").write_text("FROM scratch\nCOPY edited.txt /\n")
    (dest / "edited.txt").write_text("edited\n")
    with (dest / "BUILD.images").open("a") as f:
        f.write('image(name = "edited", dockerfile = "Edited", platforms = ["linux/amd64"])\n')
    record_all(dest, env)


def cpu_ms(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=21)
    parser.add_argument("--targets", type=int, help="a generated workspace of this many targets")
    parser.add_argument("--target", default="//matrix:tiny-en")
    parser.add_argument("--file", default="docker/align/en/alignment.bin")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///run/bt-test/engine1.sock"),
            "XDG_CACHE_HOME": str(Path(tmp) / "cache"),
        }
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if args.targets:
            ws = Path(tmp) / "large"
            start = time.perf_counter()
            large_workspace(ws, args.targets, env)
            print(f"{args.targets} targets generated and recorded in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
            args.target, args.file = "//...", "edited.txt"
        else:
            ws = workspace(Path(tmp) / "ws")
        proc = subprocess.Popen(
            [sys.executable, "-m", "buildtool", "watch", args.target, "--json"],
            cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        events: queue.Queue[tuple[float, dict[str, object]]] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                events.put((time.perf_counter(), json.loads(line)))

        threading.Thread(target=read, daemon=True).start()

        def wait_for(kind: str, timeout: float = 600) -> tuple[float, float]:
            while True:
                at, event = events.get(timeout=timeout)
                if event["event"] == kind:
                    return at, cpu_ms(proc.pid)

        try:
            wait_for("watching", 1800)  # the initial plan (and build) is done
            latencies, cpu = [], []
            for i in range(args.edits):
                cpu_before = cpu_ms(proc.pid)
                saved = time.perf_counter()
                with (ws / args.file).open("ab") as f:
                    f.write(f"edit {i} {uuid.uuid4().hex}\n".encode())
                started, cpu_started = wait_for("started")
                latencies.append(started - saved)
                cpu.append(cpu_started - cpu_before)
                wait_for("watching")
        finally:
            proc.kill()
            proc.wait()
    ms = sorted(round(s * 1000, 1) for s in latencies)
    print(f"save -> build start over {len(ms)} edits of {args.file} ({args.target}), "
          f"load average {os.getloadavg()[0]:.1f}:")  # fmt: skip
    print(f"  wall: median {statistics.median(ms):.1f} ms, min {ms[0]} ms, max {ms[-1]} ms")
    print(
        f"  bt watch CPU time in that interval: median {statistics.median(cpu):.0f} ms, "
        f"max {max(cpu):.0f} ms"
    )


if __name__ == "__main__":
    main()
