"""Registries for tests: docker-registry processes of our own with htpasswd (basic) or token
(bearer) auth, a token server that signs with openssl, a fake registry (a local http.server) for
what a real registry cannot be made to do on demand, and helpers to push and to write docker
configs. Shared by the registry and merge tests."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import http.client
import http.server
import json
import os
import re
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

from buildtool.registry import DOCKER_MANIFEST, sha256_digest

DOCKER = "/usr/bin/docker"
REGISTRY_BIN = "/usr/bin/docker-registry"
USER, PASSWORD = "alice", "Pa55-w0rd-that-must-never-leak"


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


def push_base(engine: str, ref: str) -> str:
    """Push a base image no engine has seen to ``ref``: the local busybox with a file of its
    own, built on ``engine`` and then removed from it, so every engine pulls it, as a fresh CI
    runner does. (BuildKit 20.10 was seen to match a record's inline cache only on an engine
    that pulled the base for the build, not on one that held it from an earlier pull.)"""
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    with tempfile.TemporaryDirectory() as context:
        Path(context, "Dockerfile").write_text("FROM bt-test/busybox:latest\nCOPY id.txt /\n")
        Path(context, "id.txt").write_text(f"{ref} {uuid.uuid4().hex}\n")
        for args in (["build", "-q", "--network=none", "-t", ref, context], ["push", ref]):
            done = subprocess.run(
                [DOCKER, "-H", engine, *args], env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
    subprocess.run([DOCKER, "-H", engine, "rmi", ref], capture_output=True, check=False)
    found = re.search(r"digest: (sha256:[0-9a-f]{64})", done.stdout)
    assert found, done.stdout
    return found.group(1)


def delete_manifest(image: str) -> None:
    """DELETE a manifest by digest (the test registry allows deletes)."""
    host, _, rest = image.partition("/")
    repository, _, digest = rest.partition("@")
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request("DELETE", f"/v2/{repository}/manifests/{digest}")
    status = conn.getresponse().status
    conn.close()
    assert status == 202, status


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


def unavailable(what: str) -> None:
    message = f"{what} is not available; install it with `bash .ci/setup`"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def run_registry(root: Path, auth_yaml: str) -> Iterator[str]:
    """A docker-registry of our own on a free localhost port, with ``auth_yaml``."""
    if not os.access(REGISTRY_BIN, os.X_OK):
        unavailable(REGISTRY_BIN)
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
