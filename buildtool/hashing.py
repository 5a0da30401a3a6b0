"""File digests: blake3 behind a msgpack stat cache with racy-file protection.

A cached digest is trusted only while the file's (size, mtime_ns, ctime_ns, inode) are
unchanged *and* the file was not modified within the timestamp granularity of the moment its
digest was taken (git's "racy clean" rule): such a file could change again without its stat
changing, so it is hashed again next time.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
from collections.abc import Sequence
from pathlib import Path

import blake3
import msgpack

from buildtool.errors import BtError
from buildtool.statefile import exclusive_lock, write_atomic

CACHE_VERSION = 1
# Files at least this large are hashed through mmap with blake3's own threads; smaller files
# are read at once and hashed concurrently with other files instead.
LARGE_FILE = 4 * 1024 * 1024
# Coarser than any file system we meet (ext4/xfs/btrfs: ns, but the kernel's clock ticks in
# jiffies; FAT: 2 s): a stat that is younger than this when hashed is not trusted later.
RACY_WINDOW_NS = 2_000_000_000


def digest_bytes(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def digest_file(path: str) -> str:
    """Hex blake3 of a file's content."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < LARGE_FILE:
                return blake3.blake3(f.read()).hexdigest()
            hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                hasher.update(mapped)
            return hasher.hexdigest()
    except OSError as err:
        raise BtError(f"cannot read input file: {err.strerror}", path) from None


Entry = tuple[int, int, int, int, str, int]  # size, mtime_ns, ctime_ns, ino, digest, hashed_ns


class StatCache:
    """(size, mtime_ns, ctime_ns, inode) -> digest per absolute path, persisted with msgpack."""

    def __init__(self, path: Path, entries: dict[str, Entry]):
        self.path = path
        self.entries = entries
        self.changed: dict[str, Entry] = {}
        self.hits = 0
        self.misses = 0

    @classmethod
    def load(cls, path: Path) -> StatCache:
        return cls(path, _read_entries(path))

    def _cached(self, abspath: str, st: os.stat_result) -> str | None:
        entry = self.changed.get(abspath) or self.entries.get(abspath)
        if entry is None:
            return None
        size, mtime, ctime, ino, digest, hashed = entry
        if (size, mtime, ctime, ino) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino):
            return None
        if max(mtime, ctime) >= hashed - RACY_WINDOW_NS:
            return None  # racily clean: changed too close to when it was hashed
        return digest

    def _stat(self, abspath: str) -> os.stat_result:
        try:
            return os.stat(abspath)
        except OSError as err:
            raise BtError(f"cannot read input file: {err.strerror}", abspath) from None

    def digest(self, abspath: str) -> str:
        return self.digest_many([abspath])[0]

    def digest_many(self, abspaths: Sequence[str]) -> list[str]:
        """Digests in order; cache misses are hashed concurrently (blake3 releases the GIL)."""
        results: list[str | None] = []
        missing: list[tuple[int, str, os.stat_result]] = []
        for index, abspath in enumerate(abspaths):
            st = self._stat(abspath)
            digest = self._cached(abspath, st)
            if digest is None:
                missing.append((index, abspath, st))
            results.append(digest)
        self.hits += len(abspaths) - len(missing)
        self.misses += len(missing)
        if missing:
            now = time.time_ns()
            paths = [abspath for _, abspath, _ in missing]
            if len(paths) > 4:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
                    digests = list(pool.map(digest_file, paths))
            else:
                digests = [digest_file(p) for p in paths]
            for (index, abspath, st), digest in zip(missing, digests, strict=True):
                results[index] = digest
                self.changed[abspath] = (
                    st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, digest, now
                )  # fmt: skip
        return [r for r in results if r is not None]

    def save(self) -> None:
        """Write the cache if anything changed, merged with what other processes saved."""
        if not self.changed:
            return
        with exclusive_lock(self.path.with_name(self.path.name + ".lock")):
            entries = _read_entries(self.path)
            entries.update(self.changed)
            data = msgpack.packb({"version": CACHE_VERSION, "entries": entries}, use_bin_type=True)
            write_atomic(self.path, data)
        self.entries = entries
        self.changed = {}


def _read_entries(path: Path) -> dict[str, Entry]:
    """The entries of a cache file; a missing, corrupt or foreign file is an empty cache."""
    with contextlib.suppress(OSError, ValueError, msgpack.UnpackException, TypeError):
        data = msgpack.unpackb(path.read_bytes(), raw=False, use_list=False)
        if isinstance(data, dict) and data.get("version") == CACHE_VERSION:
            entries = data.get("entries")
            if isinstance(entries, dict):
                return entries
    return {}
