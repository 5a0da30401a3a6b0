"""Signing in to a registry the way the docker CLI does (Docker's token auth specification).

Credentials come from the user's docker config (``auths``, ``credsStore``, ``credHelpers``),
read only when a registry answers 401. A ``Basic`` challenge gets them as they are; a ``Bearer``
challenge sends them to the token server the registry names, which answers with a token. This
module decides what to send; the client sends it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlencode, urlsplit

from buildtool.errors import BtError
from buildtool.secrets import conceal, scrub

_CHALLENGE_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


@dataclass(frozen=True)
class Credentials:
    """A user's credentials for one registry. Secrets are kept out of ``repr``."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Never printed, even when a registry echoes them back in an error (``secrets.scrub``).
        basic = self.basic
        encoded = basic.removeprefix("Basic ") if basic else None
        conceal(self.password, self.identity_token, basic, encoded)

    @property
    def basic(self) -> str | None:
        if self.username is None or self.password is None:
            return None
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


class TokenRequest(NamedTuple):
    """One call to a token server."""

    scheme: str
    host: str
    method: str
    target: str
    headers: dict[str, str]
    body: bytes | None


# Sends a token request; answers (status, reason, body).
SendToken = Callable[[TokenRequest], tuple[int, str, bytes]]


class DockerCredentials:
    """The user's docker credentials, read once per registry; safe to share between threads.

    From ``config_dir/config.json`` when given, else ``$DOCKER_CONFIG/config.json`` or
    ``~/.docker/config.json``."""

    def __init__(self, config_dir: Path | None = None):
        self.config_dir = config_dir
        self._lock = threading.Lock()
        self._found: dict[str, Credentials | None] = {}

    def get(self, registry: str) -> Credentials | None:
        with self._lock:
            if registry in self._found:
                return self._found[registry]
        found = self._load(registry)
        with self._lock:
            self._found[registry] = found
        return found

    def _load(self, registry: str) -> Credentials | None:
        # docker-py reads the docker CLI's config (auths, credsStore, credHelpers) the CLI's way.
        import docker.auth
        import docker.errors

        try:
            if self.config_dir is not None:
                path = self.config_dir / "config.json"
                if not path.is_file():
                    return None
                auth_config = docker.auth.load_config(config_path=str(path))
            else:
                auth_config = docker.auth.load_config()
            entry = docker.auth.resolve_authconfig(auth_config, registry)
        except docker.errors.DockerException as err:
            raise BtError(
                f"cannot read docker credentials for {registry} from {self.source()}: "
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

    def source(self) -> str:
        if self.config_dir is not None:
            return str(self.config_dir / "config.json")
        if os.environ.get("DOCKER_CONFIG"):
            return str(Path(os.environ["DOCKER_CONFIG"]) / "config.json")
        return "~/.docker/config.json"

    def missing(self, registry: str) -> BtError:
        return BtError(
            f"registry {registry} needs credentials and {self.source()} has none for "
            f"it; run `docker login {registry}`"
        )

    def rejected(self, registry: str, answer: str) -> BtError:
        creds = self.get(registry)
        if creds is None:
            return self.missing(registry)
        who = f"user {creds.username!r}" if creds.username else "the identity token"
        return BtError(
            f"registry {registry} rejected the credentials of {who} from "
            f"{self.source()} ({scrub(answer)}); run `docker login {registry}`"
        )


def authorization(
    registry: str,
    challenges: Sequence[str],
    scope: str,
    credentials: DockerCredentials,
    send: SendToken,
    plain_http_ok: Callable[[str], bool],
) -> str:
    """The Authorization header answering a 401's ``WWW-Authenticate`` challenges."""
    parsed = [parse_challenge(c) for c in challenges]
    bearer = next((params for kind, params in parsed if kind == "bearer"), None)
    creds = credentials.get(registry)
    if bearer is not None:
        request = token_request(registry, bearer, scope, creds, plain_http_ok)
        status, reason, body = send(request)
        if status in (401, 403):
            raise credentials.rejected(registry, f"token server answered {status}")
        return _bearer(registry, request.host, status, reason, body)
    if any(kind == "basic" for kind, _ in parsed):
        if creds is None or creds.basic is None:
            raise credentials.missing(registry)
        return creds.basic
    raise BtError(f"registry {registry} asks for an authentication scheme bt does not speak")


def token_request(
    registry: str,
    challenge: dict[str, str],
    scope: str,
    creds: Credentials | None,
    plain_http_ok: Callable[[str], bool],
) -> TokenRequest:
    """The call that asks the challenge's realm for a token covering ``scope``."""
    realm = challenge.get("realm")
    if not realm:
        raise BtError(f"registry {registry} asks for a bearer token but names no realm")
    parts = urlsplit(realm)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BtError(f"registry {registry} names an unusable token realm {realm!r}")
    if parts.scheme == "http" and creds is not None and not plain_http_ok(parts.netloc):
        raise BtError(
            f"registry {registry} asks for credentials over plain HTTP at {parts.netloc}; "
            "refusing to send them"
        )
    scopes = union_scopes([scope, *challenge.get("scope", "").split(" ")])
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
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        body = urlencode(form).encode()
        return TokenRequest(parts.scheme, parts.netloc, "POST", parts.path or "/", headers, body)
    query: list[tuple[str, str]] = [("scope", s) for s in scopes]
    if service:
        query.insert(0, ("service", service))
    if creds is not None and creds.username:
        query.append(("account", creds.username))
    joined = "&".join(x for x in (parts.query, urlencode(query)) if x)
    basic = creds.basic if creds is not None else None
    headers = {"Authorization": basic} if basic else {}
    target = f"{parts.path or '/'}?{joined}"
    return TokenRequest(parts.scheme, parts.netloc, "GET", target, headers, None)


def _bearer(registry: str, host: str, status: int, reason: str, body: bytes) -> str:
    if status != 200:
        raise BtError(f"token server {host} of registry {registry} answered {status} {reason}")
    try:
        data = json.loads(body)
        token = data.get("token") or data.get("access_token")
    except (ValueError, AttributeError, RecursionError):
        token = None
    if not isinstance(token, str) or not token:
        raise BtError(f"token server {host} of registry {registry} sent no token")
    conceal(token)
    return f"Bearer {token}"


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="...",scope="..."`` -> ("bearer", {realm: ..., ...})."""
    kind, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) or m.group(3) or ""
        for m in _CHALLENGE_PARAM_RE.finditer(rest)
    }
    return kind.lower(), params


def union_scopes(scopes: Sequence[str]) -> list[str]:
    """``repository:a:pull`` and ``repository:a:push,pull`` -> ``repository:a:pull,push``."""
    actions: dict[str, set[str]] = {}
    for scope in scopes:
        resource, _, wanted = scope.rpartition(":")
        if resource:
            actions.setdefault(resource, set()).update(a for a in wanted.split(",") if a)
    return [f"{resource}:{','.join(sorted(acts))}" for resource, acts in actions.items()]
