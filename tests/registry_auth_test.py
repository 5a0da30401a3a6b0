"""Signing in to real registries with the user's docker credentials: a docker-registry with
htpasswd (basic) auth, and one with token (bearer) auth whose tokens a small server signs with
openssl. A fake registry stands in for redirects to another host and OAuth refresh tokens."""

from __future__ import annotations

import base64
import json
import os
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest
from btrun import bt, write_tree
from registries import (
    MANIFEST,
    PASSWORD,
    USER,
    TokenServer,
    basic_auths,
    fake_registry,
    manifest_answer,
    push_scratch,
    write_docker_config,
)

from buildtool.errors import BtError
from buildtool.registry import DOCKER_MANIFEST, Credentials, RegistryClient, sha256_digest

pytestmark = pytest.mark.registry


def test_credentials_never_show_their_secrets() -> None:
    creds = Credentials("alice", PASSWORD, "identity-token-secret")
    assert PASSWORD not in repr(creds) and "identity-token-secret" not in repr(creds)
    assert repr(creds) == "Credentials(username='alice')"


# -- basic auth (htpasswd) ---------------------------------------------------------------------


def test_basic_auth_registry_accepts_the_docker_config_credentials(
    basic_registry: str, engine: str, docker_cli: str, tmp_path: Path
) -> None:
    config = write_docker_config(tmp_path / "docker", basic_auths(basic_registry, USER, PASSWORD))
    repo = f"{basic_registry}/auth/basic"
    digest = push_scratch(engine, f"{repo}:amd64", "linux/amd64", docker_config=config)

    client = RegistryClient(docker_config_dir=config)
    _, body, _ = client.get_manifest(f"{repo}:amd64")
    assert client.manifest_digest(f"{repo}:amd64") == digest
    assert client.put_manifest(f"{repo}:again", DOCKER_MANIFEST, body) == digest


@pytest.mark.parametrize(
    ("kind", "answer"),
    [("basic", "401 Unauthorized"), ("token", "token server answered 401")],
)
def test_a_wrong_password_is_a_clear_error_without_the_password(
    kind: str, answer: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if kind == "basic":
        address: str = request.getfixturevalue("basic_registry")
    else:
        address, _ = request.getfixturevalue("token_registry")
    wrong = "wrong-" + PASSWORD
    config = write_docker_config(tmp_path / "docker", basic_auths(address, USER, wrong))
    with pytest.raises(BtError) as err:
        RegistryClient(docker_config_dir=config).head_manifest(f"{address}/auth/x:y")
    assert str(err.value) == (
        f"registry {address} rejected the credentials of user 'alice' from "
        f"{config / 'config.json'} ({answer}); run `docker login {address}`"
    )
    assert wrong not in repr(err.value) and PASSWORD not in repr(err.value)


def test_basic_auth_without_credentials_says_how_to_log_in(
    basic_registry: str, tmp_path: Path
) -> None:
    config = write_docker_config(tmp_path / "docker", {"auths": {}})
    with pytest.raises(BtError) as err:
        RegistryClient(docker_config_dir=config).head_manifest(f"{basic_registry}/auth/basic:x")
    assert str(err.value) == (
        f"registry {basic_registry} needs credentials and {config / 'config.json'} has none "
        f"for it; run `docker login {basic_registry}`"
    )


def test_credentials_come_from_DOCKER_CONFIG_and_from_credential_helpers(
    basic_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper_dir = tmp_path / "bin"
    helper_dir.mkdir()
    helper = helper_dir / "docker-credential-bttest"
    # The credential-helper protocol: `get` reads the server on stdin, prints JSON.
    helper.write_text(
        "#!/bin/sh\nread server\n"
        f'printf \'{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}\' "$server"\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper_dir}{os.pathsep}{os.environ['PATH']}")
    config = write_docker_config(tmp_path / "docker", {"credHelpers": {basic_registry: "bttest"}})
    monkeypatch.setenv("DOCKER_CONFIG", str(config))

    assert RegistryClient().head_manifest(f"{basic_registry}/auth/none:{uuid.uuid4().hex}") is None


# -- token auth (bearer) -----------------------------------------------------------------------


def test_token_auth_registry_works_with_docker_config_credentials(
    token_registry: tuple[str, TokenServer], engine: str, docker_cli: str, tmp_path: Path
) -> None:
    address, tokens = token_registry
    config = write_docker_config(tmp_path / "docker", basic_auths(address, USER, PASSWORD))
    repo = f"{address}/auth/token"
    digest = push_scratch(engine, f"{repo}:arm64", "linux/arm64", docker_config=config)
    tokens.requests.clear()

    client = RegistryClient(docker_config_dir=config)
    _, body, _ = client.get_manifest(f"{repo}:arm64")
    assert client.put_manifest(f"{repo}:again", DOCKER_MANIFEST, body) == digest
    assert client.manifest_digest(f"{repo}:again") == digest

    scopes = [(q.get("scope"), q.get("service"), q.get("account")) for _, q, _ in tokens.requests]
    assert scopes == [
        (["repository:auth/token:pull"], ["bt-test-service"], ["alice"]),
        (["repository:auth/token:pull,push"], ["bt-test-service"], ["alice"]),
    ]


def test_token_auth_anonymously_is_refused_with_a_hint(
    token_registry: tuple[str, TokenServer], tmp_path: Path
) -> None:
    address, _ = token_registry
    config = write_docker_config(tmp_path / "docker", {})
    with pytest.raises(BtError) as err:
        RegistryClient(docker_config_dir=config).head_manifest(f"{address}/auth/token:x")
    assert "has none for it; run `docker login" in str(err.value)


def test_blob_redirects_to_another_host_do_not_carry_credentials(tmp_path: Path) -> None:
    blob = b'{"os": "linux"}'
    storage_saw: list[str | None] = []

    def storage(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        storage_saw.append(headers.get("Authorization"))
        return 200, {}, blob

    with fake_registry(storage) as storage_address:

        def registry(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
            if "Authorization" not in headers:
                return 401, {"WWW-Authenticate": 'Basic realm="fake"'}, b""
            location = f"http://{storage_address}/bucket/blob?signature=abc"
            return 307, {"Location": location}, b""

        with fake_registry(registry) as address:
            config = write_docker_config(tmp_path / "d", basic_auths(address, USER, PASSWORD))
            got = RegistryClient(docker_config_dir=config).get_blob(
                f"{address}/x", sha256_digest(blob)
            )
    assert got == blob
    assert storage_saw == [None]


def test_identity_tokens_are_exchanged_by_post_and_never_put_in_a_url(tmp_path: Path) -> None:
    token_calls: list[tuple[str, str, dict[str, list[str]]]] = []

    def token_server(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        token_calls.append((method, path, urllib.parse.parse_qs(body.decode())))
        return 200, {"Content-Type": "application/json"}, b'{"access_token": "granted"}'

    with fake_registry(token_server) as token_address:

        def registry(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
            if headers.get("Authorization") != "Bearer granted":
                challenge = f'Bearer realm="http://{token_address}/oauth",service="fake"'
                return 401, {"WWW-Authenticate": challenge}, b""
            return manifest_answer()

        with fake_registry(registry) as address:
            config = write_docker_config(
                tmp_path / "d", {"auths": {address: {"identitytoken": "refresh-secret"}}}
            )
            digest = RegistryClient(docker_config_dir=config).manifest_digest(f"{address}/x:y")
    assert digest == sha256_digest(MANIFEST)
    assert token_calls == [
        (
            "POST",
            "/oauth",
            {
                "grant_type": ["refresh_token"],
                "refresh_token": ["refresh-secret"],
                "client_id": ["bt"],
                "scope": ["repository:x:pull"],
                "service": ["fake"],
            },
        )
    ]


# -- credentials echoed back -----------------------------------------------------------------


def _echoing_registry(token: bool) -> Any:
    """A registry that asks for credentials, then refuses them and echoes the Authorization
    header it got in its error detail (and message), as some registries and proxies do."""

    def handle(
        method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if path.startswith("/token"):
            answer = {"token": "bearer-token-never-printed-0123456789"}
            return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()
        sent = headers.get("Authorization")
        if sent is None:
            challenge = 'Bearer realm="http://{host}/token"' if token else 'Basic realm="x"'
            return 401, {"WWW-Authenticate": challenge.format(host=headers["Host"])}, b""
        reference = path.rsplit("/", 1)[-1]
        if method == "HEAD" and reference.startswith("sha256:"):
            # Asked whether a digest exists (`bt merge` asks before it writes): yes; what
            # follows is refused with the echo.
            media = "application/vnd.oci.image.manifest.v1+json"
            return 200, {"Docker-Content-Digest": reference, "Content-Type": media}, b""
        error = {"code": "DENIED", "message": f"refused {sent}", "detail": f"header: {sent}"}
        return 403, {"Content-Type": "application/json"}, json.dumps({"errors": [error]}).encode()

    return fake_registry(handle)


@pytest.mark.parametrize("token", [False, True], ids=["basic", "bearer"])
def test_credentials_a_registry_echoes_in_its_error_are_redacted(
    token: bool, tmp_path: Path
) -> None:
    with _echoing_registry(token) as address:
        config = write_docker_config(tmp_path / "docker", basic_auths(address, USER, PASSWORD))
        client = RegistryClient(docker_config_dir=config, attempts=1)
        with pytest.raises(BtError) as raised:
            client.get_manifest(f"{address}/echo/app:latest")
    message = str(raised.value)
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for secret in (PASSWORD, encoded, "bearer-token-never-printed-0123456789"):
        assert secret not in message
    assert "403" in message and "<redacted>" in message and "DENIED" in message


def test_bt_merge_prints_no_echoed_credentials(tmp_path: Path) -> None:
    """End to end: the one line `bt merge` prints when the registry refuses and echoes."""
    with _echoing_registry(False) as address:
        config = write_docker_config(tmp_path / "docker", basic_auths(address, USER, PASSWORD))
        root = write_tree(
            tmp_path / "ws",
            {
                ".cache-spec": f'platforms = ["linux/amd64"]\n[registry]\nurl = "{address}"\n',
                "BUILD.images": 'image(name = "app")\n',
                "Dockerfile": "FROM scratch\n",
            },
        )
        digest = "sha256:" + "1" * 64
        lockfile = {
            "version": 1,
            "builds": {"//:app": {"linux/amd64": {"key": "a" * 64, "digest": digest,
                                                   "image": f"{address}/app@{digest}"}}},
        }  # fmt: skip
        (root / "images.lock").write_text(json.dumps(lockfile))
        done = bt("merge", "//...", cwd=root, env={"DOCKER_CONFIG": str(config)})
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert PASSWORD not in output and encoded not in output
    assert "<redacted>" in output, output
