"""How a no-op `bt plan //...` grows with the workspace, against what it physically costs.

For 1,000, 10,000 and 30,000 targets x 2 platforms over 10 files per target (100,000 files at
10,000; generated as in bench_plan.py), in one run: the floor (one Python process that walks
the tree and lstats every file), a warm no-op `bt plan //...`, and a plan after editing one
input file (appending a line: the file set of 2 N / 1,000 builds stale). Medians of --runs
fresh processes each. Writes bench/results/scale.md (the table) and scale.png (the plot).

Usage: python bench/bench_scale.py [--runs N] [--sizes 1000,10000,30000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_plan import WALK, Sample, bench_env, generate_large, medians, record_all, timed

from buildtool.state.hashing import RACY_WINDOW_NS

RESULTS = Path(__file__).resolve().parent / "results"


def measure(root: Path, env: dict[str, str], runs: int) -> tuple[Sample, Sample, Sample]:
    """Medians in ms (wall, cpu): floor, warm no-op, one-file edit. The edited file is one of
    data/1/, which 2 N / 1,000 builds read (targets 1, 1001, ...: none a parent); it is put
    back after each edit, and bt run once more (untimed, past the racy window) so that the
    next no-op is one."""
    bt = [sys.executable, "-m", "buildtool", "plan", "//..."]
    walk = [sys.executable, "-c", WALK, str(root)]
    floor, noop, edit = [], [], []
    record_all(root, env)  # what is on disk now is built: the timed plans are no-ops
    timed(bt, root, env)  # warm the caches the recorded plan left
    for i in range(runs):
        floor.append(timed(walk, root, env))
        noop.append(timed(bt, root, env))
        path = root / "data" / "1" / f"f{i}.txt"
        original = path.read_bytes()
        with path.open("a") as f:
            f.write(f"edit {i}\n")
        edit.append(timed(bt, root, env))
        path.write_bytes(original)
        time.sleep(RACY_WINDOW_NS / 1e9)
        timed(bt, root, env)
    ms = [Sample(*(v * 1000 for v in medians(s))) for s in (floor, noop, edit)]
    return ms[0], ms[1], ms[2]


Row = tuple[int, int, Sample, Sample, Sample]


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = [r[0] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, column, what in zip(axes, ("cpu", "wall"), ("CPU time (user + sys)", "wall time"),
                                strict=True):  # fmt: skip

        def seconds(i: int, col: str = column) -> list[float]:
            return [getattr(r[i], col) / 1000 for r in rows]

        ax.plot(targets, seconds(3), "o-", label="bt plan //... (warm no-op)")
        ax.plot(targets, seconds(4), "s-", label="bt plan //... (one file edited)")
        ax.plot(targets, seconds(2), "^--", label="floor: walk + lstat every file")
        ax.plot(targets, [3 * v for v in seconds(2)], ":", color="grey", label="3x the floor")
        ax.set_xlabel("targets (x 2 platforms; 10 files per target)")
        ax.set_ylabel("seconds (median)")
        ax.set_title(f"No-op plan vs the physical floor: {what}")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="1000,10000,30000")
    parser.add_argument("--keep", type=Path, help="generate workspaces here and reuse them")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        env = bench_env(base / "cache")
        for targets in sizes:
            root = base / f"ws-{targets}"
            if not (root / "BUILD.images").exists():
                start = time.perf_counter()
                root.mkdir(parents=True, exist_ok=True)
                generate_large(root, targets, targets * 10)
                record_all(root, env)
                took = time.perf_counter() - start
                print(f"{targets} targets: generated and recorded in {took:.0f} s", flush=True)
            floor, noop, edit = measure(root, env, args.runs)
            rows.append((targets, targets * 10, floor, noop, edit))
            line = (f"{targets:>6} targets  floor {floor.cpu:8.0f} ms cpu  no-op {noop.cpu:8.0f} "
                    f"ms cpu ({noop.cpu / floor.cpu:.1f}x; wall {noop.wall / floor.wall:.1f}x)  "
                    f"edit {edit.cpu:8.0f} ms cpu ({edit.cpu / floor.cpu:.1f}x)")  # fmt: skip
            print(line, flush=True)
    RESULTS.mkdir(exist_ok=True)
    lines = [
        f"`bt plan //...`, medians of {args.runs} fresh processes, {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores, python {sys.version.split()[0]}, load average "
        f"{os.getloadavg()[0]:.1f} at the end (others' work: CPU time is the steadier figure)",
        "",
        "| targets | files | measure | floor (walk + lstat) | warm no-op | no-op / floor "
        "| one file edited | edit / floor |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for targets, files, floor, noop, edit in rows:
        for column in ("cpu", "wall"):
            fl, no, ed = (getattr(x, column) for x in (floor, noop, edit))
            lines.append(
                f"| {targets:,} | {files:,} | {column} | {fl:,.0f} ms | {no:,.0f} ms "
                f"| {no / fl:.1f}x | {ed:,.0f} ms | {ed / fl:.1f}x |"
            )
    if len(rows) >= 2:
        (t0, f0, fl0, n0, _), (t1, f1, fl1, n1, _) = rows[0], rows[-1]
        lines += [
            "",
            f"Growth (CPU) from {t0:,} to {t1:,} targets: bt "
            f"{(n1.cpu - n0.cpu) / (t1 - t0) * 1000:.0f} us per target "
            f"({(n1.cpu - n0.cpu) / (f1 - f0) * 1000:.1f} us per file), the floor "
            f"{(fl1.cpu - fl0.cpu) / (f1 - f0) * 1000:.1f} us per file.",
        ]
    (RESULTS / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        plot(rows, RESULTS / "scale.png")
    except ImportError:
        print("matplotlib missing (pip install -e .[bench]): no plot")


if __name__ == "__main__":
    main()
