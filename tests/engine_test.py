"""The test environment itself, with real parts: an engine that builds and runs images, builds
for arm64 without emulation, a second engine with its own image store, a registry."""

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


def docker(cli: str, host: str, *args: str, stdin: bytes | None = None) -> str:
    env = {**os.environ, "DOCKER_BUILDKIT": "1", "DOCKER_HOST": host}
    result = subprocess.run(
        [cli, *args], env=env, input=stdin, capture_output=True, check=False, timeout=300
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_engine_builds_and_runs_an_image(engine: str, docker_cli: str, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hello from bt\n")
    (tmp_path / "Dockerfile").write_text("FROM bt-test/busybox:latest\nCOPY hello.txt /hello.txt\n")
    tag = f"bt-test/hello:{uuid.uuid4().hex[:12]}"
    docker(docker_cli, engine, "build", "-q", "--network=none", "-t", tag, str(tmp_path))
    try:
        out = docker(docker_cli, engine, "run", "--rm", "--network=none", tag, "cat", "/hello.txt")
        assert out == "hello from bt\n"
    finally:
        docker(docker_cli, engine, "rmi", tag)


def test_engine_builds_arm64_without_emulation(
    engine: str, docker_cli: str, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\n")
    tag = f"bt-test/arm:{uuid.uuid4().hex[:12]}"
    docker(docker_cli, engine, "build", "-q", "--network=none", "--platform", "linux/arm64",
           "-t", tag, str(tmp_path))  # fmt: skip
    try:
        arch = docker(docker_cli, engine, "image", "inspect", "-f", "{{.Architecture}}", tag)
        assert arch.strip() == "arm64"
    finally:
        docker(docker_cli, engine, "rmi", tag)


def test_registry_serves_a_pushed_manifest_by_digest(
    engine: str, registry: str, docker_cli: str, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text(uuid.uuid4().hex)
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\n")
    tag = uuid.uuid4().hex[:12]
    ref = f"{registry}/bt-test/pushed:{tag}"
    docker(docker_cli, engine, "build", "-q", "--network=none", "-t", ref, str(tmp_path))
    try:
        docker(docker_cli, engine, "push", ref)
        conn = http.client.HTTPConnection(registry, timeout=10)
        accept = "application/vnd.docker.distribution.manifest.v2+json"
        conn.request("GET", f"/v2/bt-test/pushed/manifests/{tag}", headers={"Accept": accept})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200
        digest = response.getheader("Docker-Content-Digest")
        assert digest == "sha256:" + hashlib.sha256(body).hexdigest()
        assert json.loads(body)["mediaType"] == accept
    finally:
        docker(docker_cli, engine, "rmi", ref)


def test_second_engine_has_its_own_image_store(
    engine: str, engine2: str, docker_cli: str, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("2")
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\n")
    tag = f"bt-test/only-on-2:{uuid.uuid4().hex[:12]}"
    docker(docker_cli, engine2, "build", "-q", "--network=none", "-t", tag, str(tmp_path))
    try:
        listed = docker(docker_cli, engine, "images", "-q", tag)
        assert listed == ""
        assert docker(docker_cli, engine2, "images", "-q", tag).strip() != ""
    finally:
        docker(docker_cli, engine2, "rmi", tag)
