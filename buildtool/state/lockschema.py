"""The schema of ``images.lock`` (and of its fragments), checked on every read.

A lockfile is trusted input: a record it holds makes a build up to date. So every field is
checked before bt uses any: digests are ``sha256:`` and 64 lower-case hex digits, keys 64 hex
digits (blake3), labels ``//package:name``, platforms ``os/arch[/variant]``, image references,
pinned references and index tags follow the reference grammar (``registry/reference.py``: a record's
image reaches a Dockerfile bt rewrites, a tag a registry call), and a pushed image's reference
carries the record's own digest. Errors name the file and, where the text shows it, the line of
the offending entry.
"""

from __future__ import annotations

import json
import re
from typing import Any

from buildtool.errors import BtError
from buildtool.registry.reference import SHA256_RE, is_reference, shown

DIGEST_RE = SHA256_RE
KEY_RE = re.compile(r"[0-9a-f]{64}")
_LABEL_RE = re.compile(
    r"//(?:[A-Za-z0-9_.+\-]+(?:/[A-Za-z0-9_.+\-]+)*)?:[A-Za-z0-9_][A-Za-z0-9_.+\-]*"
)
_PLATFORM_RE = re.compile(r"[a-z0-9_-]+/[a-z0-9_-]+(?:/[a-z0-9_.-]+)?")
_TOP_KEYS = {"version", "builds", "images", "pins"}
_PIN_SOURCES = {"registry", "engine"}


def check_lockfile(data: dict[str, Any], text: str, path: str) -> None:
    """Raise ``BtError`` at the first entry of ``data`` (parsed from ``text``) that is not
    what bt writes."""
    _Checker(text, path).check(data)


class _Checker:
    def __init__(self, text: str, path: str):
        self.text = text
        self.path = path

    def fail(self, message: str, *where: str) -> BtError:
        return BtError(message, self.path, self._line_of(where))

    def _line_of(self, where: tuple[str, ...]) -> int | None:
        """The line of the entry at ``where`` (its JSON keys, outermost first), found by
        searching for each key after the previous one: json gives no positions."""
        position, found = 0, 0
        for key in where:
            at = self.text.find(json.dumps(key), position)
            if at < 0:
                break
            position, found = at, at
        return self.text.count("\n", 0, found) + 1 if where else None

    def check(self, data: dict[str, Any]) -> None:
        for key in data:
            if key not in _TOP_KEYS:
                raise self.fail(f"unknown section {key!r}", key)
        for section in ("builds", "images", "pins"):
            if not isinstance(data.get(section, {}), dict):
                raise self.fail(f"{section} must be an object", section)
        builds = data.get("builds", {})
        for label, platforms in () if _builds_ok(builds) else builds.items():
            self._label(label, "builds")
            self._platforms(platforms, "builds", label)
            for platform, record in platforms.items():
                where = ("builds", label, platform)
                self._record(record, {"key", "digest", "image"}, *where)
                if not isinstance(record["key"], str) or not KEY_RE.fullmatch(record["key"]):
                    raise self.fail(f"{label} {platform}: key must be 64 hex digits", *where, "key")
                self._digest(record["digest"], f"{label} {platform}", *where)
                self._image(record["image"], record["digest"], f"{label} {platform}", *where)
        for label, record in data.get("images", {}).items():
            self._label(label, "images")
            self._record(record, {"digest", "tags"}, "images", label)
            self._digest(record["digest"], f"index of {label}", "images", label)
            tags = record["tags"]
            if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
                raise self.fail(f"index of {label}: tags must be a list of strings", label, "tags")
            for tag in tags:
                if not is_reference(tag):
                    raise self.fail(
                        f"index of {label}: tag {shown(tag)} is not an image reference",
                        "images",
                        label,
                        "tags",
                    )
        for ref, platforms in data.get("pins", {}).items():
            if not isinstance(ref, str) or not ref:
                raise self.fail("pins: a reference must be a non-empty string", "pins")
            if not is_reference(ref):
                raise self.fail(f"pins: {shown(ref)} is not an image reference", "pins", ref)
            self._platforms(platforms, "pins", ref)
            for platform, record in platforms.items():
                where = ("pins", ref, platform)
                self._record(record, {"digest", "source"}, *where)
                self._digest(record["digest"], f"pin of {ref} {platform}", *where)
                if record["source"] not in _PIN_SOURCES:
                    raise self.fail(
                        f"pin of {ref} {platform}: source must be registry or engine",
                        *where,
                        "source",
                    )

    def _label(self, label: str, section: str) -> None:
        if not _LABEL_RE.fullmatch(label):
            raise self.fail(f"{section}: {label!r} is not a label (//package:name)", label)

    def _platforms(self, platforms: Any, section: str, owner: str) -> None:
        if not isinstance(platforms, dict):
            raise self.fail(f"{section} of {owner} must be an object", owner)
        for platform in platforms:
            if not _PLATFORM_RE.fullmatch(platform):
                raise self.fail(f"{owner}: {platform!r} is not a platform", owner, platform)

    def _record(self, record: Any, fields: set[str], *where: str) -> None:
        what = " ".join(where[1:])
        if not isinstance(record, dict):
            raise self.fail(f"{what}: an entry must be an object", *where)
        missing = sorted(fields - set(record))
        if missing:
            raise self.fail(f"{what}: missing field {missing[0]!r}", *where)
        extra = sorted(set(record) - fields)
        if extra:
            raise self.fail(f"{what}: unknown field {extra[0]!r}", *where, extra[0])

    def _digest(self, digest: Any, what: str, *where: str) -> None:
        if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
            raise self.fail(
                f"{what}: digest {digest!r} is not sha256: and 64 lower-case hex digits",
                *where,
                "digest",
            )

    def _image(self, image: Any, digest: str, what: str, *where: str) -> None:
        if not isinstance(image, str) or not image:
            raise self.fail(f"{what}: image must be a non-empty string", *where, "image")
        if not is_reference(image):
            raise self.fail(
                f"{what}: image {shown(image)} is not an image reference", *where, "image"
            )
        if "@" in image and image.rpartition("@")[2] != digest:
            raise self.fail(f"{what}: image {image!r} does not carry the digest", *where, "image")


_BUILD_FIELDS = frozenset({"key", "digest", "image"})


def _builds_ok(builds: dict[str, Any]) -> bool:
    """Whether every build record passes ``check``, asked at the cost of a few lookups each (a
    no-op plan of 20,000 builds reads them all); when not, ``check`` finds and words the first
    fault. Each condition here implies the one ``check`` makes."""
    label_ok, platform_ok = _LABEL_RE.fullmatch, _PLATFORM_RE.fullmatch
    key_ok, digest_ok, reference_ok = KEY_RE.fullmatch, DIGEST_RE.fullmatch, is_reference
    for label, platforms in builds.items():
        if type(platforms) is not dict or not label_ok(label):
            return False
        for platform, record in platforms.items():
            if type(record) is not dict or record.keys() != _BUILD_FIELDS:
                return False
            key, digest, image = record["key"], record["digest"], record["image"]
            if type(key) is not str or type(digest) is not str or type(image) is not str:
                return False
            if not (platform_ok(platform) and key_ok(key) and digest_ok(digest)):
                return False
            if not reference_ok(image):
                return False
            if "@" in image and image.rpartition("@")[2] != digest:
                return False
    return True
