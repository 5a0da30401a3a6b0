"""The test environment itself, with real parts: engines that build and run images, an amd64
engine that builds for arm64 without emulation, two engines with separate image stores, and a
registry that serves what was pushed by the digest of its bytes."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

BASE_IMAGE = "bt-test/busybox:latest"  # imported into both engines by .ci/setup
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (
    DOCKER_MANIFEST,
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)


def docker(cli: str, host: str, *args: str) -> str:
    """Run the docker CLI against ``host`` with BuildKit on; its stdout, or fail with stderr."""
    env = {**os.environ, "DOCKER_BUILDKIT": "1", "DOCKER_HOST": host}
    result = subprocess.run(
        [cli, *args], env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout


def write_context(root: Path, dockerfile: str, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "Dockerfile").write_text(dockerfile)
    return root


def unique(repository: str) -> str:
    return f"{repository}:{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("engine_fixture", ["engine", "engine2"])
def test_each_engine_builds_from_the_imported_base_and_runs_the_image(
    engine_fixture: str, docker_cli: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    host: str = request.getfixturevalue(engine_fixture)
    context = write_context(
        tmp_path, f"FROM {BASE_IMAGE}\nCOPY hello.txt /hello.txt\n", {"hello.txt": "hello\n"}
    )
    tag = unique("bt-test/hello")
    docker(docker_cli, host, "build", "-q", "--network=none", "-t", tag, str(context))
    try:
        out = docker(docker_cli, host, "run", "--rm", "--network=none", tag, "cat", "/hello.txt")
        assert out == "hello\n"
    finally:
        docker(docker_cli, host, "rmi", tag)


def test_an_amd64_engine_builds_a_scratch_image_for_arm64(
    engine: str, docker_cli: str, tmp_path: Path
) -> None:
    context = write_context(tmp_path, "FROM scratch\nCOPY a.txt /a.txt\n", {"a.txt": "a"})
    tag = unique("bt-test/arm")
    docker(docker_cli, engine, "build", "-q", "--network=none", "--platform", "linux/arm64",
           "-t", tag, str(context))  # fmt: skip
    try:
        platform = docker(docker_cli, engine, "image", "inspect", "-f",
                          "{{.Os}}/{{.Architecture}}", tag)  # fmt: skip
        assert platform == "linux/arm64\n"
    finally:
        docker(docker_cli, engine, "rmi", tag)


@pytest.mark.registry
def test_registry_serves_a_pushed_manifest_under_the_digest_of_its_bytes(
    engine: str, registry: str, docker_cli: str, tmp_path: Path
) -> None:
    context = write_context(
        tmp_path, "FROM scratch\nCOPY a.txt /a.txt\n", {"a.txt": uuid.uuid4().hex}
    )
    tag = uuid.uuid4().hex[:12]
    ref = f"{registry}/bt-test/pushed:{tag}"
    docker(docker_cli, engine, "build", "-q", "--network=none", "-t", ref, str(context))
    conn = http.client.HTTPConnection(registry, timeout=10)
    try:
        docker(docker_cli, engine, "push", ref)
        conn.request("GET", f"/v2/bt-test/pushed/manifests/{tag}",
                     headers={"Accept": ", ".join(MANIFEST_TYPES)})  # fmt: skip
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200
        assert response.getheader("Content-Type") == DOCKER_MANIFEST
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        assert response.getheader("Docker-Content-Digest") == digest
        assert json.loads(body)["mediaType"] == DOCKER_MANIFEST

        # The registry runs with deletes enabled, so tests can remove what they pushed.
        conn.request("DELETE", f"/v2/bt-test/pushed/manifests/{digest}")
        deleted = conn.getresponse()
        deleted.read()
        assert deleted.status == 202
    finally:
        conn.close()
        docker(docker_cli, engine, "rmi", ref)


def test_the_second_engine_has_its_own_image_store(
    engine: str, engine2: str, docker_cli: str, tmp_path: Path
) -> None:
    context = write_context(tmp_path, "FROM scratch\nCOPY a.txt /a.txt\n", {"a.txt": "2"})
    tag = unique("bt-test/only-on-2")
    image_id = docker(docker_cli, engine2, "build", "-q", "--network=none", "-t", tag, str(context))
    try:
        assert docker(docker_cli, engine2, "image", "inspect", "-f", "{{.Id}}", tag) == image_id
        assert docker(docker_cli, engine, "images", "-q", tag) == ""
    finally:
        docker(docker_cli, engine2, "rmi", tag)
