"""Promotion: the platform images and indexes images.lock records, copied by digest to another
registry (a mirror), byte for byte, so that every digest is the same in both. No build runs.

Each manifest is copied only when the mirror does not serve its digest yet (a registry accepts a
manifest only once it holds everything the manifest names, so a served manifest is a complete
one), children before the index that lists them, and each blob only when the mirror lacks it:
mounted from another repository of the mirror when one there holds it (the distribution spec's
cross-repository mount), else streamed from the source. Every digest is checked on arrival.
What fails is named, and a rerun copies only what is still missing.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from buildtool.errors import BtError
from buildtool.registry import INDEX_TYPES, Reference, RegistryClient, parse_reference
from buildtool.release.gitcontext import read_context
from buildtool.release.merge import Status, TagOutcome
from buildtool.release.tags import release
from buildtool.state.lockfile import Lockfile, read_lockfile
from buildtool.workspace.config import Config
from buildtool.workspace.labels import Label
from buildtool.workspace.target import ImageTarget

# Layers a registry must not redistribute (Windows base layers): manifests name them by URL.
_FOREIGN = ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "nondistributable")
_SHOWN_FAILURES = 5


@dataclass
class Tally:
    """What one promotion copied; counts are of things the mirror did not hold before."""

    manifests: int = 0
    blobs: int = 0
    mounted: int = 0
    bytes: int = 0
    present: int = 0  # manifests the mirror already served
    dry_run: bool = False  # counted, not copied
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)

    def __str__(self) -> str:
        if self.dry_run:  # whether a blob would be mounted is known only by trying
            return (
                f"would copy {self.manifests} manifests and {self.blobs} blobs ({self.bytes} "
                f"bytes); {self.present} manifests are already there"
            )
        return (
            f"copied {self.manifests} manifests and {self.blobs} blobs ({self.bytes} bytes), "
            f"mounted {self.mounted} blobs; {self.present} manifests were already there"
        )


@dataclass(frozen=True)
class PromoteReport:
    tally: Tally
    tags: tuple[TagOutcome, ...]
    without_index: tuple[Label, ...]  # no index recorded: platform images only
    failures: tuple[str, ...]  # one line per image not fully promoted
    skipped_templates: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Image:
    """One image to promote: its recorded manifests by digest, in its source repository."""

    label: Label
    source: Reference  # the repository images.lock records it in
    repository: str  # the target's repository: on a mirror, <mirror>/<repository>
    builds: tuple[str, ...]  # platform manifest digests
    index: str | None  # the recorded index digest
    tags: tuple[str, ...]  # tags the index gets on the mirror


def promote_images(
    config: Config,
    targets: Mapping[Label, ImageTarget],
    labels: Iterable[Label],
    mirrors: Sequence[str],
    *,
    client: RegistryClient | None = None,
    jobs: int = 4,
    tag_templates: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> PromoteReport:
    """Copy the recorded builds and index of each image ``labels`` name to every registry of
    ``mirrors`` (``host[:port][/prefix]``): to ``<mirror>/<repository>``, the index under the
    tags `bt merge` gives it (declared, and ``[release] tag_templates`` + ``tag_templates``).
    With ``dry_run`` the mirrors are only asked what they hold: nothing is copied or put."""
    if not mirrors:
        raise BtError("promoting needs a registry: pass --to, or set [registry] mirrors")
    if not config.registry:
        raise BtError("promoting needs [registry] url in .cache-spec", config.spec_path)
    context = read_context(
        config.root, os.environ if env is None else env, config.release.default_branch
    )
    plan = release((*config.release.tag_templates, *tag_templates), context, config.release.latest)
    images = _recorded(targets, sorted(set(labels)), read_lockfile(config.lockfile), plan.tags_for)
    registry = client or RegistryClient(config.insecure_registries, retry=config.retry)
    tally = Tally(dry_run=dry_run)
    copier = _Copier(registry, tally)

    def one(work: tuple[str, _Image]) -> list[TagOutcome] | str:
        mirror, image = work
        try:
            return copier.image(image, mirror)
        except BtError as err:
            return f"{image.label} to {mirror}: {err}"

    work = [(mirror, image) for mirror in mirrors for image in images]
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(work) or 1))) as pool:
        results = list(pool.map(one, work))
    return PromoteReport(
        tally,
        tuple(o for result in results if not isinstance(result, str) for o in result),
        tuple(image.label for image in images if image.index is None),
        tuple(result for result in results if isinstance(result, str)),
        plan.skipped,
    )


def _recorded(
    targets: Mapping[Label, ImageTarget],
    labels: Sequence[Label],
    lock: Lockfile,
    tags_for: Callable[[Sequence[str]], tuple[str, ...]],
) -> list[_Image]:
    """What images.lock records of each image, refused whole when a build was not pushed."""
    images: list[_Image] = []
    problems: list[str] = []
    for label in labels:
        target = targets[label]
        builds: list[str] = []
        source: Reference | None = None
        for platform, record in sorted(lock.builds.get(str(label), {}).items()):
            try:
                ref = parse_reference(record.image)
            except BtError:
                ref = None
            if ref is None or ref.digest != record.digest:
                problems.append(
                    f"{label} {platform} was not pushed (images.lock has {record.image}); run "
                    f"`bt build {label} --platform {platform} --push`"
                )
                continue
            source = source or ref.at()
            if ref.at() != source:
                problems.append(f"{label} is recorded in two repositories: {source}, {ref.at()}")
            builds.append(record.digest)
        if source is None:
            if not problems:
                problems.append(
                    f"{label} has no pushed build in images.lock; run `bt build --push`"
                )
            continue
        index = lock.images.get(str(label))
        digest = parse_reference(f"{source}@{index.digest}").digest if index else None
        tags = tags_for(target.tags)
        images.append(_Image(label, source, target.repository, tuple(builds), digest, tags))
    if problems:
        shown = "; ".join(problems[:_SHOWN_FAILURES])
        more = len(problems) - _SHOWN_FAILURES
        raise BtError(shown + (f"; and {more} more" if more > 0 else ""))
    return images


class _Copier:
    """Copies manifests and blobs to mirrors; remembers, per mirror registry, a repository that
    holds each blob, to mount it from there into the next repository that needs it."""

    def __init__(self, client: RegistryClient, tally: Tally):
        self.client = client
        self.tally = tally
        self._holders: dict[tuple[str, str], str] = {}  # (registry, digest) -> repository
        self._seen: set[tuple[str, str]] = set()  # (repository name, digest): served by now
        self._lock = threading.Lock()

    def image(self, image: _Image, mirror: str) -> list[TagOutcome]:
        dest = parse_reference(f"{mirror}/{image.repository}")
        for digest in image.builds:
            self.manifest(image.source, dest, digest)
        if image.index is None:
            return []
        self.manifest(image.source, dest, image.index)
        index: tuple[str, bytes, str] | None = None
        outcomes = []
        for tag in image.tags:
            ref = parse_reference(f"{dest}:{tag}")  # checked whole, as every reference put
            current = self.client.head_manifest(ref)
            dry_run = self.tally.dry_run
            if current is not None and current.digest == image.index:
                outcome = TagOutcome(image.label, str(ref), "unchanged", image.index, None, dry_run)
                outcomes.append(outcome)
                continue
            if not dry_run:
                index = index or self.client.get_manifest(dest.at(digest=image.index))
                self.client.put_manifest(ref, index[0], index[1])
            status: Status = "created" if current is None else "updated"
            previous = current.digest if current else None
            outcome = TagOutcome(image.label, str(ref), status, image.index, previous, dry_run)
            outcomes.append(outcome)
        return outcomes

    def manifest(self, source: Reference, dest: Reference, digest: str) -> None:
        """Copy manifest ``digest`` and all it names, unless the mirror serves it already."""
        with self._lock:
            if (dest.name, digest) in self._seen:
                return
        if self.client.manifest_digest(dest.at(digest=digest)) == digest:
            self.tally.add(present=1)
            with self._lock:
                self._seen.add((dest.name, digest))
            return
        media_type, body, _ = self.client.get_manifest(source.at(digest=digest))
        document = _json(body, f"manifest {source.at(digest=digest)}")
        if media_type in INDEX_TYPES:
            for child in document.get("manifests") or []:
                self.manifest(source, dest, _digest_of(child, source, digest))
        else:
            for blob in [document.get("config"), *(document.get("layers") or [])]:
                if isinstance(blob, dict) and not _foreign(blob):
                    self.blob(source, dest, _digest_of(blob, source, digest), blob.get("size"))
        if not self.tally.dry_run:
            self.client.put_manifest(dest.at(digest=digest), media_type, body)
            if self.client.manifest_digest(dest.at(digest=digest)) != digest:
                raise BtError(f"{dest.name} does not serve {digest} after it was put")
        self.tally.add(manifests=1)
        with self._lock:
            self._seen.add((dest.name, digest))

    def blob(self, source: Reference, dest: Reference, digest: str, size: object) -> None:
        from buildtool.registry.blobs import copy_blob

        if not isinstance(size, int) or size < 0:
            raise BtError(f"a manifest of {source.name} gives blob {digest} no size")
        if self.client.head_blob(dest, digest) is not None:
            self._hold(dest, digest)
            return
        if self.tally.dry_run:
            with self._lock:
                if (dest.name, digest) in self._seen:
                    return  # counted once per repository, as the copy would be
                self._seen.add((dest.name, digest))
            self.tally.add(blobs=1, bytes=size)
            return
        holder = source.repository if source.registry == dest.registry else None
        with self._lock:
            holder = self._holders.get((dest.registry, digest), holder)
        mount = (digest, holder) if holder and holder != dest.repository else None
        upload = self.client.start_upload(dest, mount)
        if upload is None:
            if self.client.head_blob(dest, digest) is None:
                raise BtError(f"{dest.name} mounted blob {digest} but does not serve it")
            self.tally.add(mounted=1)
        else:
            copy_blob(self.client, source, dest, digest, size, upload)
            self.tally.add(blobs=1, bytes=size)
        self._hold(dest, digest)

    def _hold(self, dest: Reference, digest: str) -> None:
        with self._lock:
            self._holders.setdefault((dest.registry, digest), dest.repository)


def _foreign(descriptor: dict[str, Any]) -> bool:
    media_type = descriptor.get("mediaType")
    return isinstance(media_type, str) and any(word in media_type for word in _FOREIGN)


def _digest_of(descriptor: Any, source: Reference, parent: str) -> str:
    digest = descriptor.get("digest") if isinstance(descriptor, dict) else None
    try:
        return parse_reference(f"{source.name}@{digest}").digest or ""
    except BtError:
        raise BtError(f"manifest {parent} of {source.name} names an invalid digest") from None


def _json(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise BtError(f"{what} is not a JSON object")
    return data
