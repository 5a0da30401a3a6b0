"""`bt clean`: derived state goes, images.lock and the manifests it needs stay, and nothing is
removed while another bt process uses the cache directory."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from btrun import bt, write_tree

RECORDED = "a" * 64
ORPHAN = "b" * 64


def workspace(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": 'platforms = ["linux/amd64"]\n',
            "BUILD.images": 'image(name = "app")\n',
            "Dockerfile": "FROM scratch\nCOPY a.txt /\n",
            "a.txt": "a\n",
        },
    )
    lock = {
        "version": 1,
        "images": {},
        "builds": {
            "//:app": {
                "linux/amd64": {"key": RECORDED, "digest": "sha256:" + "3" * 64, "image": "bt/x"}
            }
        },
    }
    (root / "images.lock").write_text(json.dumps(lock, indent=2) + "\n")
    cache = tmp_path / "cache"
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "BT_CACHE_DIR": str(cache)}
    bt("plan", "//...", cwd=root, env=env, check=True)  # the analysis cache
    # Files changed seconds ago are not cached yet (racy): a stat cache of another run.
    (cache / "statcache.msgpack").write_bytes(b"\x80")
    for key in (RECORDED, ORPHAN):
        manifest = cache / "manifests" / key[:2] / f"{key}.msgpack"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_bytes(b"\x80")
    log = cache / "logs" / "_" / "app" / "linux-amd64-aaaa.log"
    log.parent.mkdir(parents=True)
    log.write_text("step 1\n")
    (cache / ".statcache.msgpack.999.0abc.tmp").write_bytes(b"torn")  # a killed writer's
    return root, env, cache


def digest_tree(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def test_clean_removes_derived_state_and_keeps_the_lockfile_and_its_manifests(
    tmp_path: Path,
) -> None:
    root, env, cache = workspace(tmp_path)
    derived = sorted(
        [
            str(cache / ".statcache.msgpack.999.0abc.tmp"),
            str(cache / "analysis.msgpack"),
            str(cache / "graph.msgpack"),
            str(cache / "keys.msgpack"),
            str(cache / "lockfile-checked"),
            str(cache / "logs/_/app/linux-amd64-aaaa.log"),
            str(cache / f"manifests/bb/{ORPHAN}.msgpack"),
            str(cache / "statcache.msgpack"),
        ]
    )
    before_ws, before_cache = digest_tree(root), digest_tree(cache)

    dry = bt("clean", "--dry-run", cwd=root, env=env)
    assert dry.returncode == 0, dry.stderr
    assert sorted(dry.stdout.splitlines()) == derived
    assert "8 files, would free" in dry.stderr
    assert digest_tree(cache) == before_cache

    done = bt("clean", cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == derived
    assert "8 files, freed" in done.stderr
    assert "kept 1 manifest of recorded builds" in done.stderr
    assert digest_tree(root) == before_ws  # images.lock and the sources untouched
    assert sorted(digest_tree(cache)) == ["CACHEDIR.TAG", f"manifests/aa/{RECORDED}.msgpack"]
    assert not (cache / "logs" / "_").exists()
    # The next plan makes the caches again.
    bt("plan", "//...", cwd=root, env=env, check=True)
    assert (cache / "analysis.msgpack").is_file()


def test_clean_removes_nothing_while_another_bt_uses_the_cache_directory(
    tmp_path: Path,
) -> None:
    root, env, cache = workspace(tmp_path)
    before = digest_tree(cache)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from buildtool.state.cachedir import "
            "hold_in_use; hold_in_use(Path(sys.argv[1])); print('held', flush=True); "
            "time.sleep(60)",
            str(cache),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        refused = bt("clean", cwd=root, env=env)
        assert time.monotonic() - started < 10  # refused at once, not waiting
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode == 2
    assert refused.stderr == (
        f"another bt process is using the cache directory {cache}; nothing removed "
        "(run bt clean when it has finished)\n"
    )
    assert digest_tree(cache) == before
    assert bt("clean", cwd=root, env=env).returncode == 0  # once it is gone
