"""``bt why``: for each selected platform build, what changed since the recorded build."""

from __future__ import annotations

import click

from buildtool.cli.commands.common import complete_patterns
from buildtool.errors import BtError
from buildtool.plan.session import Workbench
from buildtool.plan.why import explain


@click.command("why", context_settings={"help_option_names": ["-h", "--help"]})
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
