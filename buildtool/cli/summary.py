"""The GitHub step summary: the Markdown `bt build`, `bt merge` and `bt ci plan` append to the
file $GITHUB_STEP_SUMMARY names, which GitHub shows on the run's page.

A summary says what the run did in counts, lists the builds that ran with the `bt plan` reason,
duration and digest, shows failures with the end of their logs and names the critical path. A
run of hundreds of builds stays readable: builds are grouped by package and the tables hold at
most ``MAX_ROWS`` rows, saying how many were left out.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from buildtool.build.events import (
    Cached,
    Failed,
    Finished,
    JobId,
    Merged,
    Planned,
    PlannedBuildInfo,
    ReportEvent,
    RunFinished,
    Skipped,
    Started,
    StoryEvent,
    UpToDate,
)

if TYPE_CHECKING:
    from buildtool.ci.collect import Collected
    from buildtool.ci.waves import CiPlan
    from buildtool.release.merge import MergeReport, TagOutcome

MAX_ROWS = 100  # table rows of one summary, over all its packages
MAX_FAILURES = 10  # failures shown with their log
LOG_LINES = 15  # last log lines of a failure


def append_summary(path: Path, markdown: str) -> None:
    """Append ``markdown`` to the step summary file (GitHub reads it when the step ends)."""
    from buildtool.errors import BtError
    from buildtool.secrets import scrub

    try:
        with path.open("a", encoding="utf-8") as out:
            out.write(scrub(markdown).rstrip("\n") + "\n\n")
    except OSError as err:
        raise BtError(f"cannot append to $GITHUB_STEP_SUMMARY: {err.strerror}", path) from None


def seconds_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def cell(text: str) -> str:
    """``text`` as one Markdown table cell: one line, its pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def package_of(label: str) -> str:
    return label.split(":", 1)[0] or "//"


def grouped_table(header: Sequence[str], rows: Sequence[tuple[str, ...]], cap: int) -> list[str]:
    """Rows (whose first cell is a label) as one table per package, in label order, with at
    most ``cap`` rows in all; a line under each cut table says how many rows it left out."""
    packages: dict[str, list[tuple[str, ...]]] = {}
    for row in sorted(rows):
        packages.setdefault(package_of(row[0]), []).append(row)
    lines: list[str] = []
    left = cap
    for package, members in packages.items():
        shown = members[: max(left, 0)]
        left -= len(shown)
        lines.append(f"**{package}** ({len(members)})")
        lines.append("")
        if shown:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in shown]
        if len(members) > len(shown):
            lines.append("")
            lines.append(f"_{len(members) - len(shown)} more of {package} not shown._")
        lines.append("")
    return lines


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text``."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    return "`" * max(3, longest + 1)


class BuildSummary:
    """Collects a `bt build` run's events; appends its summary when closed."""

    def __init__(self, path: Path, command: str):
        self.path = path
        self.command = command
        self.began = time.monotonic()
        self.plan: dict[JobId, PlannedBuildInfo] = {}
        self.started: dict[JobId, float] = {}
        self.built: dict[JobId, Finished] = {}
        self.failed: dict[JobId, Failed] = {}
        self.cached: dict[JobId, Cached] = {}
        self.skipped: dict[JobId, Skipped] = {}
        self.merged: list[Merged] = []
        self.up_to_date: int | None = None
        self.interrupted = False

    def __call__(self, event: ReportEvent | StoryEvent) -> None:
        if isinstance(event, Planned):
            self.plan.update((build.id, build) for build in event.builds)
        elif isinstance(event, Started):
            self.started[event.id] = event.time
        elif isinstance(event, Finished):
            self.built[event.id] = event
        elif isinstance(event, Failed):
            self.failed[event.id] = event
        elif isinstance(event, Cached):
            self.cached[event.id] = event
        elif isinstance(event, Skipped):
            self.skipped[event.id] = event
        elif isinstance(event, Merged):
            self.merged.append(event)
        elif isinstance(event, UpToDate):
            self.up_to_date = event.total
        elif isinstance(event, RunFinished):
            self.interrupted = event.summary.interrupted

    def close(self) -> None:
        append_summary(self.path, "\n".join(self.markdown()))

    def took(self, build: JobId) -> float:
        if build in self.built:
            return self.built[build].seconds
        return self.failed[build].time - self.started.get(build, self.failed[build].time)

    def markdown(self) -> list[str]:
        lines = [f"### {self.command}", ""]
        if self.up_to_date is not None:
            lines.append(f"Nothing to build: {self.up_to_date} platform builds up to date.")
            return [*lines, "", *self.indexes()]
        if not self.plan:
            return [*lines, "The run stopped before it built anything: the job's log says why."]
        lines += self.counts()
        ran = [*self.built, *self.failed]
        if ran:
            lines += ["", "#### Builds that ran", ""]
            rows = [self.row(build) for build in ran]
            header = ("build", "platform", "reason", "result", "took", "digest")
            lines += grouped_table(header, rows, MAX_ROWS)
            lines += self.critical_path()
        lines += self.failures()
        return lines + self.indexes()

    def counts(self) -> list[str]:
        local = sum(event.source != "registry" for event in self.cached.values())
        registry = len(self.cached) - local
        fresh = sum(not build.runs for build in self.plan.values())
        took = seconds_text(time.monotonic() - self.began)
        return [
            "| built | cached locally | cached from the registry | failed | skipped | up to date |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {len(self.built)} | {local} | {registry} | {len(self.failed)} "
            f"| {len(self.skipped)} | {fresh} |",
            "",
            f"In {took}{' (interrupted)' if self.interrupted else ''}.",
        ]

    def row(self, build: JobId) -> tuple[str, ...]:
        info = self.plan.get(build)
        reason = info.reason if info else ""
        if build in self.built:
            digest = self.built[build].digest or ""
            result = "built"
        else:
            digest, result = "", "**failed**"
        short = f"`{digest[:19]}`" if digest else "-"
        return (build[0], build[1], reason, result, seconds_text(self.took(build)), short)

    def critical_path(self) -> list[str]:
        """The chain of builds that ran, each on its parent, that took longest in all."""
        ran = {*self.built, *self.failed}
        best: dict[JobId, tuple[float, tuple[JobId, ...]]] = {}

        def longest(build: JobId) -> tuple[float, tuple[JobId, ...]]:
            if build not in best:
                info = self.plan.get(build)
                parents = [(p, build[1]) for p in (info.parents if info else ())]
                before = max(
                    (longest(p) for p in parents if p in ran), default=(0.0, ()), key=lambda c: c[0]
                )
                best[build] = (before[0] + self.took(build), (*before[1], build))
            return best[build]

        total, chain = max((longest(build) for build in sorted(ran)), key=lambda c: c[0])
        steps = " → ".join(f"`{b[0]}` {b[1]} ({seconds_text(self.took(b))})" for b in chain)
        return [f"Critical path ({seconds_text(total)}): {steps}", ""]

    def failures(self) -> list[str]:
        if not self.failed:
            return []
        lines = ["#### Failures", ""]
        for build, event in sorted(self.failed.items())[:MAX_FAILURES]:
            tail = "\n".join(event.log_tail.splitlines()[-LOG_LINES:])
            lines += [
                f"<details><summary>{cell(build[0])} {build[1]}: {cell(event.message)}</summary>",
                "",
            ]
            if tail:
                fence = _fence(tail)
                lines += [fence, tail, fence, ""]
            if event.log_path:
                lines += [f"log: `{event.log_path}`", ""]
            lines += ["</details>", ""]
        if len(self.failed) > MAX_FAILURES:
            lines += [f"_{len(self.failed) - MAX_FAILURES} more failures not shown._", ""]
        return lines

    def indexes(self) -> list[str]:
        if not self.merged:
            return []
        rows = [(m.label, m.tag, m.status, f"`{m.digest[:19]}`") for m in self.merged]
        return ["#### Indexes", "", *tag_lines(rows)]


def tag_lines(rows: Iterable[tuple[str, str, str, str]]) -> list[str]:
    """(image, tag, status, digest) rows: counts by status, then the table of tags."""
    rows = list(rows)
    counts = {status: sum(row[2] == status for row in rows) for status in _STATUSES}
    line = ", ".join(f"{count} {status}" for status, count in counts.items())
    header = ("image", "tag", "status", "digest")
    return [f"{len(rows)} tags: {line}.", "", *grouped_table(header, rows, MAX_ROWS)]


_STATUSES = ("created", "updated", "unchanged")


def _tag_rows(tags: Iterable[TagOutcome]) -> list[tuple[str, str, str, str]]:
    return [(str(t.label), t.tag, t.status, f"`{t.digest[:19]}`") for t in tags]


def ci_merge_markdown(patterns: Sequence[str], found: Collected) -> str:
    """The summary of `bt ci merge`: builds recorded from the registry, the tags put, and the
    builds the registry lacks."""
    lines = [
        f"### bt ci merge {' '.join(patterns)}",
        "",
        f"{len(found.recorded)} platform builds recorded from the registry, "
        f"{len(found.missing)} missing.",
        "",
    ]
    if found.tags:
        lines += tag_lines(_tag_rows(found.tags))
    missing = sorted((str(p.label), p.platform) for p in found.missing)
    for label, platform in missing[:MAX_ROWS]:
        lines.append(f"- missing: `{label}` {platform} (its job failed or did not run)")
    if len(missing) > MAX_ROWS:
        lines.append(f"- _{len(missing) - MAX_ROWS} more missing builds not shown._")
    return "\n".join(lines)


def merge_markdown(patterns: Sequence[str], report: MergeReport, dry_run: bool) -> str:
    """The summary of `bt merge`."""
    rows = _tag_rows(report.tags)
    lines = [f"### bt merge {' '.join(patterns)}", ""]
    if dry_run:
        lines += ["A dry run: nothing was put; the statuses say what a merge would do.", ""]
    lines += tag_lines(rows)
    for label, missing in report.partial:
        lines.append(f"- `{label}`: partial index, without {', '.join(missing)}")
    for label in report.skipped:
        lines.append(f"- `{label}`: skipped, no platform build recorded")
    return "\n".join(lines)


def ci_plan_markdown(patterns: Sequence[str], plan: CiPlan, reasons: dict[JobId, str]) -> str:
    """The summary of `bt ci plan`: its waves and jobs, and each stale build with its reason."""
    lines = [f"### bt ci plan {' '.join(patterns)}", ""]
    builds = [
        (str(label), platform, reasons.get((str(label), platform), ""), f"{number} / {job.id}")
        for number, wave in enumerate(plan.waves, 1)
        for job in wave.jobs
        for label, platform in job.builds
    ]
    if not builds:
        return "\n".join([*lines, "Nothing stale: no build jobs, only the merge."])
    lines += [
        f"{len(builds)} stale platform builds in {len(plan.waves)} waves: "
        f"{plan.job_count} jobs, then merge.",
        "",
        "| wave | jobs | builds |",
        "|---:|---:|---:|",
    ]
    for number, wave in enumerate(plan.waves, 1):
        count = sum(len(job.builds) for job in wave.jobs)
        lines.append(f"| {number} | {len(wave.jobs)} | {count} |")
    lines += ["", "#### Stale builds", ""]
    lines += grouped_table(("build", "platform", "reason", "wave / job"), builds, MAX_ROWS)
    return "\n".join(lines)
