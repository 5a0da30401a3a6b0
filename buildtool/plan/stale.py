"""The plan: which platform builds are stale, in build order, each with one short reason.

A platform build is stale exactly when its key differs from the key recorded in the lockfile
(or nothing is recorded), or when an external image it uses is not pinned yet. Keys cover
content, so stale means "something it depends on changed".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

from buildtool.errors import BtError, TransientError
from buildtool.inputs.filesets import FileSet
from buildtool.plan.keys import KeyComputer, KeyManifest, load_manifest
from buildtool.state.lockfile import BuildRecord, Lockfile
from buildtool.workspace.config import Config
from buildtool.workspace.graph import TargetGraph
from buildtool.workspace.labels import Label
from buildtool.workspace.parents import Parent


@dataclass(frozen=True, slots=True)
class PlannedBuild:
    label: Label
    platform: str
    key: str
    stale: bool
    reason: str
    parents: tuple[Label, ...]
    record: BuildRecord | None
    # Answers ``manifest`` and ``fileset`` when asked: a fresh build's key may come from the
    # memo of an earlier run (``keymemo.py``), and most callers never ask.
    computer: KeyComputer = field(repr=False, compare=False)

    @property
    def id(self) -> tuple[Label, str]:
        return (self.label, self.platform)

    @property
    def manifest(self) -> KeyManifest:
        """What went into the key."""
        manifest = self.computer.manifest(self.id)
        if manifest.key != self.key:  # the computer moved on to other pins since this plan
            raise RuntimeError(f"{self.label} {self.platform}: manifest of another plan")
        return manifest

    @property
    def fileset(self) -> FileSet:
        """What the key covers: exactly what the build is sent."""
        return self.computer.fileset(self.id)


def needs_run(planned: PlannedBuild, push: bool, registry: str | None) -> bool:
    """Stale, or fresh but recorded only locally while pushing: what `bt build` runs."""
    if planned.stale:
        return True
    record = planned.record
    return push and record is not None and not record.image.startswith(f"{registry}/")


MISSING_FROM_REGISTRY = "recorded digest missing from registry"


def check_registry(
    config: Config, planned: Sequence[PlannedBuild], *, strict: bool, jobs: int = 16
) -> list[PlannedBuild]:
    """The plan with every fresh build whose pushed digest the registry no longer serves made
    stale (``MISSING_FROM_REGISTRY``): `bt build --push` then pushes it again from the engine
    (its key-derived local tag, when the image there still carries the key) or rebuilds it.

    One HEAD per pushed record, ``jobs`` at a time, one attempt each: `bt plan` asks only with
    --check-registry, `bt build` only when pushing. A registry that cannot be asked raises with
    ``strict`` (RegistryUnavailable: exit 1); else nothing is marked, and the push or the merge
    that follows meets the fault under the retry policy."""
    pushed = [
        p
        for p in planned
        if not p.stale
        and p.record is not None
        and "@" in p.record.image
        and p.record.image.startswith(f"{config.registry}/")
    ]
    if not pushed or not config.registry:
        return list(planned)
    from buildtool.plan.verify import served
    from buildtool.registry import RegistryClient

    attempts = None if strict else 1  # `bt plan` retries; in a build, its pushes will
    client = RegistryClient(config.insecure_registries, attempts=attempts, retry=config.retry)
    try:
        found = served(client, [p.record.image for p in pushed if p.record is not None], jobs)
    except (BtError, TransientError):
        if strict:
            raise
        return list(planned)
    gone = {p.id for p in pushed if p.record is not None and found[p.record.image] is None}
    return [
        replace(p, stale=True, reason=MISSING_FROM_REGISTRY) if p.id in gone else p for p in planned
    ]


def selected_builds(
    graph: TargetGraph, labels: Iterable[Label], platforms: Iterable[str] = ()
) -> list[tuple[Label, str]]:
    """The platform builds needed for ``labels`` (their parents included), in build order."""
    wanted = set(platforms)
    closure = graph.deps(labels)
    builds = [
        (label, platform)
        for label in graph.order
        if label in closure
        for platform in graph.targets[label].platforms
        if not wanted or platform in wanted
    ]
    if not builds:
        raise BtError(f"no platform builds for platform {', '.join(sorted(wanted))}")
    return builds


def make_plan(
    config: Config,
    computer: KeyComputer,
    lock: Lockfile,
    builds: Iterable[tuple[Label, str]],
) -> list[PlannedBuild]:
    planned = []
    parents_of = computer.graph.parents_of
    for label, platform in builds:
        record = lock.get(str(label), platform)
        key = computer.key((label, platform))
        unpinned = computer.unpinned((label, platform))
        if unpinned:
            # `bt build` pins it first; the key holds "unpinned:<ref>" until then.
            stale, reason = True, f"external {unpinned[0]} not pinned yet"
        elif record is None:
            stale, reason = True, "new: never built"
        elif record.key == key:
            stale, reason = False, "up to date"
        else:
            stale, reason = True, _reason(config, record.key, computer.manifest((label, platform)))
        parents = parents_of(label, platform)
        labels = (parents[0].label,) if len(parents) == 1 else _labels(parents)
        planned.append(PlannedBuild(label, platform, key, stale, reason, labels, record, computer))
    return planned


def _labels(parents: Sequence[Parent]) -> tuple[Label, ...]:
    """Each parent's label once (a build may name one parent twice), in ``parents``' order."""
    return tuple(dict.fromkeys(p.label for p in parents))


class LastPlan:
    """A plan kept to be planned again cheaply (``bt watch``'s rounds): only the builds whose
    key was forgotten since (``dirty``), whose record changed, or that were stale are planned
    again; the others stand as they were. Its indexes are made when first asked for: most
    plans are never planned again."""

    def __init__(self, lock: Lockfile, planned: list[PlannedBuild]):
        self.lock = lock
        self.planned = planned
        self.dirty: set[int] = set()

    @cached_property
    def index(self) -> dict[tuple[Label, str], int]:
        """The position of each build."""
        return {p.id: i for i, p in enumerate(self.planned)}

    @cached_property
    def names(self) -> dict[tuple[str, str], int]:
        """The same, by (label as written, platform)."""
        return {(str(label), platform): i for (label, platform), i in self.index.items()}

    @cached_property
    def stale(self) -> set[int]:
        return {i for i, p in enumerate(self.planned) if p.stale}

    def forget(self, builds: Iterable[tuple[Label, str]]) -> None:
        """``builds`` have keys to compute again."""
        self.dirty.update(self.index[b] for b in builds if b in self.index)

    def replan(
        self,
        config: Config,
        computer: KeyComputer,
        lock: Lockfile,
        changed_records: Iterable[tuple[str, str]],
    ) -> list[PlannedBuild]:
        """The plan against ``lock``, whose records differ from ``self.lock``'s only for
        ``changed_records`` (label, platform); the pins being the same."""
        again = self.dirty | self.stale
        again.update(self.names[n] for n in changed_records if n in self.names)
        positions = sorted(again)  # build order
        fresh = make_plan(config, computer, lock, [self.planned[i].id for i in positions])
        planned = list(self.planned)
        for i, build in zip(positions, fresh, strict=True):
            planned[i] = build
        self.lock, self.planned, self.dirty = lock, planned, set()
        self.stale = {i for i in positions if planned[i].stale}
        return planned


def _reason(config: Config, old_key: str, manifest: KeyManifest) -> str:
    from buildtool.plan.changes import diff_manifests, short_reason

    old = load_manifest(config.cache_dir, old_key)
    if old is None:
        return "key changed (no record of the inputs it was built from)"
    return short_reason(diff_manifests(old, manifest))
