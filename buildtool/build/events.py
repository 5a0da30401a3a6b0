"""Every event a run reports: the scheduler's, per platform build (started, cached, finished,
failed, skipped, warned, retrying) and per run; and the others: a run with nothing to do, the
indexes put after a push, pins, image test results and the rounds of `bt watch`; and the story
events (the plan, and how long planning and merging took) that only the step summary and the
trace read (``buildtool.cli.story``).

Core code hands these to a reporter (``buildtool.cli.reporter``), which renders them as plain lines,
above the live view or as JSON lines; nothing in the core prints.
"""

from __future__ import annotations

from dataclasses import dataclass

JobId = tuple[str, str]  # a platform build as text: (label, platform)


@dataclass(frozen=True)
class Event:
    """Something that happened to one platform build; ``time`` is ``time.monotonic()``."""

    id: JobId
    time: float


@dataclass(frozen=True)
class Started(Event):
    pass


@dataclass(frozen=True)
class Cached(Event):
    digest: str | None
    source: str = "engine"  # the builder's engine, "registry" (remote action cache), "lockfile"


@dataclass(frozen=True)
class Finished(Event):
    digest: str | None
    seconds: float


@dataclass(frozen=True)
class Failed(Event):
    message: str
    log_tail: str
    log_path: str | None


@dataclass(frozen=True)
class Skipped(Event):
    reason: str


@dataclass(frozen=True)
class Warned(Event):
    message: str


@dataclass(frozen=True)
class Retrying(Event):
    attempt: int  # the attempt about to run: 2 for the first retry
    delay: float
    message: str


@dataclass(frozen=True)
class RunStarted:
    total: int
    time: float
    # seconds each build took when it last ran, for those that ran before (the ETA)
    estimates: tuple[tuple[JobId, float], ...] = ()


@dataclass(frozen=True)
class Summary:
    succeeded: tuple[JobId, ...]
    cached: tuple[JobId, ...]
    failed: tuple[JobId, ...]
    skipped: tuple[JobId, ...]
    interrupted: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped and not self.interrupted


@dataclass(frozen=True)
class RunFinished:
    summary: Summary
    time: float


AnyEvent = Event | RunStarted | RunFinished


@dataclass(frozen=True)
class UpToDate:
    """`bt build` found nothing to run among ``total`` planned builds."""

    total: int


@dataclass(frozen=True)
class Merged:
    """One tag after the multi-platform merge that follows a complete push."""

    label: str
    tag: str
    status: str  # unchanged, created or updated
    digest: str
    detail: str  # the line `bt merge` prints for it


@dataclass(frozen=True)
class ImageTestsPassed:
    id: JobId
    count: int


@dataclass(frozen=True)
class ImageTestsFailed:
    id: JobId
    message: str
    log_tail: str


@dataclass(frozen=True)
class ImageTestsSkipped:
    """The builder of this platform cannot run its images natively."""

    id: JobId
    reason: str


@dataclass(frozen=True)
class ImageTestsFinished:
    ran: int  # platform builds whose tests ran
    failed: int


@dataclass(frozen=True)
class Pinned:
    """An external image pinned before the builds that use it (``digest`` empty: it could not
    be, and ``detail`` says why; those builds then fail)."""

    reference: str
    platform: str
    digest: str
    source: str  # "registry" or "engine"
    detail: str = ""


@dataclass(frozen=True)
class Round:
    """One rebuild of `bt watch` after a change: what changed, which builds ran, how it went."""

    changed: tuple[str, ...]
    rebuilt: tuple[tuple[str, str], ...]  # (label, platform) of the builds that ran
    failed: int
    seconds: float


@dataclass(frozen=True)
class WatchError:
    """A round that could not plan (say, a half-saved BUILD.images); watching goes on."""

    changed: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class Watching:
    files: int


RunEvent = (
    UpToDate
    | Merged
    | Pinned
    | ImageTestsPassed
    | ImageTestsFailed
    | ImageTestsSkipped
    | ImageTestsFinished
)
WatchEvent = Round | WatchError | Watching
ReportEvent = AnyEvent | RunEvent | WatchEvent


@dataclass(frozen=True)
class PlannedBuildInfo:
    """One build of a run's plan as `bt plan` shows it, for readers that tell the run's story."""

    id: JobId
    key: str
    reason: str  # the `bt plan` reason
    parents: tuple[str, ...]  # labels of its parents (their builds for the same platform)
    runs: bool  # the run has it to build (stale, or fresh but not yet pushed)
    cache_from: str = ""  # the layer cache source it is offered (``layer_cache``), "" for none


@dataclass(frozen=True)
class Planned:
    """The plan a run builds, before anything builds."""

    builds: tuple[PlannedBuildInfo, ...]
    time: float


@dataclass(frozen=True)
class Phase:
    """A phase of a run outside the builds: "plan" (with pins) or "merge" (the indexes)."""

    name: str
    began: float
    ended: float


StoryEvent = Planned | Phase
