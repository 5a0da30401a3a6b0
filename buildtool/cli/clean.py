"""`bt clean`: remove the cache directory's derived state, safely.

Derived is what bt makes again on the next run: the stat, analysis, file-set and graph caches,
the kept answers of `bt plan`, the recorded build times (estimates only), build and crash logs,
per-build lock files, and the input manifests of keys images.lock no longer records (those it
records stay: `bt why` and the plan's reasons read them, and no run can make them again).
Temporary files a killed bt left are removed too. Nothing outside the cache directory is
touched, never images.lock.

Safe: it runs only while no other bt process uses the cache directory (each holds
``in-use.lock`` shared; clean takes it exclusively, without waiting) and under the workspace
lock, so no writer of images.lock or of a cache file is midway.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from buildtool.errors import BtError
from buildtool.state.cachedir import MARK_NAME, CacheDir, is_bt_cache, take_over_in_use
from buildtool.state.lockfile import read_lockfile
from buildtool.state.statefile import TEMPORARY, exclusive_lock
from buildtool.workspace.config import Config


@dataclass(frozen=True)
class Cleaned:
    removed: tuple[Path, ...]
    freed: int  # bytes
    kept_manifests: int  # of keys images.lock records


def clean_cache(config: Config, *, dry_run: bool = False) -> Cleaned:
    """Remove (or with ``dry_run`` only list) the derived state of ``config``'s cache
    directory. Raises BtError when another bt process is using it."""
    cache = CacheDir(config.cache_dir)
    if not cache.root.is_dir():
        return Cleaned((), 0, 0)
    if not is_bt_cache(cache.root):
        raise BtError(
            f"not a bt cache directory (no {MARK_NAME} written by bt): nothing removed; bt "
            "deletes files only in a cache directory it made",
            cache.root,
        )
    if not take_over_in_use(cache.root):
        raise BtError(
            f"another bt process is using the cache directory {cache.root}; nothing removed "
            "(run bt clean when it has finished)"
        )
    with exclusive_lock(cache.workspace_lock):
        recorded = {record.key for _, _, record in read_lockfile(config.lockfile).records()}
        doomed = sorted(_derived(cache, recorded))
        kept = sum(1 for _ in _manifests(cache)) - sum(1 for p in doomed if _is_manifest(cache, p))
        freed = 0
        for path in doomed:
            try:
                freed += path.lstat().st_size
                if not dry_run:
                    path.unlink()
            except FileNotFoundError:
                continue
        if not dry_run:
            _remove_empty_directories(cache.root / "logs")
            _remove_empty_directories(cache.root / "manifests")
            _remove_empty_directories(cache.root / "builds")
    return Cleaned(tuple(doomed), freed, kept)


def _derived(cache: CacheDir, recorded: set[str]) -> Iterator[Path]:
    for path in (
        cache.stat_cache,
        cache.analyses,
        cache.file_sets,
        cache.graph,
        cache.keys,
        cache.lockfile_checked,
        cache.plan_answers,
        cache.build_times,
    ):
        if path.exists():
            yield path
    yield from _files(cache.root / "logs")
    yield from _files(cache.root / "builds")  # per-build locks: no other bt holds one now
    for path in _manifests(cache):
        if path.name.removesuffix(".msgpack") not in recorded:
            yield path
    for directory, _, names in os.walk(cache.root):
        for name in names:
            if TEMPORARY.fullmatch(name):  # statefile.write_atomic's
                yield Path(directory, name)


def _manifests(cache: CacheDir) -> Iterator[Path]:
    return (p for p in _files(cache.root / "manifests") if p.name.endswith(".msgpack"))


def _is_manifest(cache: CacheDir, path: Path) -> bool:
    return path.parent.parent == cache.root / "manifests" and path.name.endswith(".msgpack")


def _files(top: Path) -> Iterator[Path]:
    if top.is_symlink():  # os.walk would list where it points, outside the cache directory
        return
    for directory, _, names in os.walk(top):
        for name in names:
            yield Path(directory, name)


def _remove_empty_directories(top: Path) -> None:
    if top.is_symlink():
        return
    for directory, _, _ in os.walk(top, topdown=False):  # children first
        if directory != str(top):
            try:
                os.rmdir(directory)
            except OSError:
                continue  # not empty
