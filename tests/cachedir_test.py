"""The cache directory is bt's only when it carries bt's mark: bt makes it with the mark, and no
command writes, sweeps or cleans in a directory it cannot prove is its own; a workspace cannot
point bt outside itself and bt's cache root unless the user says so (``BT_CACHE_DIR``)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from btrun import bt, write_tree

from buildtool.errors import BtError
from buildtool.state import cachedir
from buildtool.state.cachedir import MARK, MARK_NAME, claim, update_file, write_once

KEY = "b" * 64
# A file of every name bt uses in a cache directory, its temporaries' and its locks' included,
# and a cache directory tag another tool wrote.
FOREIGN = [
    "statcache.msgpack",
    "analysis.msgpack",
    "filesets.msgpack",
    "graph.msgpack",
    "build-times.json",
    "keys.msgpack",
    "lockfile-checked",
    f"manifests/bb/{KEY}.msgpack",
    f"manifests/bb/.{KEY}.msgpack.999999.0abc.tmp",
    "logs/_/app/linux-amd64-aaaa.log",
    "logs/crash-20260101T000000-000000.log",
    "builds/aaaa-bbbb.lock",
    "in-use.lock",
    "workspace.lock",
    "statcache.msgpack.lock",
    "graph.msgpack.lock",
    ".statcache.msgpack.999999.0abc.tmp",
    ".graph.msgpack.999999.0abc.tmp",
    ".images.lock.999999.0abc.tmp",
    "deep/er/.notes.999999.0abc.tmp",
    "CACHEDIR.TAG",
]
WORKSPACE = {
    ".cache-spec": 'platforms = ["linux/amd64"]\n',
    "BUILD.images": 'image(name = "app")\n',
    "Dockerfile": "FROM scratch\nCOPY a.txt /\n",
    "a.txt": "a\n",
}


def dead_pid() -> int:
    """The pid of a process that has ended (temporaries naming it look left by a killed bt)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def foreign_folder(path: Path) -> Path:
    for name in FOREIGN:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(f"not bt's: {name}\n")
    (path / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    return path


def tree(path: Path) -> dict[str, str]:
    """Every file and directory under ``path``, files by content."""
    found = {}
    for directory, dirs, files in os.walk(path):
        for name in dirs:
            found[os.path.relpath(Path(directory, name), path)] = "dir"
        for name in files:
            file = Path(directory, name)
            found[os.path.relpath(file, path)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return found


def test_bt_makes_its_cache_directory_with_its_mark(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "ws", WORKSPACE)
    cache = tmp_path / "fresh" / "cache"
    bt("plan", "//...", cwd=root, env={"BT_CACHE_DIR": str(cache)}, check=True)
    assert (cache / MARK_NAME).read_bytes() == MARK
    # and uses it again: a second run, and bt clean
    bt("plan", "//...", cwd=root, env={"BT_CACHE_DIR": str(cache)}, check=True)
    assert bt("clean", cwd=root, env={"BT_CACHE_DIR": str(cache)}).returncode == 0
    assert (cache / MARK_NAME).read_bytes() == MARK


@pytest.mark.parametrize(
    "args",
    [
        ["clean"],
        ["clean", "--dry-run"],
        ["plan", "//..."],
        ["build", "//...", "--no-push"],
        ["query", "//..."],
        ["inputs", "//:app"],
        ["lock", "merge", "fragment.json"],
    ],
)
@pytest.mark.parametrize("named_by", ["BT_CACHE_DIR", "cache_dir inside the workspace"])
def test_no_command_writes_or_deletes_in_a_foreign_folder_holding_every_name_bt_uses(
    tmp_path: Path, args: list[str], named_by: str
) -> None:
    root = write_tree(tmp_path / "ws", WORKSPACE)
    (root / "fragment.json").write_text('{"version": 1, "images": {}, "builds": {}}\n')
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    if named_by == "BT_CACHE_DIR":
        victim = foreign_folder(tmp_path / "victim")
        env["BT_CACHE_DIR"] = str(victim)
    else:
        victim = foreign_folder(root / "victim")
        (root / ".cache-spec").write_text('platforms = ["linux/amd64"]\ncache_dir = "victim"\n')
    for name in FOREIGN:  # every temporary names a writer that no longer runs
        if name.endswith(".tmp"):
            os.rename(victim / name, victim / name.replace("999999", str(dead_pid())))
    before = tree(victim)

    result = bt(*args, cwd=root, env=env)

    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"{victim}: not a bt cache directory (it has files and no CACHEDIR.TAG written by bt): "
        "bt writes and deletes only in a cache directory of its own; point cache_dir (or "
        "BT_CACHE_DIR) at a new or empty directory\n"
    )
    assert tree(victim) == before
    assert not (tmp_path / "xdg").exists()


@pytest.mark.parametrize("value", ["../victim", "~", "~/victim", "/tmp", "link/cache"])
def test_a_workspace_cannot_point_cache_dir_outside_itself_and_bt_s_cache_root(
    tmp_path: Path, value: str
) -> None:
    home = tmp_path / "home"
    foreign_folder(home)
    foreign_folder(tmp_path / "victim")
    root = write_tree(
        tmp_path / "ws",
        {**WORKSPACE, ".cache-spec": f'platforms = ["linux/amd64"]\ncache_dir = "{value}"\n'},
    )
    (root / "link").symlink_to(tmp_path / "victim")  # inside by name, outside where it leads
    before = tree(tmp_path)
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}

    result = bt("clean", cwd=root, env=env)

    resolved = (root / os.path.expanduser(value.replace("~", str(home)))).resolve()
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f".cache-spec:2: cache_dir {value!r} is {resolved}, outside the workspace and bt's "
        f"cache root ({home}/.cache/bt): a workspace cannot send bt's files there; to use that "
        f"directory, set BT_CACHE_DIR={resolved}\n"
    )
    assert tree(tmp_path) == before


def test_a_cache_dir_below_the_workspace_or_in_bt_s_cache_root_is_used(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    for value, cache in [(".bt", tmp_path / "ws" / ".bt"), (f"{xdg}/bt/mine", xdg / "bt" / "mine")]:
        spec = f'platforms = ["linux/amd64"]\ncache_dir = "{value}"\n'
        root = write_tree(tmp_path / "ws", {**WORKSPACE, ".cache-spec": spec})
        bt("plan", "//...", cwd=root, env={"XDG_CACHE_HOME": str(xdg)}, check=True)
        assert (cache / MARK_NAME).read_bytes() == MARK
        assert (cache / "analysis.msgpack").is_file()


def test_a_default_cache_directory_an_earlier_bt_left_unmarked_is_taken_and_marked(
    tmp_path: Path,
) -> None:
    root = write_tree(tmp_path / "ws", WORKSPACE)
    xdg = tmp_path / "xdg"
    bt("plan", "//...", cwd=root, env={"XDG_CACHE_HOME": str(xdg)}, check=True)
    (cache,) = (xdg / "bt").iterdir()
    (cache / MARK_NAME).unlink()  # as a bt that did not mark its directories left it

    assert bt("clean", cwd=root, env={"XDG_CACHE_HOME": str(xdg)}).returncode == 0
    assert (cache / MARK_NAME).read_bytes() == MARK


def test_an_empty_folder_becomes_a_cache_directory(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "ws", WORKSPACE)
    (tmp_path / "empty").mkdir()
    bt("plan", "//...", cwd=root, env={"BT_CACHE_DIR": str(tmp_path / "empty")}, check=True)
    assert (tmp_path / "empty" / MARK_NAME).read_bytes() == MARK


@pytest.fixture
def fresh_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cachedir, "_claimed", set())
    monkeypatch.setattr(cachedir, "_unborn", set())


@pytest.mark.usefixtures("fresh_claims")
def test_writes_sweep_a_dead_writer_s_temporaries_only_in_a_directory_bt_marked(
    tmp_path: Path,
) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    pid = dead_pid()
    left = [
        foreign / f".statcache.msgpack.{pid}.0abc.tmp",
        foreign / "manifests" / "bb" / f".{KEY}.msgpack.{pid}.0abc.tmp",
        foreign / f".fragment.json.{pid}.0abc.tmp",
    ]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not bt's\n")

    update_file(foreign / "statcache.msgpack", lambda _: b"new")
    write_once(foreign / "manifests" / "bb" / f"{KEY}.msgpack", b"new")
    update_file(foreign / "fragment.json", lambda _: b"new", lock=tmp_path / "w.lock")
    assert [p.read_text() for p in left] == ["not bt's\n"] * 3

    mine = tmp_path / "mine"
    claim(mine)
    for path in left:
        moved = mine / path.relative_to(foreign)
        moved.parent.mkdir(parents=True, exist_ok=True)
        path.rename(moved)
    update_file(mine / "statcache.msgpack", lambda _: b"new")
    write_once(mine / "manifests" / "bb" / f"{KEY}.msgpack", b"new")
    update_file(mine / "fragment.json", lambda _: b"new")
    assert sorted(str(p.relative_to(mine)) for p in mine.rglob("*.tmp")) == []


@pytest.mark.usefixtures("fresh_claims")
def test_claim_refuses_a_folder_with_files_and_no_mark(tmp_path: Path) -> None:
    victim = foreign_folder(tmp_path / "victim")
    before = tree(victim)
    with pytest.raises(BtError, match="not a bt cache directory"):
        claim(victim)
    assert tree(victim) == before
