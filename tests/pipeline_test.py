"""The `bt build` sequence's safe defaults: nothing is published unless asked, a configuration
that cannot work is refused before anything runs, and a reader that goes away ends the run as
an interrupt does."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from btrun import bt, write_tree

pytestmark = pytest.mark.engine

TWO = {
    "BUILD.images": 'image(name = "a", tags = ["v1"])\nimage(name = "b", tags = ["v1"])\n',
    "Dockerfile": "FROM scratch\nCOPY n.txt /n\n",
}


def registry_tags(registry: str, repository: str) -> tuple[int, list[str]]:
    """(status, tags) of the registry's tags list of ``repository``."""
    conn = http.client.HTTPConnection(registry, timeout=10)
    try:
        conn.request("GET", f"/v2/{repository}/tags/list")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    tags = json.loads(body).get("tags") or [] if response.status == 200 else []
    return response.status, sorted(tags)


def workspace(root: Path, engine: str, spec_tail: str) -> tuple[Path, dict[str, str]]:
    spec = f'platforms = ["linux/amd64"]\n[builders."*"]\nnetwork = "none"\n{spec_tail}'
    files = {**TWO, ".cache-spec": spec, "n.txt": uuid.uuid4().hex}
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(root.parent / "cache")}
    return write_tree(root, files), env


def test_a_registry_url_alone_pushes_nothing(tmp_path: Path, engine: str, registry: str) -> None:
    prefix = f"bt-nopush-{uuid.uuid4().hex[:12]}"
    root, env = workspace(tmp_path / "ws", engine, f'[registry]\nurl = "{registry}/{prefix}"\n')
    result = bt("build", "//...", "--json", cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    builds = json.loads((root / "images.lock").read_text())["builds"]
    images = sorted(builds[label]["linux/amd64"]["image"].split(":")[0] for label in builds)
    assert images == ["bt/a", "bt/b"]  # local tags: nothing recorded as pushed
    for name in ("a", "b"):
        assert registry_tags(registry, f"{prefix}/{name}") == (404, [])

    pushed = bt("build", "//...", "--push", "--json", cwd=root, env=env)
    assert pushed.returncode == 0, pushed.stderr
    status, tags = registry_tags(registry, f"{prefix}/a")
    assert status == 200
    assert [t for t in tags if not t.startswith("bt-")] == ["v1"]


def test_push_true_in_cache_spec_pushes(tmp_path: Path, engine: str, registry: str) -> None:
    prefix = f"bt-push-{uuid.uuid4().hex[:12]}"
    tail = f'[registry]\nurl = "{registry}/{prefix}"\npush = true\n'
    root, env = workspace(tmp_path / "ws", engine, tail)
    result = bt("build", "//:a", cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    status, tags = registry_tags(registry, f"{prefix}/a")
    assert status == 200
    assert [t for t in tags if not t.startswith("bt-")] == ["v1"]


def test_push_without_a_registry_is_refused_before_any_pin_or_build(
    tmp_path: Path, engine: str
) -> None:
    root, env = workspace(tmp_path / "ws", engine, "")
    (root / "Dockerfile").write_text("FROM bt-test/busybox:latest\nCOPY n.txt /n\n")
    for how in (["--push"], []):
        extra = {"BT_PUSH": "1"} if not how else {}
        result = bt("build", "//...", *how, cwd=root, env={**env, **extra})
        assert (result.returncode, result.stdout) == (2, ""), result.stderr
        assert result.stderr == (
            ".cache-spec: pushing needs [registry] url in .cache-spec (or build without --push)\n"
        )
        assert not (root / "images.lock").exists()  # no pin was recorded either


def test_a_closed_stdout_ends_the_run_like_an_interrupt_and_keeps_the_records(
    tmp_path: Path, engine: str
) -> None:
    root, env = workspace(tmp_path / "ws", engine, "")
    # `bt build --json | head -1`: the reader leaves after the first event.
    process = subprocess.Popen(
        [sys.executable, "-m", "buildtool", "build", "//...", "--json"],
        cwd=root,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    first = json.loads(process.stdout.readline())
    process.stdout.close()
    status = process.wait(timeout=300)
    stderr = process.stderr.read()
    assert first["event"] == "run_started"
    assert (status, stderr) == (
        141,
        "bt: standard output was closed (its reader stopped reading), so the run stopped; "
        "finished builds are recorded: run again to resume\n",
    )
    lock = root / "images.lock"
    recorded = set(json.loads(lock.read_text())["builds"]) if lock.exists() else set()
    again = bt("build", "//...", "--json", cwd=root, env=env)
    assert again.returncode == 0, again.stderr
    finished = {
        e["label"]
        for e in map(json.loads, again.stdout.splitlines())
        if e["event"] in ("finished", "cached")
    }
    # What the first run recorded is kept; the rerun builds exactly the rest.
    assert recorded.isdisjoint(finished)
    assert recorded | finished == {"//:a", "//:b"}
