"""``bt why``: for each selected platform build, what changed since the recorded build."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import click

from buildtool.cli.commands.common import complete_patterns
from buildtool.errors import BtError
from buildtool.plan.changes import diff_manifests
from buildtool.plan.keys import load_manifest
from buildtool.plan.session import Workbench
from buildtool.plan.stale import PlannedBuild


@click.command("why")
@click.argument("patterns", nargs=-1, required=True, shell_complete=complete_patterns)
@click.option(
    "--platform",
    metavar="OS/ARCH",
    help="Only the builds for this platform (default: every platform of each target).",
)
def command(patterns: tuple[str, ...], platform: str | None) -> None:
    """Explain why the platform builds of the targets PATTERNS select are stale (or not).

    One block per platform build: it compares the inputs of the build recorded in images.lock
    with the inputs now: each added, removed or changed file with old and new digests, changed
    build args, the changed lines of the Dockerfile, parents whose key changed, and whether the
    whole context counts as input.

    \b
    Examples:
      bt why //matrix:large-v3-zh --platform linux/arm64
      bt why //matrix:all
    """
    bench = Workbench.open()
    selected = bench.labels(patterns)
    targets = bench.session.graph.targets
    if platform is not None and not any(platform in targets[lb].platforms for lb in selected):
        builds_for = sorted({p for label in selected for p in targets[label].platforms})
        raise BtError(
            f"{' '.join(patterns)} does not build for {platform} ({', '.join(builds_for)})"
        )
    planned = bench.plan(patterns, [platform] if platform else [])
    for line in explain(bench.config.cache_dir, (p for p in planned if p.label in selected)):
        click.echo(line)


def explain(cache_dir: Path, planned: Iterable[PlannedBuild]) -> Iterator[str]:
    """`bt why`: one block of lines per platform build, blocks apart by a blank line."""
    for index, build in enumerate(planned):
        if index:
            yield ""
        yield from _explain_one(cache_dir, build)


def _explain_one(cache_dir: Path, planned: PlannedBuild) -> Iterator[str]:
    manifest = planned.manifest
    yield f"{planned.label} {planned.platform}: {'stale' if planned.stale else 'up to date'}"
    yield f"  key now:      {planned.key}"
    record = planned.record
    yield f"  key recorded: {record.key if record else '(never built)'}"
    if manifest.fallback:
        yield f"  inputs: the whole build context, because {manifest.fallback}"
    if record is None or not planned.stale:
        return
    old = load_manifest(cache_dir, record.key)
    if old is None:
        yield "  no record of the inputs of the recorded build; cannot say what changed"
        return
    if old.fallback and not manifest.fallback:
        yield f"  the recorded build used the whole context ({old.fallback})"
    for change in diff_manifests(old, manifest):
        yield f"  {change.describe()}"
