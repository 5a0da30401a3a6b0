"""A small client for the registry HTTP API (the OCI distribution spec), on the standard library.

It reads and writes manifests, reads blobs and signs in the way the docker CLI does: anonymously
first, then, when the registry answers 401, with the user's docker credentials (basic auth, or a
bearer token fetched from the realm the registry names). Every digest it hands out was checked
against the bytes it describes.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import ipaddress
import json
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlencode, urljoin, urlsplit

from buildtool.errors import BtError, ManifestNotFound, RegistryUnavailable

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
_ACCEPT = ", ".join((*INDEX_TYPES, *IMAGE_MANIFEST_TYPES))

DOCKER_HUB = "docker.io"
_DOCKER_HUB_API = "registry-1.docker.io"
# Docker's reference grammar (distribution/reference): lower-case path components joined by
# '/', separators '.', '_', '__' or runs of '-'; tags up to 128 word characters, '.' and '-'.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_CHALLENGE_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')
# Statuses worth another attempt: the registry or a proxy in front of it hiccuped.
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
# What Go's net/http answers to plain HTTP on a TLS port: the registry speaks HTTPS after all.
_HTTPS_ONLY_ANSWER = b"HTTP request to an HTTPS server"


class Reference(NamedTuple):
    """``registry/repository[:tag][@digest]``, normalized the way Docker does."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/`` in a URL: the digest when known, else the tag."""
        return self.digest or self.tag or "latest"

    def at(self, *, tag: str | None = None, digest: str | None = None) -> Reference:
        return Reference(self.registry, self.repository, tag, digest)

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"


class Descriptor(NamedTuple):
    """What a registry says about a manifest without sending it."""

    media_type: str
    digest: str
    size: int


def parse_reference(text: str) -> Reference:
    """Parse an image reference. Like Docker, the first path part names the registry only when
    it has a '.' or ':' or is ``localhost``; otherwise the image lives on Docker Hub."""
    name, at, digest = text.strip().partition("@")
    if at and not _DIGEST_RE.fullmatch(digest):
        raise BtError(f"invalid image reference {text!r}: bad digest {digest!r}")
    tag: str | None = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        if not _TAG_RE.fullmatch(tag):
            raise BtError(f"invalid image reference {text!r}: bad tag {tag!r}")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not _REPOSITORY_RE.fullmatch(repository):
        raise BtError(
            f"invalid image reference {text!r}: repository {repository!r} must be lower-case "
            "path components"
        )
    return Reference(registry, repository, tag, digest or None)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


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


@dataclass(frozen=True)
class Credentials:
    """A user's credentials for one registry. Secrets are kept out of ``repr``."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    @property
    def basic(self) -> str | None:
        if self.username is None or self.password is None:
            return None
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


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
        attempts: int = 3,
        retry_delay: float = 0.5,
    ):
        self.insecure = frozenset(config_insecure)
        self.docker_config_dir = docker_config_dir
        self.timeout = timeout
        self.attempts = attempts
        self.retry_delay = retry_delay
        self._lock = threading.Lock()
        self._authorization: dict[tuple[str, str], str] = {}
        self._credentials: dict[str, Credentials | None] = {}
        self._https: set[str] = set()  # insecure registries found to speak TLS after all

    # -- the API ---------------------------------------------------------------------------

    def head_manifest(self, ref: str | Reference) -> Descriptor | None:
        """The manifest behind a tag or digest, without its body; None when there is none."""
        r = _as_reference(ref)
        response = self._request("HEAD", r, f"manifests/{r.reference}", {"Accept": _ACCEPT})
        if response.status == 404:
            return None
        self._expect(response, (200,), f"HEAD {r}")
        digest = response.headers.get("docker-content-digest")
        if not digest:
            # The header is optional in the distribution spec: derive it from the body.
            media_type, body, digest = self.get_manifest(r)
            return Descriptor(media_type, digest, len(body))
        media_type = _media_type(response.headers.get("content-type", ""))
        return Descriptor(media_type, digest, int(response.headers.get("content-length") or 0))

    def manifest_digest(self, ref: str | Reference) -> str | None:
        """The digest behind a tag or digest reference, or None when the registry has none."""
        found = self.head_manifest(ref)
        return found.digest if found else None

    def get_manifest(self, ref: str | Reference) -> tuple[str, bytes, str]:
        """(media type, body, digest) of a manifest, the digest checked against the body."""
        r = _as_reference(ref)
        response = self._request("GET", r, f"manifests/{r.reference}", {"Accept": _ACCEPT})
        if response.status == 404:
            raise ManifestNotFound(f"manifest {r} not found in the registry")
        self._expect(response, (200,), f"GET {r}")
        body = response.body
        digest = sha256_digest(body)
        for claimed in (r.digest, response.headers.get("docker-content-digest")):
            if claimed and claimed.startswith("sha256:") and claimed != digest:
                raise BtError(f"registry sent a manifest for {r} whose digest is {digest}")
        media_type = _media_type(response.headers.get("content-type", ""))
        if media_type not in (*IMAGE_MANIFEST_TYPES, *INDEX_TYPES):
            media_type = _declared_media_type(body) or media_type
        return media_type, body, digest

    def get_blob(self, repo_ref: str | Reference, digest: str) -> bytes:
        """A blob of the repository of ``repo_ref``, checked against ``digest``."""
        r = _as_reference(repo_ref).at(digest=digest)
        response = self._request("GET", r, f"blobs/{digest}", {})
        if response.status == 404:
            raise BtError(f"blob {digest} not found in {r.name}")
        self._expect(response, (200,), f"GET blob {digest} of {r.name}")
        if digest.startswith("sha256:") and sha256_digest(response.body) != digest:
            raise BtError(f"registry sent blob {digest} of {r.name} with other content")
        return response.body

    def put_manifest(self, ref: str | Reference, media_type: str, body: bytes) -> str:
        """Put ``body`` at the tag or digest of ``ref``; return its digest once the registry
        confirmed it (``Docker-Content-Digest`` equal to the digest of the bytes sent)."""
        r = _as_reference(ref)
        headers = {"Content-Type": media_type}
        response = self._request("PUT", r, f"manifests/{r.reference}", headers, body, push=True)
        self._expect(response, (200, 201, 202), f"PUT {r}")
        digest = sha256_digest(body)
        confirmed = response.headers.get("docker-content-digest")
        if confirmed and confirmed != digest:
            raise BtError(f"registry stored {r} as {confirmed}, but the bytes sent are {digest}")
        return digest

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
            with self._lock:
                self._authorization[(ref.registry, scope)] = authorization
        if response.status == 401:
            raise self._rejected(ref.registry, _registry_error(response))
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
        """The Authorization header answering a 401's challenge (Docker's token auth spec)."""
        parsed = [_parse_challenge(c) for c in challenges]
        bearer = next((params for kind, params in parsed if kind == "bearer"), None)
        credentials = self._credentials_for(registry)
        if bearer is not None:
            return self._fetch_token(registry, bearer, scope, credentials)
        if any(kind == "basic" for kind, _ in parsed):
            if credentials is None or credentials.basic is None:
                raise self._no_credentials(registry)
            return credentials.basic
        raise BtError(f"registry {registry} asks for an authentication scheme bt does not speak")

    def _fetch_token(
        self, registry: str, challenge: dict[str, str], scope: str, creds: Credentials | None
    ) -> str:
        realm = challenge.get("realm")
        if not realm:
            raise BtError(f"registry {registry} asks for a bearer token but names no realm")
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BtError(f"registry {registry} names an unusable token realm {realm!r}")
        if parts.scheme == "http" and creds is not None and not self._plain_http_ok(parts.netloc):
            raise BtError(
                f"registry {registry} asks for credentials over plain HTTP at {parts.netloc}; "
                "refusing to send them"
            )
        scopes = _union_scopes([scope, *challenge.get("scope", "").split(" ")])
        service = challenge.get("service")
        if creds is not None and creds.identity_token:
            # An OAuth2 refresh token (Docker's token spec, "oauth"): POST, never in the URL.
            form: list[tuple[str, str]] = [
                ("grant_type", "refresh_token"),
                ("refresh_token", creds.identity_token),
                ("client_id", "bt"),
                ("scope", " ".join(scopes)),
            ]
            if service:
                form.append(("service", service))
            method, target, body = "POST", parts.path or "/", urlencode(form).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
        else:
            query: list[tuple[str, str]] = [("scope", s) for s in scopes]
            if service:
                query.insert(0, ("service", service))
            if creds is not None and creds.username:
                query.append(("account", creds.username))
            joined = "&".join(x for x in (parts.query, urlencode(query)) if x)
            method, target, body = "GET", f"{parts.path or '/'}?{joined}", None
            basic = creds.basic if creds is not None else None
            headers = {"Authorization": basic} if basic else {}
        response = self._send(parts.scheme, parts.netloc, method, target, headers, body)
        if response.status in (401, 403):
            raise self._rejected(registry, f"token server answered {response.status}")
        if response.status != 200:
            raise BtError(
                f"token server {parts.netloc} of registry {registry} answered "
                f"{response.status} {response.reason}"
            )
        try:
            data = json.loads(response.body)
            token = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise BtError(f"token server {parts.netloc} of registry {registry} sent no token")
        return f"Bearer {token}"

    def _credentials_for(self, registry: str) -> Credentials | None:
        with self._lock:
            if registry in self._credentials:
                return self._credentials[registry]
        found = self._load_credentials(registry)
        with self._lock:
            self._credentials[registry] = found
        return found

    def _load_credentials(self, registry: str) -> Credentials | None:
        # docker-py reads the docker CLI's config (auths, credsStore, credHelpers) the CLI's way.
        import docker.auth
        import docker.errors

        try:
            if self.docker_config_dir is not None:
                path = self.docker_config_dir / "config.json"
                if not path.is_file():
                    return None
                auth_config = docker.auth.load_config(config_path=str(path))
            else:
                auth_config = docker.auth.load_config()
            entry = docker.auth.resolve_authconfig(auth_config, registry)
        except docker.errors.DockerException as err:
            raise BtError(
                f"cannot read docker credentials for {registry} from {self._config_source()}: "
                f"{type(err).__name__}"
            ) from None
        if not entry:
            return None
        lowered = {str(k).lower(): v for k, v in entry.items()}
        return Credentials(
            username=lowered.get("username") or None,
            password=lowered.get("password") or None,
            identity_token=lowered.get("identitytoken") or None,
        )

    def _config_source(self) -> str:
        if self.docker_config_dir is not None:
            return str(self.docker_config_dir / "config.json")
        if os.environ.get("DOCKER_CONFIG"):
            return str(Path(os.environ["DOCKER_CONFIG"]) / "config.json")
        return "~/.docker/config.json"

    def _no_credentials(self, registry: str) -> BtError:
        return BtError(
            f"registry {registry} needs credentials and {self._config_source()} has none for "
            f"it; run `docker login {registry}`"
        )

    def _rejected(self, registry: str, answer: str) -> BtError:
        creds = self._credentials_for(registry)
        if creds is None:
            return self._no_credentials(registry)
        who = f"user {creds.username!r}" if creds.username else "the identity token"
        return BtError(
            f"registry {registry} rejected the credentials of {who} from "
            f"{self._config_source()} ({answer}); run `docker login {registry}`"
        )

    def _plain_http_ok(self, host: str) -> bool:
        hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return is_loopback(host) or host in self.insecure or hostname in self.insecure

    def _send_to_registry(
        self, registry: str, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> _Response:
        host = _DOCKER_HUB_API if registry == DOCKER_HUB else registry
        with self._lock:
            upgraded = registry in self._https
        scheme = "http" if self._plain_http_ok(host) and not upgraded else "https"
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
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.retry_delay * 2 ** (attempt - 1))
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
                problem = _describe(err)
                continue
            if response.status not in _TRANSIENT_STATUS:
                return response
            problem = f"{response.status} {response.reason}"
        raise RegistryUnavailable(
            f"registry {host} is unavailable: {problem} (after {self.attempts} attempts)"
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
        conn: http.client.HTTPConnection
        if scheme == "https":
            context = ssl.create_default_context()
            if self._plain_http_ok(host):
                # An insecure registry with a self-signed certificate, as Docker allows.
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(host, timeout=self.timeout, context=context)
        else:
            conn = http.client.HTTPConnection(host, timeout=self.timeout)
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            return _Response(
                status=response.status,
                reason=response.reason,
                headers={k.lower(): v for k, v in response.getheaders()},
                challenges=tuple(response.msg.get_all("WWW-Authenticate") or ()),
                body=data,
            )
        finally:
            conn.close()

    def _expect(self, response: _Response, statuses: Sequence[int], what: str) -> None:
        if response.status in statuses:
            return
        raise BtError(f"{what}: registry answered {_registry_error(response)}")


@lru_cache(maxsize=8)
def _shared_client(insecure: tuple[str, ...]) -> RegistryClient:
    return RegistryClient(insecure)


def manifest_digest(ref: str, insecure: Sequence[str] = ()) -> str | None:
    """The digest behind ``ref`` (HEAD), None when the registry has no such manifest."""
    return _shared_client(tuple(sorted(insecure))).manifest_digest(ref)


def _as_reference(ref: str | Reference) -> Reference:
    return ref if isinstance(ref, Reference) else parse_reference(ref)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip()


def _declared_media_type(body: bytes) -> str | None:
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None
    value = data.get("mediaType") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="...",scope="..."`` -> ("bearer", {realm: ..., ...})."""
    kind, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) or m.group(3) or ""
        for m in _CHALLENGE_PARAM_RE.finditer(rest)
    }
    return kind.lower(), params


def _union_scopes(scopes: Sequence[str]) -> list[str]:
    """``repository:a:pull`` and ``repository:a:push,pull`` -> ``repository:a:pull,push``."""
    actions: dict[str, set[str]] = {}
    for scope in scopes:
        resource, _, wanted = scope.rpartition(":")
        if resource:
            actions.setdefault(resource, set()).update(a for a in wanted.split(",") if a)
    return [f"{resource}:{','.join(sorted(acts))}" for resource, acts in actions.items()]


def _registry_error(response: _Response) -> str:
    """``401 Unauthorized`` or the registry's own words (its JSON ``errors`` list)."""
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
    except (ValueError, KeyError, TypeError, AttributeError):
        return status
    return f"{status}: {'; '.join(words)}" if words else status


def _describe(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return "timed out"
    return getattr(err, "strerror", None) or str(err) or type(err).__name__
