"""CI fan-out: the stale set as waves of jobs for native runners (the CI system's own file is
written by a provider: ``provider.py``, ``github.py``).

A wave holds builds whose parents are all in earlier waves (or already recorded), so the jobs of
one wave never wait on each other. Each job builds builds of one platform, on that platform's
runner, and pushes them; a job of a later wave finds its parents in the registry by their
``bt-<key>`` tags (``bt build --no-deps``), and the merge job records every build of the plan
from there (``bt ci merge``) and puts the indexes. The registry is the only channel between
jobs. A pull request's run pushes nothing, so it cannot pass images between jobs: one job per
platform builds that platform's stale builds, parents included. Pure functions over plans and
config: no engine, no click.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from buildtool.errors import BtError
from buildtool.plan.stale import PlannedBuild, needs_run
from buildtool.workspace.config import Config
from buildtool.workspace.target import BuildId

GITHUB_MATRIX_LIMIT = 256  # jobs one GitHub Actions matrix may generate
_ID_UNSAFE = re.compile(r"[^a-z0-9]+")
# GitHub's event names that mean "code was pushed" (a manual or scheduled run builds as a push).
_PUSH_EVENTS = ("push", "workflow_dispatch", "schedule", "merge_group")
_PULL_REQUEST_EVENTS = ("pull_request", "pull_request_target")


@dataclass(frozen=True)
class CiEvent:
    """What a CI run was started for, as ``[ci.platforms]`` names it, and what it builds."""

    name: str  # one of workspace.ci_spec.EVENTS
    platforms: tuple[str, ...]

    @property
    def push(self) -> bool:
        return self.name != "pull_request"


def resolve_event(config: Config, event: str | None, env: Mapping[str, str]) -> CiEvent:
    """``event`` (push, pull_request or tag), else GitHub's GITHUB_EVENT_NAME and GITHUB_REF; a
    push to ``[ci] default_branch`` is the "default_branch" event."""
    name = event or env.get("GITHUB_EVENT_NAME") or "push"
    ref = env.get("GITHUB_REF", "")
    if name in _PULL_REQUEST_EVENTS:
        resolved = "pull_request"
    elif name == "tag" or (name in _PUSH_EVENTS and ref.startswith("refs/tags/")):
        resolved = "tag"
    elif name in _PUSH_EVENTS:
        branch = f"refs/heads/{config.ci.default_branch}"
        resolved = "default_branch" if ref == branch else "push"
    else:
        raise BtError(
            f"CI event {name!r} is not one bt plans for (push, pull_request, tag; "
            "GITHUB_EVENT_NAME workflow_dispatch and schedule count as push)"
        )
    return CiEvent(resolved, config.ci.platforms_of(resolved, config.platforms))


@dataclass(frozen=True)
class CiJob:
    """One CI job: builds of one platform on that platform's runner."""

    id: str
    platform: str
    runs_on: str | tuple[str, ...]
    builds: tuple[BuildId, ...]
    push: bool = True

    @property
    def run(self) -> str:
        """The shell command the job runs at the root of a fresh checkout."""
        labels = " ".join(shlex.quote(str(label)) for label, _ in self.builds)
        if not self.push:
            return f"bt build --no-push --platform {self.platform} {labels}"
        return f"bt build --push --no-deps --platform {self.platform} {labels}"

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "platform": self.platform,
            "runs_on": self.runs_on if isinstance(self.runs_on, str) else list(self.runs_on),
            "builds": [[str(label), platform] for label, platform in self.builds],
            "run": self.run,
        }


@dataclass(frozen=True)
class CiWave:
    jobs: tuple[CiJob, ...]

    @property
    def matrices(self) -> list[tuple[CiJob, ...]]:
        """The jobs in matrices GitHub accepts (at most 256 jobs each)."""
        step = GITHUB_MATRIX_LIMIT
        return [self.jobs[i : i + step] for i in range(0, len(self.jobs), step)]

    def as_json(self) -> dict[str, object]:
        return {
            "jobs": [job.as_json() for job in self.jobs],
            "matrices": [
                {"include": [job.as_json() for job in matrix]} for matrix in self.matrices
            ],
        }


@dataclass(frozen=True)
class CiPlan:
    waves: tuple[CiWave, ...]
    patterns: tuple[str, ...]
    event: CiEvent

    @property
    def merge_run(self) -> str | None:
        """The merge job's command; None for a run that pushes nothing."""
        if not self.event.push:
            return None
        patterns = " ".join(shlex.quote(p) for p in self.patterns)
        # A push to the default branch is a push whose GITHUB_REF names that branch.
        event = "push" if self.event.name == "default_branch" else self.event.name
        return f"bt ci merge --event {event} {patterns}"

    @property
    def job_count(self) -> int:
        return sum(len(wave.jobs) for wave in self.waves)

    def as_json(self) -> dict[str, object]:
        return {
            "event": self.event.name,
            "platforms": list(self.event.platforms),
            "push": self.event.push,
            "waves": [wave.as_json() for wave in self.waves],
            "merge": None if self.merge_run is None else {"run": self.merge_run},
        }

    def to_json(self, indent: int | None = 2) -> str:
        separators = None if indent else (",", ":")
        return json.dumps(self.as_json(), indent=indent, separators=separators)


def build_waves(
    planned: Sequence[PlannedBuild], runs: Callable[[PlannedBuild], bool]
) -> list[list[PlannedBuild]]:
    """The builds that ``runs`` selects, by wave: a build goes one wave after its latest
    selected parent; parents not selected are recorded already. ``planned`` is in build order."""
    wave_of: dict[BuildId, int] = {}
    waves: list[list[PlannedBuild]] = []
    for p in planned:
        if not runs(p):
            continue
        parent_waves = [
            wave_of[(parent, p.platform)] for parent in p.parents if (parent, p.platform) in wave_of
        ]
        wave = 1 + max(parent_waves, default=-1)
        wave_of[p.id] = wave
        if wave == len(waves):
            waves.append([])
        waves[wave].append(p)
    return waves


def plan_jobs(
    config: Config,
    planned: Sequence[PlannedBuild],
    runs: Callable[[PlannedBuild], bool],
    patterns: Iterable[str],
    builds_per_job: int = 1,
    max_jobs: int | None = None,
    event: CiEvent | None = None,
) -> CiPlan:
    """Waves of jobs for the builds ``runs`` selects (the stale ones) of the platforms
    ``event`` builds (default: a push building every platform)."""
    event = event or CiEvent("push", config.platforms)
    wanted = set(event.platforms)
    mine = [p for p in planned if p.platform in wanted]
    if not event.push:
        return CiPlan(_unpushed_wave(config, mine, runs), tuple(patterns), event)
    waves = build_waves(mine, runs)
    return CiPlan(
        waves=tuple(
            CiWave(_wave_jobs(config, number, builds, builds_per_job, max_jobs))
            for number, builds in enumerate(waves, 1)
        ),
        patterns=tuple(patterns),
        event=event,
    )


def _unpushed_wave(
    config: Config, planned: Sequence[PlannedBuild], runs: Callable[[PlannedBuild], bool]
) -> tuple[CiWave, ...]:
    """A run that pushes nothing: one job per platform builds its stale builds, parents first
    (nothing reaches the registry, so no later job could find them there)."""
    by_platform: dict[str, list[BuildId]] = {}
    for p in planned:
        if runs(p):
            by_platform.setdefault(p.platform, []).append(p.id)
    jobs = tuple(
        CiJob(
            id=f"w1-{_ID_UNSAFE.sub('-', platform.lower())}-001",
            platform=platform,
            runs_on=config.runner_for(platform),
            builds=tuple(builds),
            push=False,
        )
        for platform, builds in sorted(by_platform.items())
    )
    return (CiWave(jobs),) if jobs else ()


def _wave_jobs(
    config: Config,
    number: int,
    builds: Sequence[PlannedBuild],
    builds_per_job: int,
    max_jobs: int | None,
) -> tuple[CiJob, ...]:
    by_platform: dict[str, list[BuildId]] = {}
    for p in builds:
        by_platform.setdefault(p.platform, []).append(p.id)
    size = _job_size({k: len(v) for k, v in by_platform.items()}, builds_per_job, max_jobs, number)
    jobs = []
    for platform in sorted(by_platform):
        for n, chunk in enumerate(_even_chunks(by_platform[platform], size), 1):
            jobs.append(
                CiJob(
                    id=f"w{number}-{_ID_UNSAFE.sub('-', platform.lower())}-{n:03d}",
                    platform=platform,
                    runs_on=config.runner_for(platform),
                    builds=tuple(chunk),
                )
            )
    return tuple(jobs)


def _job_size(counts: dict[str, int], builds_per_job: int, max_jobs: int | None, wave: int) -> int:
    """Builds per job: ``builds_per_job``, or more when the wave would exceed ``max_jobs``."""
    if max_jobs is None:
        return builds_per_job
    if len(counts) > max_jobs:
        raise BtError(
            f"--max-jobs {max_jobs} is too small: wave {wave} has builds for {len(counts)} "
            "platforms, and a job builds for one platform"
        )
    size = builds_per_job
    while sum(-(-n // size) for n in counts.values()) > max_jobs:
        size += 1
    return size


def _even_chunks(items: Sequence[BuildId], size: int) -> list[Sequence[BuildId]]:
    """``items`` in ceil(len/size) consecutive chunks whose sizes differ by at most one."""
    count = -(-len(items) // size)
    return [items[i * len(items) // count : (i + 1) * len(items) // count] for i in range(count)]


def graph_depth(planned: Sequence[PlannedBuild]) -> int:
    """Waves a rebuild of everything in ``planned`` takes."""
    return len(build_waves(planned, lambda p: True))


# -- shards: deterministic slices for engines that index jobs -----------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` (1 <= I <= N) as (I, N); raises ValueError with a sentence for users."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not I/N (e.g. 1/4: the first of four slices)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"{text!r}: I must be between 1 and N, and N at least 1")
    return index, count


def ready_builds(
    planned: Sequence[PlannedBuild], runs: Callable[[PlannedBuild], bool]
) -> list[PlannedBuild]:
    """The builds ``runs`` selects whose parents need no run: the first wave."""
    waves = build_waves(planned, runs)
    return waves[0] if waves else []


def shard(builds: Sequence[PlannedBuild], index: int, count: int) -> list[PlannedBuild]:
    """The ``index``-th (from 1) of ``count`` disjoint slices that together cover ``builds``.
    Dealt round-robin in (label, platform) order, so each slice gets a share of every platform
    and the same builds always land in the same slice."""
    ordered = sorted(builds, key=lambda p: (str(p.label), p.platform))
    return ordered[index - 1 :: count]


def shard_of(
    planned: list[PlannedBuild], which: tuple[int, int], push: bool, config: Config
) -> tuple[list[PlannedBuild], str]:
    """`bt build --shard I/N`: the I-th slice of the ready stale builds (parents recorded), and
    a line saying what the slice holds."""

    def runs(p: PlannedBuild) -> bool:
        return needs_run(p, push, config.registry)

    ready = ready_builds(planned, runs)
    mine = {p.id for p in shard(ready, *which)}
    waiting = sum(map(runs, planned)) - len(ready)
    index, count = which
    message = f"shard {index}/{count}: {len(mine)} of {len(ready)} ready stale builds"
    if waiting:
        message += f"; {waiting} wait on parents not built yet"
    return [p for p in planned if p.id in mine or not runs(p)], message
