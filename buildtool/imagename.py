"""The grammar of image references: distribution/reference's, in one place.

Every image reference, tag and digest bt reads from a file (``images.lock``, a fragment), a
registry or an engine is checked against it where it is read (invariant 11): such a value
ends up in a Dockerfile bt hands the engine, on a command line or in a tag, where a newline, a
space or a ``#`` would change what runs. ``registry/reference.py`` parses and normalises
references with the same expressions; it lives above the state layer, this module below it.
"""

from __future__ import annotations

import re

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
