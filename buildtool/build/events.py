"""What a run reports besides the scheduler's per-build events: a run with nothing to do, the
indexes put after a push, image test results and the rounds of `bt watch`.

Core code hands these to a reporter (``buildtool.cli.reporter``), which renders them as plain lines,
above the live view or as JSON lines; nothing in the core prints.
"""

from __future__ import annotations

from dataclasses import dataclass

from buildtool.build.scheduler import AnyEvent, JobId


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
