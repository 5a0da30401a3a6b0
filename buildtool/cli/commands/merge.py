"""``bt merge``: put a multi-platform index behind every tag of the selected images."""

from __future__ import annotations

import click

from buildtool.cli.commands.common import complete_patterns
from buildtool.plan.session import Workbench


@click.command("merge")
@click.argument("patterns", nargs=-1, required=True, shell_complete=complete_patterns)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Merge images that miss a platform from the platforms they have (else refused).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be put; write nothing.")
def command(patterns: tuple[str, ...], allow_partial: bool, dry_run: bool) -> None:
    """Put a multi-platform index to every tag of the images PATTERNS select.

    The index lists the pushed platform builds images.lock records for the image, with each
    platform read from the image itself: a Docker manifest list when every build is a Docker
    v2 manifest, an OCI image index otherwise. A tag that already serves that index is left
    alone; a tag that points elsewhere (a new build, or someone moved it) is put back. The
    index digest and tags are recorded in images.lock. Registry credentials come from the
    docker configuration ($DOCKER_CONFIG/config.json or ~/.docker/config.json).

    Prints one line per tag: unchanged, created, or updated (was sha256:...).

    \b
    Examples:
      bt merge //...
      bt merge //matrix/... --dry-run
    """
    from buildtool.release.merge import merge_images

    bench = Workbench.open()
    report = merge_images(
        bench.config,
        bench.session.graph.targets,
        bench.labels(patterns),
        bench.lock_path,
        allow_partial=allow_partial,
        dry_run=dry_run,
    )
    bench.session.save()
    for outcome in report.tags:
        click.echo(str(outcome))
    for label, missing in report.partial:
        click.echo(f"{label}: partial index, without {', '.join(missing)}", err=True)
    for label in report.skipped:
        click.echo(f"{label}: skipped, no platform build recorded", err=True)
