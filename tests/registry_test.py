"""The registry client against the real test registry (no auth), and against a fake registry (a
local http.server) only for what a real registry cannot be made to do on demand: 5xx answers,
wrong digests, plain HTTP on another host. Signing in is in registry_auth_test.py."""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from typing import Any

import pytest
from registries import MANIFEST, fake_registry, free_port, manifest_answer, push_scratch

from buildtool.errors import BtError, RegistryUnavailable, TransientError
from buildtool.registry import (
    DOCKER_MANIFEST,
    Descriptor,
    RegistryClient,
    is_loopback,
    sha256_digest,
)

pytestmark = pytest.mark.registry


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
        str(err.value)
        == f"registry {address} is unavailable: 502 Bad Gateway (gave up after 3 attempts)"
    )
    assert calls == ["/v2/x/manifests/y"] * 3


def test_with_one_attempt_a_failing_registry_is_unavailable_at_once() -> None:
    """What the build scheduler asks for: it owns the one retry layer."""
    calls: list[str] = []

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        calls.append(method)
        return 503, {}, b""

    with fake_registry(handle) as address, pytest.raises(RegistryUnavailable) as err:
        RegistryClient(attempts=1, retry_delay=0.01).head_manifest(f"{address}/x:y")
    assert isinstance(err.value, TransientError)
    assert str(err.value) == f"registry {address} is unavailable: 503 Service Unavailable"
    assert calls == ["HEAD"]


def test_an_unreachable_registry_is_unavailable() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryUnavailable) as err:
        RegistryClient(retry_delay=0.01).head_manifest(f"{address}/x:y")
    assert str(err.value) == (
        f"registry {address} is unavailable: Connection refused (gave up after 3 attempts)"
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
    tampered = b'{"schemaVersion": 2, "tampered": true}'

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        return manifest_answer(tampered)

    ref = f"@{sha256_digest(MANIFEST)}"
    with fake_registry(handle) as address, pytest.raises(BtError) as err:
        RegistryClient().get_manifest(f"{address}/x{ref}")
    assert str(err.value) == (
        f"registry {address} was asked for {sha256_digest(MANIFEST)} of {address}/x and served "
        f"a manifest whose digest is {sha256_digest(tampered)}"
    )


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
