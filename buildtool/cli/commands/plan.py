"""``bt plan``: list stale platform builds in build order, with a reason each."""

from __future__ import annotations

import json

import click

from buildtool.cli.commands.common import complete_patterns, format_option, platform_option
from buildtool.cli.counts import counted
from buildtool.plan.session import Workbench
from buildtool.plan.stale import PlannedBuild


@click.command("plan")
@click.argument("patterns", nargs=-1, required=True, shell_complete=complete_patterns)
@platform_option
@click.option("--all", "show_all", is_flag=True, help="Include fresh (up-to-date) builds too.")
@click.option(
    "--check-registry",
    is_flag=True,
    help="Also ask the registry for every pushed digest images.lock records (one HEAD each); "
    "a missing one makes its build stale.",
)
@format_option("text: one line per build; json: an array of build objects.")
def command(
    patterns: tuple[str, ...],
    platforms: tuple[str, ...],
    show_all: bool,
    check_registry: bool,
    output_format: str,
) -> None:
    """List the stale platform builds that PATTERNS need, in build order.

    A build is stale when the content of something it depends on changed since the build
    recorded in images.lock. Parents of the selected targets are included. No Docker engine
    is needed, and the registry is asked only with --check-registry: then a build whose
    recorded digest the registry no longer serves is stale too ("recorded digest missing from
    registry"), as `bt build --push` always checks.

    \b
    Examples:
      bt plan //...
      bt plan //matrix:large-v3-zh --platform linux/arm64
      bt plan //... --format json    (feeds CI matrices)
    """
    bench = Workbench.open()
    planned = bench.plan(patterns, platforms)
    if check_registry:
        from buildtool.plan.stale import check_registry as check

        planned = check(bench.config, planned, strict=True)
    shown = [p for p in planned if show_all or p.stale]
    if output_format == "json":
        out = json.dumps([_as_json(p) for p in shown], indent=2) + "\n"
        summary = ""
    else:
        width = max((len(str(p.label)) for p in shown), default=0)
        out = "".join(
            f"{'stale' if p.stale else 'fresh'}  {p.label!s:<{width}}  {p.platform:<12} "
            f"{p.key[:12]}  {p.reason}\n"
            for p in shown
        )
        stale = sum(p.stale for p in planned)
        summary = f"{stale} of {counted(len(planned), 'platform build')} stale\n"
    click.echo(out, nl=False)
    click.echo(summary, nl=False, err=True)
    if not check_registry:
        from buildtool.plan import noop

        noop.keep(bench.config, out, summary)


def _as_json(p: PlannedBuild) -> dict[str, object]:
    return {
        "label": str(p.label),
        "platform": p.platform,
        "key": p.key,
        "stale": p.stale,
        "reason": p.reason,
        "parents": [str(parent) for parent in p.parents],
        "has_run": p.manifest.has_run,
        "recorded_key": p.record.key if p.record else None,
        "digest": p.record.digest if p.record and not p.stale else None,
    }
