from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildtool.errors import BtError
from buildtool.state import hashing
from buildtool.state.hashing import StatCache, digest_bytes, digest_file

REPO = Path(__file__).resolve().parent.parent
EMPTY = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
ABC = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"


@pytest.fixture
def old_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache's clock runs ahead: files written in the test count as changed long before."""
    monkeypatch.setattr(hashing, "_now_ns", lambda: time.time_ns() + 2 * hashing.RACY_WINDOW_NS)


def write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "statcache.msgpack"


def load(tmp_path: Path) -> StatCache:
    return StatCache.load(cache_path(tmp_path))


def hash_and_save(tmp_path: Path) -> str:
    """File ``a`` holding b"abc", digested through a fresh cache that is then saved."""
    path = write(tmp_path / "a", b"abc")
    cache = load(tmp_path)
    assert cache.digest(path) == ABC
    cache.save()
    return path


def test_digest_bytes_is_hex_blake3() -> None:
    assert digest_bytes(b"") == EMPTY
    assert digest_bytes(b"abc") == ABC


def test_digest_file_of_small_file_is_blake3_of_content(tmp_path: Path) -> None:
    assert digest_file(write(tmp_path / "a", b"abc")) == ABC
    assert digest_file(write(tmp_path / "empty", b"")) == EMPTY


@pytest.mark.parametrize("delta", [-1, 0, 1, 12345])
def test_digest_file_at_and_above_large_file_threshold_is_blake3_of_content(
    tmp_path: Path, delta: int
) -> None:
    data = os.urandom(hashing.LARGE_FILE + delta)
    assert digest_file(write(tmp_path / "big", data)) == digest_bytes(data)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=5000), threshold=st.integers(min_value=1, max_value=4096))
def test_mapped_and_read_paths_agree_for_any_content(data: bytes, threshold: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / "f", data)
        read = digest_file(path)
        saved, hashing.LARGE_FILE = hashing.LARGE_FILE, threshold
        try:
            mapped = digest_file(path)
        finally:
            hashing.LARGE_FILE = saved
    assert read == mapped == digest_bytes(data)


def test_digest_file_of_missing_file_names_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "gone")
    with pytest.raises(BtError) as err:
        digest_file(missing)
    assert str(err.value) == f"{missing}: cannot read file: No such file or directory"


def test_digest_file_of_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BtError) as err:
        digest_file(str(tmp_path))
    assert str(err.value) == f"{tmp_path}: not a regular file"


def test_unchanged_file_is_hashed_once_and_then_served_from_the_saved_cache(
    tmp_path: Path, old_files: None
) -> None:
    path = write(tmp_path / "a", b"abc")
    cache = load(tmp_path)
    assert cache.digest(path) == ABC
    assert (cache.hits, cache.misses) == (0, 1)
    assert cache.digest(path) == ABC
    assert (cache.hits, cache.misses) == (1, 1)
    cache.save()

    again = load(tmp_path)
    assert again.digest(path) == ABC
    assert (again.hits, again.misses) == (1, 0)


def test_content_change_gives_new_digest_in_process_and_after_reload(
    tmp_path: Path, old_files: None
) -> None:
    path = write(tmp_path / "a", b"abc")
    cache = load(tmp_path)
    assert cache.digest(path) == ABC
    cache.save()
    write(tmp_path / "a", b"abcd")
    assert cache.digest(path) == digest_bytes(b"abcd")
    cache.save()
    write(tmp_path / "a", b"xyz")
    assert load(tmp_path).digest(path) == digest_bytes(b"xyz")


def test_same_size_rewrite_with_restored_mtime_right_after_save_is_noticed(
    tmp_path: Path,
) -> None:
    path = hash_and_save(tmp_path)
    before = os.stat(path)
    write(tmp_path / "a", b"xyz")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns

    again = load(tmp_path)
    assert again.digest(path) == digest_bytes(b"xyz")
    assert (again.hits, again.misses) == (0, 1)


class FrozenStat:
    """A file system whose timestamps did not tick: lstat keeps answering the first stat."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.first: dict[str, os.stat_result] = {}
        real = hashing._lstat_regular

        def lstat(path: str) -> os.stat_result:
            return self.first.setdefault(path, real(path))

        monkeypatch.setattr(hashing, "_lstat_regular", lstat)


def test_racy_entry_is_rehashed_although_stat_is_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FrozenStat(monkeypatch)
    path = write(tmp_path / "a", b"abc")
    cache = load(tmp_path)
    assert cache.digest(path) == ABC
    cache.save()
    write(tmp_path / "a", b"xyz")  # same size, and the frozen stat hides the change

    assert cache.digest(path) == digest_bytes(b"xyz")
    cache.save()
    write(tmp_path / "a", b"123")
    again = load(tmp_path)
    assert again.digest(path) == digest_bytes(b"123")
    assert (again.hits, again.misses) == (0, 1)


def test_entry_hashed_well_after_the_last_change_is_trusted_on_stat_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old_files: None
) -> None:
    # The other side of the racy rule: outside the window a matching stat is proof enough.
    FrozenStat(monkeypatch)
    path = hash_and_save(tmp_path)
    write(tmp_path / "a", b"xyz")
    again = load(tmp_path)
    assert again.digest(path) == ABC
    assert (again.hits, again.misses) == (1, 0)


def with_mtime_ns(st: os.stat_result, mtime_ns: int) -> os.stat_result:
    fields = [*st, st.st_atime, st.st_mtime, st.st_ctime, st.st_atime_ns, mtime_ns, st.st_ctime_ns]
    return os.stat_result(fields)


def test_mtime_outside_int64_ns_is_hashed_but_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old_files: None
) -> None:
    ancient, normal = write(tmp_path / "ancient", b"abc"), write(tmp_path / "normal", b"")
    real = hashing._lstat_regular

    def lstat(path: str) -> os.stat_result:
        st = real(path)
        return with_mtime_ns(st, -(2**64)) if path == ancient else st

    monkeypatch.setattr(hashing, "_lstat_regular", lstat)
    cache = load(tmp_path)
    assert cache.digest_many([ancient, normal]) == [ABC, EMPTY]
    cache.save()
    again = load(tmp_path)
    assert again.digest_many([ancient, normal]) == [ABC, EMPTY]
    assert (again.hits, again.misses) == (1, 1)


def test_racy_digests_are_not_written(tmp_path: Path) -> None:
    hash_and_save(tmp_path)
    assert not cache_path(tmp_path).exists()


def test_cache_file_vouches_only_for_entries_older_than_its_write_time(tmp_path: Path) -> None:
    # git's rule on load: a stat not safely older than the file's written_ns is not trusted,
    # whatever wrote the entry.
    path = write(tmp_path / "a", b"abc")
    st = os.stat(path)
    entry = {"paths": [path], "digests": bytes.fromhex(ABC)}
    entry["ids"] = st.st_size.to_bytes(8, "little") + st.st_ino.to_bytes(8, "little")
    entry["times"] = st.st_mtime_ns.to_bytes(8, "little") + st.st_ctime_ns.to_bytes(8, "little")
    for written_ns, hits in [(st.st_ctime_ns, 0), (st.st_ctime_ns + hashing.RACY_WINDOW_NS + 1, 1)]:
        top = {"version": 1, "written_ns": written_ns, **entry}
        cache_path(tmp_path).parent.mkdir(exist_ok=True)
        cache_path(tmp_path).write_bytes(msgpack.packb(top, use_bin_type=True))
        cache = load(tmp_path)
        assert cache.digest(path) == ABC
        assert cache.hits == hits


def test_touch_without_content_change_keeps_the_digest(tmp_path: Path, old_files: None) -> None:
    path = hash_and_save(tmp_path)
    os.utime(path, ns=(0, 1_000_000_000))
    again = load(tmp_path)
    assert again.digest(path) == ABC
    assert (again.hits, again.misses) == (0, 1)


def test_replacing_file_by_rename_is_noticed_despite_same_size_and_mtime(
    tmp_path: Path, old_files: None
) -> None:
    path = hash_and_save(tmp_path)
    before = os.stat(path)
    replacement = write(tmp_path / "a.new", b"xyz")
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.rename(replacement, path)
    assert os.stat(path).st_ino != before.st_ino

    again = load(tmp_path)
    assert again.digest(path) == digest_bytes(b"xyz")


CORRUPTIONS: dict[str, Callable[[dict[str, Any]], object]] = {
    "other-version": lambda top: {**top, "version": 2},
    "no-version": lambda top: {k: v for k, v in top.items() if k != "version"},
    "no-digests": lambda top: {k: v for k, v in top.items() if k != "digests"},
    "written-not-int": lambda top: {**top, "written_ns": "soon"},
    "short-ids": lambda top: {**top, "ids": top["ids"][:-8]},
    "odd-times": lambda top: {**top, "times": top["times"][:-1]},
    "long-digests": lambda top: {**top, "digests": top["digests"] * 2},
    "times-as-list": lambda top: {**top, "times": list(top["times"])},
    "paths-as-string": lambda top: {**top, "paths": top["paths"][0]},
    "unhashable-path": lambda top: {**top, "paths": [top["paths"]]},
    "not-a-map": lambda top: list(top.values()),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_malformed_cache_loads_as_empty_cache_and_is_replaced(
    tmp_path: Path, old_files: None, corrupt: Callable[[dict[str, Any]], object]
) -> None:
    path = hash_and_save(tmp_path)
    top = msgpack.unpackb(cache_path(tmp_path).read_bytes())
    cache_path(tmp_path).write_bytes(msgpack.packb(corrupt(top), use_bin_type=True))

    again = load(tmp_path)
    assert again.digest(path) == ABC
    assert (again.hits, again.misses) == (0, 1)
    again.save()
    assert load(tmp_path).digest(path) == ABC


@pytest.mark.parametrize("content", [b"", b"\x00garbage\xff" * 10, b"\xc1"])
def test_cache_file_that_is_not_msgpack_loads_as_empty_cache(
    tmp_path: Path, old_files: None, content: bytes
) -> None:
    cache_path(tmp_path).parent.mkdir()
    cache_path(tmp_path).write_bytes(content)
    path = write(tmp_path / "a", b"abc")
    cache = load(tmp_path)
    assert cache.digest(path) == ABC
    assert (cache.hits, cache.misses) == (0, 1)


def test_truncated_cache_file_loads_as_empty_cache(tmp_path: Path, old_files: None) -> None:
    paths = [write(tmp_path / f"f{i}", b"%d" % i) for i in range(20)]
    cache = load(tmp_path)
    cache.digest_many(paths)
    cache.save()
    data = cache_path(tmp_path).read_bytes()
    cache_path(tmp_path).write_bytes(data[: len(data) // 2])
    again = load(tmp_path)
    again.digest_many(paths)
    assert (again.hits, again.misses) == (0, 20)


@settings(max_examples=200, deadline=None)
@given(content=st.binary(max_size=300))
def test_loading_arbitrary_bytes_never_fails(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "statcache.msgpack"
        path.write_bytes(content)
        StatCache.load(path)


def test_missing_cache_file_is_an_empty_cache_and_save_creates_it(
    tmp_path: Path, old_files: None
) -> None:
    path = hash_and_save(tmp_path)
    top = msgpack.unpackb(cache_path(tmp_path).read_bytes())
    assert sorted(top) == ["digests", "ids", "paths", "times", "version", "written_ns"]
    assert (top["version"], top["paths"], top["digests"].hex()) == (1, [path], ABC)
    assert isinstance(top["written_ns"], int)


def test_save_without_new_digests_leaves_the_file_alone(tmp_path: Path, old_files: None) -> None:
    path = hash_and_save(tmp_path)
    before = os.stat(cache_path(tmp_path))

    again = load(tmp_path)
    again.digest(path)
    again.save()
    StatCache.load(tmp_path / "never").save()
    after = os.stat(cache_path(tmp_path))
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not (tmp_path / "never").exists()


def test_two_caches_saving_in_turn_keep_each_others_entries(
    tmp_path: Path, old_files: None
) -> None:
    a, b = write(tmp_path / "a", b"abc"), write(tmp_path / "b", b"")
    first = load(tmp_path)
    second = load(tmp_path)
    first.digest(a)
    second.digest(b)
    first.save()
    second.save()
    merged = load(tmp_path)
    assert merged.digest_many([a, b]) == [ABC, EMPTY]
    assert (merged.hits, merged.misses) == (2, 0)


def test_later_save_of_same_path_overrides_earlier_entry(tmp_path: Path, old_files: None) -> None:
    path = write(tmp_path / "a", b"abc")
    first = load(tmp_path)
    first.digest(path)
    first.save()
    write(tmp_path / "a", b"abcd")
    second = load(tmp_path)
    second.digest(path)
    second.save()
    merged = load(tmp_path)
    assert merged.digest(path) == digest_bytes(b"abcd")
    assert (merged.hits, merged.misses) == (1, 0)


def test_save_replacing_some_entries_and_adding_others_keeps_every_digest(
    tmp_path: Path, old_files: None
) -> None:
    paths = [write(tmp_path / f"f{i}", b"v1 %d" % i) for i in range(10)]
    first = load(tmp_path)
    first.digest_many(paths[:6])
    first.save()
    for i in (2, 4):
        write(tmp_path / f"f{i}", b"version two of %d" % i)
    second = load(tmp_path)
    second.digest_many(paths[2:])
    assert (second.hits, second.misses) == (2, 6)
    second.save()

    merged = load(tmp_path)
    contents = [(tmp_path / f"f{i}").read_bytes() for i in range(10)]
    assert merged.digest_many(paths) == [digest_bytes(c) for c in contents]
    assert (merged.hits, merged.misses) == (10, 0)


SAVER = """
import sys, time
from pathlib import Path
from buildtool.state import hashing
hashing._now_ns = lambda: time.time_ns() + 10 * hashing.RACY_WINDOW_NS
cache = hashing.StatCache.load(Path(sys.argv[1]))
for path in sys.argv[2:]:  # one save per file: many chances to interleave
    cache.digest(path)
    cache.save()
"""


def test_concurrent_processes_saving_lose_no_entries(tmp_path: Path, old_files: None) -> None:
    groups = [
        [write(tmp_path / f"p{p}" / f"f{i}", b"%d-%d" % (p, i)) for i in range(25)]
        for p in range(4)
    ]
    procs = [
        subprocess.Popen([sys.executable, "-c", SAVER, str(cache_path(tmp_path)), *group], cwd=REPO)
        for group in groups
    ]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0, 0, 0]
    everything = [path for group in groups for path in group]
    merged = load(tmp_path)
    assert merged.digest_many(everything) == [digest_file(path) for path in everything]
    assert (merged.hits, merged.misses) == (100, 0)


def test_digest_many_keeps_order_with_duplicates_hits_and_misses(
    tmp_path: Path, old_files: None
) -> None:
    paths = [write(tmp_path / f"f{i}", b"content %d" % i) for i in range(600)]  # several batches
    cache = load(tmp_path)
    assert cache.digest_many(paths[:10]) == [digest_bytes(b"content %d" % i) for i in range(10)]
    order = [*reversed(paths), paths[3], paths[599]]
    expected = [digest_bytes(b"content %d" % i) for i in [*reversed(range(600)), 3, 599]]
    assert cache.digest_many(order) == expected
    assert (cache.hits, cache.misses) == (11, 600)  # paths[3] twice; each file hashed once


def test_digest_many_of_large_files_matches_their_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashing, "LARGE_FILE", 1000)
    blobs = [os.urandom(size) for size in (999, 1000, 50_000, 3_000_000, 0)]
    paths = [write(tmp_path / f"f{i}", blob) for i, blob in enumerate(blobs)]
    cache = load(tmp_path)
    assert cache.digest_many(paths) == [digest_bytes(blob) for blob in blobs]


def test_digest_many_of_empty_list_is_empty(tmp_path: Path) -> None:
    assert load(tmp_path).digest_many([]) == []


def test_missing_file_among_many_names_it(tmp_path: Path) -> None:
    paths = [write(tmp_path / f"f{i}", b"x") for i in range(300)]
    paths.insert(150, str(tmp_path / "gone"))
    with pytest.raises(BtError) as err:
        load(tmp_path).digest_many(paths)
    assert str(err.value) == f"{tmp_path / 'gone'}: cannot read file: No such file or directory"


def test_file_deleted_after_caching_is_an_error_not_a_stale_digest(
    tmp_path: Path, old_files: None
) -> None:
    path = hash_and_save(tmp_path)
    os.unlink(path)
    with pytest.raises(BtError) as err:
        load(tmp_path).digest(path)
    assert str(err.value) == f"{path}: cannot read file: No such file or directory"


def test_symlink_is_refused_not_followed(tmp_path: Path) -> None:
    target = write(tmp_path / "target", b"abc")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(BtError) as err:
        load(tmp_path).digest(str(link))
    assert str(err.value) == f"{link}: not a regular file (a symlink)"


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BtError) as err:
        load(tmp_path).digest(str(tmp_path))
    assert str(err.value) == f"{tmp_path}: not a regular file (a directory or special file)"


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(BtError) as err:
        load(tmp_path).digest(str(fifo))
    assert str(err.value) == f"{fifo}: not a regular file (a directory or special file)"
    with pytest.raises(BtError) as err:
        digest_file(str(fifo))
    assert str(err.value) == f"{fifo}: not a regular file"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can enter (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="bt-hashing-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_unreadable_file_names_it(shared_dir: Path) -> None:
    path = write(shared_dir / "secret", b"abc")
    os.chmod(path, 0)
    cache = StatCache.load(shared_dir / "cache")
    # root reads anything, so the read is attempted as nobody when the tests run as root
    as_root = os.geteuid() == 0
    if as_root:
        os.seteuid(65534)
    try:
        with pytest.raises(BtError) as err:
            cache.digest(path)
    finally:
        if as_root:
            os.seteuid(0)
    assert str(err.value) == f"{path}: cannot read file: Permission denied"


def entries(tmp_path: Path) -> list[str]:
    return sorted(msgpack.unpackb(cache_path(tmp_path).read_bytes())["paths"])


def test_entries_of_deleted_files_are_dropped_by_the_next_save_and_others_kept(
    tmp_path: Path, old_files: None
) -> None:
    files = [write(tmp_path / "src" / f"f{i}.txt", b"%d" % i) for i in range(100)]
    first = load(tmp_path)
    first.digest_many(files)
    first.save()
    assert entries(tmp_path) == sorted(files)

    for path in files[50:]:
        os.unlink(path)
    # A run that looks up only some of what is left (a partial plan) and hashes nothing new.
    partial = load(tmp_path)
    partial.digest_many(files[:10])
    partial.save()
    assert entries(tmp_path) == sorted(files[:50])  # the 40 unseen files that exist stay
    assert partial.hits == 10 and partial.misses == 0


def test_a_save_with_nothing_gone_and_nothing_new_stats_only_a_sample(
    tmp_path: Path, old_files: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [write(tmp_path / "src" / f"f{i}.txt", b"%d" % i) for i in range(500)]
    first = load(tmp_path)
    first.digest_many(files)
    first.save()
    before = os.stat(cache_path(tmp_path))
    checked: list[str] = []
    exists = hashing._exists

    def counted(path: str) -> bool:
        checked.append(path)
        return exists(path)

    monkeypatch.setattr(hashing, "_exists", counted)

    partial = load(tmp_path)
    partial.digest(files[0])
    partial.save()
    assert 0 < len(checked) <= hashing._PRUNE_SAMPLE
    full = load(tmp_path)
    full.digest_many(files)
    checked.clear()
    full.save()
    assert checked == []  # every entry was seen: nothing to stat
    after = os.stat(cache_path(tmp_path))
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
