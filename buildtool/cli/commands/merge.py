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
@click.option(
    "--tag-template",
    "tag_templates",
    multiple=True,
    metavar="TEMPLATE",
    envvar="BT_TAG_TEMPLATE",
    help="Also put each index under this template's expansion (repeatable; added to "
    "[release] tag_templates), e.g. '{tag}-{sha7}', '{version}', 'pr-{pr}', 'latest'.  "
    "[default: none]",
)
@click.option(
    "--dry-run", is_flag=True, envvar="BT_DRY_RUN", help="Say what would be put; write nothing."
)
def command(
    patterns: tuple[str, ...], allow_partial: bool, tag_templates: tuple[str, ...], dry_run: bool
) -> None:
    """Put a multi-platform index to every tag of the images PATTERNS select.

    The index lists the pushed platform builds images.lock records for the image, with each
    platform read from the image itself: a Docker manifest list when every build is a Docker
    v2 manifest and there are no annotations, an OCI image index otherwise. A tag that already
    serves that index is left alone; a tag that points elsewhere (a new build, or someone
    moved it) is put back. The index digest and declared tags are recorded in images.lock.
    Registry credentials come from the docker configuration ($DOCKER_CONFIG/config.json or
    ~/.docker/config.json).

    Tag templates add tags from the commit's git context (or, in GitHub Actions, from
    GITHUB_REF, GITHUB_SHA and GITHUB_HEAD_REF): {tag} (each declared tag), {sha}, {sha7},
    {branch} (made a valid tag), {pr}, and {version}, {major}, {minor} from a vX.Y.Z tag on the
    commit. The template `latest` follows [release] latest: only on the default branch
    (default-branch), or only for the highest vX.Y.Z tag (highest-semver). A template whose
    variable has no value here is skipped with one line; an expansion that is not a valid tag
    stops the merge before anything is put. The index carries the commit's sha, time, version
    and repository URL as OCI annotations, with the image's own `annotations`.

    Prints one line per tag: unchanged, created, or updated (was sha256:...).

    \b
    Examples:
      bt merge //...
      bt merge //matrix/... --dry-run
      bt merge //... --tag-template '{tag}-{sha7}' --tag-template '{version}'
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
        tag_templates=checked_templates(tag_templates),
    )
    bench.session.save()
    for line in report.skipped_templates:
        click.echo(line, err=True)
    for outcome in report.tags:
        click.echo(str(outcome))
    for label, missing in report.partial:
        click.echo(f"{label}: partial index, without {', '.join(missing)}", err=True)
    for label in report.skipped:
        click.echo(f"{label}: skipped, no platform build recorded", err=True)
    from buildtool.cli.story import step_summary_path

    summary = step_summary_path()
    if summary is not None:
        from buildtool.cli.summary import append_summary, merge_markdown

        append_summary(summary, merge_markdown(patterns, report, dry_run))


def checked_templates(templates: tuple[str, ...]) -> tuple[str, ...]:
    """``--tag-template`` values, each checked against the template grammar."""
    from buildtool.errors import BtError
    from buildtool.workspace.tagtemplate import parse_template

    for template in templates:
        try:
            parse_template(template)
        except BtError as err:
            raise click.BadParameter(err.message, param_hint="--tag-template") from None
    return templates
