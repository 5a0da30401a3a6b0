"""The registry client against real registries: the test registry (no auth), a second
docker-registry with htpasswd (basic) auth, and a third with token (bearer) auth whose tokens a
small server in this file signs with openssl. A fake registry (a local http.server) stands in
only for what a real registry cannot be made to do on demand: 5xx answers, wrong digests,
redirects to another host, OAuth refresh tokens."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from buildtool.errors import BtError, RegistryUnavailable, TransientError
from buildtool.registry import (
    DOCKER_MANIFEST,
    Credentials,
    Descriptor,
    Reference,
    RegistryClient,
    is_loopback,
    parse_reference,
    sha256_digest,
)

pytestmark = pytest.mark.registry
DOCKER = "/usr/bin/docker"
REGISTRY_BIN = "/usr/bin/docker-registry"
USER, PASSWORD = "alice", "Pa55-w0rd-that-must-never-leak"


# -- helpers shared with merge_test.py ---------------------------------------------------------


def push_scratch(engine: str, ref: str, platform: str, *, docker_config: Path | None = None) -> str:
    """Build a tiny FROM scratch image for ``platform`` on ``engine``, push it to ``ref`` and
    return the manifest digest the push reported."""
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    if docker_config is not None:
        env["DOCKER_CONFIG"] = str(docker_config)
    with tempfile.TemporaryDirectory() as context:
        Path(context, "Dockerfile").write_text("FROM scratch\nCOPY id.txt /\n")
        Path(context, "id.txt").write_text(f"{ref} {platform} {uuid.uuid4().hex}\n")
        for args in (
            ["build", "-q", "--network=none", "--platform", platform, "-t", ref, context],
            ["push", ref],
        ):
            done = subprocess.run(
                [DOCKER, "-H", engine, *args], env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
    subprocess.run([DOCKER, "-H", engine, "rmi", ref], capture_output=True, check=False)
    found = re.search(r"digest: (sha256:[0-9a-f]{64})", done.stdout)
    assert found, done.stdout
    return found.group(1)


def write_docker_config(directory: Path, entries: dict[str, Any]) -> Path:
    """A DOCKER_CONFIG directory whose config.json holds ``entries``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(entries))
    return directory


def basic_auths(registry: str, user: str, password: str) -> dict[str, Any]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"auths": {registry: {"auth": pair}}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash from the C library's crypt(3) (libxcrypt), which the registry's htpasswd
    auth accepts; no Python bcrypt package or htpasswd binary is needed."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(b"$2b$", 5, None, 0)
    hashed: bytes = lib.crypt(password.encode(), salt)
    assert hashed.startswith(b"$2b$05$"), hashed
    return hashed.decode()


def _unavailable(what: str) -> None:
    message = f"{what} is not available; install it with `bash .ci/setup`"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def run_registry(root: Path, auth_yaml: str) -> Iterator[str]:
    """A docker-registry of our own on a free localhost port, with ``auth_yaml``."""
    if not os.access(REGISTRY_BIN, os.X_OK):
        _unavailable(REGISTRY_BIN)
    address = f"127.0.0.1:{free_port()}"
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: {address}\n{auth_yaml}"
    )
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=log)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                socket.create_connection(tuple(address.split(":")), timeout=1).close()  # type: ignore[arg-type]
                break
            if process.poll() is not None:
                raise AssertionError((root / "registry.log").read_text())
            time.sleep(0.1)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


class TokenServer:
    """A token server in Docker's token auth scheme: checks basic credentials and issues an RS256
    JWT carrying an x5c certificate the registry trusts (its rootcertbundle)."""

    issuer, service = "bt-test-issuer", "bt-test-service"

    def __init__(self, root: Path, users: dict[str, str]):
        self.users = users
        self.key, self.cert = root / "token.key", root / "token.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=bt-test-token", "-keyout", self.key, "-out", self.cert],
            check=True, capture_output=True,
        )  # fmt: skip
        der = subprocess.run(
            ["openssl", "x509", "-in", self.cert, "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        self.x5c = base64.b64encode(der).decode()
        self.requests: list[tuple[str, dict[str, list[str]], str | None]] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def token(self, user: str, scopes: list[str]) -> str:
        now = int(time.time())
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {
            "iss": self.issuer, "sub": user, "aud": self.service, "exp": now + 300,
            "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access,
        }  # fmt: skip
        signing_input = f"{_b64url(json.dumps(header))}.{_b64url(json.dumps(claims))}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.key],
            input=signing_input.encode(), check=True, capture_output=True,
        ).stdout  # fmt: skip
        return f"{signing_input}.{_b64url(signature)}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                authorization = self.headers.get("Authorization")
                server.requests.append(("GET", query, authorization))
                user = None
                if authorization:
                    pair = base64.b64decode(authorization.split(" ", 1)[1]).decode()
                    name, _, password = pair.partition(":")
                    if server.users.get(name) != password:
                        self.send_response(401)
                        self.end_headers()
                        return
                    user = name
                scopes = query.get("scope", []) if user else []
                body = json.dumps({"token": server.token(user or "", scopes)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def _b64url(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


Handle = Callable[[str, str, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


@contextlib.contextmanager
def fake_registry(handle: Handle, host: str = "127.0.0.1") -> Iterator[str]:
    """An http.server answering with ``handle(method, path, headers, body)``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, payload = handle(self.command, self.path, dict(self.headers), body)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = do_PUT = do_POST = answer

    server = http.server.ThreadingHTTPServer((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST}).encode()


def manifest_answer(body: bytes = MANIFEST) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": DOCKER_MANIFEST, "Docker-Content-Digest": sha256_digest(body)}
    return 200, headers, body


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry with htpasswd auth: alice / PASSWORD."""
    root = tmp_path_factory.mktemp("basic-registry")
    (root / "htpasswd").write_text(f"{USER}:{bcrypt_hash(PASSWORD)}\n")
    auth = f"auth:\n  htpasswd:\n    realm: bt-test\n    path: {root / 'htpasswd'}\n"
    with run_registry(root, auth) as address:
        yield address


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TokenServer]]:
    """A registry with token auth, and the token server it trusts (alice / PASSWORD)."""
    if shutil.which("openssl") is None:
        _unavailable("openssl")
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


# -- references --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000/whisperx/base@sha256:" + "a" * 64,
         Reference("127.0.0.1:5000", "whisperx/base", None, "sha256:" + "a" * 64)),
        ("127.0.0.1:5000/whisperx/base:runtime", Reference("127.0.0.1:5000", "whisperx/base", "runtime", None)),
        ("localhost/x:1.0", Reference("localhost", "x", "1.0", None)),
        ("ghcr.io/org/img:v1@sha256:" + "b" * 64, Reference("ghcr.io", "org/img", "v1", "sha256:" + "b" * 64)),
        ("ubuntu", Reference("docker.io", "library/ubuntu", None, None)),
        ("org/img:tag", Reference("docker.io", "org/img", "tag", None)),
        ("[::1]:5000/a/b", Reference("[::1]:5000", "a/b", None, None)),
    ],
)  # fmt: skip
def test_parse_reference_normalizes_like_docker(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1:5000/Upper/case", "repository 'Upper/case' must be lower-case path components"),
        ("127.0.0.1:5000/a:bad tag", "bad tag 'bad tag'"),
        ("127.0.0.1:5000/a@sha256:short", "bad digest 'sha256:short'"),
    ],
)
def test_parse_reference_rejects_invalid_references(text: str, message: str) -> None:
    with pytest.raises(BtError) as err:
        parse_reference(text)
    assert message in err.value.message


def test_reference_renders_back_to_its_text() -> None:
    text = "127.0.0.1:5000/whisperx/base:runtime@sha256:" + "c" * 64
    assert str(parse_reference(text)) == text
    assert parse_reference(text).at(tag="x") == Reference("127.0.0.1:5000", "whisperx/base", "x")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True), ("localhost:5000", True), ("127.0.0.1:5000", True),
        ("127.8.9.10", True), ("[::1]:5000", True), ("::1", True),
        ("registry.example.com", False), ("10.0.0.1:5000", False), ("[fd00::2]:5000", False),
        ("localhost.example.com", False),
    ],
)  # fmt: skip
def test_plain_http_only_for_this_machine(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_credentials_never_show_their_secrets() -> None:
    creds = Credentials("alice", PASSWORD, "identity-token-secret")
    assert PASSWORD not in repr(creds) and "identity-token-secret" not in repr(creds)
    assert repr(creds) == "Credentials(username='alice')"


# -- the test registry (no auth) ---------------------------------------------------------------


def test_manifests_and_blobs_round_trip_through_the_real_registry(
    registry: str, engine: str, docker_cli: str
) -> None:
    repo = f"{registry}/bt-registry-test/{uuid.uuid4().hex[:12]}"
    digest = push_scratch(engine, f"{repo}:arm64", "linux/arm64")
    client = RegistryClient()

    found = client.head_manifest(f"{repo}:arm64")
    media_type, body, got = client.get_manifest(f"{repo}@{digest}")
    assert found == Descriptor(DOCKER_MANIFEST, digest, len(body))
    assert (media_type, got) == (DOCKER_MANIFEST, digest)
    config_digest = json.loads(body)["config"]["digest"]
    config = json.loads(client.get_blob(repo, config_digest))
    assert (config["os"], config["architecture"]) == ("linux", "arm64")

    assert client.put_manifest(f"{repo}:copy", media_type, body) == digest
    assert client.manifest_digest(f"{repo}:copy") == digest


def test_missing_manifests_are_none_on_head_and_an_error_on_get(registry: str) -> None:
    client = RegistryClient()
    repo = f"{registry}/bt-registry-test/never-pushed-{uuid.uuid4().hex[:8]}"
    assert client.head_manifest(f"{repo}:nope") is None
    assert client.manifest_digest(f"{repo}@sha256:{'0' * 64}") is None
    with pytest.raises(BtError) as err:
        client.get_manifest(f"{repo}:nope")
    assert err.value.message == f"manifest {repo}:nope not found in the registry"


def test_putting_a_manifest_whose_children_are_missing_reports_the_registry_words(
    registry: str,
) -> None:
    missing = "sha256:" + "1" * 64
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": missing, "size": 10,
             "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    }  # fmt: skip
    ref = f"{registry}/bt-registry-test/lists:broken"
    with pytest.raises(BtError) as err:
        RegistryClient().put_manifest(ref, index["mediaType"], json.dumps(index).encode())  # type: ignore[arg-type]
    assert err.value.message.startswith(f"PUT {ref}: registry answered 400 Bad Request: ")
    assert "MANIFEST_BLOB_UNKNOWN" in err.value.message or "MANIFEST_UNKNOWN" in err.value.message


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


# -- faults a real registry cannot be made to show ---------------------------------------------


def test_transient_faults_are_retried_with_backoff() -> None:
    calls: list[str] = []

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        calls.append(method)
        return (503, {}, b"") if len(calls) < 3 else manifest_answer()

    with fake_registry(handle) as address:
        client = RegistryClient(retry_delay=0.01)
        assert client.manifest_digest(f"{address}/x:y") == sha256_digest(MANIFEST)
    assert calls == ["HEAD", "HEAD", "HEAD"]


def test_a_registry_that_keeps_failing_is_unavailable_after_three_attempts() -> None:
    calls: list[str] = []

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        calls.append(path)
        return 502, {}, b""

    with fake_registry(handle) as address, pytest.raises(RegistryUnavailable) as err:
        RegistryClient(retry_delay=0.01).get_manifest(f"{address}/x:y")
    assert isinstance(err.value, BtError) and isinstance(err.value, TransientError)
    assert (
        str(err.value) == f"registry {address} is unavailable: 502 Bad Gateway (after 3 attempts)"
    )
    assert calls == ["/v2/x/manifests/y"] * 3


def test_an_unreachable_registry_is_unavailable() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryUnavailable) as err:
        RegistryClient(retry_delay=0.01).head_manifest(f"{address}/x:y")
    assert str(err.value) == (
        f"registry {address} is unavailable: Connection refused (after 3 attempts)"
    )


def test_a_registry_confirming_another_digest_than_the_bytes_sent_is_refused() -> None:
    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        return 201, {"Docker-Content-Digest": "sha256:" + "9" * 64}, b""

    with fake_registry(handle) as address, pytest.raises(BtError) as err:
        RegistryClient().put_manifest(f"{address}/x:y", DOCKER_MANIFEST, MANIFEST)
    assert str(err.value) == (
        f"registry stored {address}/x:y as sha256:{'9' * 64}, but the bytes sent are "
        f"{sha256_digest(MANIFEST)}"
    )


def test_put_manifest_sends_the_media_type_as_content_type() -> None:
    seen: list[tuple[str, str, bytes]] = []

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        seen.append((path, headers["Content-Type"], body))
        return 201, {"Docker-Content-Digest": sha256_digest(body)}, b""

    with fake_registry(handle) as address:
        digest = RegistryClient().put_manifest(f"{address}/a/b:t", DOCKER_MANIFEST, MANIFEST)
    assert digest == sha256_digest(MANIFEST)
    assert seen == [("/v2/a/b/manifests/t", DOCKER_MANIFEST, MANIFEST)]


def test_manifest_bytes_that_do_not_match_the_digest_asked_for_are_refused() -> None:
    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        return manifest_answer(b'{"schemaVersion": 2, "tampered": true}')

    ref = f"@{sha256_digest(MANIFEST)}"
    with fake_registry(handle) as address, pytest.raises(BtError) as err:
        RegistryClient().get_manifest(f"{address}/x{ref}")
    assert "registry sent a manifest for" in str(err.value)


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


def _non_loopback_address() -> str | None:
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            address = str(info[4][0])
            if not is_loopback(address):
                return address
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        address = str(sock.getsockname()[0])
        return None if is_loopback(address) else address
    return None


def test_other_hosts_get_https_unless_marked_insecure() -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        return manifest_answer()

    with fake_registry(handle, host=address) as registry:
        with pytest.raises(BtError) as err:
            RegistryClient(timeout=5).head_manifest(f"{registry}/x:y")
        assert str(err.value).startswith(f"TLS with {registry} failed")
        assert "mark it insecure in .cache-spec" in str(err.value)
        insecure = RegistryClient([registry]).manifest_digest(f"{registry}/x:y")
    assert insecure == sha256_digest(MANIFEST)
