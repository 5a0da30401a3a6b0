"""A small client for the registry HTTP API (the OCI distribution spec), on the standard library.

It reads and writes manifests and reads blobs, signing in as the docker CLI does (``auth``):
anonymously first, then, when the registry answers 401, with the user's docker credentials.
Every digest it hands out was checked against the bytes it describes.

Retries: a stand-alone command (``bt merge``) retries transient faults under ``retry.py``'s
policy (a few attempts with backoff, bounded in total by ``[retry] max_seconds``). Code the
build scheduler drives passes ``attempts=1``: the client then raises the transient fault at
once (``RegistryUnavailable`` is a ``TransientError``) and the scheduler, running the same
policy, decides whether to try again.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, urljoin, urlsplit

from buildtool.errors import BtError, ManifestNotFound, RegistryUnavailable
from buildtool.registry import auth, connections
from buildtool.registry.reference import (
    DOCKER_HUB,
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    MANIFEST_ACCEPT,
    Descriptor,
    Reference,
    as_reference,
    declared_media_type,
    is_sha256,
    media_type_of,
    sha256_digest,
    shown,
)
from buildtool.retry import FaultClock, RetryPolicy
from buildtool.secrets import conceal, scrub

STANDALONE_ATTEMPTS = 3
_DOCKER_HUB_API = "registry-1.docker.io"
# Statuses worth another attempt: the registry or a proxy in front of it hiccuped.
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
# What Go's net/http answers to plain HTTP on a TLS port: the registry speaks HTTPS after all.
_HTTPS_ONLY_ANSWER = b"HTTP request to an HTTPS server"


def is_loopback(host: str) -> bool:
    """Whether ``host[:port]`` is this machine: the hosts Docker trusts over plain HTTP."""
    hostname = host
    if host.startswith("["):
        hostname = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        hostname = host.split(":", 1)[0]
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


# Manifests and blobs by digest, fetched once per process: (credentials, registry, repository,
# kind, digest) -> (media type, body). Small ones only (manifests, image configs), and a bounded
# number: a merge reads again what the remote action cache fetched.
_ContentKey = tuple[str, str, str, str, str]
_CONTENT: dict[_ContentKey, tuple[str, bytes]] = {}
_KEPT_MAX = 20_000
_KEPT_MAX_BYTES = 256 * 1024


class _Response(NamedTuple):
    status: int
    reason: str
    headers: Mapping[str, str]  # lower-cased names
    challenges: tuple[str, ...]  # every WWW-Authenticate header
    body: bytes


class RegistryClient:
    """Talks to any number of registries; safe to share between threads.

    ``config_insecure`` lists registries (``host[:port]``) reached over plain HTTP besides this
    machine's own. Credentials come from ``docker_config_dir/config.json``, else from
    ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``, read only when a registry
    asks for them.
    """

    def __init__(
        self,
        config_insecure: Sequence[str] = (),
        docker_config_dir: Path | None = None,
        *,
        timeout: float = 60.0,
        attempts: int | None = None,
        retry_delay: float = 0.5,
        retry: RetryPolicy | None = None,
    ):
        self.insecure = frozenset(config_insecure)
        self.credentials = auth.DockerCredentials(docker_config_dir)
        # Attempts at most: 1 under the scheduler (which retries), else as many as `bt build
        # --retries` gives a build by default; all within the policy's time bound.
        self.attempts = attempts or STANDALONE_ATTEMPTS
        policy = retry or RetryPolicy(base_delay=retry_delay)
        policy = replace(policy, max_retries=self.attempts - 1)
        # No one request outlasts the retry bound: a registry that accepts and never answers
        # is down as surely as one that refuses.
        self.timeout = min(timeout, policy.max_seconds)
        self.faults = FaultClock(policy)
        self._lock = threading.Lock()
        self._authorization: dict[tuple[str, str], str] = {}
        self._https: set[str] = set()  # insecure registries found to speak TLS after all

    # -- the API ---------------------------------------------------------------------------

    def head_manifest(self, ref: str | Reference) -> Descriptor | None:
        """The manifest behind a tag or digest, without its body; None when there is none. A
        manifest this process fetched by its digest is not asked for again."""
        r = as_reference(ref)
        kept = self._kept(r, "manifest", r.digest)
        if kept is not None:
            return Descriptor(kept[0], r.digest or "", len(kept[1]))
        response = self._request("HEAD", r, f"manifests/{r.reference}", {"Accept": MANIFEST_ACCEPT})
        if response.status == 404:
            return None
        self._expect(response, (200,), f"HEAD {r}")
        digest = response.headers.get("docker-content-digest")
        if not digest:
            # The header is optional in the distribution spec: derive it from the body.
            media_type, body, digest = self.get_manifest(r)
            return Descriptor(media_type, digest, len(body))
        _check_digest_header(r, digest)
        media_type = media_type_of(response.headers.get("content-type", ""))
        return Descriptor(media_type, digest, int(response.headers.get("content-length") or 0))

    def manifest_digest(self, ref: str | Reference) -> str | None:
        """The digest behind a tag or digest reference, or None when the registry has none."""
        found = self.head_manifest(ref)
        return found.digest if found else None

    def get_manifest(self, ref: str | Reference) -> tuple[str, bytes, str]:
        """(media type, body, digest) of a manifest, the digest checked against the body. What
        a digest names never changes: asked again in this process, it is not fetched again."""
        r = as_reference(ref)
        kept = self._kept(r, "manifest", r.digest)
        if kept is not None:
            return kept[0], kept[1], r.digest or ""
        found = self._fetch_manifest(r)
        self._keep(r, "manifest", found[2], (found[0], found[1]))
        return found

    def _fetch_manifest(self, r: Reference) -> tuple[str, bytes, str]:
        response = self._request("GET", r, f"manifests/{r.reference}", {"Accept": MANIFEST_ACCEPT})
        if response.status == 404:
            raise ManifestNotFound(f"manifest {r} not found in the registry")
        self._expect(response, (200,), f"GET {r}")
        body = response.body
        digest = sha256_digest(body)
        if r.digest and r.digest.startswith("sha256:") and r.digest != digest:
            raise BtError(
                f"registry {r.registry} was asked for {r.digest} of {r.name} and served a "
                f"manifest whose digest is {digest}"
            )
        claimed = response.headers.get("docker-content-digest")
        if claimed:
            _check_digest_header(r, claimed)
            if claimed != digest:
                raise BtError(
                    f"registry {r.registry} said the manifest of {r} is {claimed}, but the "
                    f"bytes it served have the digest {digest}"
                )
        media_type = media_type_of(response.headers.get("content-type", ""))
        if media_type not in (*IMAGE_MANIFEST_TYPES, *INDEX_TYPES):
            media_type = declared_media_type(body) or media_type
        return media_type, body, digest

    def get_blob(self, repo_ref: str | Reference, digest: str) -> bytes:
        """A blob of the repository of ``repo_ref``, checked against ``digest``."""
        r = as_reference(repo_ref).at(digest=digest)
        kept = self._kept(r, "blob", digest)
        if kept is not None:
            return kept[1]
        response = self._request("GET", r, f"blobs/{digest}", {})
        if response.status == 404:
            raise BtError(f"blob {digest} not found in {r.name}")
        self._expect(response, (200,), f"GET blob {digest} of {r.name}")
        if digest.startswith("sha256:") and sha256_digest(response.body) != digest:
            raise BtError(f"registry sent blob {digest} of {r.name} with other content")
        self._keep(r, "blob", digest, ("", response.body))
        return response.body

    def _content_key(self, r: Reference, kind: str, digest: str | None) -> _ContentKey | None:
        """Where content by digest is kept: per repository (access is granted per repository)
        and per source of credentials."""
        if not digest or not digest.startswith("sha256:"):
            return None
        return (str(self.credentials.config_dir), r.registry, r.repository, kind, digest)

    def _kept(self, r: Reference, kind: str, digest: str | None) -> tuple[str, bytes] | None:
        key = self._content_key(r, kind, digest)
        return None if key is None else _CONTENT.get(key)

    def _keep(self, r: Reference, kind: str, digest: str, content: tuple[str, bytes]) -> None:
        key = self._content_key(r, kind, digest)
        if key is not None and len(content[1]) <= _KEPT_MAX_BYTES and len(_CONTENT) < _KEPT_MAX:
            _CONTENT[key] = content

    def image_config(self, ref: str | Reference) -> dict[str, Any] | None:
        """The image config behind ``ref`` (os, architecture, labels...); None when ``ref``
        names an index, not one image. Raises ManifestNotFound when there is nothing."""
        media_type, body, _ = self.get_manifest(ref)
        return self.manifest_config(ref, media_type, body)

    def manifest_config(
        self, ref: str | Reference, media_type: str, body: bytes
    ) -> dict[str, Any] | None:
        """``image_config`` of a manifest already fetched (its media type and body)."""
        if media_type not in IMAGE_MANIFEST_TYPES:
            return None
        try:
            config_digest = json.loads(body)["config"]["digest"]
        except (ValueError, KeyError, TypeError, RecursionError) as err:
            raise BtError(f"manifest {ref} has no image config ({err})") from None
        try:
            config = json.loads(self.get_blob(ref, config_digest))
        except (ValueError, RecursionError) as err:
            raise BtError(f"image config {config_digest} of {ref} is not JSON ({err})") from None
        if not isinstance(config, dict):
            raise BtError(f"image config {config_digest} of {ref} is not a JSON object")
        return config

    def manifest_labels(
        self, ref: str | Reference, media_type: str, body: bytes
    ) -> dict[str, str] | None:
        """``config_labels`` of a manifest already fetched (its media type and body)."""
        config = self.manifest_config(ref, media_type, body)
        if config is None:
            return None
        inner = config.get("config")
        labels = inner.get("Labels") if isinstance(inner, dict) else None
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}

    def config_labels(self, ref: str | Reference) -> dict[str, str] | None:
        """The labels in the image config behind ``ref`` (``{}`` when it has none); None when
        ``ref`` names an index, not one image. Raises ManifestNotFound when there is nothing."""
        media_type, body, _ = self.get_manifest(ref)
        return self.manifest_labels(ref, media_type, body)

    def put_manifest(self, ref: str | Reference, media_type: str, body: bytes) -> str:
        """Put ``body`` at the tag or digest of ``ref``; return its digest once the registry
        confirmed it (``Docker-Content-Digest`` equal to the digest of the bytes sent)."""
        r = as_reference(ref)
        headers = {"Content-Type": media_type}
        response = self._request("PUT", r, f"manifests/{r.reference}", headers, body, push=True)
        self._expect(response, (200, 201, 202), f"PUT {r}")
        digest = sha256_digest(body)
        confirmed = response.headers.get("docker-content-digest")
        if confirmed and confirmed != digest:
            raise BtError(f"registry stored {r} as {confirmed}, but the bytes sent are {digest}")
        return digest

    def head_blob(self, ref: str | Reference, digest: str) -> int | None:
        """The size of blob ``digest`` in the repository of ``ref``; None when it has none."""
        r = as_reference(ref).at(digest=digest)
        response = self._request("HEAD", r, f"blobs/{digest}", {})
        if response.status == 404:
            return None
        self._expect(response, (200,), f"HEAD blob {digest} of {r.name}")
        served = response.headers.get("docker-content-digest")
        if served and served != digest:
            raise BtError(f"registry answered for blob {digest} of {r.name} with {served}")
        return int(response.headers.get("content-length") or 0)

    def start_upload(
        self, ref: str | Reference, mount: tuple[str, str] | None = None
    ) -> str | None:
        """Open a blob upload to the repository of ``ref`` and return its URL; with ``mount``
        (digest, another repository of the same registry) the registry may mount that blob
        instead (cross-repository mount): then None."""
        r = as_reference(ref)
        query = ""
        if mount:
            query = f"?mount={quote(mount[0], safe=':')}&from={quote(mount[1], safe='/')}"
        headers = {"Content-Length": "0"}
        response = self._request("POST", r, f"blobs/uploads/{query}", headers, b"", push=True)
        if mount and response.status == 201:
            return None
        self._expect(response, (202,), f"POST blob upload to {r.name}")
        location = response.headers.get("location")
        if not location:
            raise BtError(f"registry {r.registry} opened an upload to {r.name} without a Location")
        scheme, host = self.origin(r.registry)
        return urljoin(f"{scheme}://{host}/v2/{r.repository}/blobs/uploads/", location)

    def origin(self, registry: str) -> tuple[str, str]:
        """(scheme, host) requests to ``registry`` go to."""
        host = _DOCKER_HUB_API if registry == DOCKER_HUB else registry
        with self._lock:
            upgraded = registry in self._https
        return ("http" if self._plain_http_ok(host) and not upgraded else "https"), host

    def authorization(self, ref: Reference, push: bool) -> str | None:
        """The Authorization header a request for ``ref`` was last answered with, if any."""
        return self._cached_authorization(ref.registry, ref.repository, push)

    def connection(self, scheme: str, host: str) -> http.client.HTTPConnection:
        """A connection to ``host``; TLS unverified only for registries trusted as insecure."""
        if scheme != "https":
            return http.client.HTTPConnection(host, timeout=self.timeout)
        context = ssl.create_default_context()
        if self._plain_http_ok(host):
            # An insecure registry with a self-signed certificate, as Docker allows.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(host, timeout=self.timeout, context=context)

    # -- HTTP and auth ---------------------------------------------------------------------

    def _request(
        self,
        method: str,
        ref: Reference,
        path: str,
        headers: dict[str, str],
        body: bytes | None = None,
        *,
        push: bool = False,
    ) -> _Response:
        """One API call, signing in when the registry answers 401 (once per scope)."""
        scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
        target = f"/v2/{ref.repository}/{path}"
        authorization = self._cached_authorization(ref.registry, ref.repository, push)
        for attempt in range(2):
            sent = {**headers, "Authorization": authorization} if authorization else headers
            response = self._send_to_registry(ref.registry, method, target, sent, body)
            if response.status != 401 or attempt:
                break
            authorization = self._authorize(ref.registry, response.challenges, scope)
            conceal(authorization)
            with self._lock:
                self._authorization[(ref.registry, scope)] = authorization
        if response.status == 401:
            raise self.credentials.rejected(ref.registry, _registry_error(response))
        return response

    def _cached_authorization(self, registry: str, repository: str, push: bool) -> str | None:
        pull = (registry, f"repository:{repository}:pull")
        push_key = (registry, f"repository:{repository}:pull,push")
        with self._lock:
            if push:
                return self._authorization.get(push_key)
            # A push token also grants pull; a fresher pull token comes first.
            return self._authorization.get(pull) or self._authorization.get(push_key)

    def _authorize(self, registry: str, challenges: Sequence[str], scope: str) -> str:
        def send(request: auth.TokenRequest) -> tuple[int, str, bytes]:
            response = self._send(*request)
            return response.status, response.reason, response.body

        return auth.authorization(
            registry, challenges, scope, self.credentials, send, self._plain_http_ok
        )

    def _plain_http_ok(self, host: str) -> bool:
        hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return is_loopback(host) or host in self.insecure or hostname in self.insecure

    def _send_to_registry(
        self, registry: str, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> _Response:
        scheme, host = self.origin(registry)
        response = self._send(scheme, host, method, target, headers, body, follow=True)
        if scheme == "http" and response.status == 400 and _HTTPS_ONLY_ANSWER in response.body:
            with self._lock:
                self._https.add(registry)
            response = self._send("https", host, method, target, headers, body, follow=True)
        return response

    def _send(
        self,
        scheme: str,
        host: str,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | None,
        *,
        follow: bool = False,
    ) -> _Response:
        """Send with retries for transient faults, following redirects (blob storage often
        lives elsewhere); credentials never follow a redirect to another host."""
        origin = (scheme, host)
        for _ in range(5):
            response = self._send_with_retries(scheme, host, method, target, headers, body)
            location = response.headers.get("location")
            if not follow or response.status not in _REDIRECT_STATUS or not location:
                return response
            parts = urlsplit(urljoin(f"{scheme}://{host}{target}", location))
            scheme, host = parts.scheme, parts.netloc
            target = f"{parts.path or '/'}{'?' + parts.query if parts.query else ''}"
            if (scheme, host) != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if response.status == 303:
                method, body = "GET", None
        raise BtError(f"too many redirects from {origin[1]}")

    def _send_with_retries(
        self,
        scheme: str,
        host: str,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | None,
    ) -> _Response:
        """One request under the retry policy (``retry.py``): with ``attempts=1`` (under the
        scheduler) a transient fault is raised at once, for the scheduler to retry."""
        from buildtool.retry import call_with_retries

        def once() -> _Response:
            return self._send_classified(scheme, host, method, target, headers, body)

        if self.attempts == 1:
            return once()
        return call_with_retries(once, self.faults)

    def _send_classified(
        self,
        scheme: str,
        host: str,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | None,
    ) -> _Response:
        """One request; a transient fault (``_TRANSIENT_STATUS``, a connection fault, a timeout)
        raises RegistryUnavailable naming the registry."""
        source = f"registry {host}"
        try:
            response = self._send_once(scheme, host, method, target, headers, body)
        except ssl.SSLError as err:
            raise BtError(
                f"TLS with {host} failed ({err.reason or err}); if it serves plain HTTP, "
                "mark it insecure in .cache-spec ([registry] insecure = true)"
            ) from None
        except socket.gaierror:
            raise BtError(f"cannot resolve registry host {host}") from None
        except (OSError, http.client.HTTPException) as err:
            message = f"registry {host} is unavailable: {_describe(err)}"
            raise RegistryUnavailable(message, source=source) from None
        if response.status not in _TRANSIENT_STATUS:
            return response
        raise RegistryUnavailable(
            f"registry {host} is unavailable: {response.status} {response.reason}",
            source=source,
            retry_after=_retry_after(response.headers.get("retry-after")),
        )

    def _send_once(
        self,
        scheme: str,
        host: str,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | None,
    ) -> _Response:
        """One request on a persistent connection of the process's pool (``connections``)."""
        origin = (scheme, host, not self._plain_http_ok(host))

        def send(conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
            conn.request(method, target, body=body, headers=headers)
            return conn.getresponse()

        response, data = connections.request(connections.SHARED, origin, self.timeout, send)
        return _Response(
            status=response.status,
            reason=response.reason,
            headers={k.lower(): v for k, v in response.getheaders()},
            challenges=tuple(response.msg.get_all("WWW-Authenticate") or ()),
            body=data,
        )

    def _expect(self, response: _Response, statuses: Sequence[int], what: str) -> None:
        if response.status in statuses:
            return
        raise BtError(f"{what}: registry answered {_registry_error(response)}")


@lru_cache(maxsize=8)
def _shared_client(insecure: tuple[str, ...]) -> RegistryClient:
    return RegistryClient(insecure)


def _check_digest_header(r: Reference, digest: str) -> None:
    """Invariant 11: a digest a registry states is checked where it is read (bt records it, and
    builds and tags by it)."""
    if not is_sha256(digest):
        raise BtError(
            f"registry {r.registry} answered for {r} with the digest {shown(digest)}, not sha256: "
            "and 64 lower-case hex digits"
        )


def manifest_digest(ref: str, insecure: Sequence[str] = ()) -> str | None:
    """The digest behind ``ref`` (HEAD), None when the registry has no such manifest."""
    return _shared_client(tuple(sorted(insecure))).manifest_digest(ref)


def _registry_error(response: _Response) -> str:
    """``401 Unauthorized`` or the registry's own words (its JSON ``errors`` list), without the
    credentials a registry may echo back (its detail may quote the Authorization header)."""
    return scrub(_registry_words(response))


def _registry_words(response: _Response) -> str:
    status = f"{response.status} {response.reason}".strip()
    try:
        errors = json.loads(response.body)["errors"]
        words = []
        for error in errors:
            text = f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
            detail = error.get("detail")
            if isinstance(detail, str) and detail and len(detail) < 200:
                text += f" ({detail})"
            words.append(text)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return status
    return f"{status}: {'; '.join(words)}" if words else status


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return "timed out"
    return getattr(err, "strerror", None) or str(err) or type(err).__name__
