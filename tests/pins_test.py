"""External images are pinned (invariant 9): resolved once to a digest, recorded in images.lock,
keyed, built from exactly that digest, and moved only by `bt lock update`, which stales exactly
the builds that use the moved image.

Nothing can be pulled from the internet here, so each test makes its own "upstream": a tiny
image `docker import`ed on engine 1 and pushed to the test registry under a repository no other
run uses."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
from btrun import bt, write_tree

from buildtool.dockerfile.rewrite import rewrite_images
from buildtool.errors import BtError
from buildtool.plan.pins import (
    ExternalImage,
    external_images,
    pin_entries,
    registry_digest,
)
from buildtool.registry import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, RegistryClient
from buildtool.state.lockfile import PinRecord

DOCKER = "/usr/bin/docker"
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def docker(host: str, *args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(
        [DOCKER, "-H", host, *args], input=stdin, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip()


def make_image(host: str, ref: str, content: str) -> str:
    """`docker import` a one-file image as ``ref`` on ``host``; its image id."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = content.encode()
        info = tarfile.TarInfo("version")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return docker(host, "import", "-", ref, stdin=buffer.getvalue())


def layers(host: str, ref: str) -> list[str]:
    return json.loads(docker(host, "image", "inspect", "--format", "{{json .RootFS.Layers}}", ref))  # type: ignore[no-any-return]


def plan(root: Path, env: dict[str, str]) -> dict[str, dict[str, object]]:
    out = bt("plan", "//...", "--all", "--format", "json", cwd=root, env=env, check=True)
    return {p["label"]: p for p in json.loads(out.stdout)}


def stale(root: Path, env: dict[str, str]) -> dict[str, object]:
    return {label: p["reason"] for label, p in plan(root, env).items() if p["stale"]}


def pins(root: Path) -> dict[str, dict[str, dict[str, str]]]:
    return json.loads((root / "images.lock").read_text()).get("pins", {})  # type: ignore[no-any-return]


def image_of(root: Path, label: str) -> str:
    return json.loads((root / "images.lock").read_text())["builds"][label]["linux/amd64"]["image"]  # type: ignore[no-any-return]


# -- which images are external, and what the key holds of them ----------------------------------


def test_scratch_parents_and_workspace_images_are_not_external() -> None:
    uses = [
        ("scratch", 1, "from", None, False, None),
        ("bt-parent-BASE", 2, "from", "BASE", False, None),
        ("python:3.13-slim", 3, "from", None, False, None),
        ("ghcr.io/astral-sh/uv:latest", 4, "copy", None, False, None),
        ("docker.io/library/python:3.13-slim", 5, "mount", None, False, None),
        ("registry.example/acme/base:1", 6, "from", None, False, None),
        ("${UNSET}", 7, "from", "UNSET", True, None),
        (f"alpine@{D1}", 8, "copy", None, False, None),
    ]
    found = external_images(uses, {"BASE"}, {"registry.example/acme/base:1"})
    assert found == (
        ExternalImage("${UNSET}", "${UNSET}", None, False),
        ExternalImage(f"alpine@{D1}", f"docker.io/library/alpine@{D1}", D1, False),
        ExternalImage("python:3.13-slim", "docker.io/library/python:3.13-slim", None, True),
        ExternalImage("ghcr.io/astral-sh/uv:latest", "ghcr.io/astral-sh/uv:latest", None, True),
    )


def test_key_material_is_the_pin_or_the_reference_not_pinned_yet() -> None:
    images = external_images(
        [
            ("python:3", 1, "from", None, False, None),
            (f"alpine@{D1}", 2, "copy", None, False, None),
            ("uv", 3, "copy", None, False, None),
            ("$X", 4, "from", "X", True, None),
        ]
    )
    lock = {"docker.io/library/python:3": {"linux/amd64": PinRecord(D2, "registry")}}
    assert pin_entries(images, lock, "linux/amd64") == (
        ("$X", "unresolved:$X", "$X"),
        (f"docker.io/library/alpine@{D1}", D1, f"alpine@{D1}"),
        ("docker.io/library/python:3", D2, "python:3"),
        ("docker.io/library/uv:latest", "unpinned:uv", "uv"),
    )
    # Pins are per platform: arm64 has none yet.
    assert pin_entries(images, lock, "linux/arm64")[2][1] == "unpinned:python:3"


def test_the_engine_gets_each_use_written_as_its_pinned_reference() -> None:
    text = (
        "ARG BASE=python:3\n"
        "FROM --platform=$BUILDPLATFORM ${BASE} AS build\n"
        "COPY --link --from=ghcr.io/astral-sh/uv:latest /uv /bin/\n"
        "RUN --mount=type=bind,from=alpine:3,source=/etc,target=/a \\\n"
        "    --mount=type=cache,target=/c --mount=from=busybox,target=/b true\n"
        "FROM build\n"
    )
    uses = [
        ("python:3", 2, "from", "BASE", False, None),
        ("ghcr.io/astral-sh/uv:latest", 3, "copy", None, False, None),
        ("alpine:3", 4, "mount", None, False, None),
        ("busybox", 4, "mount", None, False, None),
    ]
    sites = {(line, kind, ref): f"{ref}@{D1}" for ref, line, kind, _, _, _ in uses}
    pinned = rewrite_images(text, sites, "Dockerfile")
    assert pinned == (
        "ARG BASE=python:3\n"
        f"FROM --platform=$BUILDPLATFORM python:3@{D1} AS build\n"
        f"COPY --link --from=ghcr.io/astral-sh/uv:latest@{D1} /uv /bin/\n"
        f"RUN --mount=type=bind,from=alpine:3@{D1},source=/etc,target=/a \\\n"
        f"    --mount=type=cache,target=/c --mount=from=busybox@{D1},target=/b true\n"
        "FROM build\n"
    )
    with pytest.raises(BtError, match="Dockerfile:6: cannot find the image 'x' to hand over"):
        rewrite_images(text, {(6, "copy", "x"): "x"}, "Dockerfile")


# -- offline: plan, why, inputs, query need neither network nor engine -------------------------

OFFLINE = {
    ".cache-spec": "",
    "BUILD.images": (
        'image(name = "app", dockerfile = "app.Dockerfile", platforms = ["linux/amd64"])\n'
        'image(name = "tool", dockerfile = "tool.Dockerfile", platforms = ["linux/amd64"])\n'
        'image(name = "plain", dockerfile = "plain.Dockerfile", platforms = ["linux/amd64"])\n'
        'image(name = "fixed", dockerfile = "fixed.Dockerfile", platforms = ["linux/amd64"])\n'
    ),
    "app.Dockerfile": "FROM upstream.invalid/base:1\nCOPY app.txt /\n",
    "tool.Dockerfile": "FROM scratch\nCOPY --from=upstream.invalid/base:1 /version /\n",
    "plain.Dockerfile": "FROM scratch\nCOPY app.txt /\n",
    "fixed.Dockerfile": f"FROM upstream.invalid/base@{D1}\nCOPY app.txt /\n",
    "app.txt": "app\n",
}
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def test_plan_offline_says_not_pinned_yet_and_keys_the_reference(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "ws", OFFLINE)
    env = {**NO_ENGINE, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    first = plan(root, env)

    assert stale(root, env) == {
        "//:app": "external upstream.invalid/base:1 not pinned yet",
        "//:tool": "external upstream.invalid/base:1 not pinned yet",
        "//:plain": "new: never built",
        "//:fixed": "new: never built",  # written with its digest: its own pin
    }
    assert {k: p["key"] for k, p in plan(root, env).items()} == {
        k: p["key"] for k, p in first.items()
    }
    inputs = bt("inputs", "//:fixed", "--format", "json", cwd=root, env=env, check=True)
    assert json.loads(inputs.stdout)["images"] == [
        {
            "reference": f"upstream.invalid/base@{D1}",
            "name": f"upstream.invalid/base@{D1}",
            "pinned": D1,
        }
    ]
    why = bt("why", "//:app", cwd=root, env=env, check=True)
    assert "//:app linux/amd64: stale" in why.stdout
    bt("query", "//...", "--output", "json", cwd=root, env=env, check=True)
    assert not (root / "images.lock").exists()


def test_moving_a_pin_changes_exactly_the_keys_of_its_users(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "ws", OFFLINE)
    env = {**NO_ENGINE, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    lock = {"version": 1, "builds": {}, "images": {}}

    def keys_with(digest: str) -> dict[str, object]:
        pin = {"linux/amd64": {"digest": digest, "source": "registry"}}
        lockfile = {**lock, "pins": {"upstream.invalid/base:1": pin}}
        (root / "images.lock").write_text(json.dumps(lockfile))
        return {label: p["key"] for label, p in plan(root, env).items()}

    before, after = keys_with(D1), keys_with(D2)

    assert {label for label in before if before[label] != after[label]} == {"//:app", "//:tool"}
    assert keys_with(D1) == before


def test_an_image_written_with_its_digest_or_scratch_needs_no_lookup(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "ws", OFFLINE)
    env = {**NO_ENGINE, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    # Neither the engine nor the (unresolvable) registry is asked for //:fixed or //:plain.
    result = bt("lock", "update", "//:fixed", "//:plain", cwd=root, env=env, check=True)

    assert result.stdout == ""
    assert "0 pins checked, 0 moved" in result.stderr
    assert not (root / "images.lock").exists()


# -- against the real registry and engine --------------------------------------------------------


@pytest.fixture()
def upstream(engine: str, registry: str) -> str:
    """A fresh upstream repository's tag ``:1``, pushed with content "v1"."""
    ref = f"{registry}/bt-pins-{uuid.uuid4().hex[:12]}/base:1"
    make_image(engine, ref, "v1\n")
    docker(engine, "push", ref)
    return ref


def workspace(
    tmp_path: Path, engine: str, upstream: str, digest: str
) -> tuple[Path, dict[str, str]]:
    files = {
        ".cache-spec": 'global_inputs = ["nonce.txt"]\n',
        "nonce.txt": uuid.uuid4().hex,  # keys no earlier run built
        "BUILD.images": (
            'image(name = "app", dockerfile = "app.Dockerfile", platforms = ["linux/amd64"])\n'
            'image(name = "tool", dockerfile = "tool.Dockerfile", platforms = ["linux/amd64"])\n'
            'image(name = "fixed", dockerfile = "fixed.Dockerfile", platforms = ["linux/amd64"])\n'
            'image(name = "other", dockerfile = "other.Dockerfile", platforms = ["linux/amd64"])\n'
        ),
        "app.Dockerfile": f"FROM {upstream}\nCOPY app.txt /\n",
        "tool.Dockerfile": f"FROM scratch\nCOPY --from={upstream} /version /\n",
        "fixed.Dockerfile": f"FROM {upstream.rsplit(':', 1)[0]}@{digest}\nCOPY app.txt /\n",
        "other.Dockerfile": "FROM scratch\nCOPY app.txt /\n",
        "app.txt": "app\n",
    }
    root = write_tree(tmp_path / "ws", files)
    return root, {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}


@pytest.mark.engine
def test_an_upstream_move_stales_exactly_its_users_and_only_after_lock_update(
    tmp_path: Path, engine: str, registry: str, upstream: str
) -> None:
    v1 = RegistryClient().manifest_digest(upstream)
    assert v1 is not None
    root, env = workspace(tmp_path, engine, upstream, v1)
    v1_layer = layers(engine, upstream)[0]

    built = bt("build", "//...", cwd=root, env=env, check=True)

    assert f"pinned {upstream} (linux/amd64) to {v1} from the registry" in built.stderr
    assert pins(root) == {upstream: {"linux/amd64": {"digest": v1, "source": "registry"}}}
    assert layers(engine, image_of(root, "//:app"))[0] == v1_layer

    # Upstream moves the tag: nothing is stale, and a rebuild still uses the pinned digest.
    make_image(engine, upstream, "v2\n")
    docker(engine, "push", upstream)
    v2 = RegistryClient().manifest_digest(upstream)
    v2_layer = layers(engine, upstream)[0]
    assert v2 is not None and v2 != v1 and v2_layer != v1_layer
    assert stale(root, env) == {}
    (root / "app.txt").write_text("app, edited\n")
    bt("build", "//...", cwd=root, env=env, check=True)
    assert layers(engine, image_of(root, "//:app"))[0] == v1_layer
    assert pins(root)[upstream]["linux/amd64"]["digest"] == v1

    # `bt lock update` moves the pin: exactly the builds using the tag are stale.
    before = (root / "images.lock").read_text()
    updated = bt("lock", "update", cwd=root, env=env, check=True)

    assert updated.stdout == (
        f"{upstream} (linux/amd64): moved sha256:{v1[7:19]}.. -> sha256:{v2[7:19]}.. "
        "from the registry\n"
    )
    assert pins(root) == {upstream: {"linux/amd64": {"digest": v2, "source": "registry"}}}
    assert (root / "images.lock").read_text() != before
    moved = f"external {upstream} moved sha256:{v1[7:19]}.. -> sha256:{v2[7:19]}.."
    assert stale(root, env) == {"//:app": moved, "//:tool": moved}
    why = bt("why", "//:tool", cwd=root, env=env, check=True)
    assert f"  {moved}" in why.stdout.splitlines()

    rebuilt = bt("build", "//...", "--json", cwd=root, env=env, check=True)

    finished = sorted(
        e["label"] for e in map(json.loads, rebuilt.stdout.splitlines()) if e["event"] == "finished"
    )
    assert finished == ["//:app", "//:tool"]
    assert layers(engine, image_of(root, "//:app"))[0] == v2_layer
    assert layers(engine, image_of(root, "//:fixed"))[0] == v1_layer  # its own pin
    assert stale(root, env) == {}


@pytest.mark.engine
def test_an_image_only_the_engine_holds_is_pinned_from_the_engine(
    tmp_path: Path, engine: str
) -> None:
    local = f"bt-pins-{uuid.uuid4().hex[:12]}/local:1"
    image_id = make_image(engine, local, "local v1\n")
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": "",
            "BUILD.images": 'image(name = "app", platforms = ["linux/amd64"])\n',
            "Dockerfile": f"FROM {local}\nCOPY app.txt /\n",
            "app.txt": uuid.uuid4().hex,
        },
    )
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    built = bt("build", "//:app", cwd=root, env=env, check=True)

    assert f"pinned {local} (linux/amd64) to {image_id} from the engine" in built.stderr
    engine_name = f"buildkit@{engine}"
    assert (
        f"warning: {local} (linux/amd64) is pinned from {engine_name} alone, which no registry "
        "serves: the keys of the builds using it hold that engine's image, so another machine's "
        f"engine gives them other keys; push {local} to a registry and run bt lock update to "
        "share them\n"
    ) in built.stderr
    name = f"docker.io/{local}"
    assert pins(root) == {name: {"linux/amd64": {"digest": image_id, "source": "engine"}}}
    assert layers(engine, image_of(root, "//:app"))[0] == layers(engine, local)[0]

    # The local tag moves: the build keeps using the pinned image until `bt lock update`.
    moved_id = make_image(engine, local, "local v2\n")
    (root / "app.txt").write_text(uuid.uuid4().hex)
    bt("build", "//:app", cwd=root, env=env, check=True)
    assert layers(engine, image_of(root, "//:app"))[0] == layers(engine, image_id)[0]
    bt("lock", "update", cwd=root, env=env, check=True)
    assert pins(root) == {name: {"linux/amd64": {"digest": moved_id, "source": "engine"}}}


@pytest.mark.engine
def test_a_multi_platform_index_is_pinned_to_the_platform_s_manifest(
    engine: str, registry: str, upstream: str
) -> None:
    client = RegistryClient()
    amd64 = client.head_manifest(upstream)
    repository = upstream.rsplit(":", 1)[0]
    make_image(engine, f"{repository}:other", "arm64 stand-in\n")
    docker(engine, "push", f"{repository}:other")
    arm64 = client.head_manifest(f"{repository}:other")
    assert amd64 is not None and arm64 is not None and amd64.media_type == DOCKER_MANIFEST
    index = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            {"mediaType": d.media_type, "digest": d.digest, "size": d.size,
             "platform": {"os": "linux", "architecture": arch, **extra}}
            for d, arch, extra in ((amd64, "amd64", {}), (arm64, "arm64", {"variant": "v8"}))
        ],
    }  # fmt: skip
    client.put_manifest(f"{repository}:multi", DOCKER_MANIFEST_LIST, json.dumps(index).encode())

    assert registry_digest(client, f"{repository}:multi", "linux/amd64") == amd64.digest
    assert registry_digest(client, f"{repository}:multi", "linux/arm64") == arm64.digest
    with pytest.raises(BtError, match=r"has no image for linux/riscv64 \(it has: linux/amd64, "):
        registry_digest(client, f"{repository}:multi", "linux/riscv64")
    assert registry_digest(client, f"{repository}:absent", "linux/amd64") is None


@pytest.mark.engine
def test_a_single_platform_image_for_another_platform_is_an_error_naming_both(
    tmp_path: Path, engine: str, upstream: str
) -> None:
    # `upstream` is one linux/amd64 image, no index: an arm64 build cannot start from it.
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": "",
            "BUILD.images": 'image(name = "app", platforms = ["linux/arm64"])\n',
            "Dockerfile": f"FROM {upstream}\nCOPY app.txt /\n",
            "app.txt": uuid.uuid4().hex,
        },
    )
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    docker(engine, "rmi", upstream)  # only the registry has it

    built = bt("build", "//:app", cwd=root, env=env)

    assert built.returncode == 1, built.stderr
    problem = (
        f"{upstream} is an image for linux/amd64 only (not a multi-platform index): the "
        "linux/arm64 build cannot use it; build linux/arm64 from an image for linux/arm64, or "
        "leave linux/arm64 out of the target's platforms"
    )
    assert f"not pinned (linux/arm64): {problem}" in built.stderr
    assert not (root / "images.lock").exists()  # nothing pinned, nothing recorded


@pytest.mark.engine
def test_the_frontend_a_syntax_line_names_is_pinned_by_lock_update(
    tmp_path: Path, engine: str, upstream: str
) -> None:
    digest = RegistryClient().manifest_digest(upstream)
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": "",
            "BUILD.images": 'image(name = "app", platforms = ["linux/amd64"])\n',
            "Dockerfile": f"# syntax={upstream}\nFROM scratch\nCOPY app.txt /\n",
            "app.txt": "app\n",
        },
    )
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert stale(root, env) == {"//:app": f"external {upstream} not pinned yet"}

    updated = bt("lock", "update", cwd=root, env=env, check=True)

    assert updated.stdout == (
        f"{upstream} (linux/amd64): pinned to sha256:{digest[7:19]}.. from the registry\n"  # type: ignore[index]
    )
    assert pins(root) == {upstream: {"linux/amd64": {"digest": digest, "source": "registry"}}}
