"""``bt why``: for one platform build, what changed since the recorded build."""

from __future__ import annotations

import click

from buildtool.commands.common import Workbench
from buildtool.errors import BtError
from buildtool.keys import load_manifest
from buildtool.why import diff_manifests


@click.command("why", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("label")
@click.option(
    "--platform",
    metavar="OS/ARCH",
    help="The platform build to explain (default: the target's only platform, else required).",
)
def command(label: str, platform: str | None) -> None:
    """Explain why LABEL's platform build is stale (or that it is not).

    Compares the inputs of the build recorded in images.lock with the inputs now: each added,
    removed or changed file with old and new digests, changed build args, the changed lines of
    the Dockerfile, parents whose key changed, and whether the whole context counts as input.
    """
    bench = Workbench.open()
    (target_label,) = bench.labels([label]) if ":" in label or label.startswith("//") else [None]
    if target_label is None:
        raise BtError(f"expected one label, got {label!r}")
    target = bench.session.graph.targets[target_label]
    if platform is None:
        if len(target.platforms) != 1:
            raise BtError(
                f"{target_label} builds for {', '.join(target.platforms)}: "
                "choose one with --platform"
            )
        platform = target.platforms[0]
    if platform not in target.platforms:
        raise BtError(
            f"{target_label} does not build for {platform} ({', '.join(target.platforms)})"
        )
    (planned,) = bench.plan([str(target_label)], [platform])[-1:]
    manifest = planned.manifest
    click.echo(f"{target_label} {platform}: {'stale' if planned.stale else 'up to date'}")
    click.echo(f"  key now:      {planned.key}")
    record = planned.record
    click.echo(f"  key recorded: {record.key if record else '(never built)'}")
    if manifest.fallback:
        click.echo(f"  inputs: the whole build context, because {manifest.fallback}")
    if record is None or not planned.stale:
        return
    old = load_manifest(bench.config.cache_dir, record.key)
    if old is None:
        click.echo("  no record of the inputs of the recorded build; cannot say what changed")
        return
    changes = diff_manifests(old, manifest)
    if old.fallback and not manifest.fallback:
        click.echo(f"  the recorded build used the whole context ({old.fallback})")
    for change in changes:
        click.echo(f"  {change.describe()}")
