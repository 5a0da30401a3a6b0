"""The remote action cache: a machine asks the registry for a key's `bt-<key>` tag before it
builds, with two real engines standing in for two machines and the real registry."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from btrun import bt, own_repository, write_tree
from registries import fake_registry, push_scratch

from buildtool.build.remote_cache import lookup
from buildtool.errors import TransientError
from buildtool.plan.stamp import KEY_LABEL
from buildtool.registry import RegistryClient

pytestmark = pytest.mark.engine
AMD, ARM = "linux/amd64", "linux/arm64"

# parent -> child for both platforms; FROM scratch and COPY only, so either engine builds both.
FILES = {
    "BUILD.images": (
        'image(name = "parent", dockerfile = "parent.Dockerfile")\n'
        'image(name = "child", dockerfile = "child.Dockerfile", parents = {"PARENT": "//:parent"})\n'
    ),
    "parent.Dockerfile": "FROM scratch\nCOPY parent.txt nonce.txt /\n",
    "child.Dockerfile": "ARG PARENT\nFROM ${PARENT}\nCOPY child.txt /\n",
    "parent.txt": "parent\n",
    "child.txt": "child\n",
}


def machine(root: Path, url: str, engine: str, nonce: str) -> Path:
    """A checkout of the workspace on a machine whose builds all go to ``engine``."""
    spec = (
        'platforms = ["linux/amd64", "linux/arm64"]\n'
        f'[registry]\nurl = "{url}"\npush = false\n'
        f'[builders."linux/amd64"]\nhost = "{engine}"\nnetwork = "none"\n'
        f'[builders."linux/arm64"]\nhost = "{engine}"\nnetwork = "none"\n'
    )
    return write_tree(root, {**FILES, ".cache-spec": spec, "nonce.txt": nonce})


def records(root: Path) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(label, platform) -> (key, digest, image) of images.lock."""
    builds = json.loads((root / "images.lock").read_text())["builds"]
    return {
        (label, platform): (r["key"], r["digest"], r["image"])
        for label, platforms in builds.items()
        for platform, r in platforms.items()
    }


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def two_machines(tmp_path: Path, engine: str, engine2: str, registry: str) -> tuple[Path, Path]:
    """Machine 1 (engine 1) has built and pushed everything; machine 2 (engine 2) is a fresh
    checkout: no images.lock, an empty cache directory."""
    url = own_repository(registry, "bt-remote")
    nonce = uuid.uuid4().hex  # keys no engine has built before: no local action cache hits
    first = machine(tmp_path / "m1" / "ws", url, engine, nonce)
    pushed = bt("build", "//...", "--push", "--json", cwd=first)
    assert pushed.returncode == 0, pushed.stderr
    assert sum(e["event"] == "finished" for e in events(pushed.stdout)) == 4
    second = machine(tmp_path / "m2" / "ws", url, engine2, nonce)
    return first, second


def test_a_second_machine_records_what_the_first_pushed_and_builds_nothing(
    tmp_path: Path, engine: str, engine2: str, registry: str
) -> None:
    first, second = two_machines(tmp_path, engine, engine2, registry)

    result = bt("build", "//...", "--json", cwd=second)

    assert result.returncode == 0, result.stderr
    seen = events(result.stdout)
    assert [e for e in seen if e["event"] == "started"] == []
    assert sorted(
        (e["label"], e["platform"], e["source"]) for e in seen if e["event"] == "cached"
    ) == [(label, p, "registry") for label in ("//:child", "//:parent") for p in (AMD, ARM)]
    assert records(second) == records(first)
    assert all("@sha256:" in image for _, _, image in records(second).values())

    plain = bt("build", "//...", cwd=second)  # recorded now: nothing left to ask
    assert plain.returncode == 0, plain.stderr
    assert "nothing to build: 4 platform builds up to date" in plain.stdout + plain.stderr


def test_a_hand_moved_tag_is_ignored_with_a_warning_and_the_build_runs_on_its_parent_by_digest(
    tmp_path: Path, engine: str, engine2: str, registry: str
) -> None:
    first, second = two_machines(tmp_path, engine, engine2, registry)
    pushed = records(first)
    key, _, image = pushed[("//:child", AMD)]
    tag = f"{image.split('@')[0]}:bt-{key[:32]}"
    moved = push_scratch(engine, tag, AMD)  # someone pushes another image under the tag

    result = bt("build", "//...", "--push", "--json", cwd=second)

    assert result.returncode == 0, result.stderr
    seen = events(result.stdout)
    assert [(e["label"], e["platform"]) for e in seen if e["event"] == "started"] == [
        ("//:child", AMD)
    ]
    assert [(e["label"], e["platform"], e["message"]) for e in seen if e["event"] == "warning"] == [
        (
            "//:child",
            AMD,
            f"{tag} in the registry is not an image bt built from this key "
            f"(its {KEY_LABEL} label is missing); ignored",
        )
    ]
    now = records(second)
    # The parent came from the registry and the child was built on it there, by digest.
    assert now[("//:parent", AMD)] == pushed[("//:parent", AMD)]
    assert now[("//:child", AMD)][0] == key
    assert now[("//:child", AMD)][1] != moved
    client = RegistryClient()
    assert client.manifest_digest(tag) == now[("//:child", AMD)][1]  # the push put it back
    assert lookup(client, tag, key).digest == now[("//:child", AMD)][1]


def test_an_unreachable_registry_fails_a_pushing_build_and_is_a_miss_for_one_that_does_not(
    tmp_path: Path, engine: str
) -> None:
    nonce = uuid.uuid4().hex
    root = machine(tmp_path / "ws", "127.0.0.1:1/nowhere", engine, nonce)
    args = ("build", "//:parent", "--platform", AMD, "--json", "--retries", "0")
    down = bt(*args, "--push", cwd=root)
    assert down.returncode == 1
    failed = [e for e in events(down.stdout) if e["event"] == "failed"]
    assert [e["message"] for e in failed] == [
        f"cannot ask the registry for 127.0.0.1:1/nowhere/parent:bt-{failed_key(root)}: "
        "registry 127.0.0.1:1 is unavailable: Connection refused (gave up after 1 attempt)"
    ]

    # Not pushing, the registry is only a cache: unreachable, it is a miss, said once.
    local = bt(*args, cwd=root)
    assert local.returncode == 0, local.stderr
    run = [e for e in events(local.stdout) if e.get("label") == "//:parent"]
    assert [e["event"] for e in run] == ["started", "warning", "finished"]
    assert run[1]["message"].startswith("remote action cache not asked: cannot ask the registry")

    spec = (root / ".cache-spec").read_text()
    (root / ".cache-spec").write_text(spec.split("[registry]")[0] + spec.split("push = false\n")[1])
    (root / "parent.txt").write_text("parent, again\n")
    offline = bt("build", "//:parent", "--platform", AMD, "--json", cwd=root)
    assert offline.returncode == 0, offline.stderr
    assert [e["event"] for e in events(offline.stdout)][1:3] == ["started", "finished"]


def failed_key(root: Path) -> str:
    plan = bt("plan", "//:parent", "--platform", AMD, "--format", "json", cwd=root, check=True)
    return str(json.loads(plan.stdout)[0]["key"])[:32]


def test_a_registry_fault_during_the_lookup_is_transient() -> None:
    calls: list[str] = []

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        calls.append(method)
        return (503, {}, b"")

    with fake_registry(handle) as address:
        client = RegistryClient(attempts=1)
        with pytest.raises(TransientError) as err:
            lookup(client, f"{address}/x:bt-{'k' * 32}", "k" * 64)
    assert calls == ["GET"]  # the manifest at once: a HEAD would answer nothing more
    assert str(err.value) == (
        f"cannot ask the registry for {address}/x:bt-{'k' * 32}: "
        f"registry {address} is unavailable: 503 Service Unavailable"
    )
