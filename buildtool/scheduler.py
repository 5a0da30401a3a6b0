"""A DAG of platform builds run on threads: critical path first, per-builder and global
concurrency limits, keep going past failures (skipping only dependents), retries with backoff
for transient faults, and clean cancellation on Ctrl-C.

The scheduler knows nothing of Docker: it calls a runner per job and reports events.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

BuildId = tuple[str, str]  # (label, platform)


@dataclass(frozen=True)
class Job:
    id: BuildId
    deps: tuple[BuildId, ...]
    pool: str
    cost: float = 1.0


@dataclass(frozen=True)
class Outcome:
    digest: str | None = None
    cached: bool = False
    detail: str = ""


class TransientError(Exception):
    """A fault worth retrying: engine connection reset, registry 5xx or timeout."""


class JobFailed(Exception):
    """A build that failed for real; carries the end of its log."""

    def __init__(self, message: str, log_tail: str = "", log_path: str | None = None):
        super().__init__(message)
        self.message = message
        self.log_tail = log_tail
        self.log_path = log_path


class Cancelled(Exception):
    """The runner stopped because its cancel event was set."""


@dataclass(frozen=True)
class Event:
    id: BuildId
    time: float


@dataclass(frozen=True)
class RunStarted:
    total: int
    time: float


@dataclass(frozen=True)
class Started(Event):
    pass


@dataclass(frozen=True)
class Cached(Event):
    digest: str | None


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
class Retrying(Event):
    attempt: int
    delay: float
    message: str


@dataclass(frozen=True)
class Summary:
    succeeded: tuple[BuildId, ...]
    cached: tuple[BuildId, ...]
    failed: tuple[BuildId, ...]
    skipped: tuple[BuildId, ...]
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


def _critical_path(
    jobs: Mapping[BuildId, Job], children: Mapping[BuildId, list[BuildId]]
) -> dict[BuildId, float]:
    """Longest cost chain from each job through its dependents (itself included)."""
    memo: dict[BuildId, float] = {}
    order: list[BuildId] = []
    state: dict[BuildId, int] = {}
    for start in sorted(jobs):
        stack = [(start, False)]
        while stack:
            node, done = stack.pop()
            if done:
                state[node] = 2
                order.append(node)
                continue
            if state.get(node) == 2:
                continue
            if state.get(node) == 1:
                raise ValueError(f"dependency cycle through {node}")
            state[node] = 1
            stack.append((node, True))
            stack.extend((child, False) for child in children[node] if state.get(child) != 2)
    for node in order:  # children come before parents in this order
        memo[node] = jobs[node].cost + max((memo[c] for c in children[node]), default=0.0)
    return memo


@dataclass
class _State:
    waiting: dict[BuildId, set[BuildId]]
    running: dict[BuildId, threading.Event] = field(default_factory=dict)
    pool_running: dict[str, int] = field(default_factory=dict)
    succeeded: list[BuildId] = field(default_factory=list)
    cached: list[BuildId] = field(default_factory=list)
    failed: list[BuildId] = field(default_factory=list)
    skipped: list[BuildId] = field(default_factory=list)


def run_jobs(
    jobs: Sequence[Job],
    runner: Callable[[Job, threading.Event], Outcome],
    *,
    max_parallel: int,
    pool_limits: Mapping[str, int],
    keep_going: bool = True,
    retries: int = 2,
    backoff: float = 1.0,
    on_event: Callable[[AnyEvent], None] = lambda event: None,
    on_success: Callable[[Job, Outcome], None] = lambda job, outcome: None,
    cancel_timeout: float = 30.0,
) -> Summary:
    """Run ``jobs``; ``on_event`` and ``on_success`` are called in the calling thread only.

    With ``keep_going`` False (fail fast) nothing new starts after the first failure; builds
    already running finish, since their result is recorded and resumes the next run.
    """
    by_id = {job.id: job for job in jobs}
    children: dict[BuildId, list[BuildId]] = {job.id: [] for job in jobs}
    for job in jobs:
        for dep in job.deps:
            if dep not in by_id:
                raise ValueError(f"{job.id} depends on unknown job {dep}")
            children[dep].append(job.id)
    priority = _critical_path(by_id, children)
    state = _State(waiting={job.id: set(job.deps) for job in jobs})
    results: queue.Queue[tuple[BuildId, Outcome | BaseException | _RetryNotice, float]]
    results = queue.Queue()
    started_at = time.monotonic()
    stop_starting = False
    interrupted = False
    on_event(RunStarted(len(jobs), started_at))

    def worker(job: Job, cancel: threading.Event) -> None:
        begin = time.monotonic()
        attempt = 0
        while True:
            try:
                results.put((job.id, runner(job, cancel), begin))
                return
            except TransientError as err:
                if attempt >= retries or cancel.is_set():
                    results.put((job.id, JobFailed(f"{err} (after {attempt + 1} attempts)"), begin))
                    return
                delay = backoff * 2**attempt
                attempt += 1
                results.put((job.id, _RetryNotice(attempt, delay, str(err)), begin))
                if cancel.wait(delay):
                    results.put((job.id, Cancelled("cancelled"), begin))
                    return
            except BaseException as err:  # reported by the scheduling thread
                results.put((job.id, err, begin))
                return

    def skip_dependents(failed: BuildId) -> None:
        stack = list(children[failed])
        while stack:
            node = stack.pop()
            if node in state.waiting:
                del state.waiting[node]
                state.skipped.append(node)
                on_event(
                    Skipped(node, time.monotonic(), f"dependency {failed[0]} {failed[1]} failed")
                )
                stack.extend(children[node])

    def start_ready() -> None:
        ready = sorted(
            (job_id for job_id, deps in state.waiting.items() if not deps),
            key=lambda j: (-priority[j], j),
        )
        for job_id in ready:
            if len(state.running) >= max_parallel:
                return
            job = by_id[job_id]
            limit = pool_limits.get(job.pool, 1)
            if state.pool_running.get(job.pool, 0) >= limit:
                continue
            del state.waiting[job_id]
            cancel = threading.Event()
            state.running[job_id] = cancel
            state.pool_running[job.pool] = state.pool_running.get(job.pool, 0) + 1
            on_event(Started(job_id, time.monotonic()))
            threading.Thread(
                target=worker, args=(job, cancel), daemon=True, name=str(job_id)
            ).start()

    def finish(job_id: BuildId, result: Outcome | BaseException, begin: float) -> None:
        nonlocal stop_starting
        job = by_id[job_id]
        del state.running[job_id]
        state.pool_running[job.pool] -= 1
        now = time.monotonic()
        if isinstance(result, Outcome):
            on_success(job, result)
            if result.cached:
                state.cached.append(job_id)
                on_event(Cached(job_id, now, result.digest))
            else:
                state.succeeded.append(job_id)
                on_event(Finished(job_id, now, result.digest, now - begin))
            for child in children[job_id]:
                if child in state.waiting:
                    state.waiting[child].discard(job_id)
            return
        if isinstance(result, (KeyboardInterrupt, SystemExit)):
            raise result
        state.failed.append(job_id)
        if isinstance(result, JobFailed):
            on_event(Failed(job_id, now, result.message, result.log_tail, result.log_path))
        elif isinstance(result, Cancelled):
            on_event(Failed(job_id, now, "cancelled", "", None))
        elif isinstance(result, Exception) and _is_user_error(result):
            on_event(Failed(job_id, now, str(result), "", None))
        else:
            raise result  # a bug in bt: do not hide it behind a failed build
        skip_dependents(job_id)
        if not keep_going:
            stop_starting = True

    try:
        while state.waiting or state.running:
            if not stop_starting:
                start_ready()
            if not state.running:
                break  # nothing can run: the rest waits on failed or unstarted work
            try:
                job_id, result, begin = results.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(result, _RetryNotice):
                on_event(
                    Retrying(job_id, time.monotonic(), result.attempt, result.delay, result.message)
                )
                continue
            finish(job_id, result, begin)
    except KeyboardInterrupt:
        interrupted = True
        _cancel_running(state, results, cancel_timeout, finish, on_event)
    for job_id in sorted(state.waiting):
        state.skipped.append(job_id)
        reason = "interrupted" if interrupted else "not started after a failure"
        on_event(Skipped(job_id, time.monotonic(), reason))
    state.waiting.clear()
    summary = Summary(
        succeeded=tuple(state.succeeded),
        cached=tuple(state.cached),
        failed=tuple(state.failed),
        skipped=tuple(state.skipped),
        interrupted=interrupted,
        seconds=time.monotonic() - started_at,
    )
    on_event(RunFinished(summary, time.monotonic()))
    return summary


@dataclass(frozen=True)
class _RetryNotice:
    attempt: int
    delay: float
    message: str


def _is_user_error(err: Exception) -> bool:
    from buildtool.errors import BtError

    return isinstance(err, BtError)


def _cancel_running(
    state: _State,
    results: queue.Queue[tuple[BuildId, Outcome | BaseException | _RetryNotice, float]],
    timeout: float,
    finish: Callable[[BuildId, Outcome | BaseException, float], None],
    on_event: Callable[[AnyEvent], None],
) -> None:
    """Ctrl-C: tell every runner to stop, and record what still finishes in time."""
    for cancel in state.running.values():
        cancel.set()
    deadline = time.monotonic() + timeout
    while state.running and time.monotonic() < deadline:
        try:
            job_id, result, begin = results.get(timeout=0.2)
        except queue.Empty:
            continue
        except KeyboardInterrupt:
            break  # a second Ctrl-C: stop waiting
        if isinstance(result, _RetryNotice):
            continue
        if isinstance(result, Outcome):
            finish(job_id, result, begin)
        else:
            state.running.pop(job_id, None)
            state.skipped.append(job_id)
            on_event(Skipped(job_id, time.monotonic(), "cancelled"))
    for job_id in list(state.running):
        state.running.pop(job_id)
        state.skipped.append(job_id)
        on_event(Skipped(job_id, time.monotonic(), "cancelled; still running when bt gave up"))
