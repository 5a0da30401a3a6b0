"""``bt test``: run the image tests of built targets again."""

from __future__ import annotations

import click

from buildtool.commands.common import Workbench, platform_option
from buildtool.errors import BtError, BuildFailed


@click.command("test", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("patterns", nargs=-1, required=True)
@platform_option
def command(patterns: tuple[str, ...], platforms: tuple[str, ...]) -> None:
    """Run the test commands of the targets PATTERNS select, in containers of their recorded
    images, on each platform's builder when it can run that platform natively.

    Targets must be built and up to date (see `bt plan`). Exits 1 when a test fails.
    """
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
    from buildtool.build import BuildOptions, BuildRun
    from buildtool.errors import JobFailed

    run = BuildRun(bench.config, targets, bench.lock_path, BuildOptions(), lambda e: None)
    failures = ran = 0
    for p in planned:
        target = targets[p.label]
        if not target.tests or p.record is None:
            continue
        builder = run.builder(p.platform)
        if builder.architecture() != p.platform:
            click.echo(
                f"skip  {p.label} {p.platform}: {builder.name} runs {builder.architecture()}"
            )
            continue
        ran += 1
        try:
            run.run_tests(builder, p, target, p.record.image)
            click.echo(f"ok    {p.label} {p.platform} ({len(target.tests)} tests)")
        except JobFailed as err:
            failures += 1
            click.echo(f"FAIL  {p.label} {p.platform}: {err}")
            for line in err.log_tail.splitlines():
                click.echo(f"      {line}")
    if failures:
        raise BuildFailed(f"{failures} of {ran} platform builds failed their tests")
    click.echo(f"{ran} platform builds passed their tests", err=True)
