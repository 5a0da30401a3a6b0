"""``bt watch``: rebuild what each edit touches, until Ctrl-C."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import click

from buildtool.commands.common import Workbench, plan_pinned, platform_option, push_option
from buildtool.errors import BtError, Interrupted
from buildtool.plan import PlannedBuild, needs_run
from buildtool.session import Session
from buildtool.watch import Round, WatchSet, bare_watch_set, changed_paths, watch_set

# Milliseconds. watchfiles yields once no new event arrived for one step (or after `debounce`):
# an editor's save burst (write, rename, chmod) lands within a few ms, so 10/50 coalesces it
# while keeping save -> build start well under 200 ms.
DEBOUNCE_MS = 50
STEP_MS = 10
# How often the watcher wakes while idle; its first wake-up starts the initial build, once the
# file watches are in place, so nothing saved during that build is missed.
IDLE_MS = 100


@click.command("watch", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("patterns", nargs=-1, required=True)
@platform_option
@push_option
@click.option("--json", "json_events", is_flag=True, help="Print one JSON event per line.")
def command(
    patterns: tuple[str, ...], platforms: tuple[str, ...], push: bool | None, json_events: bool
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
    root = Session.here().root
    watcher = Watcher(patterns, platforms, push, json_events, bare_watch_set(root))
    try:
        watcher.run(root)
    except KeyboardInterrupt:
        raise Interrupted("interrupted: finished builds are recorded") from None


class Watcher:
    """The loop: one round per batch of changes, each a fresh plan and a `bt build` run."""

    def __init__(
        self,
        patterns: tuple[str, ...],
        platforms: tuple[str, ...],
        push: bool | None,
        json_events: bool,
        watched: WatchSet,
    ):
        self.patterns = patterns
        self.platforms = platforms
        self.push = push
        self.json_events = json_events
        self.stream: IO[str] = sys.stdout if json_events else sys.stderr
        self.watched = watched

    def run(self, root: Path) -> None:
        import watchfiles

        started = False
        for changes in watchfiles.watch(
            root,
            watch_filter=lambda _change, path: self.watched.accepts(path),
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            rust_timeout=IDLE_MS,
            yield_on_timeout=True,
        ):
            if not started:
                started = True
                self.round(())  # covers whatever this first batch held
            elif changes:
                self.round(tuple(changed_paths(str(root), (path for _, path in changes))))

    def say(self, text: str, record: dict[str, object]) -> None:
        self.stream.write((json.dumps(record, sort_keys=True) if self.json_events else text) + "\n")
        self.stream.flush()

    def round(self, changed: tuple[str, ...]) -> None:
        began = time.monotonic()
        try:
            result = self.rebuild(changed, began)
        except BtError as err:
            # A half-saved BUILD.images must not end the session: report it, wait for a fix.
            record: dict[str, object] = {"event": "watch_error", "changed": list(changed)}
            self.say(str(err), record | {"message": str(err)})
        else:
            self.say(result.line(), result.record())
        count = len(self.watched.files)
        self.say(f"watching {count} files (Ctrl-C to stop)", {"event": "watching", "files": count})

    def rebuild(self, changed: tuple[str, ...], began: float) -> Round:
        from buildtool.build import BuildOptions, BuildRun

        bench = Workbench.open()
        config = bench.config
        push = config.push if self.push is None else self.push
        run = BuildRun(
            config=config,
            targets=bench.session.graph.targets,
            lock_path=bench.lock_path,
            options=BuildOptions(push=push, jobs=config.jobs),
            on_event=lambda _: None,
        )
        try:
            planned = plan_pinned(bench, run, self.patterns, self.platforms, push)
        finally:
            run.close()
        self.watched = watch_set(config, planned)
        if not any(needs_run(p, push, config.registry) for p in planned):
            return Round(changed, (), 0, time.monotonic() - began)
        from buildtool.reporter import make_reporter

        reporter = make_reporter(self.json_events, self.stream)
        run.on_event = reporter
        try:
            summary = run.run(planned)
        finally:
            reporter.close()
        if summary.interrupted:
            raise KeyboardInterrupt
        if push and summary.ok and not self.platforms:
            self.merge(bench, planned)
        ran = (*summary.succeeded, *summary.cached, *summary.failed)
        return Round(changed, tuple(sorted(ran)), len(summary.failed), time.monotonic() - began)

    def merge(self, bench: Workbench, planned: Iterable[PlannedBuild]) -> None:
        """After a complete push, every built image gets its multi-platform index."""
        from buildtool.merge import merge_images

        graph = bench.session.graph
        labels = {p.label for p in planned}
        report = merge_images(bench.config, graph.targets, labels, bench.lock_path)
        for outcome in report.tags:
            self.say(str(outcome), {"event": "merged", "detail": str(outcome)})
