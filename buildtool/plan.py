"""The plan: which platform builds are stale, in build order, each with one short reason.

A platform build is stale exactly when its key differs from the key recorded in the lockfile
(or nothing is recorded), or when an external image it uses is not pinned yet. Keys cover
content, so stale means "something it depends on changed".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from buildtool.errors import BtError
from buildtool.filesets import FileSet
from buildtool.graph import TargetGraph
from buildtool.keys import KeyComputer, KeyManifest, load_manifest
from buildtool.labels import Label
from buildtool.lockfile import BuildRecord, Lockfile
from buildtool.why import diff_manifests, short_reason
from buildtool.workspace import Config


@dataclass(frozen=True)
class PlannedBuild:
    label: Label
    platform: str
    key: str
    stale: bool
    reason: str
    parents: tuple[Label, ...]
    manifest: KeyManifest
    record: BuildRecord | None
    fileset: FileSet  # what the key covers: exactly what the build is sent

    @property
    def id(self) -> tuple[Label, str]:
        return (self.label, self.platform)


def needs_run(planned: PlannedBuild, push: bool, registry: str | None) -> bool:
    """Stale, or fresh but recorded only locally while pushing: what `bt build` runs."""
    if planned.stale:
        return True
    record = planned.record
    return push and record is not None and not record.image.startswith(f"{registry}/")


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
    for label, platform in builds:
        manifest = computer.manifest((label, platform))
        key = manifest.key
        record = lock.get(str(label), platform)
        if manifest.unpinned:
            # `bt build` pins it first; the key holds "unpinned:<ref>" until then.
            stale, reason = True, f"external {manifest.unpinned[0]} not pinned yet"
        elif record is None:
            stale, reason = True, "new: never built"
        elif record.key == key:
            stale, reason = False, "up to date"
        else:
            stale, reason = True, _reason(config, record.key, manifest)
        planned.append(
            PlannedBuild(
                label=label,
                platform=platform,
                key=key,
                stale=stale,
                reason=reason,
                parents=tuple(
                    dict.fromkeys(p.label for p in computer.graph.parents_of(label, platform))
                ),
                manifest=manifest,
                record=record,
                fileset=computer.fileset((label, platform)),
            )
        )
    return planned


def _reason(config: Config, old_key: str, manifest: KeyManifest) -> str:
    old = load_manifest(config.cache_dir, old_key)
    if old is None:
        return "key changed (no record of the inputs it was built from)"
    return short_reason(diff_manifests(old, manifest))
