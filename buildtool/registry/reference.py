"""Image references and media types, with Docker's own rules.

The grammar is distribution/reference's: lower-case repository path components joined by '/'
(separators '.', '_', '__' or runs of '-'), tags of up to 128 ASCII word characters, '.' and
'-'. The first path part names a registry only when it has a '.' or ':' or is ``localhost``;
otherwise the image lives on Docker Hub, where a one-part name is an official image:
``acme/x:cpu`` is ``docker.io/acme/x:cpu`` and ``python`` is ``docker.io/library/python``.
This module is the one home of those rules: the loader and ``.cache-spec`` check names with it.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from buildtool.errors import BtError

# distribution/reference: path components, a domain (host names, IPv4, [IPv6], with a port),
# tags of up to 128 ASCII word characters, '.' and '-', and digests "algorithm:hex".
COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
DIGEST = r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}"
SHA256 = r"sha256:[0-9a-f]{64}"

DOMAIN_RE = re.compile(DOMAIN)
DIGEST_RE = re.compile(DIGEST)
SHA256_RE = re.compile(SHA256)
_NAME_RE = re.compile(rf"(?:{DOMAIN}/)?{COMPONENT}(?:/{COMPONENT})*")
_REFERENCE_RE = re.compile(rf"({_NAME_RE.pattern})(?::{TAG})?(?:@{DIGEST})?")
NAME_MAX = 255  # characters of a name (domain and path), as Docker limits it


def is_reference(text: object) -> bool:
    """Whether ``text`` is exactly one image reference, ``[domain/]path[:tag][@digest]``: no
    whitespace, no quote, no comment, nothing before or after it."""
    if not isinstance(text, str):
        return False
    found = _REFERENCE_RE.fullmatch(text)
    return found is not None and len(found.group(1)) <= NAME_MAX


def is_sha256(text: object) -> bool:
    """Whether ``text`` is a sha256 digest as bt records them: ``sha256:`` and 64 lower-case
    hex digits."""
    return isinstance(text, str) and SHA256_RE.fullmatch(text) is not None


def shown(value: object, limit: int = 80) -> str:
    """``value`` for an error message: quoted, escaped (a newline shows as ``\\n``), cut."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...'"


DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
MANIFEST_ACCEPT = ", ".join((*INDEX_TYPES, *IMAGE_MANIFEST_TYPES))

DOCKER_HUB = "docker.io"
_REPOSITORY_RE = re.compile(rf"{COMPONENT}(?:/{COMPONENT})*")
_TAG_RE = re.compile(TAG)  # Go's \w is ASCII


def is_tag(text: str) -> bool:
    """Whether ``text`` is a valid tag (``latest``, ``large-v3-zh``, ``v1.2_rc``)."""
    return _TAG_RE.fullmatch(text) is not None


def is_repository(text: str) -> bool:
    """Whether ``text`` is a valid repository path (``whisperx/base``), registry excluded."""
    return _REPOSITORY_RE.fullmatch(text) is not None


def names_registry(part: str) -> bool:
    """Whether the first path part of a reference names a registry rather than a Docker Hub
    namespace: it has a '.' or ':', or is ``localhost``."""
    return "." in part or ":" in part or part == "localhost"


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
    """Parse an image reference and normalise it like Docker (see the module's docstring).
    A reference without tag or digest keeps ``tag=None``; it means ``latest``."""
    name, at, digest = text.strip().partition("@")
    if at and not DIGEST_RE.fullmatch(digest):
        raise BtError(f"invalid image reference {text!r}: bad digest {digest!r}")
    tag: str | None = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        if not is_tag(tag):
            raise BtError(f"invalid image reference {text!r}: bad tag {tag!r}")
    first, slash, rest = name.partition("/")
    if slash and names_registry(first):
        registry, repository = first, rest
        if not DOMAIN_RE.fullmatch(registry):
            raise BtError(f"invalid image reference {text!r}: bad registry {registry!r}")
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not is_repository(repository):
        raise BtError(
            f"invalid image reference {text!r}: repository {repository!r} must be lower-case "
            "path components"
        )
    return Reference(registry, repository, tag, digest or None)


def normalise_reference(text: str) -> str:
    """The fully qualified name Docker resolves ``text`` to, as ``docker pull`` does:
    ``acme/x:cpu`` is ``docker.io/acme/x:cpu``, ``python`` is
    ``docker.io/library/python:latest``."""
    ref = parse_reference(text)
    return str(ref if ref.tag or ref.digest else ref.at(tag="latest"))


def as_reference(ref: str | Reference) -> Reference:
    return ref if isinstance(ref, Reference) else parse_reference(ref)


def sha256_digest(data: bytes) -> str:
    import hashlib  # OpenSSL's, loaded only by what talks to a registry or engine

    return "sha256:" + hashlib.sha256(data).hexdigest()


def media_type_of(content_type: str) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return content_type.split(";", 1)[0].strip()


def declared_media_type(body: bytes) -> str | None:
    """The ``mediaType`` a manifest states in its own body, if any."""
    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError):  # a hostile registry's absurd nesting
        return None
    value = data.get("mediaType") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
