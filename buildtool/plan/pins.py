"""Pins of external images (invariant 9 of the design): every image a reached stage uses that the
workspace does not build is resolved once to a digest, recorded in ``images.lock`` per
normalised reference and platform, keyed, and handed to the engine as exactly that digest.

Where a pin comes from:

- ``name@sha256:...`` is its own pin: nothing is looked up or recorded.
- An image that exists only in the engine's store (no ``RepoDigests``: imported, loaded or built
  there, never pulled or pushed) is pinned to its image id, read from the platform's builder,
  with no network (source "engine").
- Otherwise the registry is asked (HEAD, then GET for an index) with the user's docker
  credentials (source "registry"). When the registry does not know the image, or its host
  cannot be resolved, an engine copy pulled earlier is pinned to its repo digest (or id).

For a multi-platform index the pin is the manifest digest of the build's platform, not the
index digest: ``images.lock`` pins per platform, so a platform's builds move only when that
platform's image moves (an upstream that re-publishes its index to add riscv64, or rebuilds
only arm64, stales nothing else: invariant 2), and ``ref@<manifest digest>`` leaves the engine no
choice to make.

Nothing here runs on ``bt plan``/``why``/``query``/``inputs``: their keys read pins from the
lockfile, and an image not pinned yet enters the key as ``unpinned:<reference>``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple, Protocol

from buildtool.errors import BtError, WrongPlatform
from buildtool.platforms import Platform
from buildtool.registry import INDEX_TYPES, normalise_reference, parse_reference
from buildtool.state.jsonvalue import load_json
from buildtool.state.lockfile import PinRecord
from buildtool.workspace.analysis import context_placeholder

if TYPE_CHECKING:
    from buildtool.inputs.filesets import ImageUse
    from buildtool.registry import RegistryClient


class LocalImage(NamedTuple):
    """An image in an engine's own store, as ``docker image inspect`` shows it."""

    image_id: str  # sha256:... of its config
    repo_digests: tuple[str, ...]  # "name@sha256:..." where it was pulled from or pushed to


class ImageStore(Protocol):
    """What pinning needs of an engine (every builder is one): its images, and tagging one."""

    name: str

    def local_image(self, ref: str) -> LocalImage | None: ...
    def tag(self, image_id_or_ref: str, new_tag: str) -> None: ...


REGISTRY = "registry"
ENGINE = "engine"
UNPINNED = "unpinned:"  # key material of a pinnable image without a pin yet
UNRESOLVED = "unresolved:"  # of a reference bt cannot resolve (an ARG without value, a bad name)
# Engine-only images are handed to builds by a tag derived from their id.
PIN_TAG = "bt/pin"

# (normalised reference, pinned digest or "unpinned:<ref>", the reference as written)
PinEntry = tuple[str, str, str]
Pins = Mapping[str, Mapping[str, PinRecord]]


class ExternalImage(NamedTuple):
    """An image a build uses that the workspace does not build."""

    written: str  # as the reached stage names it, after ARG substitution
    name: str  # the normalised reference images.lock knows it by (as written if unresolvable)
    digest: str | None  # written as name@digest: its own pin
    pinnable: bool  # a tag bt can resolve to a digest

    @classmethod
    def of(cls, reference: str, unresolved: bool = False) -> ExternalImage:
        if unresolved:
            return cls(reference, reference, None, False)
        try:
            parsed = parse_reference(reference)
        except BtError:
            return cls(reference, reference, None, False)  # Docker fails the build; keyed as is
        return cls(reference, normalise_reference(reference), parsed.digest, not parsed.digest)


def external_images(
    uses: Iterable[ImageUse],
    parent_args: Collection[str] = (),
    workspace: Collection[str] = (),
) -> tuple[ExternalImage, ...]:
    """The external images among a build's image uses, one per normalised reference, sorted.

    Uses through a declared parent's build arg are the parent's build, not external (their
    value is the ``bt-parent-<ARG>`` stand-in ``filesets`` substitutes), and so are named
    contexts that are workspace targets (``bt-context-<NAME>``); ``workspace`` holds
    normalised references of images the workspace builds (inferred parents)."""
    stand_ins = tuple(f"bt-parent-{arg}" for arg in parent_args)
    found: dict[str, ExternalImage] = {}
    for reference, _line, _kind, arg, unresolved, context in uses:
        if reference == "scratch" or (arg is not None and arg in parent_args):
            continue
        if context is not None and reference == context_placeholder(context):
            continue  # a named context that is a workspace target: a parent
        if any(stand_in in reference for stand_in in stand_ins):
            continue
        image = ExternalImage.of(reference, unresolved)
        if image.name not in workspace:
            found.setdefault(image.name, image)
    return tuple(found[name] for name in sorted(found))


def pin_entries(images: Iterable[ExternalImage], pins: Pins, platform: str) -> tuple[PinEntry, ...]:
    """What the key holds of a build's external images (``images`` sorted by name)."""
    entries = []
    for image in images:
        if image.digest:
            value = image.digest
        elif not image.pinnable:
            value = UNRESOLVED + image.written
        else:
            pin = pins.get(image.name, {}).get(platform)
            value = pin.digest if pin else UNPINNED + image.written
        entries.append((image.name, value, image.written))
    return tuple(entries)


def short_digest(value: str) -> str:
    """``sha256:abcdef123456..`` for messages; other values as they are."""
    algorithm, colon, hexdigits = value.partition(":")
    if colon and algorithm == "sha256" and len(hexdigits) == 64:
        return f"sha256:{hexdigits[:12]}.."
    return value


# -- resolving (`bt build`, `bt lock update`) ----------------------------------------------------


def resolve_pin(
    image: ExternalImage, platform: str, client: RegistryClient, engine: ImageStore
) -> PinRecord:
    """Resolve ``image`` for ``platform`` (see the module's docstring for the order)."""
    from buildtool.errors import RegistryUnavailable

    local = engine.local_image(image.written)
    if local is not None and not local.repo_digests:
        return PinRecord(local.image_id, ENGINE)
    try:
        digest = registry_digest(client, image.name, platform)
        problem = "the registry has no such image"
    except (RegistryUnavailable, WrongPlatform):
        raise  # a registry that hiccups is not a reason to pin an old local copy
    except BtError as err:
        digest, problem = None, str(err)
    if digest is not None:
        return PinRecord(digest, REGISTRY)
    if local is not None:
        return PinRecord(_repo_digest(local, image.name), ENGINE)
    raise BtError(
        f"cannot pin {image.written} for {platform}: {problem}, and {engine.name} does not "
        "have it either"
    )


def engine_pin_warning(written: str, platform: str, engine: str) -> str:
    """What to say of a pin from the engine (an image no registry serves): the key of every
    build using it depends on that engine."""
    return (
        f"{written} ({platform}) is pinned from {engine} alone, which no registry serves: the "
        "keys of the builds using it hold that engine's image, so another machine's engine "
        f"gives them other keys; push {written} to a registry and run bt lock update to share "
        "them"
    )


def registry_digest(client: RegistryClient, name: str, platform: str) -> str | None:
    """The manifest digest of ``name`` for ``platform``: of the index entry for the platform when
    ``name`` is a multi-platform index. None when the registry has no such manifest."""
    found = client.head_manifest(name)
    if found is None:
        return None
    if found.media_type not in INDEX_TYPES:
        _check_platform(client, name, found.digest, platform)
        return found.digest
    _, body, _ = client.get_manifest(parse_reference(name).at(digest=found.digest))
    index = load_json(body, None, f"the index of {name}")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    return _platform_entry(manifests or [], name, platform)


def _check_platform(client: RegistryClient, name: str, digest: str, platform: str) -> None:
    """A single-platform image must be of the build's platform (its config says which): an
    amd64-only image is no base of an arm64 build, and pinning it would hide that."""
    config = client.image_config(parse_reference(name).at(digest=digest)) or {}
    os_name, arch = config.get("os"), config.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        return  # a config that does not say: the engine decides
    found = Platform.of_engine(os_name, arch)
    if not found.runs_on(Platform.parse(platform)):
        raise WrongPlatform(
            f"{name} is an image for {found} only (not a multi-platform index): the {platform} "
            f"build cannot use it; build {platform} from an image for {platform}, or leave "
            f"{platform} out of the target's platforms"
        )


def _platform_entry(manifests: list[dict[str, object]], name: str, platform: str) -> str:
    """containerd's matching: os, architecture and variant equal; else os and architecture when
    the build asks no variant."""
    wanted = Platform.parse(platform)
    offered: list[tuple[Platform, str]] = []
    for entry in manifests:
        spec = entry.get("platform")
        if not isinstance(spec, dict):
            continue
        text = "/".join(str(spec.get(k) or "") for k in ("os", "architecture", "variant"))
        try:
            offered.append(
                (Platform.parse(text.rstrip("/"), known_only=False), str(entry["digest"]))
            )
        except BtError:
            continue  # attestation manifests say unknown/unknown
    for exact in (True, False):
        for found, digest in offered:
            if found == wanted or (not exact and not wanted.variant and found.runs_on(wanted)):
                return digest
    shown = ", ".join(sorted({str(p) for p, _ in offered})) or "none"
    raise BtError(f"{name} has no image for {platform} (it has: {shown})")


def _repo_digest(local: LocalImage, name: str) -> str:
    """The repo digest of ``local`` in the repository of ``name``, else its image id."""
    repository = parse_reference(name).name
    for repo_digest in local.repo_digests:
        try:
            parsed = parse_reference(repo_digest)
        except BtError:
            continue
        if parsed.name == repository and parsed.digest:
            return parsed.digest
    return local.image_id


def engine_reference(image: ExternalImage, pin: PinRecord, engine: ImageStore) -> str:
    """What a build names the pinned ``image`` by: ``ref@digest``, or for an image only the
    engine holds, a tag bt attaches to its id (an image id is not a name an engine resolves)."""
    if pin.source == REGISTRY:
        return f"{image.written}@{pin.digest}"
    by_digest = f"{parse_reference(image.name).name}@{pin.digest}"
    if engine.local_image(by_digest) is not None:
        return f"{image.written}@{pin.digest}"
    if engine.local_image(pin.digest) is None:
        raise BtError(
            f"{image.written} is pinned to {pin.digest} of {engine.name}, which no longer has "
            f"that image: run `bt lock update` to pin it again"
        )
    tag = f"{PIN_TAG}:{pin.digest.removeprefix('sha256:')}"
    engine.tag(pin.digest, tag)
    return tag


# -- handing pinned references to a build ----------------------------------------------------------
