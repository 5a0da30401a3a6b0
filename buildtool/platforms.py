"""One platform type for all of bt: parse, normalise and compare ``os/arch[/variant]``.

Normalisation follows containerd's ``platforms.Parse`` + ``Normalize``, the rules BuildKit and
the registries apply: ``x86_64`` is ``amd64``, ``aarch64`` is ``arm64``, and ``arm64/v8`` is
plain ``arm64`` (engines drop that variant when they store an image). Two platforms *run on* the
same machine when their os and architecture agree; the variant only narrows what is built.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from buildtool.errors import BtError

_PART = re.compile(r"[a-z0-9_-]+")
# `uname -m` and Go names an engine may report, as GOARCH names.
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armv7l": "arm",
                 "armhf": "arm", "armel": "arm", "i386": "386", "i686": "386"}  # fmt: skip
# Go's GOOS and GOARCH values: the names images, registries and engines use for platforms.
KNOWN_OS = frozenset(
    (
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "illumos",
        "ios",
        "js",
        "linux",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "wasip1",
        "windows",
    )
)
KNOWN_ARCH = frozenset(
    (
        "386",
        "amd64",
        "arm",
        "arm64",
        "loong64",
        "mips",
        "mips64",
        "mips64le",
        "mipsle",
        "ppc64",
        "ppc64le",
        "riscv64",
        "s390x",
        "wasm",
    )
)
_ARM64_VARIANTS = {"8": "", "v8": "", "v8.0": "", "9": "v9", "9.0": "v9", "v9.0": "v9"}
_ARM_VARIANTS = {"": "v7", "7": "v7", "5": "v5", "6": "v6", "8": "v8"}


class Platform(NamedTuple):
    """A normalised platform: ``Platform.parse("linux/aarch64")`` is ``linux/arm64``."""

    os: str
    arch: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str, *, known_only: bool = True) -> Platform:
        """Parse and normalise; raises ``BtError`` for anything but ``os/arch[/variant]`` (with
        ``known_only``, also for an os or architecture Go does not name)."""
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(_PART.fullmatch(p) for p in parts):
            raise BtError(f"invalid platform {text!r} (expected os/arch[/variant])")
        os_name = "darwin" if parts[0] == "macos" else parts[0]
        raw_arch, variant = parts[1], parts[2] if len(parts) == 3 else ""
        arch = _ARCH_ALIASES.get(raw_arch, raw_arch)
        if raw_arch == "armhf":
            variant = "v7"
        elif raw_arch == "armel":
            variant = "v6"
        elif arch == "386" or (arch == "amd64" and variant == "v1"):
            variant = ""
        elif arch == "arm64":
            variant = _ARM64_VARIANTS.get(variant, variant)
        elif arch == "arm":
            variant = _ARM_VARIANTS.get(variant, variant)
        for value, known, what in ((os_name, KNOWN_OS, "os"), (arch, KNOWN_ARCH, "architecture")):
            if known_only and value not in known:
                import difflib

                close = difflib.get_close_matches(value, sorted(known), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise BtError(f"invalid platform {text!r}: unknown {what} {value!r}{hint}")
        return cls(os_name, arch, variant)

    @classmethod
    def of_engine(cls, os_name: str, arch: str) -> Platform:
        """The platform an engine or an image config reports (``Os``, ``Architecture``)."""
        # What an engine reports is a fact, not a typo: taken as it is, only normalised.
        return cls.parse(f"{os_name or 'linux'}/{arch or 'unknown'}", known_only=False)

    def runs_on(self, other: Platform) -> bool:
        """Whether builds and containers of ``self`` run natively where ``other`` runs: same os
        and architecture (the variant is a build option, not a different machine)."""
        return (self.os, self.arch) == (other.os, other.arch)

    def __str__(self) -> str:
        return "/".join(p for p in self if p)


@functools.lru_cache(maxsize=256)
def normalise(text: str) -> str:
    """The canonical spelling of a platform string: ``linux/arm64/v8`` -> ``linux/arm64``."""
    return str(Platform.parse(text))


def same_machine(first: str, second: str) -> bool:
    """Whether two platform strings run on the same machine (os and architecture agree)."""
    return Platform.parse(first).runs_on(Platform.parse(second))
