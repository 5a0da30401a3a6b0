"""Renders what a run reports (the events of ``buildtool.build.events``): a live view
on terminals, plain lines otherwise, JSON lines on request.

rich is imported only by the live view: it costs import time that `bt plan` must not pay.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Protocol

from buildtool.build.events import (
    AnyEvent,
    Cached,
    Failed,
    Finished,
    ImageTestsFailed,
    ImageTestsFinished,
    ImageTestsPassed,
    ImageTestsSkipped,
    JobId,
    Merged,
    Pinned,
    ReportEvent,
    Retrying,
    Round,
    RunEvent,
    RunFinished,
    RunStarted,
    Skipped,
    Started,
    Summary,
    UpToDate,
    Warned,
    WatchError,
    WatchEvent,
    Watching,
)
from buildtool.cli.counts import counted

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

# Running builds the live view lists; the rest are counted on one line so the view fits.
_LIVE_ROWS = 20


class Reporter(Protocol):
    def __call__(self, event: ReportEvent) -> None: ...

    def close(self) -> None: ...


def short_digest(digest: str | None) -> str:
    """``sha256:`` and the first 12 hex digits, as `docker images` shows ids."""
    return digest[:19] if digest else "-"


def summary_line(summary: Summary) -> str:
    text = (
        f"built {len(summary.succeeded)}, cached {len(summary.cached)}, "
        f"failed {len(summary.failed)}, skipped {len(summary.skipped)} in {summary.seconds:.1f}s"
    )
    return text + (" (interrupted)" if summary.interrupted else "")


def _build(build: JobId) -> str:
    return f"{build[0]} {build[1]}"


def _where(event: Cached) -> str:
    """Where a cache hit came from, when it is not the builder's own engine."""
    if event.source == "lockfile":
        return " (recorded by another bt process)"
    return " from the registry" if event.source == "registry" else ""


class PlainReporter:
    """One line per event, for logs and pipes."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.total = 0
        self.done = 0

    def _write(self, *lines: str) -> None:
        self.stream.write("".join(line + "\n" for line in lines))
        self.stream.flush()

    def __call__(self, event: ReportEvent) -> None:
        if isinstance(event, _RUN_EVENTS):
            self._write(*plain_lines(event))
            return
        if isinstance(event, RunStarted):
            self.total, self.done = event.total, 0
            known = [seconds for _, seconds in event.estimates]
            they = "it" if event.total == 1 else "they"
            about = f" (last time {they} took {_duration(sum(known))})" if known else ""
            self._write(f"{counted(event.total, 'platform build')} to run{about}")
            return
        if isinstance(event, RunFinished):
            self._write(summary_line(event.summary))
            return
        if isinstance(event, (Finished, Cached, Failed, Skipped)):
            self.done += 1
        head = f"[{self.done}/{self.total}]"
        build = _build(event.id)
        if isinstance(event, Started):
            self._write(f"{head} started {build}")
        elif isinstance(event, Finished):
            digest = short_digest(event.digest)
            self._write(f"{head} built {build} {digest} ({event.seconds:.1f}s)")
        elif isinstance(event, Cached):
            self._write(f"{head} cached {build} {short_digest(event.digest)}{_where(event)}")
        elif isinstance(event, Failed):
            self._write(f"{head} FAILED {build}: {event.message}", *_failure_details(event))
        elif isinstance(event, Skipped):
            self._write(f"{head} skipped {build} ({event.reason})")
        elif isinstance(event, Warned):
            self._write(f"{head} warning {build}: {event.message}")
        elif isinstance(event, Retrying):
            self._write(
                f"{head} retrying {build} in {event.delay:.1f}s "
                f"(attempt {event.attempt}): {event.message}"
            )

    def close(self) -> None:
        pass


class QuietReporter(PlainReporter):
    """``--progress=quiet``: failures and the summary, nothing per successful build."""

    def __call__(self, event: ReportEvent) -> None:
        if isinstance(event, (Failed, ImageTestsFailed, WatchError, RunFinished)):
            super().__call__(event)
        elif isinstance(event, RunStarted):
            self.total, self.done = event.total, 0
        elif isinstance(event, (Finished, Cached, Skipped)):
            self.done += 1  # the [done/total] of a failure's line stays true


_RUN_EVENTS = (
    UpToDate,
    Merged,
    Pinned,
    ImageTestsPassed,
    ImageTestsFailed,
    ImageTestsSkipped,
    ImageTestsFinished,
    Round,
    WatchError,
    Watching,
)


def plain_lines(event: RunEvent | WatchEvent) -> list[str]:
    """The text of an event outside the scheduler's, the same in plain and live output."""
    if isinstance(event, UpToDate):
        return [f"nothing to build: {counted(event.total, 'platform build')} up to date"]
    if isinstance(event, Merged):
        return [event.detail]
    if isinstance(event, Pinned):
        if not event.digest:
            return [f"not pinned ({event.platform}): {event.detail}"]
        pinned = f"pinned {event.reference} ({event.platform}) to {event.digest} from the "
        lines = [pinned + event.source]
        return [*lines, f"warning: {event.detail}"] if event.detail else lines
    if isinstance(event, ImageTestsPassed):
        return [f"ok    {_build(event.id)} ({counted(event.count, 'test')})"]
    if isinstance(event, ImageTestsFailed):
        lines = [f"FAIL  {_build(event.id)}: {event.message}"]
        return lines + [f"      {line}" for line in event.log_tail.splitlines()]
    if isinstance(event, ImageTestsSkipped):
        return [f"skip  {_build(event.id)}: {event.reason}"]
    if isinstance(event, ImageTestsFinished):
        if event.failed:
            return [f"tested {counted(event.ran, 'platform build')}, {event.failed} failed"]
        its = "its" if event.ran == 1 else "their"
        return [f"{counted(event.ran, 'platform build')} passed {its} tests"]
    if isinstance(event, Round):
        return [round_line(event)]
    if isinstance(event, WatchError):
        return [event.message]
    return [f"watching {counted(event.files, 'file')} (Ctrl-C to stop)"]


def round_line(event: Round) -> str:
    changed = _shorten(event.changed)
    if not event.rebuilt:
        return f"{changed}: no build affected ({event.seconds:.2f}s)"
    labels = sorted({label for label, _ in event.rebuilt})
    outcome = f", {event.failed} failed" if event.failed else ""
    return (
        f"{changed}: rebuilt {len(event.rebuilt)} ({', '.join(labels)}){outcome} "
        f"in {event.seconds:.1f}s"
    )


def _shorten(paths: tuple[str, ...], shown: int = 3) -> str:
    """A few paths and a count: a save of a whole tree must still fit on one line."""
    if not paths:
        return "start"
    head = ", ".join(paths[:shown])
    return head if len(paths) <= shown else f"{head} and {len(paths) - shown} more"


def _failure_details(event: Failed) -> list[str]:
    lines = [f"    {line}" for line in event.log_tail.splitlines()]
    if event.log_path:
        lines.append(f"    log: {event.log_path}")
    return lines


class JsonReporter:
    """One JSON object per line, for CI and other programs."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def __call__(self, event: ReportEvent) -> None:
        self.stream.write(json.dumps(json_record(event), sort_keys=True) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


# Each event's name in JSON lines; its fields follow under their own names, but for ``id`` (as
# ``label`` and ``platform``), ``time`` (left out), the renames below, and Pinned's empty
# strings (null).
_JSON_NAMES: dict[type, str] = {
    Started: "started",
    Finished: "finished",
    Cached: "cached",
    Failed: "failed",
    Skipped: "skipped",
    Warned: "warning",
    Retrying: "retrying",
    UpToDate: "up_to_date",
    Merged: "merged",
    Pinned: "pinned",
    ImageTestsPassed: "tests_passed",
    ImageTestsFailed: "tests_failed",
    ImageTestsSkipped: "tests_skipped",
    ImageTestsFinished: "tests_finished",
    Round: "watch_round",
    WatchError: "watch_error",
    Watching: "watching",
}
_JSON_RENAMES: dict[tuple[type, str], str] = {(ImageTestsPassed, "count"): "tests"}


def json_record(event: ReportEvent) -> dict[str, Any]:
    if isinstance(event, RunStarted):
        record: dict[str, Any] = {"event": "run_started", "total": event.total}
        if event.estimates:
            record["estimated"] = {_build(build): seconds for build, seconds in event.estimates}
        return record
    if isinstance(event, RunFinished):
        summary = event.summary
        return {
            "event": "run_finished",
            "built": len(summary.succeeded),
            "cached": len(summary.cached),
            "failed": len(summary.failed),
            "skipped": len(summary.skipped),
            "interrupted": summary.interrupted,
            "seconds": round(summary.seconds, 3),
        }
    import dataclasses

    kind = type(event)
    record = {"event": _JSON_NAMES[kind]}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if field.name == "time":
            continue
        if field.name == "id":
            record |= {"label": value[0], "platform": value[1]}
        elif kind is Pinned and value == "":
            record[field.name] = None
        else:
            if field.name == "seconds":
                value = round(value, 3)
            record[_JSON_RENAMES.get((kind, field.name), field.name)] = _json_value(value)
    return record


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_value(item) for item in value]
    return value


class LiveReporter:
    """A rich live view for terminals: running builds with elapsed time and a progress line;
    results are printed above the view as they happen."""

    def __init__(self, console: Console | None = None, clock: Callable[[], float] = time.monotonic):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.clock = clock
        # The scheduling thread updates, rich's refresh thread renders: one lock for both.
        self.lock = threading.Lock()
        self.running: dict[JobId, float] = {}
        self.total = self.done = self.cached = self.failed = 0
        self.started_at = clock()
        self.estimates: dict[JobId, float] = {}
        self.ended: set[JobId] = set()
        self.took: list[float] = []  # this run's build times, for builds never timed before
        self.live: Live | None = None

    def render(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self.lock:
            now = self.clock()
            running = sorted(self.running.items(), key=lambda item: (item[1], item[0]))
            table = Table.grid(padding=(0, 2))
            for (label, platform), since in running[:_LIVE_ROWS]:
                table.add_row(Text("building", "cyan"), label, platform, f"{now - since:.1f}s")
            if len(running) > _LIVE_ROWS:
                table.add_row("", f"and {len(running) - _LIVE_ROWS} more")
            eta = self.eta(now)
            progress = Text.assemble(
                (f"{self.done}/{self.total} done", "bold"),
                f", {len(running)} running, cached {self.cached}, ",
                (f"failed {self.failed}", "bold red" if self.failed else ""),
                f"  {_duration(now - self.started_at)} elapsed",
                f", ETA {_duration(eta)}" if eta is not None else "",
            )
            return Group(table, progress)

    def eta(self, now: float) -> float | None:
        """Seconds left: the recorded time of every build still to finish (the mean one for
        builds never timed), less what the running ones already spent, spread over as many
        builds as run at once. None until some build's time is known. Caller holds the lock."""
        known = list(self.estimates.values()) or self.took
        if not known:
            return None
        typical = sum(known) / len(known)
        left = self.total - self.done - len(self.running)
        waiting = [s for b, s in self.estimates.items() if b not in self.ended | set(self.running)]
        work = sum(waiting) + typical * max(left - len(waiting), 0)
        for build, since in self.running.items():
            work += max(self.estimates.get(build, typical) - (now - since), 0.0)
        return work / max(len(self.running), 1)

    def __call__(self, event: ReportEvent) -> None:
        if isinstance(event, _RUN_EVENTS):
            from rich.text import Text  # not markup: a tag or a path may hold brackets

            for line in plain_lines(event):
                self._emit(Text(line))  # above the view, if one runs
            return
        if isinstance(event, RunStarted):
            self._start(event.total)
            with self.lock:
                self.started_at = event.time
                self.estimates = dict(event.estimates)
            return
        if isinstance(event, RunFinished):
            self.close()
            self.console.print(summary_line(event.summary), highlight=False)
            return
        with self.lock:
            if isinstance(event, Started):
                self.running[event.id] = event.time
            elif not isinstance(event, (Retrying, Warned)):
                self.running.pop(event.id, None)
                self.ended.add(event.id)
                self.done += 1
                if isinstance(event, Finished):
                    self.took.append(event.seconds)
                if isinstance(event, Cached):
                    self.cached += 1
                elif isinstance(event, Failed):
                    self.failed += 1
        if self.live is not None:
            self.live.refresh()  # first, so the print below redraws the view as it is now
        self._print(event)

    def _start(self, total: int) -> None:
        from rich.live import Live

        self.close()
        with self.lock:
            self.running.clear()
            self.ended.clear()
            self.took.clear()
            self.total, self.done, self.cached, self.failed = total, 0, 0, 0
        self.live = Live(
            console=self.console,
            get_renderable=self.render,
            refresh_per_second=4,
            transient=True,
        )
        self.live.start()

    def _print(self, event: AnyEvent) -> None:
        """Results go above the live view, where they stay in the terminal's scrollback."""
        from rich.text import Text

        if isinstance(event, Finished):
            text = f" {_build(event.id)} {short_digest(event.digest)} ({event.seconds:.1f}s)"
            self._emit(Text.assemble(("built", "green"), text))
        elif isinstance(event, Cached):
            self._emit(Text.assemble(("cached", "dim"), f" {_build(event.id)}{_where(event)}"))
        elif isinstance(event, Failed):
            self._emit(
                Text.assemble(("FAILED", "bold red"), f" {_build(event.id)}: ", event.message)
            )
            for line in _failure_details(event):
                self._emit(Text(line))
        elif isinstance(event, Skipped):
            self._emit(
                Text.assemble(("skipped", "yellow"), f" {_build(event.id)} ({event.reason})")
            )
        elif isinstance(event, Warned):
            text = f" {_build(event.id)}: "
            self._emit(Text.assemble(("warning", "yellow"), text, event.message))
        elif isinstance(event, Retrying):
            text = f" {_build(event.id)} in {event.delay:.1f}s (attempt {event.attempt}): "
            self._emit(Text.assemble(("retrying", "yellow"), text, event.message))

    def _emit(self, text: RenderableType) -> None:
        self.console.print(text, highlight=False)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def make_reporter(json_output: bool, stream: IO[str]) -> Reporter:
    """JSON lines when asked, the live view on a terminal, plain lines otherwise."""
    return progress_reporter("rawjson" if json_output else "auto", stream)


def _live(stream: IO[str]) -> Reporter:
    from rich.console import Console

    return LiveReporter(Console(file=stream, force_terminal=True))


class ProgressMode(NamedTuple):
    help: str
    reporter: Callable[[IO[str]], Reporter]


# ``--progress`` modes (buildx's names), in the order --help lists them: a new mode is one entry
# here. ``auto`` is resolved to ``tty`` or ``plain`` by ``progress_reporter``.
PROGRESS_MODES: dict[str, ProgressMode] = {
    "auto": ProgressMode(
        "a live view on a terminal outside CI, plain lines otherwise", PlainReporter
    ),
    "tty": ProgressMode("the live view", _live),
    "plain": ProgressMode("one line per event", PlainReporter),
    "quiet": ProgressMode("only failures and the summary", QuietReporter),
    "rawjson": ProgressMode("one JSON event per line on stdout", JsonReporter),
}


def progress_reporter(mode: str, stream: IO[str]) -> Reporter:
    """The reporter of a ``--progress`` mode writing to ``stream``: ``auto`` is the live view
    on a terminal outside CI (``ci_log``) and plain lines otherwise. rich honours NO_COLOR.
    Never a secret or credential reaches ``stream`` (``secrets.ScrubbedStream``)."""
    from typing import cast

    from buildtool.cli.ci_log import GitHubReporter, in_ci, on_github_actions
    from buildtool.secrets import ScrubbedStream

    if mode == "auto":
        mode = "tty" if stream.isatty() and not in_ci() else "plain"
    stream = cast("IO[str]", ScrubbedStream(cast("IO[str]", ReaderGuard(stream))))
    reporter = PROGRESS_MODES[mode].reporter(stream)
    if mode == "plain" and on_github_actions():
        return GitHubReporter(reporter, stream)
    return reporter


class ReaderGuard:
    """A text stream whose reader may go away: the first write into a closed pipe points the
    stream's descriptor at /dev/null (nothing more can be said there) and raises
    ``OutputClosed``, which ends the run as Ctrl-C does; later writes are dropped."""

    closed_by_reader = False  # set once any guarded stream lost its reader (main's exit code)

    def __init__(self, stream: IO[str]):
        self._stream = stream
        self._lost = False

    def write(self, text: str) -> int:
        if self._lost:
            return len(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
        return len(text)

    def flush(self) -> None:
        if self._lost:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        import os

        from buildtool.errors import OutputClosed

        self._lost = True
        ReaderGuard.closed_by_reader = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        raise OutputClosed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def progress_stream(mode: str) -> IO[str]:
    """JSON events go to stdout, for programs; the rest is for people, on stderr."""
    import sys

    return sys.stdout if mode == "rawjson" else sys.stderr


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: short enough for the live view's one progress line."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
