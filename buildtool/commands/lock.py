"""``bt lock``: move the pins of external images (``update``), fold lockfile fragments
written by parallel runs (``merge``, from ``bt build --lock-out``), and check images.lock
against the registry (``check``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from buildtool.commands.common import complete_patterns, platform_option
from buildtool.errors import BtError
from buildtool.session import Workbench


@click.group("lock", context_settings={"help_option_names": ["-h", "--help"]})
def command() -> None:
    """Move pins of external images; fold lockfile fragments from parallel runs; check
    images.lock against the registry."""


@command.command("update", context_settings={"help_option_names": ["-h", "--help"]})
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
    from buildtool.build import BuildOptions, BuildRun
    from buildtool.pins import short_digest

    bench = Workbench.open()
    wanted = bench.external_images(patterns or ("//...",), platforms)
    run = BuildRun(
        config=bench.config,
        targets=bench.session.graph.targets,
        lock_path=bench.lock_path,
        options=BuildOptions(),
        on_event=lambda _: None,
    )
    try:
        resolved = run.pin(wanted)
    finally:
        run.close()
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
    click.echo(
        f"{bench.config.lockfile.name}: {len(resolved)} pins checked, {moved} moved", err=True
    )
    if run.pin_failures:
        problem = min(run.pin_failures.items())[1]
        more = len(run.pin_failures) - 1
        raise BtError(f"{problem}" + (f" (and {more} more images not pinned)" if more else ""))


@command.command("merge", context_settings={"help_option_names": ["-h", "--help"]})
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
    Example:
      bt lock merge amd64.lock arm64.lock && bt merge //...
    """
    from buildtool.lockfile import (
        Lockfile,
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
    for note in notes:
        click.echo(note, err=True)
    bench = Workbench.open()
    changed = 0

    def change(lock: Lockfile) -> None:
        nonlocal changed
        changed = apply_fragments(lock, folded)

    update_lockfile(bench.config.lockfile, bench.lock_path, change)
    builds = sum(1 for _ in folded.records())
    click.echo(
        f"{bench.config.lockfile.name}: folded {len(fragments)} fragments "
        f"({builds} builds), {changed} records changed",
        err=True,
    )


@command.command("check", context_settings={"help_option_names": ["-h", "--help"]})
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
    from buildtool.lockfile import read_lockfile
    from buildtool.registry import RegistryClient
    from buildtool.session import Session
    from buildtool.verify import lockfile_problems

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
    verdict = f"{len(problems)} problems" if problems else "every digest and tag as recorded"
    click.echo(
        f"{path.name}: {builds} builds, {len(lock.images)} indexes checked: {verdict}", err=True
    )
    if problems:
        sys.exit(1)
