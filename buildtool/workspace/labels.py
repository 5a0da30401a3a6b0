"""Labels (``//pkg:name``) and target patterns (``//...``, ``//pkg/...``, ``//pkg:all``)."""

from __future__ import annotations

import re
from typing import NamedTuple

from buildtool.errors import BtError

_PACKAGE_RE = re.compile(r"[A-Za-z0-9_.+\-]+(/[A-Za-z0-9_.+\-]+)*")
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]*")


class Label(NamedTuple):
    """One image target: ``package`` is '' for the workspace root, else ``a/b``."""

    package: str
    name: str

    def __str__(self) -> str:
        return f"//{self.package}:{self.name}"


def check_package(package: str) -> str:
    """Return ``package`` if it is a valid package path, else raise."""
    if package and (not _PACKAGE_RE.fullmatch(package) or ".." in package.split("/")):
        raise BtError(f"invalid package name {package!r}")
    return package


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid target name, else raise."""
    if not _NAME_RE.fullmatch(name) or name == "all":
        raise BtError(
            f"invalid target name {name!r} (letters, digits, '_', '.', '+', '-'; not 'all')"
        )
    return name


def parse_label(text: str, current_package: str = "") -> Label:
    """Parse ``//pkg:name``, ``//pkg`` (name = last path part) or relative ``:name``."""
    text = text.strip()
    if text.startswith(":"):
        return Label(current_package, check_name(text[1:]))
    if not text.startswith("//"):
        raise BtError(f"invalid label {text!r}: expected //package:name or :name")
    body = text[2:]
    package, sep, name = body.partition(":")
    if not sep:
        if not package:
            raise BtError(f"invalid label {text!r}: the root package needs an explicit :name")
        name = package.rsplit("/", 1)[-1]
    try:
        return Label(check_package(package), check_name(name))
    except BtError as err:
        raise BtError(f"invalid label {text!r}: {err.message}") from None


class Pattern(NamedTuple):
    """A target pattern. ``recursive`` patterns match the package and every package below it;
    ``name`` None matches every target of the matched packages."""

    package: str
    name: str | None
    recursive: bool

    def matches(self, label: Label) -> bool:
        if self.recursive:
            return (
                not self.package
                or label.package == self.package
                or label.package.startswith(self.package + "/")
            )
        return label.package == self.package and self.name in (None, label.name)

    def __str__(self) -> str:
        prefix = f"//{self.package}"
        if self.recursive:
            return f"{prefix}/..." if self.package else "//..."
        return f"{prefix}:{self.name or 'all'}"


def parse_pattern(text: str, current_package: str = "") -> Pattern:
    """Parse a label or one of ``//...``, ``//pkg/...``, ``//pkg:all``, ``:all``."""
    text = text.strip()
    if text in ("//...", "..."):
        return Pattern("", None, True)
    if text.endswith("/...") and text.startswith("//"):
        package = text[2:-4]
        try:
            return Pattern(check_package(package), None, True)
        except BtError as err:
            raise BtError(f"invalid pattern {text!r}: {err.message}") from None
    if text.endswith(":all") or text.endswith(":*"):
        head = text.rsplit(":", 1)[0]
        if head == "":
            return Pattern(current_package, None, False)
        if head.startswith("//"):
            try:
                return Pattern(check_package(head[2:]), None, False)
            except BtError as err:
                raise BtError(f"invalid pattern {text!r}: {err.message}") from None
    label = parse_label(text, current_package)
    return Pattern(label.package, label.name, False)
