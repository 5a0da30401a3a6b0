"""Save -> build-start latency of `bt watch`: the time from writing an input file to the first
`started` event of the rebuild it causes, median over many edits, on the engine of DOCKER_HOST
(default: .ci/setup's engine 1).

Usage: python bench/bench_watch.py [--edits N] [--target LABEL] [--file PATH]
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
from tests.btrun import copy_example


def workspace(dest: Path) -> Path:
    """A copy of the example whose keys are new, so builds are not action-cache hits."""
    copy_example(dest)
    with (dest / "docker/common/versions.txt").open("a") as f:
        f.write(f"# bench {uuid.uuid4().hex}\n")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=21)
    parser.add_argument("--target", default="//matrix:tiny-en")
    parser.add_argument("--file", default="docker/align/en/alignment.bin")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ws = workspace(Path(tmp) / "ws")
        env = {
            **os.environ,
            "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///run/bt-test/engine1.sock"),
            "XDG_CACHE_HOME": str(Path(tmp) / "cache"),
        }
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

        def wait_for(kind: str) -> float:
            while True:
                at, event = events.get(timeout=120)
                if event["event"] == kind:
                    return at

        try:
            wait_for("watching")  # the initial build is done
            latencies = []
            for i in range(args.edits):
                saved = time.perf_counter()
                with (ws / args.file).open("ab") as f:
                    f.write(f"edit {i} {uuid.uuid4().hex}\n".encode())
                latencies.append(wait_for("started") - saved)
                wait_for("watching")
        finally:
            proc.kill()
            proc.wait()
    ms = sorted(round(s * 1000, 1) for s in latencies)
    print(f"save -> build start over {len(ms)} edits of {args.file}:")
    print(f"  median {statistics.median(ms):.1f} ms, min {ms[0]} ms, max {ms[-1]} ms")


if __name__ == "__main__":
    main()
