"""The values one evaluation of a Dockerfile works with, as BuildKit's dockerfile2llb has them:
ARG and ENV values that may be unknown statically (and why), a stage's environment, a stage's
base, the sources instructions name (context paths, remote URLs), and the target stage."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from buildtool.dockerfile.meaning import UNKNOWN
from buildtool.dockerfile.records import Dockerfile, Meaning
from buildtool.dockerfile.shell import Unresolved
from buildtool.errors import BtError
from buildtool.platforms import Platform

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})
MOUNT_TYPES = frozenset({"bind", "cache", "tmpfs", "secret", "ssh"})
DOCKERFILE_FRONTEND = re.compile(r"(docker\.io/)?docker/dockerfile(-upstream)?([:@].*)?")
# Tags that always resolve to the newest frontend, so BuildKit v0.8's rules never apply.
CURRENT_FRONTEND = re.compile(
    r"(docker\.io/)?docker/dockerfile(-upstream)?:(1|1-labs|labs|latest|master|master-labs)"
)
PROTOCOL = re.compile(r"([a-zA-Z0-9]+)://")
SCP_URL = re.compile(r"[a-zA-Z0-9_-]+@[a-zA-Z0-9.-]+:")
ONE_ARG = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Unknown:
    """A value that cannot be known statically, and why; ``fails`` when Docker rejects it."""

    reason: str
    fails: bool = False


Value = str | Unknown
Use = Literal["copy", "mount"]
MISSING = Unknown("")


class Env:
    """A stage's environment as BuildKit expands words with it (ENV and ARG values)."""

    def __init__(self, values: dict[str, Value], fallback: str | None):
        self.values = values
        # Why a name the Dockerfile never set is unknown (it may come from the base image).
        self.fallback = fallback

    def copy(self) -> Env:
        return Env(dict(self.values), self.fallback)

    def lookup(self, seen: set[str] | None) -> Callable[[str], str | None]:
        """``get``, noting the names looked up in ``seen`` when given."""
        if seen is None:
            return self.get

        def get(name: str) -> str | None:
            seen.add(name)
            return self.get(name)

        return get

    def get(self, name: str) -> str | None:
        value = self.values.get(name, MISSING)
        if value is MISSING:
            if self.fallback is not None:
                raise Unresolved(f"variable {name} {self.fallback}")
            return None
        if isinstance(value, Unknown):
            raise Unresolved(value.reason)
        return value


@dataclass(frozen=True)
class Base:
    kind: str  # "stage", "scratch", "image" or "unknown"
    stage: int = -1
    ref: str = ""
    reason: str = ""
    uses: frozenset[str] = frozenset()  # the variables its FROM line looks up
    platform: Meaning = None  # its --platform value (None without the flag)
    context: str | None = None  # the named context the FROM names ("image": ``ref`` is its image)


@dataclass(frozen=True)
class Named:
    """A ``COPY --from=``/``RUN --mount=from=`` naming a named context."""

    name: str


def value_meaning(value: Value | None) -> Meaning:
    return UNKNOWN if isinstance(value, Unknown) else value


def one_arg(word: str) -> str | None:
    """The ARG a word names when it is exactly ``$NAME`` or ``${NAME}``."""
    match = ONE_ARG.fullmatch(word)
    return (match.group(1) or match.group(2)) if match else None


def platform_args(prefix: str, platform: str | None, flag: str) -> dict[str, Value]:
    names = ("PLATFORM", "OS", "OSVERSION", "ARCH", "VARIANT")
    if platform is None:
        unknown = Unknown(f"{prefix}PLATFORM is not known ({flag} was not given)")
        return {prefix + name: unknown for name in names}
    parsed = Platform.parse(platform)
    values = (str(parsed), parsed.os, "", parsed.arch, parsed.variant)
    return {prefix + name: value for name, value in zip(names, values, strict=True)}


def context_path(source: str) -> str:
    """Go's ``path.Join("/", source)`` relative to the context root ("." for the root)."""
    parts: list[str] = []
    for segment in source.split("/"):
        if segment == "..":
            if parts:
                parts.pop()
        elif segment not in ("", "."):
            parts.append(segment)
    return "/".join(parts) or "."


def is_remote(source: str, legacy: bool) -> bool:
    """Whether ADD fetches ``source`` (HTTP or git) instead of reading the context."""
    if source.startswith(("http://", "https://")):
        return True
    if legacy:
        return False  # BuildKit v0.8 fetched only http(s) URLs; git@... was a context path
    if source.startswith(("./", "../", "github.com/")):
        return False  # BuildKit takes the bare github.com/ form as a local path
    match = PROTOCOL.match(source)
    if match:
        scheme = match.group(1).lower()
        if scheme in ("http", "https"):
            return urlsplit(source).path.endswith(".git")
        return scheme in ("git", "ssh")  # other schemes are (odd) local paths to BuildKit
    return SCP_URL.match(source) is not None


def quote(word: str) -> str:
    return repr(word if len(word) <= 80 else word[:77] + "...")


def frontend_of(df: Dockerfile, build_args: Mapping[str, str]) -> str | None:
    return build_args.get("BUILDKIT_SYNTAX") or df.syntax


def resolve_target(df: Dockerfile, stage: str | None) -> int:
    if stage is None:
        return len(df.stages) - 1
    found = [s.index for s in df.stages if s.name == stage.lower()]
    if found:
        return found[-1]
    names = [s.name for s in df.stages if s.name]
    close = difflib.get_close_matches(stage.lower(), names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    available = ", ".join(names) if names else "none are named"
    raise BtError(
        f"target stage {stage!r} could not be found{hint}; available stages: {available}",
        path=df.path,
    )
