"""bt's cache directory: the one owner of every path inside it, and of the one way state there
is changed (read, merge, write atomically, all under a lock).

Layout (``cache_dir`` of ``.cache-spec``, by default ``$XDG_CACHE_HOME/bt/<dir>-<hash>``):

    statcache.msgpack        file digests by stat (hashing)
    analysis.msgpack         Dockerfile analyses by content (filesets)
    filesets.msgpack         described file sets, with the stats that vouch for them (setcache)
    graph.msgpack            the evaluated target graph and what it was made of (graphcache)
    build-times.json         seconds each platform build last took (durations)
    tests-passed.json        image tests that passed, by build key and test text (image_tests)
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
    CACHEDIR.TAG             bt's mark (``claim``): bt deletes nothing in a directory without it
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from buildtool.errors import BtError
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
    def tests_passed(self) -> Path:
        return self.root / "tests-passed.json"

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


# The Cache Directory Tagging Specification's tag (https://bford.info/cachedir/: backup tools
# skip the directory), with a line of bt's own: a tag another tool wrote does not make a
# directory bt's. Written by bt when it makes the directory; ``claim`` checks it before bt
# writes there, ``clean`` and the sweeps of temporaries before they delete anything.
MARK_NAME = "CACHEDIR.TAG"
MARK = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This file is a cache directory tag created by bt (bt-images).\n"
    b"# bt removes files only in a directory holding this tag. See https://bford.info/cachedir/\n"
)

_held: dict[Path, int] = {}  # cache directory -> the fd of its in-use lock, for the process
_claimed: set[Path] = set()  # cache directories this process found marked, or made
_unborn: set[Path] = set()  # cache directories that did not exist when this process looked


def is_bt_cache(root: Path) -> bool:
    """Whether ``root`` carries bt's mark: a regular file holding exactly ``MARK``."""
    if root in _claimed:
        return True
    try:
        fd = os.open(root / MARK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return os.read(fd, len(MARK) + 1) == MARK
    finally:
        os.close(fd)


def bt_cache_root() -> Path:
    """bt's own cache root, ``$XDG_CACHE_HOME/bt`` (``~/.cache/bt``): default cache
    directories are made under it."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bt"


def claim(root: Path, *, create: bool = True) -> bool:
    """Make sure ``root`` is a bt cache directory before bt writes there: made now (with the
    mark) when missing and ``create``, else it must carry the mark. An unmarked directory is
    taken (marked) only when it is empty, or is a directory directly in bt's own cache root
    (a default cache directory of a bt that did not mark them yet). Raises BtError for any
    other directory: bt neither writes nor deletes in one it cannot prove is its own. False
    when ``root`` is missing and not ``create``."""
    if root in _claimed:
        return True
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        if not create:
            _unborn.add(root)
            return False
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise BtError(f"cannot create the cache directory: {err.strerror}", root) from None
        entries = []
    except OSError as err:
        raise BtError(f"cannot use the cache directory: {err.strerror}", root) from None
    if not is_bt_cache(root):
        if entries and root.parent.resolve() != bt_cache_root().resolve():
            raise BtError(
                f"not a bt cache directory (it has files and no {MARK_NAME} written by bt): bt "
                "writes and deletes only in a cache directory of its own; point cache_dir (or "
                "BT_CACHE_DIR) at a new or empty directory",
                root,
            )
        write_atomic(root / MARK_NAME, MARK, durable=False)
    _unborn.discard(root)
    _claimed.add(root)
    return True


def _claim_for(path: Path) -> None:
    """Claim the unborn cache directory ``path`` is in, if any: whatever writes there first
    makes it with bt's mark."""
    for root in list(_unborn):
        if path.is_relative_to(root):
            claim(root)


def hold_in_use(root: Path, *, create: bool = False) -> None:
    """Say, for as long as this process lives, that it uses the cache directory ``root``:
    `bt clean` removes nothing while another bt holds it (``clean.py``). Waits while a clean
    runs. A cache directory that does not exist yet is made (marked as bt's) only with
    ``create`` (a command refused for bad input must leave the disk as it was): whatever
    writes to it first calls this again, or writes through ``update_file``/``write_once``.
    Raises BtError when ``root`` is a directory bt cannot prove is its own (``claim``)."""
    if root in _held:
        return
    if not claim(root, create=create):
        return
    try:
        fd = os.open(CacheDir(root).in_use_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    fcntl.flock(fd, fcntl.LOCK_SH)
    _held[root] = fd


def take_over_in_use(root: Path) -> bool:
    """Turn this process's hold on ``root`` exclusive; False when another bt holds it."""
    hold_in_use(root, create=True)
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
    ``path`` that a killed writer left are removed under the lock, written or not, where bt
    can prove they are its own (``owns_temporaries``)."""
    lock = lock or path.with_name(path.name + ".lock")
    _claim_for(lock)
    _claim_for(path)
    with exclusive_lock(lock):
        if owns_temporaries(path):
            sweep_temporaries(path)
        try:
            current: bytes | None = path.read_bytes()
        except FileNotFoundError:
            current = None
        new = change(current)
        if new is not None and new != current and not _holds_secret(path, new, durable):
            write_atomic(path, new, durable=durable)


def save_table(
    path: Path,
    added: Mapping[str, Any],
    decode: Callable[[bytes | None], dict[str, Any]],
    wrap: Callable[[dict[str, Any]], dict[str, Any]],
    keep: Callable[[str], bool] | None = None,
) -> None:
    """Add ``added`` to the table a cache keeps at ``path`` as msgpack of ``wrap(table)``
    (``packing.pack``: file names of any bytes),
    merged with what other processes wrote meanwhile (``decode`` of the file as it is now; a
    cache's ``decode`` answers a corrupt file with an empty table), dropping the keys ``keep``
    refuses. A cache: atomic, under the file's lock, not fsync'ed."""
    from buildtool.state.packing import pack

    def merge(current: bytes | None) -> bytes:
        merged = {**decode(current), **added}
        if keep is not None:
            merged = {key: value for key, value in merged.items() if keep(key)}
        return pack(wrap(merged))

    update_file(path, merge, durable=False)


def write_once(path: Path, data: bytes) -> None:
    """Write a content-addressed file: an existing one already holds ``data``. A cache, not
    state: atomic rename, no fsync (a lost file costs only detail, never correctness). It takes
    no lock: temporaries of ``path`` left by a writer that no longer runs are removed."""
    if path.exists() or _holds_secret(path, data, durable=False):
        return
    _claim_for(path)
    if owns_temporaries(path):
        sweep_temporaries(path)
    write_atomic(path, data, durable=False)


def owns_temporaries(path: Path) -> bool:
    """Whether temporaries of ``path`` (``statefile.temporary_name``) left by a dead writer are
    bt's to remove: ``path`` is in a marked cache directory (at most two levels down, as
    manifests are), or is the lockfile of a workspace (``images.lock`` beside ``.cache-spec``).
    Anywhere else (a fragment the user named, say) they are left alone."""
    directory = path.parent
    if path.name == "images.lock" and (directory / ".cache-spec").is_file():
        return True
    return any(is_bt_cache(d) for d in (directory, directory.parent, directory.parent.parent))


def _holds_secret(path: Path, data: bytes, durable: bool) -> bool:
    """Invariant 7: whether ``data`` holds a concealed value (``secrets.conceal``), which is then
    not written: a cache (not ``durable``) is left as it was, costing only time; state is
    refused. Nothing is concealed before ``buildtool.secrets`` is imported, which a no-op run
    does not do."""
    module = sys.modules.get("buildtool.secrets")
    if module is None or not module.holds_concealed(data):
        return False
    if durable:
        raise BtError(
            "refused to write the value of a secret-looking build arg or credential", path
        )
    return True
