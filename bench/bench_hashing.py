"""Throughput of bt's file hashing against raw blake3, and the cost of a warm stat cache.

1. Large files (default 4 x 256 MiB, in the page cache): raw blake3 with blake3's threads over
   the same bytes already in memory, and blake3's own ``update_mmap``, against
   ``StatCache.digest_many`` on an empty cache. Runs are interleaved; medians are reported.
2. Many small files (default 100,000): digest_many on an empty cache, save, load, and
   digest_many again with every answer a cache hit, against bare os.lstat of the same files.

Usage: python bench/bench_hashing.py [--files N] [--size-mib M] [--small N] [--runs R]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import blake3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from buildtool.state import hashing
from buildtool.state.hashing import StatCache

MIB = 1 << 20


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def write_large_files(root: Path, count: int, size: int) -> list[str]:
    block = os.urandom(16 * MIB)
    paths = []
    for index in range(count):
        path = root / f"large-{index}.bin"
        with open(path, "wb") as f:
            f.write(b"file %d\n" % index)
            left = size - f.tell()
            while left > 0:
                left -= f.write(block[:left])
        paths.append(str(path))
    return paths


def write_small_files(root: Path, count: int) -> list[str]:
    paths = []
    for index in range(count):
        folder = root / "small" / str(index // 1000)
        if index % 1000 == 0:
            folder.mkdir(parents=True)
        path = folder / f"f{index % 1000}.txt"
        path.write_bytes(b"small file %d\n" % index * (1 + index % 50))
        paths.append(str(path))
    return paths


def threaded_blake3(source: bytes | str) -> str:
    """Raw blake3 on all cores over bytes in memory, or over a file path by update_mmap."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    if isinstance(source, str):
        hasher.update_mmap(source)
    else:
        hasher.update(source)
    return hasher.hexdigest()


def threaded_blake3_all(sources: list[bytes] | list[str]) -> list[str]:
    return [threaded_blake3(source) for source in sources]


def row(name: str, seconds: float, size: int | None = None, note: str = "") -> str:
    rate = f"{size / seconds / 1e6:9.0f} MB/s" if size is not None else " " * 14
    return f"{name:<50} {seconds * 1000:9.1f} ms {rate}  {note}"


def bench_large(root: Path, count: int, size: int, runs: int) -> list[str]:
    paths = write_large_files(root, count, size)
    blobs = [Path(p).read_bytes() for p in paths]
    total = count * size
    expected = threaded_blake3_all(blobs)
    samples: dict[str, list[float]] = {"raw": [], "mmap": [], "cold": []}
    for _ in range(runs):
        samples["raw"].append(timed(partial(threaded_blake3_all, blobs)))
        samples["mmap"].append(timed(partial(threaded_blake3_all, paths)))
        cache = StatCache.load(root / "no-such-cache")
        samples["cold"].append(timed(partial(cache.digest_many, paths)))
        assert cache.misses == count
    assert StatCache.load(root / "no-such-cache").digest_many(paths) == expected
    raw, mmap, cold = (statistics.median(samples[k]) for k in ("raw", "mmap", "cold"))
    what = f"{count} x {size // MIB} MiB"
    return [
        row(f"raw blake3, bytes in memory ({what})", raw, total),
        row(f"raw blake3 update_mmap ({what})", mmap, total),
        row(
            f"StatCache.digest_many, empty cache ({what})",
            cold,
            total,
            f"{raw / cold:.0%} of in-memory, {mmap / cold:.0%} of update_mmap",
        ),
    ]


def bench_small(root: Path, count: int, runs: int) -> list[str]:
    paths = write_small_files(root, count)
    total = sum(os.path.getsize(p) for p in paths)
    # Files changed within the racy window are never trusted; let the window pass, as it
    # would between an edit and the next build.
    time.sleep(hashing.RACY_WINDOW_NS / 1e9 + 0.5)
    cache_file = root / "statcache.msgpack"
    cold_samples, save_samples = [], []
    for _ in range(max(1, runs // 2)):
        cache_file.unlink(missing_ok=True)
        cache = StatCache.load(cache_file)
        cold_samples.append(timed(partial(cache.digest_many, paths)))
        save_samples.append(timed(cache.save))
    load_samples, warm_samples, lstat_samples = [], [], []
    for _ in range(runs):
        lstat_samples.append(timed(lambda: [os.lstat(p) for p in paths]))
        load_samples.append(timed(lambda: StatCache.load(cache_file)))
        cache = StatCache.load(cache_file)
        warm_samples.append(timed(partial(cache.digest_many, paths)))
        assert (cache.hits, cache.misses) == (count, 0)
    size_mb = cache_file.stat().st_size / 1e6
    return [
        row(
            f"digest_many, empty cache ({count:,} small files)",
            statistics.median(cold_samples),
            total,
        ),
        row(f"save ({count:,} entries, {size_mb:.1f} MB)", statistics.median(save_samples)),
        row(f"load ({count:,} entries)", statistics.median(load_samples)),
        row(f"digest_many, all hits ({count:,} files)", statistics.median(warm_samples)),
        row(f"  of which the floor: os.lstat ({count:,} files)", statistics.median(lstat_samples)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=4, help="large files (default 4)")
    parser.add_argument("--size-mib", type=int, default=256, help="size of each (default 256)")
    parser.add_argument("--small", type=int, default=100_000, help="small files (default 100000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (default 5)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the files")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bt-bench-hashing-", dir=args.dir))
    try:
        lines = []
        if args.files and args.size_mib:
            lines += bench_large(root, args.files, args.size_mib * MIB, args.runs)
        if args.small:
            lines += bench_small(root, args.small, args.runs)
    finally:
        shutil.rmtree(root)
    print(f"cpus: {os.cpu_count()}, runs: {args.runs}, medians")
    print(f"{'measurement':<50} {'time':>12} {'throughput':>14}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
