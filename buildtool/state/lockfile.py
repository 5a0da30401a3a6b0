"""``images.lock``: for every platform build its key and, once built, its digest and image; per
external image and platform the digest it is pinned to.

Deterministic, diff-friendly JSON (sorted keys, two-space indent, trailing newline), versioned,
written atomically under the workspace lock so concurrent bt processes never interleave.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from buildtool.errors import BtError
from buildtool.state.cachedir import update_file

VERSION = 1


class BuildRecord(NamedTuple):
    """One built platform image: the key it was built from and where it lives."""

    key: str
    digest: str  # "sha256:..." manifest digest when pushed, else the local image id
    image: str  # "repo@sha256:..." when pushed, else the local content-derived tag

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "digest": self.digest, "image": self.image}


class IndexRecord(NamedTuple):
    """A multi-platform index put for an image, and the tags that point at it."""

    digest: str
    tags: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"digest": self.digest, "tags": list(self.tags)}


class PinRecord(NamedTuple):
    """The digest an external image is pinned to for one platform, and where it was read:
    "registry" (a manifest digest) or "engine" (a local image: a repo digest, else its id)."""

    digest: str
    source: str

    def to_json(self) -> dict[str, str]:
        return {"digest": self.digest, "source": self.source}


@dataclass
class Lockfile:
    builds: dict[str, dict[str, BuildRecord]] = field(default_factory=dict)
    images: dict[str, IndexRecord] = field(default_factory=dict)
    # normalised reference -> platform -> pin (``pins.py``)
    pins: dict[str, dict[str, PinRecord]] = field(default_factory=dict)

    def get(self, label: str, platform: str) -> BuildRecord | None:
        return self.builds.get(label, {}).get(platform)

    def put(self, label: str, platform: str, record: BuildRecord) -> None:
        self.builds.setdefault(label, {})[platform] = record

    def record_build(self, label: str, platform: str, record: BuildRecord) -> None:
        """``put``, and drop the image's index when the build's digest changes: that index
        lists the previous build, and images.lock never pairs an index with builds it does not
        list (a crash after this write leaves no lagging index). A merge records the new one."""
        previous = self.get(label, platform)
        if previous is None or previous.digest != record.digest:
            self.images.pop(label, None)
        self.put(label, platform, record)

    def pin(self, reference: str, platform: str) -> PinRecord | None:
        return self.pins.get(reference, {}).get(platform)

    def put_pin(self, reference: str, platform: str, record: PinRecord) -> None:
        self.pins.setdefault(reference, {})[platform] = record

    def pin_records(self) -> Iterator[tuple[str, str, PinRecord]]:
        for reference in sorted(self.pins):
            for platform in sorted(self.pins[reference]):
                yield reference, platform, self.pins[reference][platform]

    def records(self) -> Iterator[tuple[str, str, BuildRecord]]:
        for label in sorted(self.builds):
            for platform in sorted(self.builds[label]):
                yield label, platform, self.builds[label][platform]

    def dumps(self) -> bytes:
        data = {
            "version": VERSION,
            "builds": {
                label: {p: r.to_json() for p, r in platforms.items()}
                for label, platforms in self.builds.items()
                if platforms
            },
            "images": {label: r.to_json() for label, r in self.images.items()},
        }
        pins = {
            ref: {p: r.to_json() for p, r in platforms.items()}
            for ref, platforms in self.pins.items()
            if platforms
        }
        if pins:  # a workspace without external images keeps the lockfile it had
            data["pins"] = pins
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def loads(cls, text: str, path: str, checked: bool = False) -> Lockfile:
        """``checked``: these very bytes passed the schema check before (``LockfileReader``)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise BtError(f"not valid JSON: {err.msg}", path, err.lineno) from None
        except RecursionError:
            raise BtError("not a lockfile: JSON nested too deeply", path, 1) from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            found = data.get("version") if isinstance(data, dict) else None
            raise BtError(f"unsupported lockfile version {found!r} (this bt reads {VERSION})", path)
        if not checked:
            from buildtool.state.lockschema import check_lockfile

            check_lockfile(data, text, path)
        lock = cls()
        record = BuildRecord
        lock.builds = {
            label: {p: record(r["key"], r["digest"], r["image"]) for p, r in platforms.items()}
            for label, platforms in data.get("builds", {}).items()
        }
        for label, rec in data.get("images", {}).items():
            lock.images[label] = IndexRecord(rec["digest"], tuple(rec["tags"]))
        # Lockfiles written before pins existed have no such section.
        for ref, platforms in data.get("pins", {}).items():
            for platform, rec in platforms.items():
                lock.put_pin(ref, platform, PinRecord(rec["digest"], rec["source"]))
        return lock


def read_lockfile(path: Path) -> Lockfile:
    """The lockfile at ``path``; an empty one when it does not exist yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Lockfile()
    except OSError as err:
        raise BtError(f"cannot read: {err.strerror}", path.name) from None
    return _decode(data, path.name)


class LockfileReader:
    """Reads ``path`` again and again (a ``bt watch`` round each), parsing it only when its
    bytes changed since the last read: reading 5 MB costs a few ms, parsing it a hundred.
    Parsed by ``_decode``, as every read of images.lock is; the lockfile returned is shared
    between reads of the same bytes, so it is read-only (``update_lockfile`` changes it).
    It also knows which build records changed from one of its reads to the next."""

    KEPT = 4  # links of ``changed_since``'s chain kept

    def __init__(self, path: Path, checked: Path | None = None):
        self.path = path
        self._last: tuple[bytes, Lockfile] | None = None
        # id of a lockfile read -> (it, the one read before it, the builds whose record differ)
        self._links: dict[int, tuple[Lockfile, Lockfile, set[tuple[str, str]]]] = {}
        # The schema check of 20,000 records costs a tenth of a no-op plan, and the lockfile
        # rarely changes between runs: ``checked`` (in the cache directory) names the last
        # bytes that passed it (``_mark``), which are then not checked again.
        self._checked = checked
        self._vouched: str | None = None  # the mark ``checked`` holds, once read
        self._passed: str | None = None  # the mark of bytes this reader checked, to keep

    def read(self) -> Lockfile:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError:
            return read_lockfile(self.path)  # its error
        if self._last is None or self._last[0] != data:
            lock = self._decode(data) if data else Lockfile()
            if self._last is not None:
                before = self._last[1]
                self._links[id(lock)] = (lock, before, _changed_builds(before, lock))
                while len(self._links) > self.KEPT:
                    del self._links[next(iter(self._links))]
            self._last = (data, lock)
        return self._last[1]

    def _decode(self, data: bytes) -> Lockfile:
        if self._checked is None:
            return _decode(data, self.path.name)
        mark = _mark(data)
        if self._vouched is None:
            try:
                self._vouched = self._checked.read_text(encoding="ascii")
            except (OSError, ValueError):
                self._vouched = ""
        lock = _decode(data, self.path.name, checked=mark == self._vouched)
        self._passed = mark
        return lock

    def save(self) -> None:
        """Keep the mark of the last bytes read, which passed the check."""
        if self._checked is None or self._passed is None or self._passed == self._vouched:
            return
        mark = self._passed.encode()
        update_file(self._checked, lambda _: mark, durable=False)
        self._vouched = self._passed

    def changed_since(self, lock: Lockfile, earlier: Lockfile) -> set[tuple[str, str]] | None:
        """The (label, platform) whose record differs between ``earlier`` and ``lock``, both
        read by this reader; None when that is not known."""
        found: set[tuple[str, str]] = set()
        current = lock
        while current is not earlier:
            link = self._links.get(id(current))
            if link is None or link[0] is not current:
                return None
            current, changed = link[1], link[2]
            found |= changed
        return found


def _changed_builds(old: Lockfile, new: Lockfile) -> set[tuple[str, str]]:
    changed: set[tuple[str, str]] = set()
    for label in old.builds.keys() | new.builds.keys():
        before, after = old.builds.get(label, {}), new.builds.get(label, {})
        if before != after:
            changed.update(
                (label, p) for p in before.keys() | after.keys() if before.get(p) != after.get(p)
            )
    return changed


def update_lockfile(path: Path, lock_path: Path, change: Callable[[Lockfile], None]) -> Lockfile:
    """Re-read the lockfile under the workspace lock, apply ``change``, write it atomically."""
    lock = Lockfile()

    def merge(current: bytes | None) -> bytes | None:
        nonlocal lock
        lock = Lockfile() if current is None else _decode(current, path.name)
        before = lock.dumps()
        change(lock)
        after = lock.dumps()
        return after if after != before else None

    update_file(path, merge, lock=lock_path)
    return lock


def _decode(data: bytes, name: str, checked: bool = False) -> Lockfile:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BtError(f"not valid UTF-8 (byte {err.start})", name) from None
    return Lockfile.loads(text, name, checked)


# Raised whenever ``lockschema``'s check grows (2: image references checked against their
# grammar), so that bytes an older check passed are checked again.
CHECK_REVISION = 2


def _mark(data: bytes) -> str:
    """What names lockfile bytes that passed this bt's schema check."""
    from buildtool import __version__
    from buildtool.state.hashing import digest_bytes

    return f"{__version__} {VERSION}.{CHECK_REVISION} {digest_bytes(data)}"


# -- fragments (`bt lock merge`) ----------------------------------------------------------------


def pushed(record: BuildRecord) -> bool:
    """Whether ``record`` names a pushed image (``repo@sha256:...``), not a local tag."""
    return "@" in record.image


def fold_fragments(
    fragments: Sequence[tuple[str, Lockfile]], notes: list[str] | None = None
) -> Lockfile:
    """One lockfile holding every record of ``fragments`` (name, lockfile).

    Fragments come from parallel jobs of one revision, so they must agree on keys: the same
    build built from different keys is refused naming both fragments. The same key with two
    digests is two machines that raced to build it; either image is valid, so the first
    fragment's pushed record is kept (``apply_fragments`` then keeps images.lock's, if it has
    one) and a line saying so is appended to ``notes``. Otherwise the result does not depend
    on the order of the fragments.
    """
    folded = Lockfile()
    origin: dict[tuple[str, ...], str] = {}
    # Pins first: builds pinned to different images have different keys, and the pin is the
    # cause to name (two engines' local ids of one image, say), not the keys.
    for name, fragment in fragments:
        for ref, platform, pin in fragment.pin_records():
            known_pin = folded.pin(ref, platform)
            if known_pin is not None and known_pin.digest != pin.digest:
                raise _pin_conflict(
                    origin[(ref, platform, "pin")], name, ref, platform, known_pin, pin
                )
            # Same digest read from two sources: keep one, whatever the fragments' order.
            chosen = min(known_pin or pin, pin, key=lambda r: r.source)
            folded.put_pin(ref, platform, chosen)
            origin.setdefault((ref, platform, "pin"), name)
    for name, fragment in fragments:
        for label, platform, record in fragment.records():
            known = folded.get(label, platform)
            if known is not None and known.key != record.key:
                raise _conflict(origin[(label, platform)], name, label, platform, known, record)
            if known is not None and known != record and (pushed(known) or not pushed(record)):
                if notes is not None:
                    notes.append(
                        f"{origin[(label, platform)]} and {name} record two images of one key "
                        f"for {label} {platform} (key {record.key[:16]}), {known.digest} and "
                        f"{record.digest}: either is valid; images.lock keeps the one it "
                        f"records, else {origin[(label, platform)]}'s"
                    )
                continue
            folded.put(label, platform, record)
            if known != record:
                origin[(label, platform)] = name
        for label, index in fragment.images.items():
            known_index = folded.images.get(label)
            if known_index is not None and known_index != index:
                raise BtError(
                    f"{origin[(label, '')]} and {name} record different indexes for {label}: "
                    f"{known_index.digest} and {index.digest}"
                )
            folded.images[label] = index
            origin.setdefault((label, ""), name)
    return folded


def _conflict(
    first: str, second: str, label: str, platform: str, a: BuildRecord, b: BuildRecord
) -> BtError:
    return BtError(
        f"{first} and {second} record {label} {platform} built from different keys "
        f"({a.key[:16]} and {b.key[:16]}); fragments must come from one revision"
    )


def _pin_conflict(
    first: str, second: str, ref: str, platform: str, a: PinRecord, b: PinRecord
) -> BtError:
    message = (
        f"{first} and {second} pin {ref} ({platform}) to different digests: {a.digest} (from "
        f"the {a.source}) and {b.digest} (from the {b.source})"
    )
    if "engine" in (a.source, b.source):
        message += (
            f"; an image found only in an engine is pinned by that engine's image id, which "
            f"another machine's engine does not share: push {ref} to a registry (then run bt "
            "lock update), or build every platform against one engine"
        )
    return BtError(message + "; the builds that use it differ in key for that reason")


def apply_fragments(lock: Lockfile, folded: Lockfile) -> int:
    """Write ``folded``'s records over ``lock``'s (a fragment is newer than images.lock), but
    keep a pushed record ``lock`` holds for the same key (another image of that key, pushed by
    a machine that raced this one, is no newer); return how many records changed."""
    changed = 0
    for label, platform, record in folded.records():
        current = lock.get(label, platform)
        if current is not None and current.key == record.key and pushed(current):
            continue
        if current != record:
            lock.record_build(label, platform, record)
            changed += 1
    for label, index in sorted(folded.images.items()):
        if lock.images.get(label) != index:
            lock.images[label] = index
            changed += 1
    for ref, platform, pin in folded.pin_records():
        if lock.pin(ref, platform) != pin:
            lock.put_pin(ref, platform, pin)
            changed += 1
    return changed
