"""bt's cache directory: the one owner of every path inside it, and of the one way state there
is changed (read, merge, write atomically, all under a lock).

Layout (``cache_dir`` of ``.cache-spec``, by default ``$XDG_CACHE_HOME/bt/<dir>-<hash>``):

    statcache.msgpack        file digests by stat (hashing)
    analysis.msgpack         Dockerfile analyses by content (filesets)
    filesets.msgpack         described file sets, with the stats that vouch for them (setcache)
    graph.msgpack            the evaluated target graph and what it was made of (graphcache)
    build-times.json         seconds each platform build last took (durations)
    keys.msgpack             keys by what they were encoded from, for one run identity (keymemo)
    lockfile-checked         which bytes of images.lock last passed its schema check (lockfile)
    plan-answers.marshal     the output of recent `bt plan PATTERN...` runs, with the stat of
                             every path each read (plan.noop; looked up before this module loads)
    manifests/ab/<key>.msgpack   what went into each key (keys; read by ``bt why``)
    logs/<label>/<platform>-<key>.log   one build's full output
    logs/crash-<time>.log    the traceback of an internal error (``crash_log_path``)
    workspace.lock           held by every writer of images.lock
    builds/<key>-<build>.lock   held (naming its pid) by the process running that build
    in-use.lock              held shared by every bt process, exclusively by `bt clean`
    <file>.lock              held while <file> is merged and rewritten
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from buildtool.state.statefile import exclusive_lock, sweep_temporaries, write_atomic

if TYPE_CHECKING:
    import datetime


class CacheDir(NamedTuple):
    """The paths of one workspace's cache directory."""

    root: Path

    @property
    def stat_cache(self) -> Path:
        return self.root / "statcache.msgpack"

    @property
    def analyses(self) -> Path:
        return self.root / "analysis.msgpack"

    @property
    def file_sets(self) -> Path:
        return self.root / "filesets.msgpack"

    @property
    def graph(self) -> Path:
        return self.root / "graph.msgpack"

    @property
    def build_times(self) -> Path:
        return self.root / "build-times.json"

    @property
    def keys(self) -> Path:
        return self.root / "keys.msgpack"

    @property
    def lockfile_checked(self) -> Path:
        return self.root / "lockfile-checked"

    @property
    def plan_answers(self) -> Path:
        return self.root / "plan-answers.marshal"  # plan.noop.FILE

    def manifest(self, key: str) -> Path:
        return self.root / "manifests" / key[:2] / f"{key}.msgpack"

    def build_log(self, label_name: str, platform: str, key: str) -> Path:
        """``label_name`` is the label without its ``//`` (its package and name)."""
        return self.root / "logs" / label_name / f"{platform}-{key[:16]}.log"

    def build_lock(self, label: str, platform: str, key: str) -> Path:
        """Held by the bt process building ``label`` for ``platform`` from ``key`` until the
        build is recorded, so that two processes on one workspace never run it twice. (Two
        targets may share a key; each has its own image, so each build its own lock.)"""
        import hashlib  # only builds take these locks

        build = hashlib.sha256(f"{label} {platform}".encode()).hexdigest()[:16]
        return self.root / "builds" / f"{key[:32]}-{build}.lock"

    @property
    def in_use_lock(self) -> Path:
        return self.root / "in-use.lock"

    @property
    def workspace_lock(self) -> Path:
        """Every writer of the lockfile (and of fragments) holds it."""
        return self.root / "workspace.lock"


_held: dict[Path, int] = {}  # cache directory -> the fd of its in-use lock, for the process


def hold_in_use(root: Path) -> None:
    """Say, for as long as this process lives, that it uses the cache directory ``root``:
    `bt clean` removes nothing while another bt holds it (``clean.py``). Waits while a clean
    runs. A cache directory that does not exist yet is not made here (a command refused for
    bad input must leave the disk as it was): whatever writes to it first calls this again."""
    if root in _held:
        return
    try:
        fd = os.open(CacheDir(root).in_use_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    fcntl.flock(fd, fcntl.LOCK_SH)
    _held[root] = fd


def take_over_in_use(root: Path) -> bool:
    """Turn this process's hold on ``root`` exclusive; False when another bt holds it."""
    root.mkdir(parents=True, exist_ok=True)
    hold_in_use(root)
    fd = _held.get(root)
    if fd is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fcntl.flock(fd, fcntl.LOCK_SH)  # a failed conversion may have dropped the shared lock
        return False
    return True


def crash_log_path(cache_dir: Path | None, now: datetime.datetime) -> Path:
    """Where the traceback of a crash goes: the workspace cache's ``logs/`` when the
    configuration loaded, else ``$XDG_CACHE_HOME/bt`` (``~/.cache/bt``)."""
    stamp = now.strftime("%Y%m%dT%H%M%S-%f")
    if cache_dir is not None:
        return cache_dir / "logs" / f"crash-{stamp}.log"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "bt" / f"crash-{stamp}.log"


def update_file(
    path: Path,
    change: Callable[[bytes | None], bytes | None],
    *,
    lock: Path | None = None,
    durable: bool = True,
) -> None:
    """Read ``path`` (None when missing), let ``change`` merge into it, and write what it returns
    atomically (nothing when it returns None), all under ``lock`` (default ``<path>.lock``), so
    that concurrent bt processes merge instead of overwriting each other. Temporary files of
    ``path`` that a killed writer left are removed under the lock, written or not."""
    with exclusive_lock(lock or path.with_name(path.name + ".lock")):
        sweep_temporaries(path)
        try:
            current: bytes | None = path.read_bytes()
        except FileNotFoundError:
            current = None
        new = change(current)
        if new is not None and new != current:
            write_atomic(path, new, durable=durable)


def write_once(path: Path, data: bytes) -> None:
    """Write a content-addressed file: an existing one already holds ``data``. A cache, not
    state: atomic rename, no fsync (a lost file costs only detail, never correctness). It takes
    no lock: temporaries of ``path`` left by a writer that no longer runs are removed."""
    if path.exists():
        return
    sweep_temporaries(path)
    write_atomic(path, data, durable=False)
