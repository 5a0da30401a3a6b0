"""``bt build``: build the stale platform builds of a selection and record their digests."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from buildtool.commands.common import Workbench, plan_pinned, platform_option, push_option
from buildtool.errors import BuildFailed, Interrupted
from buildtool.plan import needs_run


@click.command("build", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("patterns", nargs=-1, required=True)
@platform_option
@push_option
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Builds at once (default: jobs).")
@click.option("--fail-fast", is_flag=True, help="Start nothing new after the first failure.")
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Extra attempts for transient faults (engine connection, registry 5xx/timeouts).",
)
@click.option("--no-tests", is_flag=True, help="Do not run the targets' image tests.")
@click.option("--json", "json_events", is_flag=True, help="Print one JSON event per line.")
@click.option(
    "--lock-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write what this run built to FILE, a lockfile fragment for `bt lock merge`.",
)
def command(
    patterns: tuple[str, ...],
    platforms: tuple[str, ...],
    push: bool | None,
    jobs: int | None,
    fail_fast: bool,
    retries: int,
    no_tests: bool,
    json_events: bool,
    lock_out: Path | None,
) -> None:
    """Build what PATTERNS need and record every digest in images.lock.

    External images the builds use for the first time are pinned first: resolved to a digest
    (from the registry, or from the engine for images only it holds) and recorded in
    images.lock, which every later build uses until `bt lock update` moves them. Only stale
    platform builds run (see `bt plan`), parents before children, each on the builder of its
    platform. A build whose key was built before is not rebuilt, only recorded. With
    --push (and no --platform or --lock-out, which make partial runs), every built image then
    gets its multi-platform index, as `bt merge` puts it. By default the run keeps going past a
    failure, skipping only the failed build's dependents, and exits 1 with a summary. Ctrl-C
    cancels running builds and exits 130; what finished is recorded, so the next run does only
    the rest.

    \b
    Examples:
      bt build //matrix:large-v3-zh
      bt build //... --push --platform linux/arm64 --lock-out arm64.lock
    """
    from buildtool.build import BuildOptions, BuildRun

    bench = Workbench.open()
    config = bench.config
    push_wanted = config.push if push is None else push
    options = BuildOptions(
        push=push_wanted,
        jobs=jobs or config.jobs,
        keep_going=not fail_fast,
        retries=retries,
        run_tests=not no_tests,
        lock_out=lock_out.resolve() if lock_out else None,
    )
    run = BuildRun(
        config=config,
        targets=bench.session.graph.targets,
        lock_path=bench.lock_path,
        options=options,
        on_event=lambda _: None,
    )
    try:
        planned = plan_pinned(bench, run, patterns, platforms, push_wanted)
    finally:
        run.close()
    stale = [p for p in planned if needs_run(p, push_wanted, config.registry)]
    merge = push_wanted and not platforms and lock_out is None
    if not stale:
        click.echo(f"nothing to build: {len(planned)} platform builds up to date", err=True)
        if merge:
            _merge(bench, patterns)
        return
    from buildtool.reporter import make_reporter

    reporter = make_reporter(json_events, sys.stdout if json_events else sys.stderr)
    run.on_event = reporter
    try:
        summary = run.run(planned)
    finally:
        reporter.close()
    if summary.interrupted:
        raise Interrupted("interrupted: finished builds are recorded; run again to resume")
    if not summary.ok:
        raise BuildFailed(
            f"{len(summary.failed)} platform builds failed, {len(summary.skipped)} skipped"
        )
    if merge:
        _merge(bench, patterns)


def _merge(bench: Workbench, patterns: tuple[str, ...]) -> None:
    """After a complete push, every built image gets its multi-platform index."""
    from buildtool.merge import merge_images

    graph = bench.session.graph
    report = merge_images(
        bench.config, graph.targets, graph.deps(bench.labels(patterns)), bench.lock_path
    )
    for outcome in report.tags:
        click.echo(str(outcome), err=True)
