"""``bt lock``: move the pins of external images (``update``), fold lockfile fragments
written by parallel runs (``merge``, from ``bt build --lock-out``), and check images.lock
against the registry (``check``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from buildtool.cli.commands.common import complete_patterns, platform_option
from buildtool.cli.counts import counted
from buildtool.errors import BtError
from buildtool.plan.session import Workbench
from buildtool.state.lockfile import BuildRecord, Lockfile, pushed


@click.group("lock")
def command() -> None:
    """Move pins of external images; fold lockfile fragments from parallel runs; check
    images.lock against the registry."""


@command.command("update")
@click.argument("patterns", nargs=-1, shell_complete=complete_patterns)
@platform_option
def update(patterns: tuple[str, ...], platforms: tuple[str, ...]) -> None:
    """Re-resolve the external images PATTERNS use (default: //...) and move their pins.

    Every image a build uses that the workspace does not build (FROM, COPY --from=,
    RUN --mount=from=) is pinned to a digest in images.lock; builds use exactly that digest,
    whatever the tag points at since. This asks the registry (or, for images only the engine
    holds, the platform's engine) again and records what the tags point at now, so an upstream
    update is a lockfile diff to review, and stales exactly the builds that use a moved image:
    `bt plan` names each "external REF moved OLD -> NEW". Images written with @sha256: are
    their own pin and are not looked up.

    \b
    Examples:
      bt lock update                      every image the workspace uses
      bt lock update //base:no_model --platform linux/arm64
    """
    from buildtool.build.pinning import Pinning
    from buildtool.build.routing import Engines
    from buildtool.plan.pins import ENGINE, engine_pin_warning, short_digest

    bench = Workbench.open()
    wanted = bench.external_images(patterns or ("//...",), platforms)
    engines = Engines(bench.config)
    pinning = Pinning(bench.config, bench.lock_path, engines)
    try:
        resolved = pinning.pin(wanted)
        engine_names = {
            p: engines.builder(p).name for _, p, pin, _ in resolved if pin.source == ENGINE
        }
    finally:
        engines.close()
    moved = 0
    for image, platform, pin, before in resolved:
        if before is None:
            state = f"pinned to {short_digest(pin.digest)}"
        elif before.digest == pin.digest:
            state = f"unchanged ({short_digest(pin.digest)})"
        else:
            moved += 1
            state = f"moved {short_digest(before.digest)} -> {short_digest(pin.digest)}"
        click.echo(f"{image.written} ({platform}): {state} from the {pin.source}")
        if pin.source == ENGINE:
            warning = engine_pin_warning(image.written, platform, engine_names[platform])
            click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"{bench.config.lockfile.name}: {counted(len(resolved), 'pin')} checked, {moved} moved",
        err=True,
    )
    bench.session.save()
    if pinning.failures:
        problem = min(pinning.failures.items())[1]
        more = len(pinning.failures) - 1
        raise BtError(f"{problem}" + (f" (and {more} more images not pinned)" if more else ""))


@command.command("merge")
@click.argument("fragments", nargs=-1, required=True, type=click.Path(path_type=Path))
def merge(fragments: tuple[Path, ...]) -> None:
    """Fold lockfile FRAGMENTS into images.lock.

    Fragments are the lockfiles `bt build --lock-out FILE` writes in parallel CI jobs (one per
    platform, say) of one revision. Their records replace those images.lock holds for the same
    builds, since they are newer. The fragments must agree on keys: one build built from two
    different keys (two revisions) is refused naming both files, and nothing is written. One
    key recorded with two digests is two machines that built it at once: both images are
    valid, so images.lock keeps the one it records, else the first fragment's wins (and bt
    says so). Otherwise the result does not depend on the order of FRAGMENTS.

    \b
    Every record must be of a build of this workspace with the key the workspace gives it
    now (so a fragment of an older revision never rolls images.lock back), and a pushed image
    it names for the first time must exist in the registry by its digest. A record that is not
    is named with the reason, nothing is written, and the exit code is 2.

    \b
    Example:
      bt lock merge amd64.lock arm64.lock && bt merge //...
    """
    from buildtool.state.lockfile import (
        apply_fragments,
        fold_fragments,
        read_lockfile,
        update_lockfile,
    )

    loaded = []
    for path in fragments:
        if not path.is_file():
            raise BtError("no such lockfile fragment", path)
        loaded.append((str(path), read_lockfile(path)))
    notes: list[str] = []
    folded = fold_fragments(loaded, notes)
    bench = Workbench.open()
    refused = _refused_records(bench, loaded, folded)
    if refused:
        for line in refused[:10]:
            click.echo(line, err=True)
        more = f" ({len(refused) - 10} more not shown)" if len(refused) > 10 else ""
        raise BtError(f"{len(refused)} records refused{more}; images.lock is unchanged")
    for note in notes:
        click.echo(note, err=True)
    changed = 0

    def change(lock: Lockfile) -> None:
        nonlocal changed
        changed = apply_fragments(lock, folded)

    update_lockfile(bench.config.lockfile, bench.lock_path, change)
    bench.session.save()
    builds = sum(1 for _ in folded.records())
    click.echo(
        f"{bench.config.lockfile.name}: folded {counted(len(fragments), 'fragment')} "
        f"({counted(builds, 'build')}), {counted(changed, 'record')} changed",
        err=True,
    )


@command.command("check")
@click.argument("lockfile", required=False, type=click.Path(path_type=Path))
def check(lockfile: Path | None) -> None:
    """Check images.lock (or LOCKFILE) against the registry, for a CI gate.

    Every recorded build must be pushed and its digest served, its key tag (bt-<key>) must
    point at that digest, and every index recorded must be served behind each of its tags.
    Prints one line per problem and exits 1 when there is any, else 0. One HEAD per
    reference, several at a time; registry faults are retried as `bt merge` retries them.

    \b
    Example:
      bt lock check && bt merge //...
    """
    from buildtool.plan.session import Session
    from buildtool.plan.verify import lockfile_problems
    from buildtool.registry import RegistryClient
    from buildtool.state.lockfile import read_lockfile

    config = Session.here().config
    path = lockfile or config.lockfile
    if not path.is_file():
        raise BtError("no such lockfile", path)
    lock = read_lockfile(path)
    client = RegistryClient(config.insecure_registries, retry=config.retry)
    problems = lockfile_problems(lock, client, config.registry)
    for problem in problems:
        click.echo(problem)
    builds = sum(1 for _ in lock.records())
    verdict = counted(len(problems), "problem") if problems else "every digest and tag as recorded"
    click.echo(
        f"{path.name}: {counted(builds, 'build')}, {counted(len(lock.images), 'index', 'indexes')} "
        f"checked: {verdict}",
        err=True,
    )
    if problems:
        sys.exit(1)


def _refused_records(
    bench: Workbench, fragments: list[tuple[str, Lockfile]], folded: Lockfile
) -> list[str]:
    """One line per record of ``folded`` that must not be merged: not a build of this
    workspace, built from another key than the build's current one, or a pushed digest the
    registry does not have."""
    from buildtool.workspace.labels import parse_label

    origin = {
        (label, platform): name
        for name, fragment in reversed(fragments)
        for label, platform, _ in fragment.records()
    }
    graph = bench.session.graph
    current = bench.recorded
    refused: list[str] = []
    to_check: list[tuple[str, str, BuildRecord]] = []
    for label, platform, record in folded.records():
        where = f"{origin[(label, platform)]}: {label} {platform}"
        target = graph.targets.get(parse_label(label))
        if target is None or platform not in target.platforms:
            refused.append(f"{where}: not a build of this workspace")
            continue
        key = bench.computer.key((target.label, platform))
        if record.key != key:
            refused.append(
                f"{where}: built from key {record.key[:16]}, but its key is now {key[:16]} "
                "(a fragment of another revision); not merged"
            )
            continue
        known = current.get(label, platform)
        if pushed(record) and (known is None or known.digest != record.digest):
            to_check.append((where, label, record))
    if to_check and not refused:
        from buildtool.registry.client import RegistryClient

        client = RegistryClient(bench.config.insecure_registries)
        for where, _, record in to_check:
            if client.head_manifest(record.image) is None:
                refused.append(f"{where}: {record.image} is not in the registry; not merged")
    return refused
