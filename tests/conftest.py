"""Fixtures for the real parts tests use: two Docker engines and a registry, started by
``bash .ci/setup``. Each fixture checks once per session that its part answers; when it does
not, the test fails in CI (CI=true) and skips elsewhere, with a message saying how to start it.

Environment overrides: BT_TEST_ENGINE, BT_TEST_ENGINE2 (engine hosts, ``unix:///path`` or
``tcp://host:port``), BT_TEST_REGISTRY and BT_TEST_REGISTRY2 (``host:port`` of plain-HTTP
registries without auth; the second is where images are promoted to).
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from registries import TokenServer

# Test modules import helpers such as ``btrun`` as top-level modules, under any --import-mode.
sys.path.insert(0, str(Path(__file__).parent))

ENGINE = os.environ.get("BT_TEST_ENGINE", "unix:///run/bt-test/engine1.sock")
ENGINE2 = os.environ.get("BT_TEST_ENGINE2", "unix:///run/bt-test/engine2.sock")
REGISTRY = os.environ.get("BT_TEST_REGISTRY", "127.0.0.1:5000")
REGISTRY2 = os.environ.get("BT_TEST_REGISTRY2", "127.0.0.1:5001")
# Debian's 20.10 CLI still builds with BuildKit via DOCKER_BUILDKIT=1; the newer CLI earlier on
# PATH has no buildx, so `docker build` there falls back to the legacy builder or fails.
DOCKER_CLI = "/usr/bin/docker"
PING_TIMEOUT = 5.0


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the engine's unix socket, as the docker CLI speaks it."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=PING_TIMEOUT)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(PING_TIMEOUT)
        sock.connect(self.socket_path)
        self.sock = sock


def _get_status(conn: http.client.HTTPConnection, path: str) -> int | None:
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def engine_answers(host: str) -> bool:
    """Whether the engine at ``host`` answers the Engine API's ``GET /_ping`` with 200."""
    if host.startswith("unix://"):
        return _get_status(_UnixHTTPConnection(host.removeprefix("unix://")), "/_ping") == 200
    if host.startswith("tcp://"):
        conn = http.client.HTTPConnection(host.removeprefix("tcp://"), timeout=PING_TIMEOUT)
        return _get_status(conn, "/_ping") == 200
    return False


def registry_answers(address: str) -> bool:
    """Whether ``address`` serves the registry API's base endpoint without asking for auth."""
    conn = http.client.HTTPConnection(address, timeout=PING_TIMEOUT)
    return _get_status(conn, "/v2/") == 200


def _missing(what: str) -> None:
    message = f"{what} does not answer; start it with `bash .ci/setup`"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# What `bt merge` reads of a GitHub Actions run: tests give bt the git context they mean to.
GITHUB_RUN_VARIABLES = (
    "GITHUB_REF", "GITHUB_SHA", "GITHUB_HEAD_REF", "GITHUB_EVENT_PATH", "GITHUB_SERVER_URL",
    "GITHUB_REPOSITORY",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _no_github_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """bt run by a test (in process or as a child) sees no GitHub Actions run variables, even
    when the tests themselves run in GitHub Actions."""
    for name in GITHUB_RUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def engine() -> str:
    """Host of engine 1, by default ``unix:///run/bt-test/engine1.sock``."""
    if not engine_answers(ENGINE):
        _missing(f"Docker engine {ENGINE} (BT_TEST_ENGINE)")
    return ENGINE


@pytest.fixture(scope="session")
def engine2() -> str:
    """Host of engine 2, a separate image store standing in for another platform's builder."""
    if not engine_answers(ENGINE2):
        _missing(f"Docker engine {ENGINE2} (BT_TEST_ENGINE2)")
    return ENGINE2


@pytest.fixture(scope="session")
def registry() -> str:
    """Address of the registry, by default ``127.0.0.1:5000`` (plain HTTP, no auth)."""
    if not registry_answers(REGISTRY):
        _missing(f"registry http://{REGISTRY} (BT_TEST_REGISTRY)")
    return REGISTRY


@pytest.fixture(scope="session")
def registry2() -> str:
    """Address of a second registry, by default ``127.0.0.1:5001``: a mirror to promote to."""
    if not registry_answers(REGISTRY2):
        _missing(f"registry http://{REGISTRY2} (BT_TEST_REGISTRY2)")
    return REGISTRY2


@pytest.fixture(scope="session")
def docker_cli() -> str:
    """Path of a docker CLI that builds with ``DOCKER_BUILDKIT=1 docker build``."""
    if not os.access(DOCKER_CLI, os.X_OK):
        _missing(f"the Debian docker CLI {DOCKER_CLI} (package docker.io)")
    return DOCKER_CLI


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A docker-registry of the test's own with htpasswd auth: alice / PASSWORD."""
    from registries import PASSWORD, USER, bcrypt_hash, run_registry

    root = tmp_path_factory.mktemp("basic-registry")
    (root / "htpasswd").write_text(f"{USER}:{bcrypt_hash(PASSWORD)}\n")
    auth = f"auth:\n  htpasswd:\n    realm: bt-test\n    path: {root / 'htpasswd'}\n"
    with run_registry(root, auth) as address:
        yield address


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TokenServer]]:
    """A registry with token auth, and the token server it trusts (alice / PASSWORD)."""
    from registries import PASSWORD, USER, TokenServer, run_registry, unavailable

    if shutil.which("openssl") is None:
        unavailable("openssl")
    root = tmp_path_factory.mktemp("token-registry")
    tokens = TokenServer(root, {USER: PASSWORD})
    auth = (
        f"auth:\n  token:\n    realm: {tokens.realm}\n    service: {tokens.service}\n"
        f"    issuer: {tokens.issuer}\n    rootcertbundle: {tokens.cert}\n"
    )
    try:
        with run_registry(root, auth) as address:
            yield address, tokens
    finally:
        tokens.close()
