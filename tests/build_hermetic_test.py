"""`bt build` sends each build exactly its key's file set, on both backends: an edit during the
run fails the build instead of recording it under the old key, an undeclared read fails naming
the file, and a key tag attached by hand is never taken for a cached build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from btrun import bt, write_tree

from buildtool.build.run import local_tag
from buildtool.plan.session import Session

pytestmark = pytest.mark.engine
DOCKER = "/usr/bin/docker"
BASE_IMAGE = "bt-test/busybox:latest"
BACKENDS = ["buildkit", "engine"]


def docker(host: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, "-H", host, *args], capture_output=True, text=True, check=False)


def events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def lock(root: Path) -> dict[str, dict[str, dict[str, str]]]:
    path = root / "images.lock"
    if not path.exists():
        return {}
    return json.loads(path.read_text())["builds"]  # type: ignore[no-any-return]


def workspace(root: Path, backend: str, files: dict[str, str]) -> Path:
    """A workspace building on one native amd64 engine with ``backend``, whose keys are new."""
    spec = (
        'global_inputs = ["nonce.txt"]\nplatforms = ["linux/amd64"]\n'
        f'[builders."*"]\nbackend = "{backend}"\nnetwork = "none"\n'
    )
    return write_tree(root, {".cache-spec": spec, "nonce.txt": uuid.uuid4().hex, **files})


def cat(engine: str, image: str, path: str) -> str:
    out = docker(engine, "run", "--rm", "--network=none", image, "cat", path)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_input_edited_while_its_parent_builds_fails_the_child_and_a_revert_builds_it_right(
    tmp_path: Path, engine: str, backend: str
) -> None:
    root = workspace(
        tmp_path / "ws",
        backend,
        {
            "BUILD.images": 'image(name = "parent", dockerfile = "parent.Dockerfile")\n'
            'image(name = "child", dockerfile = "child.Dockerfile", parents = {"BASE": ":parent"})\n',
            # The comment makes the RUN new to the engine's own cache: it really sleeps.
            "parent.Dockerfile": f"FROM {BASE_IMAGE}\nRUN sleep 5 # {uuid.uuid4().hex}\n",
            "child.Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY c.txt /c.txt\n",
            "c.txt": "original\n",
        },
    )
    env = {**os.environ, "DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    process = subprocess.Popen(
        [sys.executable, "-m", "buildtool", "build", "//:child", "--json"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    seen = []
    for line in process.stdout:  # keys are computed; the parent's build has begun
        seen.append(line)
        if '"started"' in line and '"//:parent"' in line:
            break
    (root / "c.txt").write_text("edited\n")
    rest, stderr = process.communicate(timeout=300)
    run = events("".join(seen) + rest)
    assert process.returncode == 1, stderr
    failed = [e for e in run if e["event"] == "failed"]
    assert [(e["label"], e["message"]) for e in failed] == [
        ("//:child", "c.txt changed since its key was computed; run bt build again")
    ]
    assert list(lock(root)) == ["//:parent"]

    (root / "c.txt").write_text("original\n")
    again = bt("build", "//:child", "--json", cwd=root, env=env)
    assert again.returncode == 0, again.stderr + again.stdout
    record = lock(root)["//:child"]["linux/amd64"]
    assert cat(engine, record["image"], "/c.txt") == "original\n"


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_image_tagged_by_hand_with_a_key_tag_is_rebuilt_not_recorded(
    tmp_path: Path, engine: str, backend: str
) -> None:
    root = workspace(
        tmp_path / "ws",
        backend,
        {
            "BUILD.images": 'image(name = "h")\n',
            "Dockerfile": f"FROM {BASE_IMAGE}\nCOPY h.txt /h.txt\n",
            "h.txt": "built by bt\n",
        },
    )
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    # Pin the base first: the key the build will use is then the key the plan shows.
    bt("lock", "update", "//:h", cwd=root, env=env, check=True)
    plan = json.loads(bt("plan", "//:h", "--format", "json", cwd=root, env=env).stdout)
    target = next(t for lb, t in Session(root).graph.targets.items() if str(lb) == "//:h")
    tag = local_tag(target, plan[0]["key"])
    assert docker(engine, "tag", BASE_IMAGE, tag).returncode == 0
    try:
        result = bt("build", "//:h", "--json", cwd=root, env=env)
        assert result.returncode == 0, result.stderr + result.stdout
        run = events(result.stdout)
        assert [e["event"] for e in run if e.get("label") == "//:h"] == [
            "started",
            "warning",
            "finished",
        ]
        warning = next(e for e in run if e["event"] == "warning")
        assert warning["message"] == (
            f"{tag} is not an image bt built from this key (its dev.bt.key label is missing); "
            "rebuilt"
        )
        record = lock(root)["//:h"]["linux/amd64"]
        base = docker(engine, "image", "inspect", "--format", "{{.Id}}", BASE_IMAGE).stdout
        assert record["digest"] != base.strip()
        assert cat(engine, record["image"], "/h.txt") == "built by bt\n"
    finally:
        docker(engine, "rmi", tag)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_build_reading_a_file_outside_its_inputs_fails_naming_it_and_records_nothing(
    tmp_path: Path, engine: str, backend: str
) -> None:
    root = workspace(
        tmp_path / "ws",
        backend,
        {
            "BUILD.images": 'image(name = "narrow", inputs = ["a.txt"])\n',
            "Dockerfile": f"FROM {BASE_IMAGE}\nCOPY a.txt b.txt /\n",
            "a.txt": "a\n",
            "b.txt": "b\n",
        },
    )
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = bt("build", "//:narrow", "--json", cwd=root, env=env)
    assert result.returncode == 1, result.stderr + result.stdout
    failed = [e for e in events(result.stdout) if e["event"] == "failed"]
    assert [e["message"] for e in failed] == [
        "//:narrow reads b.txt, which its inputs do not cover, so bt did not send it: "
        "add it to inputs of //:narrow (BUILD.images:1)"
    ]
    assert lock(root) == {}


def test_every_source_kind_reaches_a_buildkit_build(tmp_path: Path, engine: str) -> None:
    root = workspace(
        tmp_path / "ws",
        "buildkit",
        {
            "BUILD.images": 'image(name = "kinds")\n',
            "Dockerfile": f"FROM {BASE_IMAGE}\nCOPY a.txt /a.txt\nADD sub /sub\n"
            "COPY run.sh link.txt /bin2/\n"
            f"RUN --mount=type=bind,source=m.txt,target=/m cat /m > /m.txt # {uuid.uuid4()}\n",
            "a.txt": "a\n",
            "m.txt": "mounted\n",
            "sub/deep/x.txt": "deep\n",
            "run.sh": "#!/bin/sh\necho ran\n",
        },
    )
    (root / "run.sh").chmod(0o755)
    (root / "link.txt").symlink_to("a.txt")
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = bt("build", "//:kinds", cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    image = lock(root)["//:kinds"]["linux/amd64"]["image"]
    assert cat(engine, image, "/m.txt") == "mounted\n"
    assert cat(engine, image, "/sub/deep/x.txt") == "deep\n"
    assert cat(engine, image, "/bin2/link.txt") == "a\n"
    ran = docker(engine, "run", "--rm", "--network=none", image, "/bin2/run.sh")
    assert ran.stdout == "ran\n"
