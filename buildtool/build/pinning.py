"""Exact images for a run: external images pinned in images.lock before the plan the run builds
(invariant 9), and the Dockerfile handed to the engine with every parent and pinned external
reference rewritten to the exact image recorded for it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from buildtool.build.events import Pinned, ReportEvent
from buildtool.build.routing import Engines
from buildtool.errors import BtError, JobFailed, TransientError
from buildtool.plan.pins import ENGINE, ExternalImage, Pins, engine_pin_warning
from buildtool.plan.stale import PlannedBuild, needs_run
from buildtool.state.lockfile import Lockfile, PinRecord, update_lockfile
from buildtool.workspace.config import Config
from buildtool.workspace.labels import Label
from buildtool.workspace.target import ImageTarget

if TYPE_CHECKING:
    from buildtool.dockerfile.rewrite import ImageSite
    from buildtool.plan.keys import KeyComputer
    from buildtool.plan.session import Workbench


class Prefetch(Protocol):
    """Asks the remote action cache for the stale builds while the engines are checked
    (``BuildRun``)."""

    def start_prefetch(self, stale: Sequence[PlannedBuild]) -> None: ...
    def end_prefetch(self, *, stop: bool = False) -> None: ...


@dataclass
class Pinning:
    """The pins a run builds against, and why the images that could not be pinned were not."""

    config: Config
    lock_path: Path
    engines: Engines
    lock_out: Path | None = None
    pins: Pins = field(default_factory=dict)  # images.lock's, which the plan's keys hold
    # (normalised reference, platform) -> why it could not be pinned
    failures: dict[tuple[str, str], str] = field(default_factory=dict)

    def pin(
        self, images: Sequence[tuple[ExternalImage, str]]
    ) -> list[tuple[ExternalImage, str, PinRecord, PinRecord | None]]:
        """Resolve each (image, platform) now (``pins.resolve_pin``) and record the pins in
        images.lock (and the fragment, if any); return (image, platform, pin, previous pin).
        An image that cannot be resolved is left out and kept in ``failures``: the builds
        using it fail with that message, the others go on."""
        from buildtool.plan.pins import resolve_pin
        from buildtool.registry import RegistryClient

        client = RegistryClient(self.config.insecure_registries, retry=self.config.retry)
        resolved = []
        for image, platform in images:
            try:
                pin = resolve_pin(image, platform, client, self.engines.builder(platform))
            except (BtError, TransientError) as err:
                self.failures[(image.name, platform)] = str(err)
                continue
            resolved.append((image, platform, pin))
        previous: dict[tuple[str, str], PinRecord | None] = {}

        def change(lock: Lockfile) -> None:
            for image, platform, pin in resolved:
                previous.setdefault((image.name, platform), lock.pin(image.name, platform))
                lock.put_pin(image.name, platform, pin)

        if self.lock_out is not None:
            update_lockfile(self.lock_out, self.lock_path, change)
        previous.clear()
        self.pins = update_lockfile(self.config.lockfile, self.lock_path, change).pins
        return [(i, p, pin, previous[(i.name, p)]) for i, p, pin in resolved]

    def external_reference(self, ref: str, platform: str) -> str | None:
        """The reference a build of ``platform`` hands the engine for the external image
        ``ref`` (as the Dockerfile names it): pinned to the digest images.lock records, or None
        when nothing is to be rewritten (a reference with its own digest, or no pin)."""
        from buildtool.plan.pins import engine_reference

        image = ExternalImage.of(ref)
        pin = self.pins.get(image.name, {}).get(platform)
        if not image.pinnable or pin is None:
            return None
        return engine_reference(image, pin, self.engines.builder(platform))

    def fail_unpinned(self, planned: PlannedBuild, log_path: Path) -> None:
        """Invariant 9: never build (and record) a key that holds an unpinned image. The build
        fails, with why the pin could not be made in its log; its dependents are skipped."""
        from buildtool.plan.pins import UNPINNED
        from buildtool.secrets import scrub

        unpinned = [(n, w) for n, value, w in planned.manifest.pins if value.startswith(UNPINNED)]
        if not unpinned:
            return
        name, written = unpinned[0]
        message = self.failures.get(
            (name, planned.platform), f"{written} is not pinned in images.lock yet"
        )
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(scrub(message) + "\n", encoding="utf-8")
        raise JobFailed(message, log_tail=message, log_path=str(log_path))


def exact_dockerfile(
    planned: PlannedBuild,
    target: ImageTarget,
    computer: KeyComputer,
    references: Mapping[tuple[Label, str], str],
    pinning: Pinning,
    takes_named_contexts: bool = False,
) -> str | None:
    """The Dockerfile to send when the build names images bt hands over exactly, or reads a
    directory context, else None.

    A child must build on the very image recorded for its parent's key, never on what the
    floating tag it names points at (an older image in the registry, or nothing yet). The
    references are rewritten in a copy of the Dockerfile (dockerfile/rewrite.py): Docker
    20.10's CLI and the Engine API have no named contexts. A builder that takes them
    (``takes_named_contexts``: buildx) gets the image contexts as ``--build-context``
    (``build_contexts``) instead. A directory context is read from where the context bt sends
    holds its files, on every builder: buildx would read the folder from disk, past what the
    key covers (invariant 8)."""
    replacements: dict[ImageSite, str] = {}
    for parent in computer.graph.parents_of(planned.label, planned.platform):
        if parent.declared:
            continue  # handed over in its build arg
        exact = references.get((parent.label, planned.platform))
        if exact is None:
            raise BtError(f"parent {parent.label} of {planned.label} has no recorded image")
        sites = parent.sites
        if takes_named_contexts:  # a named context's sites are handed over by name
            sites = tuple(site for site in sites if not _names_context(target, site))
        replacements.update(dict.fromkeys(sites, exact))
    fileset = computer.filesets.of(target, planned.platform)
    declared = {arg for arg, _ in target.parents}
    for reference, line, kind, arg, unresolved, context in fileset.reads.images:
        site = (line, kind, context or reference)  # a named context: where it is named
        if site in replacements or unresolved or arg in declared:
            continue
        if context is not None and takes_named_contexts:
            continue
        exact = pinning.external_reference(reference, planned.platform)
        if exact is not None:
            replacements[site] = exact
    if not replacements and not fileset.named:
        return None
    from buildtool.dockerfile.rewrite import blank_stages, rewrite_directory_reads, rewrite_images

    text = rewrite_images(fileset.dockerfile_text, replacements, target.dockerfile)
    if target.contexts and not takes_named_contexts:
        # The classic builder runs every stage before the target: those the build does not
        # reach (the stages its contexts replace) must not read what it is not sent.
        reached = [first for first, _ in fileset.reads.stage_lines]
        text = blank_stages(text, reached, target.dockerfile)
    if fileset.named:
        from buildtool.inputs.filesets import NAMED_IN_TAR

        prefixes = {named.name: f"{NAMED_IN_TAR}/{named.name}" for named in fileset.named}
        lines = [source[2] for source in fileset.reads.named_sources]
        text = rewrite_directory_reads(text, prefixes, lines, target.dockerfile)
    return text


def build_contexts(
    planned: PlannedBuild,
    target: ImageTarget,
    computer: KeyComputer,
    references: Mapping[tuple[Label, str], str],
    pinning: Pinning,
) -> tuple[tuple[str, str], ...]:
    """``--build-context NAME=docker-image://<exact>`` of the build's image contexts, for a
    builder that takes named contexts: each the image ``exact_dockerfile`` would otherwise
    write (a parent's recorded image, or an external one at its pin)."""
    found: dict[str, str] = {}
    for parent in computer.graph.parents_of(planned.label, planned.platform):
        names = {site[2] for site in parent.sites if _names_context(target, site)}
        exact = references.get((parent.label, planned.platform))
        if names and exact is None:
            raise BtError(f"parent {parent.label} of {planned.label} has no recorded image")
        found.update((name, f"docker-image://{exact}") for name in names)
    for reference, _, _, _, _, context in planned.fileset.reads.images:
        if context is not None and context not in found:
            exact = pinning.external_reference(reference, planned.platform)
            found[context] = f"docker-image://{exact or reference}"
    return tuple(sorted(found.items()))


def _names_context(target: ImageTarget, site: ImageSite) -> bool:
    """Whether ``site`` is where the Dockerfile names one of the target's image contexts."""
    return any(site[2] == context.name for context in target.contexts if context.kind != "dir")


def plan_pinned(
    bench: Workbench,
    pinning: Pinning,
    push: bool,
    patterns: Iterable[str],
    platforms: Iterable[str],
    report: Callable[[ReportEvent], None],
    prefetch: Prefetch | None = None,
) -> list[PlannedBuild]:
    """The plan `bt build` runs: builds refused by their routing are refused before anything is
    written; then the external images images.lock does not pin yet are pinned (each reported
    with where from), and the builds are planned against the pins. The builds using an image
    that could not be pinned fail when they run (``Pinning.fail_unpinned``). When no pin is
    missing the keys are final, and ``prefetch`` asks the remote action cache meanwhile."""
    config = bench.config
    planned = bench.plan(patterns, platforms)
    targets = bench.session.graph.targets
    needing = [p for p in planned if needs_run(p, push, config.registry)]
    lock = bench.lockfile()
    missing = [
        (image, platform)
        for image, platform in bench.external_images(patterns, platforms)
        if lock.pin(image.name, platform) is None
    ]
    if prefetch is not None and not missing:
        prefetch.start_prefetch(needing)
    try:
        pinning.engines.check(targets, needing)
    except BaseException:
        if prefetch is not None:
            prefetch.end_prefetch(stop=True)
        raise
    if prefetch is not None:
        prefetch.end_prefetch()
    if missing:
        for image, platform, pin, _ in pinning.pin(missing):
            warning = ""
            if pin.source == ENGINE:
                builder = pinning.engines.builder(platform)
                warning = engine_pin_warning(image.written, platform, builder.name)
            report(Pinned(image.written, platform, pin.digest, pin.source, warning))
        for (name, platform), problem in sorted(pinning.failures.items()):
            report(Pinned(name, platform, "", "", problem))
        lock = bench.lockfile()
        planned = bench.plan(patterns, platforms, lock)
    pinning.pins = lock.pins
    return planned
