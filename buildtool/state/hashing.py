"""File digests: blake3 behind a msgpack stat cache with racy-file protection.

A cached digest is trusted only while the file's (size, mtime_ns, ctime_ns, inode) are
unchanged *and* the file was last changed safely before the digest was taken (git's "racy
clean" rule, Documentation/technical/racy-git.txt): a file changed within one timestamp tick
of being hashed can change again without its stat changing, so it is hashed again next time.
"""

from __future__ import annotations

import errno
import mmap
import os
import random
import stat
import sys
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import blake3

from buildtool.errors import BtError
from buildtool.state.cachedir import update_file
from buildtool.state.packing import pack, unpack

CACHE_VERSION = 1

# Files at least this large are mapped and hashed by blake3's own threads; smaller ones are read
# at once and hashed single-threaded, several files side by side. Measured on 2 cores: mapping
# wins from about 1 MiB, below that thread start-up and page faults cost more than they save.
LARGE_FILE = 1 << 20

# A stat younger than this when its file was hashed is not trusted later. File systems stamp
# files from a coarse clock: a jiffy on ext4/xfs/btrfs, 1 s on ext3/HFS+/many NFS and SMB
# servers, 2 s on FAT; a network server's clock may also trail ours. 3 s covers FAT plus a
# second of skew, and costs only re-hashing files edited in the last three seconds.
RACY_WINDOW_NS = 3_000_000_000

# Misses are hashed in batches on a thread pool (blake3 and os.read release the GIL); a batch
# of many small files amortises the per-task cost, which exceeds hashing one small file.
_BATCH_BYTES = 8 << 20
_BATCH_FILES = 256

# Unseen entries checked for a deleted file on each save before all unseen ones are (``dead``).
_PRUNE_SAMPLE = 32

_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a FIFO must not hang us


def digest_bytes(data: bytes) -> str:
    """Hex blake3 of ``data``."""
    return blake3.blake3(data).hexdigest()


def value_digest(value: str) -> str:
    """What bt keeps of a build arg's value: its blake3, never the value."""
    import blake3

    return "blake3:" + blake3.blake3(value.encode()).hexdigest()


def digest_file(path: str) -> str:
    """Hex blake3 of the content of the regular file at ``path`` (symlinks followed)."""
    return _hash_file(path, _OPEN_FLAGS)


def _hash_file(path: str, flags: int) -> str:
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise _unreadable(path, err) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BtError("not a regular file", path)
        if st.st_size < LARGE_FILE:
            return blake3.blake3(_read_all(fd, st.st_size)).hexdigest()
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
            hasher.update(mapped)
        return hasher.hexdigest()
    except OSError as err:
        raise _unreadable(path, err) from None
    finally:
        os.close(fd)


def _read_all(fd: int, size: int) -> bytes:
    data = os.read(fd, size + 1)  # one call for a file that did not grow since fstat
    if len(data) <= size:
        return data
    chunks = [data]
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _unreadable(path: str, err: OSError) -> BtError:
    if err.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink swapped in after lstat
        return BtError("not a regular file (a symlink)", path)
    return BtError(f"cannot read file: {err.strerror or err}", path)


def _lstat_regular(path: str) -> os.stat_result:
    try:
        st = os.lstat(path)
    except OSError as err:
        raise _unreadable(path, err) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "a directory or special file"
        raise BtError(f"not a regular file ({kind})", path)
    return st


def _exists(path: str) -> bool:
    """Whether ``path`` is still a regular file (what the cache can hold a digest of)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _now_ns() -> int:
    return time.time_ns()


def _is_racy(mtime_ns: int, ctime_ns: int, since_ns: int) -> bool:
    return max(mtime_ns, ctime_ns) >= since_ns - RACY_WINDOW_NS


class _Hashed(NamedTuple):
    """A digest taken in this process, and when: the clock read before the file was stat'ed."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    digest: str
    hashed_ns: int


def _worth_saving(hashed: _Hashed) -> bool:
    if _is_racy(hashed.mtime_ns, hashed.ctime_ns, hashed.hashed_ns):
        return False  # it would not be trusted anyway, and written_ns must vouch for the rest
    # Not racy bounds the times above; the column is int64 ns, so a file dated before 1677
    # (touch -d 1000-01-01) stays out of the cache.
    return min(hashed.mtime_ns, hashed.ctime_ns) >= -(2**63)


class _Table:
    """The entries of a cache file, column by column.

    A map of per-entry arrays is slow to decode (msgpack interns every map key and builds six
    objects per entry): 100,000 entries took 120 ms; as one list of paths plus three byte
    strings they load, index included, in 30 ms.
    ``ids`` holds (size, ino) as uint64, ``times`` (mtime_ns, ctime_ns) as int64, both
    little-endian, and ``digests`` the 32-byte blake3 digests back to back.
    """

    def __init__(
        self,
        paths: list[str],
        ids: array[int],
        times: array[int],
        digests: bytearray,
        written_ns: int,
    ):
        self.paths = paths
        self.index = dict(zip(paths, range(len(paths)), strict=True))
        self.ids = ids
        self.times = times
        self.digests = digests
        self.written_ns = written_ns
        self.seen = bytearray(len(paths))  # 1 for each entry a lookup found: its file exists

    @classmethod
    def empty(cls) -> _Table:
        return cls([], array("Q"), array("q"), bytearray(), 0)

    @classmethod
    def read(cls, path: Path) -> _Table:
        """The table in ``path``; anything unreadable is an empty table."""
        try:
            data = path.read_bytes()
        except OSError:
            return cls.empty()
        return cls.decode_or_empty(data)

    @classmethod
    def decode_or_empty(cls, data: bytes | None) -> _Table:
        if data is None:
            return cls.empty()
        try:
            return cls._decode(data)
        except Exception:  # a cache never fails a build: truncated, garbage -> empty
            return cls.empty()

    @classmethod
    def _decode(cls, data: bytes) -> _Table:
        top = unpack(data)
        if not isinstance(top, dict) or top.get("version") != CACHE_VERSION:
            return cls.empty()
        paths, written_ns = top["paths"], top["written_ns"]
        columns = (top["ids"], top["times"], top["digests"])
        if not isinstance(paths, list) or not isinstance(written_ns, int):
            return cls.empty()
        if not all(isinstance(column, bytes) for column in columns):
            return cls.empty()
        ids, times, digests = array("Q", columns[0]), array("q", columns[1]), bytearray(columns[2])
        count = len(paths)
        if (len(ids), len(times), len(digests)) != (2 * count, 2 * count, 32 * count):
            return cls.empty()
        if sys.byteorder == "big":
            ids.byteswap()
            times.byteswap()
        return cls(paths, ids, times, digests, written_ns)

    def encode(self) -> bytes:
        ids, times = array("Q", self.ids), array("q", self.times)
        if sys.byteorder == "big":
            ids.byteswap()
            times.byteswap()
        top = {
            "version": CACHE_VERSION,
            "written_ns": self.written_ns,
            "paths": self.paths,
            "ids": ids.tobytes(),
            "times": times.tobytes(),
            "digests": bytes(self.digests),
        }
        return pack(top)

    def lookup(self, path: str, st: os.stat_result) -> str | None:
        i = self.index.get(path)
        if i is None:
            return None
        self.seen[i] = 1
        ids, times = self.ids, self.times
        mtime, ctime = times[2 * i], times[2 * i + 1]
        if (ids[2 * i], ids[2 * i + 1], mtime, ctime) != (
            st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns
        ):  # fmt: skip
            return None
        if _is_racy(mtime, ctime, self.written_ns):
            return None  # git's rule; entries are written only when safe, so this is a backstop
        return self.digests[32 * i : 32 * i + 32].hex()

    def merge(self, hashed: dict[str, _Hashed]) -> None:
        """Add or replace entries; new ones column by column, which keeps saving 100,000 fast."""
        added = {path: h for path, h in hashed.items() if path not in self.index}
        for path, h in hashed.items():
            if path not in added:
                i = self.index[path]
                self.ids[2 * i : 2 * i + 2] = array("Q", (h.size, h.ino))
                self.times[2 * i : 2 * i + 2] = array("q", (h.mtime_ns, h.ctime_ns))
                self.digests[32 * i : 32 * i + 32] = bytes.fromhex(h.digest)
        start = len(self.paths)
        self.paths.extend(added)
        self.index.update(zip(added, range(start, start + len(added)), strict=True))
        self.ids.extend(array("Q", [n for h in added.values() for n in (h.size, h.ino)]))
        self.times.extend(array("q", [t for h in added.values() for t in (h.mtime_ns, h.ctime_ns)]))
        self.digests += bytes.fromhex("".join(h.digest for h in added.values()))
        self.seen += bytes(len(added))

    def dead(self, sample: int = _PRUNE_SAMPLE) -> set[str]:
        """Paths of entries no lookup found whose file is gone. A few unseen entries, picked at
        random, are checked first; only when one of them is gone are all unseen ones: a
        partial plan stats ``sample`` files more, and the cache sheds what was deleted on the
        first write after a sizeable part of it went (a few stale entries wait for a later
        one). A full no-op plan sees every entry and stats nothing."""
        count = len(self.paths)
        if count == 0 or self.seen.count(0) == 0:
            return set()
        picks = (random.randrange(count) for _ in range(8 * sample))
        unseen = [i for i in picks if not self.seen[i]][:sample]
        if all(_exists(self.paths[i]) for i in unseen):
            return set()
        return {
            p for p, seen in zip(self.paths, self.seen, strict=True) if not seen and not _exists(p)
        }

    def without(self, dead: set[str]) -> _Table:
        """This table less the entries of ``dead`` paths."""
        keep = [i for i, path in enumerate(self.paths) if path not in dead]
        if len(keep) == len(self.paths):
            return self
        ids, times, digests = array("Q"), array("q"), bytearray()
        for i in keep:
            ids.extend(self.ids[2 * i : 2 * i + 2])
            times.extend(self.times[2 * i : 2 * i + 2])
            digests += self.digests[32 * i : 32 * i + 32]
        return _Table([self.paths[i] for i in keep], ids, times, digests, self.written_ns)


class StatCache:
    """(size, mtime_ns, ctime_ns, inode) -> digest, per absolute path, persisted with msgpack.

    File format: a msgpack map ``{"version": 1, "written_ns": int, "paths": [str], "ids": bin,
    "times": bin, "digests": bin}`` (columns described on ``_Table``). Only digests that were
    not racy when taken are written, so ``written_ns`` can vouch for every entry in the file.
    """

    def __init__(self, path: Path, table: _Table | None = None):
        self.path = path
        self.hits = 0  # lookups answered from the cache
        self.misses = 0  # files hashed
        self._loaded = table  # None: read on the first lookup
        self._hashed: dict[str, _Hashed] = {}

    @classmethod
    def load(cls, path: Path) -> StatCache:
        """The cache at ``path``; missing, corrupt or of another version -> an empty cache.
        Read on first use: a no-op whose described file sets all hold looks nothing up."""
        return cls(path)

    @property
    def _table(self) -> _Table:
        if self._loaded is None:
            self._loaded = _Table.read(self.path)
        return self._loaded

    def digest(self, abspath: str) -> str:
        """Digest of the regular file ``abspath``, from the cache when its stat still matches."""
        return self.digest_many([abspath])[0]

    def digest_many(
        self,
        abspaths: Sequence[str],
        stats: Sequence[os.stat_result] | None = None,
        stats_ns: int = 0,
    ) -> list[str]:
        """Digests in the order given; cache misses are hashed concurrently.

        ``stats`` are the files' lstats when the caller already took them (a directory listing
        does: one lstat per file per run), with ``stats_ns`` the clock read before it did.
        """
        # Read before any stat: a change after it is then always racy.
        now = _now_ns() if stats is None else stats_ns
        results: list[str] = []
        missed: list[int] = []
        pending: dict[str, os.stat_result] = {}
        for i, abspath in enumerate(abspaths):
            st = _lstat_regular(abspath) if stats is None else stats[i]
            digest = self._lookup(abspath, st)
            if digest is None:
                missed.append(len(results))
                pending[abspath] = st
            results.append(digest or "")
        self.hits += len(abspaths) - len(missed)
        if not pending:
            return results
        self.misses += len(pending)
        digests = _hash_concurrently(pending)
        for abspath, st in pending.items():
            self._hashed[abspath] = _Hashed(
                st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, digests[abspath], now
            )
        for index in missed:
            results[index] = digests[abspaths[index]]
        return results

    def _lookup(self, abspath: str, st: os.stat_result) -> str | None:
        hashed = self._hashed.get(abspath)
        if hashed is None:
            return self._table.lookup(abspath, st)
        if (hashed.size, hashed.ino, hashed.mtime_ns, hashed.ctime_ns) != (
            st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns
        ):  # fmt: skip
            return None
        if _is_racy(hashed.mtime_ns, hashed.ctime_ns, hashed.hashed_ns):
            return None
        return hashed.digest

    def save(self) -> None:
        """Write what was hashed, merged under the lock with what other processes saved, less
        the entries of files that are gone (``_Table.dead``): the size stays bounded by the
        files that exist. Nothing is written when there is neither."""
        if self._loaded is None:
            return  # nothing was looked up: nothing learnt, nothing seen to prune
        worth = {path: h for path, h in self._hashed.items() if _worth_saving(h)}
        self._hashed = {}
        dead = self._table.dead()
        if not worth and not dead:
            return
        merged = _Table.empty()

        def merge(current: bytes | None) -> bytes:
            nonlocal merged
            # Another bt may have saved since we loaded: merge into what is there now.
            merged = _Table.decode_or_empty(current).without(dead)
            merged.merge(worth)
            merged.written_ns = _now_ns()
            return merged.encode()

        update_file(self.path, merge)
        self._loaded = merged


def _hash_concurrently(pending: dict[str, os.stat_result]) -> dict[str, str]:
    """Hash files (not following symlinks), on a thread pool when there is more than a batch."""
    batches = _batches(pending)
    if len(batches) == 1:
        return _hash_batch(batches[0])
    from concurrent.futures import ThreadPoolExecutor  # only paid for when there is work

    workers = min(len(batches), 2 * (os.cpu_count() or 1))
    digests: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bt-hash") as pool:
        for batch_digests in pool.map(_hash_batch, batches):
            digests.update(batch_digests)
    return digests


def _batches(pending: dict[str, os.stat_result]) -> list[list[str]]:
    batches: list[list[str]] = [[]]
    batch_bytes = 0
    for path, st in pending.items():
        if batches[-1] and (batch_bytes >= _BATCH_BYTES or len(batches[-1]) >= _BATCH_FILES):
            batches.append([])
            batch_bytes = 0
        batches[-1].append(path)
        batch_bytes += st.st_size
    return batches


def _hash_batch(paths: list[str]) -> dict[str, str]:
    return {path: _hash_file(path, _OPEN_FLAGS | os.O_NOFOLLOW) for path in paths}
