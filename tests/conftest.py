"""Fixtures for the real parts tests use: Docker engines and a registry started by
``bash .ci/setup``. In CI (CI=true) a missing engine fails the test; elsewhere it skips with a
message saying how to start it."""

from __future__ import annotations

import http.client
import os
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

ENGINE = os.environ.get("BT_TEST_ENGINE", "unix:///run/bt-test/engine1.sock")
ENGINE2 = os.environ.get("BT_TEST_ENGINE2", "unix:///run/bt-test/engine2.sock")
REGISTRY = os.environ.get("BT_TEST_REGISTRY", "127.0.0.1:5000")
DOCKER_CLI = "/usr/bin/docker"


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=5)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(self.socket_path)
        self.sock = sock


def engine_answers(host: str) -> bool:
    if not host.startswith("unix://"):
        return False
    try:
        conn = _UnixHTTPConnection(host[len("unix://") :])
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False


def registry_answers(address: str) -> bool:
    try:
        conn = http.client.HTTPConnection(address, timeout=5)
        conn.request("GET", "/v2/")
        return conn.getresponse().status in (200, 401)
    except OSError:
        return False


def _missing(what: str) -> None:
    message = f"{what} is not running; start it with `bash .ci/setup`"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def engine() -> str:
    """Host of engine 1, e.g. unix:///run/bt-test/engine1.sock."""
    if not engine_answers(ENGINE):
        _missing(f"Docker engine {ENGINE}")
    return ENGINE


@pytest.fixture(scope="session")
def engine2() -> str:
    """Host of engine 2, standing in for a native builder of another platform."""
    if not engine_answers(ENGINE2):
        _missing(f"Docker engine {ENGINE2}")
    return ENGINE2


@pytest.fixture(scope="session")
def registry() -> str:
    """Address of the registry, e.g. 127.0.0.1:5000 (plain HTTP, no auth)."""
    if not registry_answers(REGISTRY):
        _missing(f"registry {REGISTRY}")
    return REGISTRY


@pytest.fixture(scope="session")
def docker_cli() -> str:
    """A docker CLI that builds with `DOCKER_BUILDKIT=1 docker build`."""
    if not os.access(DOCKER_CLI, os.X_OK):
        _missing(f"the Debian docker CLI {DOCKER_CLI}")
    return DOCKER_CLI
