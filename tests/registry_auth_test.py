"""Signing in to real registries with the user's docker credentials: a docker-registry with
htpasswd (basic) auth, and one with token (bearer) auth whose tokens a small server signs with
openssl. A fake registry stands in for redirects to another host and OAuth refresh tokens."""

from __future__ import annotations

import os
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest
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
