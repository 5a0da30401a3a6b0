"""``bt build``: build the stale platform builds of a selection and record their digests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from buildtool.cli.commands.common import (
    complete_patterns,
    platform_option,
    progress_mode,
    progress_option,
    push_option,
)
from buildtool.cli.counts import counted
from buildtool.errors import BuildFailed, Interrupted
from buildtool.plan.session import Workbench


def _shard_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    from buildtool.ci.waves import parse_shard

    try:
        return parse_shard(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from None


@click.command("build")
@click.argument("patterns", nargs=-1, required=True, shell_complete=complete_patterns)
@platform_option
@push_option
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    envvar="BT_JOBS",
    help="Builds at once.  [default: jobs of .cache-spec]",
)
@click.option("--fail-fast", is_flag=True, help="Start nothing new after the first failure.")
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Extra attempts for transient faults (engine connection, registry 5xx/timeouts).",
)
@click.option("--no-tests", is_flag=True, help="Do not run the targets' image tests.")
@click.option(
    "--no-cache",
    is_flag=True,
    help="Offer stale builds no layers of their last recorded image (as [cache] layers = false "
    "in .cache-spec). Keys, and so what is rebuilt, stay the same.",
)
@progress_option
@click.option(
    "--lock-out",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Also write what this run built to FILE, a lockfile fragment for `bt lock merge`.  "
    "[default: none]",
)
@click.option(
    "--metadata-file",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Write the images of the selected targets to FILE as `docker buildx bake "
    "--metadata-file` does: per target containerimage.digest and image.name, plus dev.bt.key.  "
    "[default: none]",
)
@click.option(
    "--trace",
    type=click.Path(path_type=Path),
    metavar="FILE",
    envvar="BT_TRACE",
    help="Write the run to FILE as Chrome trace-event JSON (open it in ui.perfetto.dev or "
    "chrome://tracing): a track per builder slot, a span per build.  [default: none]",
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
    "parents are recorded), e.g. for Kubernetes Indexed Jobs or GitLab `parallel`.  "
    "[default: all of them]",
)
def command(
    patterns: tuple[str, ...],
    platforms: tuple[str, ...],
    push: bool | None,
    jobs: int | None,
    fail_fast: bool,
    retries: int,
    no_tests: bool,
    no_cache: bool,
    progress: str,
    json_events: bool,
    lock_out: Path | None,
    metadata_file: Path | None,
    trace: Path | None,
    no_deps: bool,
    shard: tuple[int, int] | None,
) -> None:
    """Build what PATTERNS need and record every digest in images.lock.

    External images the builds use for the first time are pinned first: resolved to a digest
    (from the registry, or from the engine for images only it holds) and recorded in
    images.lock, which every later build uses until `bt lock update` moves them. Only stale
    platform builds run (see `bt plan`), parents before children, each on the builder of its
    platform. A build whose key was built before is not rebuilt, only recorded. Nothing is
    pushed unless asked (--push, BT_PUSH=1, or `push = true` under [registry] in .cache-spec).
    With --push (and no --platform or --lock-out, which make partial runs), every built image
    then gets its multi-platform index, as `bt merge` puts it. Each target's tests run on its
    fresh image; a test added or edited since its last pass runs on the next build too. By
    default the run keeps going past a failure, skipping only the failed build's dependents,
    and exits 1 with a summary. Ctrl-C cancels running builds and exits 130; what finished is
    recorded, so the next run does only the rest.

    \b
    Examples:
      bt build //matrix:large-v3-zh
      bt build //... --push --platform linux/arm64 --lock-out arm64.lock
    """
    from buildtool.build.metadata import check_writable
    from buildtool.build.run import BuildOptions
    from buildtool.cli.pipeline import Selection, build_selection
    from buildtool.cli.reporter import progress_reporter, progress_stream
    from buildtool.cli.story import told

    # Outputs written at the end are checked first: a typo must not cost the whole run.
    outputs = (("--lock-out", lock_out), ("--metadata-file", metadata_file), ("--trace", trace))
    for option, path in outputs:
        if path is not None:
            check_writable(path, option)
    bench = Workbench.open()
    config = bench.config
    options = BuildOptions(
        push=config.push if push is None else push,
        jobs=jobs or config.jobs,
        keep_going=not fail_fast,
        retries=retries,
        run_tests=not no_tests,
        lock_out=lock_out.resolve() if lock_out else None,
        cache_layers=not no_cache,
    )
    selection = Selection(patterns, platforms, no_deps=no_deps, shard=shard)
    mode = progress_mode(progress, json_events)
    reporter = told(
        progress_reporter(mode, progress_stream(mode)), f"bt build {' '.join(patterns)}", trace
    )
    try:
        result = build_selection(
            bench,
            options,
            selection,
            reporter,
            say=lambda line: click.echo(line, err=True),
            story=reporter.story,
        )
    finally:
        reporter.close()
    if metadata_file is not None:
        _write_metadata(bench, metadata_file, patterns, platforms, merged=result.merged)
    summary = result.summary
    if summary is not None and summary.interrupted:
        raise Interrupted("interrupted: finished builds are recorded; run again to resume")
    if summary is not None and not summary.ok:
        raise BuildFailed(
            f"{counted(len(summary.failed), 'platform build')} failed, "
            f"{len(summary.skipped)} skipped"
        )
    if result.tests_failed:
        its = "its" if result.tests_failed == 1 else "their"
        failed = counted(result.tests_failed, "platform build")
        raise BuildFailed(f"{failed} failed {its} tests")


def _write_metadata(
    bench: Workbench,
    path: Path,
    patterns: tuple[str, ...],
    platforms: tuple[str, ...],
    merged: bool,
) -> None:
    from buildtool.build.metadata import bake_metadata, write_metadata
    from buildtool.platforms import normalise

    metadata = bake_metadata(
        bench.lockfile(),
        bench.session.graph.targets,
        bench.labels(patterns),
        [normalise(p) for p in platforms],
        indexes_current=merged,
    )
    write_metadata(path, metadata)
