"""Backends that build one platform image on one Docker engine, push it, and run its tests.

- ``buildkit.BuildKitCliBuilder`` drives the engine's BuildKit through the docker CLI. Real
  Dockerfiles use ``RUN --mount``, so this is the default.
- ``engine.EngineApiBuilder`` talks to the Engine API through docker-py (the classic builder),
  for engines reached without a CLI.

This module holds what both share; ``build.routing.open_builder`` imports a backend only when
asked for it.
Failed builds raise ``JobFailed`` with the end of their log, faults worth another attempt raise
``TransientError``, and an engine that cannot be reached at all raises ``BtError``.
"""

from __future__ import annotations

import collections
import re
import shutil
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from buildtool.errors import BtError, JobFailed, TransientError, is_transient_message
from buildtool.plan.pins import LocalImage
from buildtool.platforms import Platform
from buildtool.registry.reference import is_reference, is_sha256, shown

if TYPE_CHECKING:
    from buildtool.build.builders.context import SentContext
    from buildtool.inputs.filesets import FileSet
    from buildtool.secrets import SecretSource

LOG_TAIL_LINES = 25


@dataclass(frozen=True)
class BuildRequest:
    context: Path
    dockerfile: Path
    stage: str | None
    platform: str  # e.g. "linux/arm64"
    build_args: tuple[tuple[str, str], ...]
    tag: str  # local, content-derived tag, e.g. "bt/matrix:tiny-en-<key[:24]>"
    log_path: Path  # the full build log goes here (created or overwritten)
    labels: tuple[tuple[str, str], ...] = ()
    # What the build's key covers. When set, the engine gets exactly these files (and the
    # Dockerfile) as a tar bt writes, not the context directory: see ``builders/context.py``.
    fileset: FileSet | None = None
    # The Dockerfile to send instead of ``fileset.dockerfile_text`` (a rewritten one, e.g. with
    # pinned image references); only with ``fileset``.
    dockerfile_text: str | None = None
    # Build secrets by source (file paths absolute): the builder's client reads the values.
    secrets: tuple[SecretSource, ...] = ()
    # Images the engine may take layers from (``build.layer_cache``); never part of the key.
    cache_from: tuple[str, ...] = ()
    # Named contexts handed over as such (``--build-context NAME=VALUE``), only to builders
    # that take them (``Builder.named_contexts``); others get them written into the Dockerfile.
    named_contexts: tuple[tuple[str, str], ...] = ()

    def sent_context(self, *, hide_dockerfile: bool = False) -> SentContext | None:
        """The context to stream, or None to send the context directory as it is."""
        if self.fileset is None:
            return None
        from buildtool.build.builders.context import sent_context

        return sent_context(
            self.fileset,
            self.context,
            self.dockerfile,
            self.dockerfile_text,
            hide_dockerfile=hide_dockerfile,
        )


@dataclass(frozen=True)
class BuiltImage:
    image_id: str  # sha256:... config digest on the engine
    tag: str


def checked_image_id(engine: str, value: object) -> str:
    """An image id an engine gave, checked where it is read (invariant 11): bt records it,
    pins by it and hands it to builds."""
    if not is_sha256(value):
        raise BtError(f"engine {engine} gave the image id {shown(value)}, not a sha256 digest")
    assert isinstance(value, str)
    return value


def checked_local_image(engine: str, image_id: object, repo_digests: object) -> LocalImage:
    """``LocalImage`` from what an engine said, every value checked (``checked_image_id``)."""
    if repo_digests is None:
        repo_digests = ()
    given = repo_digests if isinstance(repo_digests, (list, tuple)) else [repo_digests]
    digests: list[str] = []
    for found in given:
        if not (isinstance(found, str) and is_reference(found) and "@" in found):
            raise BtError(
                f"engine {engine} gave the repository digest {shown(found)}, not name@digest"
            )
        digests.append(found)
    return LocalImage(checked_image_id(engine, image_id), tuple(digests))


class Builder(Protocol):
    name: str
    named_contexts: bool  # takes ``--build-context`` (buildx); else bt rewrites the Dockerfile

    def architecture(self) -> str: ...
    def build(self, request: BuildRequest, cancel: threading.Event) -> BuiltImage: ...
    def image_id(self, ref: str) -> str | None: ...
    def local_image(self, ref: str) -> LocalImage | None: ...
    def image_labels(self, ref: str) -> dict[str, str] | None: ...
    def tag(self, image_id_or_ref: str, new_tag: str) -> None: ...
    def push(self, ref: str) -> str: ...
    def run(
        self, image: str, command: Sequence[str], timeout: float, entrypoint: str | None = None
    ) -> tuple[int, str]: ...
    def close(self) -> None: ...


def split_tag(ref: str) -> tuple[str, str]:
    """``"127.0.0.1:5000/x/y:k-1"`` -> ``("127.0.0.1:5000/x/y", "k-1")``; no tag means latest.

    A colon is a tag separator only after the last slash: before it, it marks a registry port."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return ref, "latest"
    return name, tag


def dockerfile_to_send(request: BuildRequest, directory: Path) -> Path:
    """The Dockerfile the engine reads: the user's, or ``request.dockerfile_text`` written into
    ``directory`` under the same name (with its ``<name>.dockerignore``, if it has one)."""
    if request.dockerfile_text is None:
        return request.dockerfile
    written = directory / request.dockerfile.name
    written.write_text(request.dockerfile_text, encoding="utf-8")
    ignore = request.dockerfile.with_name(request.dockerfile.name + ".dockerignore")
    if ignore.is_file():
        shutil.copyfile(ignore, directory / ignore.name)
    return written


def is_transient(message: str) -> bool:
    return is_transient_message(message)


# How each builder says a COPY/ADD/RUN --mount source is not in the context it was sent.
_NOT_FOUND = (
    # BuildKit: failed to compute cache key: "/b.txt" not found: not found
    re.compile(r'"/?([^"]+)":? not found'),
    # the classic builder: COPY failed: file not found in build context or excluded by
    # .dockerignore: stat b.txt: file does not exist
    re.compile(r"(?:COPY|ADD) failed: file not found in build context.*: stat (.+): file does not"),
)


class MissingInput(JobFailed):
    """The build read a context path the engine was not sent."""

    def __init__(self, message: str, path: str, log_tail: str, log_path: str):
        super().__init__(message, log_tail=log_tail, log_path=log_path)
        self.path = path


def missing_input(message: str) -> str | None:
    """The context path a builder's error says it could not find, if it says so."""
    for pattern in _NOT_FOUND:
        match = pattern.search(message)
        if match:
            return match.group(1)
    return None


def build_failure(message: str, tail: Sequence[str], log_path: Path) -> Exception:
    if is_transient(message):
        return TransientError(message)
    missing = missing_input(message)
    if missing is not None:
        return MissingInput(message, missing, "\n".join(tail), str(log_path))
    return JobFailed(message, log_tail="\n".join(tail), log_path=str(log_path))


def platform_mismatch(name: str, request: BuildRequest, actual: Platform) -> BtError | None:
    """The error for an image built for another machine than asked, None when it is right.
    Only os/arch count: engines drop the variant of arm64 ("v8") when they store images."""
    if actual.runs_on(Platform.parse(request.platform)):
        return None
    return BtError(
        f"{name} built {request.tag} for {actual}, not {request.platform}: a base image on that "
        f"engine exists only for {actual} and its builder used it anyway. Build "
        f"{request.platform} on a native engine or with the buildkit backend"
    )


def write_lines(log: IO[str], tail: collections.deque[str], lines: Iterable[str]) -> None:
    from buildtool.secrets import scrub

    for line in map(scrub, lines):
        log.write(line + "\n")
        tail.append(line)
    log.flush()
