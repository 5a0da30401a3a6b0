"""Talking to registries: image references (``reference``), signing in (``auth``) and the HTTP
API client (``client``). The names other modules use are re-exported here.

The loader checks names with ``reference`` on every run, so the client and its HTTP and TLS
imports load only when one of their names is first used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from buildtool.registry.reference import (
    DOCKER_HUB,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Reference,
    is_repository,
    is_tag,
    normalise_reference,
    parse_reference,
    sha256_digest,
)

if TYPE_CHECKING:
    from buildtool.registry.auth import Credentials
    from buildtool.registry.client import (
        RegistryClient,
        is_loopback,
        manifest_digest,
    )

_LAZY = {
    "Credentials": "auth",
    "RegistryClient": "client",
    "is_loopback": "client",
    "manifest_digest": "client",
}

__all__ = [
    "DOCKER_HUB",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "IMAGE_MANIFEST_TYPES",
    "INDEX_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Credentials",
    "Descriptor",
    "Reference",
    "RegistryClient",
    "is_loopback",
    "is_repository",
    "is_tag",
    "manifest_digest",
    "normalise_reference",
    "parse_reference",
    "sha256_digest",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
