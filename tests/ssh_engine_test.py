"""Builders on `ssh://` engines: the sshd `.ci/setup` starts on 127.0.0.1:2222, whose sessions
reach engine 2 (the docker CLI and docker-py both run `docker system dial-stdio` over ssh)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from btrun import bt, write_tree

pytestmark = pytest.mark.engine
SSH_ENGINE = os.environ.get("BT_TEST_SSH_ENGINE", "ssh://root@127.0.0.1:2222")
DOCKER = "/usr/bin/docker"


@pytest.fixture(scope="session")
def ssh_engine(engine2: str) -> str:
    """An ssh:// host whose sessions reach engine 2."""
    done = subprocess.run(
        [DOCKER, "-H", SSH_ENGINE, "info", "--format", "{{.DockerRootDir}}"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    if done.returncode != 0 or "engine2" not in done.stdout:
        message = (
            f"{SSH_ENGINE} does not reach engine 2 ({done.stderr.strip()[-200:]}); "
            "start it with `bash .ci/setup`"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return SSH_ENGINE


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


def workspace(root: Path, arm_host: str, backend: str) -> Path:
    """Two images for both platforms; amd64 on the local engine, arm64 on ``arm_host``."""
    return write_tree(
        root,
        {
            ".cache-spec": (
                'platforms = ["linux/amd64", "linux/arm64"]\n'
                'global_inputs = ["nonce.txt"]\n'
                f'[builders."linux/amd64"]\nbackend = "{backend}"\nnetwork = "none"\n'
                f'[builders."linux/arm64"]\nhost = "{arm_host}"\nbackend = "{backend}"\n'
                'network = "none"\n'
            ),
            # No ARG: the classic builder commits an ARG step for the engine's own platform.
            "BUILD.images": 'image(name = "a", dockerfile = "a.Dockerfile")\n'
            'image(name = "b", dockerfile = "b.Dockerfile")\n',
            "a.Dockerfile": "FROM scratch\nCOPY a.txt /data.txt\n",
            "b.Dockerfile": "FROM scratch\nCOPY b.txt /data.txt\n",
            "a.txt": "a\n",
            "b.txt": "b\n",
            "nonce.txt": uuid.uuid4().hex,  # new keys: no earlier run's images are reused
        },
    )


def events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def image_id(host: str, ref: str) -> str | None:
    done = subprocess.run(
        [DOCKER, "-H", host, "image", "inspect", "--format", "{{.Id}}", ref],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


@pytest.mark.parametrize("backend", ["buildkit", "engine"])
def test_a_platform_routed_to_an_ssh_engine_builds_there(
    tmp_path: Path, engine: str, engine2: str, ssh_engine: str, backend: str
) -> None:
    root = workspace(tmp_path / "ws", ssh_engine, backend)
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = bt("build", "//...", "--json", cwd=root, env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    finished = [
        (e["label"], e["platform"]) for e in events(result.stdout) if e["event"] == "finished"
    ]
    assert sorted(finished) == [
        (label, platform)
        for label in ("//:a", "//:b")
        for platform in ("linux/amd64", "linux/arm64")
    ]
    lock = json.loads((root / "images.lock").read_text())["builds"]
    for label in ("//:a", "//:b"):
        arm = lock[label]["linux/arm64"]
        amd = lock[label]["linux/amd64"]
        # arm64 went over ssh to engine 2; amd64 stayed on engine 1
        assert image_id(engine2, arm["image"]) == arm["digest"]
        assert image_id(engine, arm["image"]) is None
        assert image_id(engine, amd["image"]) == amd["digest"]
        assert image_id(engine2, amd["image"]) is None


def test_a_dead_ssh_host_fails_its_platform_and_the_other_finishes(
    tmp_path: Path, engine: str, ssh_engine: str
) -> None:
    dead = f"ssh://root@127.0.0.1:{closed_port()}"
    root = workspace(tmp_path / "ws", dead, "buildkit")
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = bt("build", "//...", "--json", "--retries", "0", cwd=root, env=env)
    assert result.returncode == 1, result.stderr + result.stdout
    by_kind: dict[str, list[tuple[object, object]]] = {}
    for e in events(result.stdout):
        if "label" in e:
            by_kind.setdefault(str(e["event"]), []).append((e["label"], e["platform"]))
    assert sorted(by_kind["finished"]) == [("//:a", "linux/amd64"), ("//:b", "linux/amd64")]
    assert sorted(by_kind["failed"]) == [("//:a", "linux/arm64"), ("//:b", "linux/arm64")]
    failures = [e for e in events(result.stdout) if e["event"] == "failed"]
    for failure in failures:
        assert str(failure["message"]).startswith(f"the linux/arm64 engine {dead} is down: ")
        # The docker CLI reports ssh's own refusal, or, when it wrote the request before ssh
        # exited (a race in its connection helper), the broken pipe it hit: both from ssh.
        message = str(failure["message"])
        assert "Connection refused" in message or "write |1: broken pipe" in message, message
    # plain output: one line per failed build, naming it and the dead host
    plain = bt("build", "//...", "--retries", "0", cwd=root, env=env)
    assert plain.returncode == 1
    lines = [line for line in plain.stderr.splitlines() if dead in line]
    assert len(lines) == 2, plain.stderr
    assert all("linux/arm64" in line for line in lines)
    lock = json.loads((root / "images.lock").read_text())["builds"]
    assert sorted(lock) == ["//:a", "//:b"]
    assert all(list(platforms) == ["linux/amd64"] for platforms in lock.values())
