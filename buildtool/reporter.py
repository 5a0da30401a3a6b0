"""Renders scheduler events: a live view on terminals, plain lines otherwise, JSON on request."""

from __future__ import annotations

import json
import time
from typing import IO, Any, Protocol

from buildtool.scheduler import (
    AnyEvent,
    Cached,
    Failed,
    Finished,
    Retrying,
    RunFinished,
    RunStarted,
    Skipped,
    Started,
    Summary,
)


class Reporter(Protocol):
    def __call__(self, event: AnyEvent) -> None: ...

    def close(self) -> None: ...


def _short(digest: str | None) -> str:
    return digest[:19] if digest else "-"


def summary_line(summary: Summary) -> str:
    text = (
        f"built {len(summary.succeeded)}, cached {len(summary.cached)}, "
        f"failed {len(summary.failed)}, skipped {len(summary.skipped)} in {summary.seconds:.1f}s"
    )
    return text + (" (interrupted)" if summary.interrupted else "")


class PlainReporter:
    """One line per event, for logs and pipes."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.total = 0
        self.done = 0

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event: AnyEvent) -> None:
        if isinstance(event, RunStarted):
            self.total = event.total
            self._line(f"{event.total} platform builds to run")
            return
        if isinstance(event, RunFinished):
            self._line(summary_line(event.summary))
            return
        label, platform = event.id
        if isinstance(event, (Finished, Cached, Failed, Skipped)):
            self.done += 1
        count = f"[{self.done}/{self.total}]"
        if isinstance(event, Started):
            self._line(f"{count} started {label} {platform}")
        elif isinstance(event, Finished):
            self._line(
                f"{count} built {label} {platform} {_short(event.digest)} ({event.seconds:.1f}s)"
            )
        elif isinstance(event, Cached):
            self._line(f"{count} cached {label} {platform} {_short(event.digest)}")
        elif isinstance(event, Failed):
            self._line(f"{count} FAILED {label} {platform}: {event.message}")
            for tail in event.log_tail.splitlines():
                self._line(f"    {tail}")
            if event.log_path:
                self._line(f"    log: {event.log_path}")
        elif isinstance(event, Skipped):
            self._line(f"{count} skipped {label} {platform} ({event.reason})")
        elif isinstance(event, Retrying):
            self._line(
                f"{count} retrying {label} {platform} in {event.delay:.1f}s "
                f"(attempt {event.attempt + 1}): {event.message}"
            )

    def close(self) -> None:
        pass


class JsonReporter:
    """One JSON object per line."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def __call__(self, event: AnyEvent) -> None:
        record: dict[str, Any]
        if isinstance(event, RunStarted):
            record = {"event": "run_started", "total": event.total}
        elif isinstance(event, RunFinished):
            s = event.summary
            record = {
                "event": "run_finished",
                "built": len(s.succeeded),
                "cached": len(s.cached),
                "failed": len(s.failed),
                "skipped": len(s.skipped),
                "interrupted": s.interrupted,
                "seconds": round(s.seconds, 3),
            }
        else:
            label, platform = event.id
            record = {"label": label, "platform": platform}
            if isinstance(event, Started):
                record["event"] = "started"
            elif isinstance(event, Finished):
                record |= {"event": "finished", "digest": event.digest,
                           "seconds": round(event.seconds, 3)}  # fmt: skip
            elif isinstance(event, Cached):
                record |= {"event": "cached", "digest": event.digest}
            elif isinstance(event, Failed):
                record |= {"event": "failed", "message": event.message,
                           "log_tail": event.log_tail, "log": event.log_path}  # fmt: skip
            elif isinstance(event, Skipped):
                record |= {"event": "skipped", "reason": event.reason}
            elif isinstance(event, Retrying):
                record |= {"event": "retrying", "attempt": event.attempt, "delay": event.delay,
                           "message": event.message}  # fmt: skip
        self.stream.write(json.dumps(record, sort_keys=True) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class LiveReporter:
    """A rich live view for terminals: running builds with elapsed time, progress, failures."""

    def __init__(self, console: Any = None):
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console(stderr=True)
        self.running: dict[tuple[str, str], float] = {}
        self.total = self.done = self.cached = self.failed = 0
        self.live = Live(self._render(), console=self.console, refresh_per_second=4,
                         get_renderable=self._render, transient=True)  # fmt: skip
        self.live.start()

    def _render(self) -> Any:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        now = time.monotonic()
        for (label, platform), since in sorted(self.running.items(), key=lambda kv: kv[1]):
            table.add_row("[cyan]building[/]", label, platform, f"{now - since:5.1f}s")
        table.add_row(
            f"[bold]{self.done}/{self.total}[/]", f"cached {self.cached}",
            f"[red]failed {self.failed}[/]" if self.failed else "failed 0", "",
        )  # fmt: skip
        return table

    def __call__(self, event: AnyEvent) -> None:
        if isinstance(event, RunStarted):
            self.total = event.total
        elif isinstance(event, RunFinished):
            self.live.stop()
            self.console.print(summary_line(event.summary))
            return
        elif isinstance(event, Started):
            self.running[event.id] = event.time
        else:
            self.running.pop(event.id, None)
            if isinstance(event, (Finished, Cached, Failed, Skipped)):
                self.done += 1
            label, platform = event.id
            if isinstance(event, Finished):
                self.console.print(f"built  {label} {platform} {_short(event.digest)} "
                                   f"({event.seconds:.1f}s)")  # fmt: skip
            elif isinstance(event, Cached):
                self.cached += 1
                self.console.print(f"cached {label} {platform}")
            elif isinstance(event, Failed):
                self.failed += 1
                self.console.print(f"[red]FAILED[/] {label} {platform}: {event.message}")
                for tail in event.log_tail.splitlines():
                    self.console.print(f"    {tail}", markup=False, highlight=False)
                if event.log_path:
                    self.console.print(f"    log: {event.log_path}", markup=False)
            elif isinstance(event, Skipped):
                self.console.print(f"[yellow]skipped[/] {label} {platform} ({event.reason})")
        self.live.refresh()

    def close(self) -> None:
        self.live.stop()


def make_reporter(json_output: bool, stream: IO[str]) -> Reporter:
    if json_output:
        return JsonReporter(stream)
    if stream.isatty():
        return LiveReporter()
    return PlainReporter(stream)
