"""Size of the stat and analysis caches on the 10,000-target workspace (``bench_plan``), before
and after half its files are deleted, and the no-op plan's time around it.

Usage: python bench/bench_state_size.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_plan import generate_large, timed


def sizes(cache: Path) -> str:
    stat = next(cache.rglob("statcache.msgpack"))
    analysis = next(cache.rglob("analysis.msgpack"))
    paths = len(msgpack.unpackb(stat.read_bytes())["paths"])
    entries = len(msgpack.unpackb(analysis.read_bytes())["entries"])
    return (
        f"stat cache {stat.stat().st_size / 1e6:6.2f} MB ({paths} entries), "
        f"analysis cache {analysis.stat().st_size / 1e3:6.1f} kB ({entries} entries)"
    )


def main() -> None:
    plan = [sys.executable, "-m", "buildtool", "plan", "//..."]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "large"
        root.mkdir()
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
        generate_large(root)
        time.sleep(4)  # past the racy window: every digest is cached
        timed(plan, root, env)
        warm = [timed(plan, root, env) for _ in range(5)]
        print(f"10,000 targets over 100,000 files: {sizes(Path(tmp) / 'cache')}")
        print(f"  no-op plan //... median of 5: {statistics.median(warm) * 1000:.0f} ms")
        for d in (root / "data").iterdir():
            for i in range(50, 100):
                (d / f"f{i}.txt").unlink()
        source = (root / "BUILD.images").read_text()
        (root / "BUILD.images").write_text(source.replace("range(10000)", "range(5000)"))
        first = timed(plan, root, env)
        print(f"half the files and targets deleted: {sizes(Path(tmp) / 'cache')}")
        print(f"  first plan after the deletion: {first * 1000:.0f} ms")
        warm = [timed(plan, root, env) for _ in range(5)]
        print(f"  no-op plan //... median of 5: {statistics.median(warm) * 1000:.0f} ms")
        subprocess.run(plan, cwd=root, env=env, check=True, capture_output=True)


if __name__ == "__main__":
    main()
