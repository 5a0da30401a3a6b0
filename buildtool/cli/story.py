"""A run's readers besides the reporter: the GitHub step summary (``summary``) and the trace
(``trace``). They get every event the reporter gets, plus the story events (the plan, the
phases' times) no reporter renders."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from buildtool.build.events import ReportEvent, StoryEvent

if TYPE_CHECKING:
    from buildtool.cli.reporter import Reporter

STEP_SUMMARY = "GITHUB_STEP_SUMMARY"


class Reader(Protocol):
    def __call__(self, event: ReportEvent | StoryEvent) -> None: ...

    def close(self) -> None: ...


class Story:
    """The reporter and the readers as one reporter; ``story`` takes the story events."""

    def __init__(self, reporter: Reporter, readers: Sequence[Reader]):
        self.reporter = reporter
        self.readers = tuple(readers)

    def __call__(self, event: ReportEvent) -> None:
        self.reporter(event)
        for reader in self.readers:
            reader(event)

    def story(self, event: StoryEvent) -> None:
        for reader in self.readers:
            reader(event)

    def close(self) -> None:
        try:
            for reader in self.readers:
                reader.close()
        finally:
            self.reporter.close()


def step_summary_path() -> Path | None:
    """Where GitHub Actions reads the job's summary from, when bt runs in a job."""
    value = os.environ.get(STEP_SUMMARY, "")
    return Path(value) if value else None


def told(
    reporter: Reporter, command: str, trace: Path | None = None, *, summary: bool = True
) -> Story:
    """``reporter`` with the readers this run asked for: the step summary under GitHub Actions
    (unless ``summary`` is False), the trace with ``--trace``."""
    readers: list[Reader] = []
    summary_path = step_summary_path() if summary else None
    if summary_path is not None:
        from buildtool.cli.summary import BuildSummary

        readers.append(BuildSummary(summary_path, command))
    if trace is not None:
        from buildtool.cli.trace import TraceWriter

        readers.append(TraceWriter(trace, command))
    return Story(reporter, readers)
