"""``bt build``: build the stale platform builds of a selection and record their digests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from buildtool.commands.common import platform_option, push_option
from buildtool.errors import BtError, BuildFailed, Interrupted
from buildtool.session import Workbench


def _writable(path: Path) -> None:
    """Refuse an output bt could not write, before any build starts rather than after every
    build ran: a file made and removed next to it, as the atomic write will."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.probe-"):
            pass
    except OSError as err:
        raise BtError(f"cannot write: {err.strerror}", path) from None


def _shard_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    from buildtool.ci import parse_shard

    try:
        return parse_shard(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from None


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
@click.option(
    "--no-deps",
    is_flag=True,
    help="Build only the selected targets, never their stale parents: a build whose parent is "
    "not recorded fails (CI jobs of later waves; see `bt ci plan`).",
)
@click.option(
    "--shard",
    metavar="I/N",
    callback=_shard_option,
    help="Build the I-th of N deterministic slices of the ready stale builds (those whose "
    "parents are recorded), e.g. for Kubernetes Indexed Jobs or GitLab `parallel`.",
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
    no_deps: bool,
    shard: tuple[int, int] | None,
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
    from buildtool.build import BuildOptions, bench_run, build_planned, plan_pinned
    from buildtool.ci import shard_of, without_stale_parents
    from buildtool.reporter import make_reporter

    if lock_out is not None:
        _writable(lock_out)
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
    reporter = make_reporter(json_events, sys.stdout if json_events else sys.stderr)
    run = bench_run(bench, options, reporter)
    try:
        planned = plan_pinned(bench, run, patterns, platforms, reporter)
        if no_deps:
            planned = without_stale_parents(planned, bench.labels(patterns), push_wanted, config)
        if shard is not None:
            planned, message = shard_of(planned, shard, push_wanted, config)
            click.echo(message, err=True)
        merge = push_wanted and not platforms and lock_out is None and not no_deps and not shard
        summary = build_planned(bench, planned, options, reporter, merge=merge, run=run)
    finally:
        run.close()
        reporter.close()
    if summary is not None and summary.interrupted:
        raise Interrupted("interrupted: finished builds are recorded; run again to resume")
    if summary is not None and not summary.ok:
        raise BuildFailed(
            f"{len(summary.failed)} platform builds failed, {len(summary.skipped)} skipped"
        )
