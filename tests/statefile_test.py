"""Invariant 4 for every file bt writes: a write that fails between "temporary file written" and
"renamed into place" leaves the previous version and no temporary file.

That instant cannot be produced from outside (a SIGKILL lands there by chance only; the crash
harness, tests/crash_test.py, tries its luck), so these tests make ``os.replace`` raise inside
the process, for the one file under test, as a full disk or a failing rename would.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from btrun import write_tree

from buildtool.build.record import record_builds
from buildtool.cli.main import main
from buildtool.errors import StateWriteError
from buildtool.state import hashing
from buildtool.state.cachedir import CacheDir, claim, update_file, write_once
from buildtool.state.lockfile import BuildRecord, Lockfile, read_lockfile, update_lockfile
from buildtool.state.statefile import write_atomic
from buildtool.workspace.config import find_root, load_config

WORKSPACE = {
    ".cache-spec": 'platforms = ["linux/amd64", "linux/arm64"]\n',
    "BUILD.images": 'image(name = "base")\n'
    'image(name = "child", dockerfile = "child.Dockerfile", parents = {"BASE": ":base"})\n',
    "Dockerfile": "FROM scratch\nCOPY a.txt /a.txt\n",
    "child.Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY a.txt /b.txt\n",
    "a.txt": "a\n",
}


@contextmanager
def rename_fails(name: str) -> Iterator[list[str]]:
    """``os.replace`` raises ENOSPC for a destination called ``name``; the temporary files
    it was asked to rename are listed."""
    real = os.replace
    attempted: list[str] = []

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst).name == name:
            attempted.append(str(src))
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        real(src, dst)

    os.replace = replace  # type: ignore[assignment]
    try:
        yield attempted
    finally:
        os.replace = real


def temporary_files(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*.tmp")]


def test_write_atomic_keeps_the_old_file_and_removes_its_temporary_one(tmp_path: Path) -> None:
    path = tmp_path / "state.bin"
    write_atomic(path, b"old")
    for durable in (True, False):
        with rename_fails("state.bin") as attempted, pytest.raises(StateWriteError):
            write_atomic(path, b"new", durable=durable)
        assert attempted and not Path(attempted[-1]).exists()
        assert path.read_bytes() == b"old"
        assert temporary_files(tmp_path) == []


def test_update_file_keeps_the_old_file_and_frees_its_lock(tmp_path: Path) -> None:
    path = tmp_path / "merged.bin"
    update_file(path, lambda current: b"old")
    with rename_fails("merged.bin"), pytest.raises(StateWriteError):
        update_file(path, lambda current: (current or b"") + b" and new")
    assert path.read_bytes() == b"old"
    update_file(path, lambda current: (current or b"") + b" and new")  # the lock was let go
    assert path.read_bytes() == b"old and new"
    assert temporary_files(tmp_path) == []


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = write_tree(tmp_path / "ws", WORKSPACE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # Files changed within the racy window are hashed but not cached: no window, so that the
    # files this test has just written are cached (and their writes can be made to fail).
    monkeypatch.setattr(hashing, "RACY_WINDOW_NS", 0)
    monkeypatch.chdir(root)
    return root


def plan() -> int:
    with pytest.raises(SystemExit) as exited:
        main(["plan", "//..."])
        raise SystemExit(0)
    return int(exited.value.code or 0)


@pytest.mark.parametrize("name", ["statcache.msgpack", "analysis.msgpack"])
def test_a_failed_rename_of_a_cache_keeps_its_old_version(workspace: Path, name: str) -> None:
    assert plan() == 0
    cache_dir = load_config(find_root(workspace)).cache_dir
    old = (cache_dir / name).read_bytes()
    # New content to hash and a new Dockerfile to analyse: both caches have entries to add.
    (workspace / "a.txt").write_text("changed\n")
    (workspace / "child.Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nCOPY a.txt /c.txt\n")
    with rename_fails(name) as attempted:
        assert plan() != 0  # the failed write is reported, not ignored
    assert attempted
    assert (cache_dir / name).read_bytes() == old
    assert temporary_files(workspace, cache_dir) == []
    assert plan() == 0  # and the next run reads it
    assert (cache_dir / name).read_bytes() != old


@pytest.mark.parametrize("which", ["lockfile", "fragment"])
def test_a_failed_rename_of_the_lockfile_or_a_fragment_keeps_the_old_one(
    workspace: Path, which: str
) -> None:
    config = load_config(find_root(workspace))
    lock_path = CacheDir(config.cache_dir).workspace_lock
    fragment = workspace / "frag.lock"
    old_record = BuildRecord("a" * 64, "sha256:" + "1" * 64, "r/base@sha256:" + "1" * 64)
    new_record = BuildRecord("b" * 64, "sha256:" + "2" * 64, "r/base@sha256:" + "2" * 64)

    def put(record: BuildRecord) -> Callable[[Lockfile], None]:
        return lambda lock: lock.record_build("//:base", "linux/amd64", record)

    for path in (config.lockfile, fragment):
        update_lockfile(path, lock_path, put(old_record))
    target = config.lockfile if which == "lockfile" else fragment
    old = target.read_bytes()
    with rename_fails(target.name), pytest.raises(StateWriteError):
        update_lockfile(target, lock_path, put(new_record))
    assert target.read_bytes() == old
    assert read_lockfile(target).get("//:base", "linux/amd64") == old_record
    assert temporary_files(workspace, config.cache_dir) == []


def test_a_failed_rename_of_a_key_manifest_leaves_none_and_records_nothing(
    workspace: Path,
) -> None:
    from buildtool.plan.session import Workbench

    bench = Workbench.open()
    planned = bench.plan(["//..."], [])[0]
    config = bench.config
    path = CacheDir(config.cache_dir).manifest(planned.key)
    path.unlink(missing_ok=True)
    before = config.lockfile.read_bytes() if config.lockfile.exists() else None
    with rename_fails(path.name), pytest.raises(StateWriteError):
        record_builds(config, bench.lock_path, [(planned.manifest, "sha256:" + "3" * 64, "x")])
    assert not path.exists()
    # Manifests are saved first: a lockfile entry never names a key `bt why` cannot show.
    after = config.lockfile.read_bytes() if config.lockfile.exists() else None
    assert after == before
    assert temporary_files(workspace, config.cache_dir) == []
    write_once(path, planned.manifest.to_msgpack())
    assert path.read_bytes() == planned.manifest.to_msgpack()


# A writer that stops between "temporary written" and "renamed" until told to go on (a line on
# its stdin), then renames: SIGKILL it there and its temporary file is what a crash leaves.
_WRITER = """
import os, sys
from pathlib import Path
from buildtool.state import statefile
from buildtool.state.cachedir import update_file, write_once
real = os.replace
def replace(src, dst):
    print(src, flush=True)
    sys.stdin.readline()
    real(src, dst)
os.replace = replace
path = Path(sys.argv[2])
if sys.argv[1] == "update":
    update_file(path, lambda current: b"from " + str(os.getpid()).encode())
else:
    write_once(path, b"from " + str(os.getpid()).encode())
"""


class Writer:
    def __init__(self, how: str, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, how, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.temporary = Path(self.proc.stdout.readline().strip())
        assert self.temporary.exists() and f".{self.proc.pid}." in self.temporary.name

    def kill(self) -> Path:
        self.proc.kill()
        self.proc.wait(timeout=10)
        return self.temporary

    def finish(self) -> None:
        self.proc.communicate("go\n", timeout=30)
        assert self.proc.returncode == 0


def test_the_next_writer_under_the_lock_removes_the_temporaries_a_killed_writer_left(
    tmp_path: Path,
) -> None:
    claim(tmp_path)  # a cache directory bt made: its temporaries are bt's to sweep
    path = tmp_path / "state.bin"
    other = tmp_path / "other.bin"
    update_file(path, lambda current: b"old")
    left = [Writer("update", path).kill(), Writer("update", other).kill()]
    assert path.read_bytes() == b"old" and all(p.exists() for p in left)
    update_file(path, lambda current: current)  # nothing to write: the lock is still taken
    assert not left[0].exists()
    assert left[1].exists()  # another file's, under another lock: left to its next writer
    update_file(other, lambda current: b"new")
    assert temporary_files(tmp_path) == [] and path.read_bytes() == b"old"


def test_an_unlocked_write_removes_a_dead_writers_temporary_and_never_a_live_ones(
    tmp_path: Path,
) -> None:
    claim(tmp_path)
    path = CacheDir(tmp_path).manifest("ab" + "0" * 62)
    dead = Writer("once", path).kill()
    live = Writer("once", path)  # stopped before its rename, alive
    # Another process writes the same content-addressed file meanwhile.
    write_once(path, b"same content")
    assert not dead.exists()
    assert live.temporary.exists()
    path.unlink()
    live.finish()  # its rename still works: nothing pulled its file away
    assert path.read_bytes() == f"from {live.proc.pid}".encode()
    assert temporary_files(tmp_path) == []


def test_a_lockfile_write_removes_the_temporary_of_a_killed_lockfile_writer(
    workspace: Path,
) -> None:
    config = load_config(find_root(workspace))
    lock_path = CacheDir(config.cache_dir).workspace_lock
    record = BuildRecord("a" * 64, "sha256:" + "1" * 64, "r/base@sha256:" + "1" * 64)
    update_lockfile(config.lockfile, lock_path, lambda lock: None)
    left = Writer("update", config.lockfile).kill()  # its own lock, but the same file name
    assert left.exists()
    update_lockfile(
        config.lockfile, lock_path, lambda lock: lock.record_build("//:base", "linux/amd64", record)
    )
    assert read_lockfile(config.lockfile).get("//:base", "linux/amd64") == record
    assert temporary_files(workspace, config.cache_dir) == []
