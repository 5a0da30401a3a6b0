"""``bt promote``: copy recorded images and indexes to other registries by digest."""

from __future__ import annotations

import click

from buildtool.cli.commands.common import complete_patterns
from buildtool.cli.commands.merge import checked_templates
from buildtool.plan.session import Workbench


def _registry_url(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    from buildtool.workspace.config import registry_url_problem

    for url in value:
        problem = registry_url_problem(url)
        if problem:
            raise click.BadParameter(f"{url!r} {problem}", ctx, param)
    return tuple(url.rstrip("/") for url in value)


@click.command("promote", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("patterns", nargs=-1, required=True, shell_complete=complete_patterns)
@click.option(
    "--to",
    "mirrors",
    multiple=True,
    metavar="REGISTRY_URL",
    callback=_registry_url,
    help="Registry to copy to, host[:port][/prefix] (repeatable).  [default: [registry] mirrors]",
)
@click.option(
    "--tag-template",
    "tag_templates",
    multiple=True,
    metavar="TEMPLATE",
    help="Also tag each index with this template's expansion, as `bt merge` does (repeatable; "
    "added to [release] tag_templates).  [default: none]",
)
@click.option("--dry-run", is_flag=True, help="Say what would be copied and put; copy nothing.")
def command(
    patterns: tuple[str, ...],
    mirrors: tuple[str, ...],
    tag_templates: tuple[str, ...],
    dry_run: bool,
) -> None:
    """Copy the images PATTERNS select to other registries, by digest, without building.

    Every platform build images.lock records and each image's recorded index are copied from
    [registry] url to <REGISTRY_URL>/<repository>, byte for byte: each digest is the same in
    both registries, and is checked on arrival. Only what the destination lacks is copied: a
    blob another repository there holds is mounted (cross-repository mount), else streamed from
    the source. The index is then put under the tags `bt merge` gives it. Credentials for each
    registry come from the docker configuration ($DOCKER_CONFIG/config.json or
    ~/.docker/config.json).

    When something cannot be copied, the images left incomplete are named and bt exits
    non-zero; running the same command again copies only what is still missing.

    \b
    Examples:
      bt promote //... --to ghcr.io/acme
      bt promote //matrix/... --to quay.io/acme --to registry.example.com/mirror
      bt promote //... --dry-run
    """
    from buildtool.errors import BtError
    from buildtool.release.promote import promote_images

    bench = Workbench.open()
    report = promote_images(
        bench.config,
        bench.session.graph.targets,
        bench.labels(patterns),
        mirrors or bench.config.mirrors,
        tag_templates=checked_templates(tag_templates),
        dry_run=dry_run,
    )
    bench.session.save()
    for line in report.skipped_templates:
        click.echo(line, err=True)
    for outcome in report.tags:
        click.echo(str(outcome))
    for label in report.without_index:
        click.echo(
            f"{label}: no index in images.lock (run `bt merge`); copied its builds", err=True
        )
    click.echo(str(report.tally))
    if report.failures:
        shown = "; ".join(report.failures[:5])
        more = f"; and {len(report.failures) - 5} more" if len(report.failures) > 5 else ""
        raise BtError(
            f"{len(report.failures)} images were not fully promoted (run the same command again "
            f"to copy what is missing): {shown}{more}"
        )
