"""``bt test``: run the image tests of built targets again."""

from __future__ import annotations

import sys

import click

from buildtool.cli.commands.common import (
    complete_patterns,
    platform_option,
    progress_mode,
    progress_option,
)
from buildtool.errors import BtError, BuildFailed
from buildtool.plan.session import Workbench


@click.command("test")
@click.argument("patterns", nargs=-1, required=True, shell_complete=complete_patterns)
@platform_option
@progress_option
def command(
    patterns: tuple[str, ...], platforms: tuple[str, ...], progress: str, json_events: bool
) -> None:
    """Run the test commands of the targets PATTERNS select, in containers of their recorded
    images, on each platform's builder when it can run that platform natively (as `bt build`
    runs them).

    Targets must be built and up to date (see `bt plan`). Exits 1 when a test fails.
    """
    from buildtool.build.image_tests import run_image_tests
    from buildtool.cli.reporter import progress_reporter

    bench = Workbench.open()
    selected = bench.labels(patterns)
    planned = [p for p in bench.plan(patterns, platforms) if p.label in selected]
    targets = bench.session.graph.targets
    stale = [p for p in planned if p.stale and targets[p.label].tests]
    if stale:
        first = stale[0]
        raise BtError(
            f"{first.label} {first.platform} is not built or out of date "
            f"({first.reason}); run `bt build` first"
        )
    mode = progress_mode(progress, json_events)
    reporter = progress_reporter(mode, sys.stdout)
    try:
        finished = run_image_tests(bench, planned, reporter)
    finally:
        reporter.close()
    if finished.failed:
        raise BuildFailed(f"{finished.failed} of {finished.ran} platform builds failed their tests")
