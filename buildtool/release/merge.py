"""The last arrow of the data path: images.lock -> multi-platform indexes behind each tag.

For an image whose platform builds are all recorded (and pushed), the index lists exactly those
manifests, with platforms read from the children themselves, and carries the annotations of the
commit it is released from (``annotations.py``). It is put under the image's declared tags and
the tag templates' expansions (``tags.py``), only where a tag does not already point at it, and
recorded in images.lock (with the declared tags) once every tag serves it (invariant 5).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from buildtool.errors import BtError, ManifestNotFound, RegistryUnavailable
from buildtool.platforms import Platform
from buildtool.registry import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_TYPES,
    OCI_INDEX,
    Reference,
    RegistryClient,
    parse_reference,
    sha256_digest,
)
from buildtool.release.annotations import index_annotations
from buildtool.release.gitcontext import GitContext, read_context
from buildtool.release.tags import Release, release
from buildtool.state.lockfile import (
    BuildRecord,
    IndexRecord,
    Lockfile,
    read_lockfile,
    update_lockfile,
)
from buildtool.workspace.config import Config
from buildtool.workspace.labels import Label
from buildtool.workspace.target import ImageTarget

Status = Literal["unchanged", "created", "updated"]
_SHOWN_PROBLEMS = 5


@dataclass(frozen=True)
class IndexPlatform:
    """A platform as an index descriptor states it (OCI image-index ``platform``): bt's
    ``Platform`` plus what only Windows images carry."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            data["os.version"] = self.os_version
        if self.os_features:
            data["os.features"] = list(self.os_features)
        if self.variant:
            data["variant"] = self.variant
        return data

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Child:
    """One platform manifest of an index."""

    media_type: str
    digest: str
    size: int
    platform: IndexPlatform


def index_for(
    children: Sequence[Child], annotations: Mapping[str, str] | None = None
) -> tuple[str, bytes]:
    """(media type, body) of the index listing ``children`` in the order given.

    A Docker manifest list when every child is a Docker v2 manifest and there are no
    annotations (what Docker's own engines and `docker manifest` read best), an OCI image index
    otherwise: only it has annotations. The bytes are a pure function of the children and the
    annotations, so the same builds of one commit always give the same index digest.
    """
    docker = all(child.media_type == DOCKER_MANIFEST for child in children) and not annotations
    media_type = DOCKER_MANIFEST_LIST if docker else OCI_INDEX
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            {
                "mediaType": child.media_type,
                "digest": child.digest,
                "size": child.size,
                "platform": child.platform.to_json(),
            }
            for child in children
        ],
    }
    if annotations:
        document["annotations"] = dict(sorted(annotations.items()))
    return media_type, json.dumps(document, indent=2).encode()


@dataclass(frozen=True)
class TagOutcome:
    """What happened (or, on a dry run, would happen) to one tag."""

    label: Label
    tag: str
    status: Status
    digest: str
    previous: str | None = None
    dry_run: bool = False

    def __str__(self) -> str:
        if self.status == "unchanged":
            return f"{self.tag}: unchanged"
        verb = {"created": "create", "updated": "update"}[self.status]
        text = f"would {verb}" if self.dry_run else self.status
        if self.previous:
            text += f" (was {self.previous})"
        return f"{self.tag}: {text}"


@dataclass(frozen=True)
class MergeReport:
    tags: tuple[TagOutcome, ...]
    partial: tuple[tuple[Label, tuple[str, ...]], ...]  # merged without these platforms
    skipped: tuple[Label, ...]  # nothing recorded at all (only with allow_partial)
    skipped_templates: tuple[str, ...] = ()  # one line per tag template without a value here


@dataclass(frozen=True)
class _Wanted:
    """An index to put: the image's repository, its tags, and the recorded children."""

    label: Label
    repository: Reference
    tags: tuple[str, ...]  # "<registry>/<repository>:<tag>": declared, then from templates
    children: tuple[tuple[str, Reference], ...]  # (platform, child reference by digest)
    missing: tuple[str, ...]
    declared: tuple[str, ...] = ()  # the declared ones, which images.lock records
    annotations: tuple[tuple[str, str], ...] = ()


def merge_images(
    config: Config,
    targets: Mapping[Label, ImageTarget],
    labels: Iterable[Label],
    lock_path: Path,
    *,
    allow_partial: bool = False,
    dry_run: bool = False,
    client: RegistryClient | None = None,
    jobs: int = 8,
    tag_templates: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> MergeReport:
    """Put a multi-platform index to every tag of the images ``labels`` name.

    Everything is checked against images.lock before the registry is contacted: an image with
    a platform missing is refused unless ``allow_partial``; a build that was not pushed, or was
    pushed to another repository than its tags, is refused; a tag template's expansion that is
    not a valid tag, or a tag two images would share, is refused. Each tag is put only when it
    does not serve the index already; the index digest and declared tags are then recorded in
    images.lock. ``tag_templates`` add to ``[release] tag_templates``; ``env`` (the process
    environment by default) holds GitHub Actions' variables when run there.
    """
    context = read_context(
        config.root, os.environ if env is None else env, config.release.default_branch
    )
    plan = release((*config.release.tag_templates, *tag_templates), context, config.release.latest)
    lock = read_lockfile(config.lockfile)
    wanted = _select(config, targets, sorted(set(labels)), lock, plan, context)
    if not allow_partial:
        _refuse_missing(wanted)
    skipped = tuple(w.label for w in wanted if not w.children)
    wanted = [w for w in wanted if w.children]
    registry = client or RegistryClient(config.insecure_registries, retry=config.retry)
    _refuse_lost(registry, wanted, jobs)
    done: dict[Label, tuple[IndexRecord, list[TagOutcome]]] = {}
    failed: dict[Label, BtError] = {}

    def one(item: _Wanted) -> None:
        try:
            done[item.label] = _put_index(registry, item, dry_run)
        except BtError as err:
            failed[item.label] = err

    pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(wanted))))
    try:
        list(pool.map(one, wanted))
    finally:
        # On Ctrl-C start nothing new, and still record what every tag already serves.
        pool.shutdown(wait=True, cancel_futures=True)
        records = {str(label): record for label, (record, _) in done.items()}
        if records and not dry_run:
            children = {str(w.label): w.children for w in wanted}

            def change(lock: Lockfile) -> None:
                for label, record in records.items():
                    # A bt build that recorded a new build of the image since it was read here
                    # made this index stale: recording it would pair it with builds it lacks.
                    if _listed(lock, label, children[label]):
                        lock.images[label] = record

            update_lockfile(config.lockfile, lock_path, change)
    errors = [failed[w.label] for w in wanted if w.label in failed]
    if errors:
        more = f" (and {len(errors) - 1} more images failed)" if len(errors) > 1 else ""
        # An unreachable registry is said first and keeps its type: a build fails on it.
        first = next((e for e in errors if isinstance(e, RegistryUnavailable)), errors[0])
        raise type(first)(f"{first}{more}")
    outcomes = tuple(outcome for w in wanted for outcome in done[w.label][1])
    partial = tuple((w.label, w.missing) for w in wanted if w.missing)
    return MergeReport(outcomes, partial, skipped, plan.skipped)


def _listed(lock: Lockfile, label: str, children: Sequence[tuple[str, Reference]]) -> bool:
    """Whether ``lock`` records exactly ``children`` (platform, reference) for ``label``."""
    recorded = {platform: record.digest for platform, record in lock.builds.get(label, {}).items()}
    return all(recorded.get(platform) == ref.digest for platform, ref in children)


def _select(
    config: Config,
    targets: Mapping[Label, ImageTarget],
    labels: Sequence[Label],
    lock: Lockfile,
    plan: Release,
    context: GitContext,
) -> list[_Wanted]:
    if not config.registry:
        raise BtError("merging needs [registry] url in .cache-spec", config.spec_path)
    wanted: list[_Wanted] = []
    problems: list[str] = []
    for label in labels:
        target = targets[label]
        name = f"{config.registry}/{target.repository}"
        repository = parse_reference(name)
        children: list[tuple[str, Reference]] = []
        missing: list[str] = []
        for platform in target.platforms:
            record = lock.get(str(label), platform)
            if record is None:
                missing.append(platform)
                continue
            child = _pushed_child(label, platform, record, repository, problems)
            if child is not None:
                children.append((platform, child))
        declared = tuple(f"{name}:{tag}" for tag in target.tags)
        # Checked again as whole references: nothing unvalidated is put (invariant 11).
        tags = tuple(str(parse_reference(f"{name}:{tag}")) for tag in plan.tags_for(target.tags))
        annotations = tuple(index_annotations(context, target.annotations).items())
        wanted.append(
            _Wanted(label, repository, tags, tuple(children), tuple(missing), declared, annotations)
        )
    _raise_problems(problems)
    _refuse_shared_tags(wanted)
    return wanted


def _refuse_shared_tags(wanted: Sequence[_Wanted]) -> None:
    """One tag can serve one index: two images of one repository must not both put it (a
    template without {tag}, say, gives every image of the repository the same tag)."""
    owners: dict[str, Label] = {}
    problems = []
    for item in wanted:
        for tag in item.tags:
            first = owners.setdefault(tag, item.label)
            if first != item.label:
                problems.append(f"{tag} would serve both {first} and {item.label}")
    _raise_problems(problems)


def _pushed_child(
    label: Label, platform: str, record: BuildRecord, repository: Reference, problems: list[str]
) -> Reference | None:
    """The registry reference of a recorded build, or None after noting why it has none."""
    how = f"run `bt build {label} --platform {platform} --push`"
    try:
        ref = parse_reference(record.image)
    except BtError:
        ref = None
    if ref is None or ref.digest is None or ref.digest != record.digest:
        problems.append(
            f"{label} {platform} was not pushed (images.lock has {record.image}); {how}"
        )
        return None
    if ref.name != repository.name:
        problems.append(
            f"{label} {platform} was pushed to {ref.name}, but its tags go to {repository.name} "
            f"(an index can only list manifests of its own repository); {how}"
        )
        return None
    return ref


def _refuse_missing(wanted: Sequence[_Wanted]) -> None:
    problems = []
    for item in wanted:
        if item.missing:
            platforms = " ".join(f"--platform {p}" for p in item.missing)
            problems.append(
                f"{item.label} has no pushed build for {', '.join(item.missing)} in images.lock "
                f"(run `bt build {item.label} {platforms} --push`, or pass --allow-partial)"
            )
    _raise_problems(problems)


def _refuse_lost(client: RegistryClient, wanted: Sequence[_Wanted], jobs: int) -> None:
    """Before anything is put: every manifest an index would list must still be served (one
    HEAD each). The missing ones are named; `bt build --push` pushes them again."""
    from buildtool.plan.verify import served

    children = [(w.label, platform, str(ref)) for w in wanted for platform, ref in w.children]
    found = served(client, [ref for _, _, ref in children], jobs)
    lost = [(label, platform, ref) for label, platform, ref in children if found[ref] is None]
    if not lost:
        return
    named = [f"{label} {platform} ({ref})" for label, platform, ref in lost]
    _raise_problems(
        [
            f"{len(lost)} recorded builds are missing from the registry (run `bt build "
            f"--push` to push them again): {named[0]}",
            *named[1:],
        ]
    )


def _raise_problems(problems: Sequence[str]) -> None:
    if not problems:
        return
    shown = "; ".join(problems[:_SHOWN_PROBLEMS])
    more = len(problems) - _SHOWN_PROBLEMS
    raise BtError(shown + (f"; and {more} more" if more > 0 else ""))


def _put_index(
    client: RegistryClient, item: _Wanted, dry_run: bool
) -> tuple[IndexRecord, list[TagOutcome]]:
    children = [_read_child(client, item.label, platform, ref) for platform, ref in item.children]
    media_type, body = index_for(children, dict(item.annotations))
    digest = sha256_digest(body)
    outcomes = []
    for tag in item.tags:
        current = client.head_manifest(tag)
        if current is not None and current.digest == digest:
            outcomes.append(TagOutcome(item.label, tag, "unchanged", digest, dry_run=dry_run))
            continue
        status: Status = "created" if current is None else "updated"
        previous = current.digest if current else None
        if not dry_run:
            client.put_manifest(tag, media_type, body)
        outcomes.append(TagOutcome(item.label, tag, status, digest, previous, dry_run))
    return IndexRecord(digest, item.declared), outcomes


def _read_child(client: RegistryClient, label: Label, platform: str, ref: Reference) -> Child:
    """The descriptor of one recorded build, its platform read from its image config."""
    try:
        media_type, body, digest = client.get_manifest(ref)
    except ManifestNotFound as err:
        raise BtError(f"{label} {platform}: {err.message}") from None
    manifest = _json_object(body, f"manifest {ref}")
    if media_type in INDEX_TYPES:
        # BuildKit may push one platform as an index (image + attestations): list the image.
        ref = _only_image_of(manifest, label, platform, ref)
        media_type, body, digest = client.get_manifest(ref)
        manifest = _json_object(body, f"manifest {ref}")
    config_digest = (manifest.get("config") or {}).get("digest")
    if not isinstance(config_digest, str):
        raise BtError(f"manifest {ref} of {label} {platform} has no image config")
    config = _json_object(client.get_blob(ref, config_digest), f"image config of {ref}")
    expected = Platform.parse(platform)
    found = _platform_of(config, expected)
    stated = _stated(found.to_json())
    if stated is None or not (
        stated.runs_on(expected) and expected.variant in ("", stated.variant)
    ):
        raise BtError(
            f"{label} is recorded for {platform} in images.lock, but the image it names "
            f"({ref}) is {found}"
        )
    return Child(media_type, digest, len(body), found)


def _only_image_of(index: dict[str, Any], label: Label, platform: str, ref: Reference) -> Reference:
    expected = Platform.parse(platform)
    matches = [
        entry
        for entry in index.get("manifests") or []
        if isinstance(entry, dict)
        and isinstance(entry.get("digest"), str)
        and (stated := _stated(entry.get("platform"))) is not None
        and stated.runs_on(expected)
    ]
    if len(matches) != 1:
        raise BtError(
            f"{label} {platform}: {ref} is an index with {len(matches)} images for {platform}; "
            "expected exactly one"
        )
    return ref.at(digest=matches[0]["digest"])


def _stated(descriptor: Any) -> Platform | None:
    """The platform a descriptor's or config's ``os``/``architecture``/``variant`` state,
    normalised; None when they name no platform."""
    if not isinstance(descriptor, dict):
        return None
    os_name, arch, variant = (descriptor.get(k) for k in ("os", "architecture", "variant"))
    if not isinstance(os_name, str) or not isinstance(arch, str):
        return None
    text = (
        f"{os_name}/{arch}/{variant}"
        if isinstance(variant, str) and variant
        else f"{os_name}/{arch}"
    )
    try:
        return Platform.parse(text, known_only=False)
    except BtError:
        return None


def _platform_of(config: dict[str, Any], declared: Platform) -> IndexPlatform:
    """The platform an image config states; the declared variant fills in a missing one."""

    def text(key: str) -> str | None:
        value = config.get(key)
        return value if isinstance(value, str) and value else None

    features = config.get("os.features")
    return IndexPlatform(
        os=text("os") or "",
        architecture=text("architecture") or "",
        variant=text("variant") or declared.variant or None,
        os_version=text("os.version"),
        os_features=tuple(f for f in features if isinstance(f, str))
        if isinstance(features, list)
        else (),
    )


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise BtError(f"{what} is not a JSON object")
    return data
