"""``bt watch``: rebuild what each edit touches, until Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import click

from buildtool.cli.commands.common import (
    complete_patterns,
    platform_option,
    progress_mode,
    progress_option,
    push_option,
)
from buildtool.errors import Interrupted
from buildtool.plan.session import Session


@click.command("watch")
@click.argument("patterns", nargs=-1, required=True, shell_complete=complete_patterns)
@platform_option
@push_option
@progress_option
@click.option(
    "--trace",
    type=click.Path(path_type=Path),
    metavar="FILE",
    envvar="BT_TRACE",
    help="Write the session to FILE as Chrome trace-event JSON when it ends, each round a "
    "span (see `bt build --trace`).  [default: none]",
)
def command(
    patterns: tuple[str, ...],
    platforms: tuple[str, ...],
    push: bool | None,
    progress: str,
    json_events: bool,
    trace: Path | None,
) -> None:
    """Build what PATTERNS need, then rebuild what each saved edit touches, until Ctrl-C.

    Watches exactly the inputs of the selected platform builds (Dockerfiles, their
    .dockerignore files, the context files they read, global inputs) and every BUILD.images and
    .cache-spec. After a change the graph is reloaded and only stale builds run, as `bt build`
    runs them; an edit that changes no key prints "no build affected". A running build is never
    cancelled: changes saved meanwhile are picked up right after it finishes. Errors in
    BUILD.images or .cache-spec, and failed builds, are reported and watching goes on.
    Ctrl-C exits 130; finished builds are recorded.

    \b
    Examples:
      bt watch //matrix:large-v3-zh
      bt watch //model/... --platform linux/amd64 --json
    """
    from buildtool.build.metadata import check_writable
    from buildtool.cli.reporter import progress_reporter, progress_stream
    from buildtool.cli.story import told
    from buildtool.cli.watch import Watcher

    if trace is not None:
        check_writable(trace, "--trace")
    root = Session.here().root
    mode = progress_mode(progress, json_events)
    command = f"bt watch {' '.join(patterns)}"
    reporter = told(progress_reporter(mode, progress_stream(mode)), command, trace, summary=False)
    try:
        Watcher(root, patterns, platforms, push, reporter, reporter.story).run()
    except KeyboardInterrupt:
        raise Interrupted("interrupted: finished builds are recorded") from None
    finally:
        reporter.close()
