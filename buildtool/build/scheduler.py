"""A DAG of platform builds run on threads: critical path first, per-builder and global
concurrency limits, keep going past failures (skipping only dependents), retries with backoff
for transient faults, and clean cancellation on Ctrl-C.

The scheduler knows nothing of Docker: it calls a runner per job, one thread each, and reports
what happens as events. All bookkeeping and every callback run in the calling thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from buildtool.build.events import (
    AnyEvent,
    Cached,
    Failed,
    Finished,
    JobId,
    Retrying,
    RunFinished,
    RunStarted,
    Skipped,
    Started,
    Summary,
    Warned,
)
from buildtool.errors import BtError, Cancelled, JobFailed, StateWriteError, TransientError
from buildtool.retry import FaultClock, RetryPolicy

# How long the scheduling thread blocks at most before it checks again; a pending Ctrl-C is
# raised at the next bytecode, and not every platform wakes a blocked lock wait for a signal.
_POLL_SECONDS = 0.2
CANCEL_TIMEOUT = 30.0

# The job whose runner the current thread is running, and how to report about it.
_runner_thread = threading.local()


def note(message: str) -> None:
    """Called by a runner: report ``message`` about its job now (a Warned event), for news
    worth seeing before its result, such as waiting for another process."""
    post: Callable[[_Value], None] | None = getattr(_runner_thread, "post", None)
    if post is not None:
        post(_Note(message))


@contextlib.contextmanager
def waiting(cancel: threading.Event) -> Iterator[None]:
    """Called by a runner around a wait for something outside the run (another bt process's
    build): its job gives its slot to other jobs meanwhile, and gets one back before the block
    ends (raising Cancelled instead once ``cancel`` is set)."""
    post: Callable[[_Value], None] | None = getattr(_runner_thread, "post", None)
    if post is None:
        yield
        return
    post(_Park())
    yield  # an exception leaves the job parked: it ends without a slot to give back
    granted = threading.Event()
    post(_Unpark(granted))
    while not granted.wait(_POLL_SECONDS):
        if cancel.is_set():
            raise Cancelled()


@dataclass(frozen=True)
class Job:
    id: JobId
    deps: tuple[JobId, ...]  # jobs of this run that must succeed first
    pool: str  # builder name: concurrency is limited per pool
    cost: float = 1.0  # estimated seconds, for critical-path priority


@dataclass(frozen=True)
class Outcome:
    """What a runner returns on success."""

    digest: str | None = None
    cached: bool = False  # nothing was built: the action cache had it
    # where a cached image was found: "engine", "registry", or "lockfile" (another bt process
    # built and recorded it while this one waited)
    source: str = "engine"
    detail: str = ""
    warnings: tuple[str, ...] = ()  # shown as Warned events before its result


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
    cancel_timeout: float = CANCEL_TIMEOUT,
    lookup: Callable[[Job, threading.Event], Outcome | None] | None = None,
    retry: RetryPolicy | None = None,
    started_at: float | None = None,
) -> Summary:
    """Run ``jobs`` and return what became of each.

    ``runner(job, cancel)`` runs in a thread of its own and must stop soon after ``cancel`` is
    set. ``on_event`` and ``on_success`` run in the calling thread; their exceptions propagate
    (after running jobs are cancelled), as do runner exceptions other than ``JobFailed``,
    ``TransientError``, ``Cancelled`` and ``BtError``: those are bugs, not failed builds.

    With ``keep_going`` False (fail fast) nothing new starts after the first failure, but
    builds already running finish: each success is recorded, so the next run resumes from it.

    Ctrl-C (KeyboardInterrupt in the calling thread) cancels running jobs, waits up to
    ``cancel_timeout`` seconds for their runners, records those that still succeeded, skips
    the rest and returns a summary with ``interrupted`` set.

    Transient faults are retried under ``retry`` (``retry.py``; by default a policy with
    ``backoff`` as its first delay), at most ``retries`` more times per job, and within the
    policy's total time per fault source, shared by all jobs.

    ``lookup(job, cancel)``, when given, runs in the job's thread before its runner, under the
    same retries: an Outcome from it settles the job without starting it (no Started event: a
    cache found the result), None starts the runner.

    ``started_at`` (``time.monotonic()``) is when the run began, for the summary's time: the
    caller may have waited on engines before any job (default: now).

    Raises ValueError for malformed input: duplicate ids, unknown deps, cycles, limits below 1.
    """
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be at least 1, not {max_parallel}")
    for pool, limit in pool_limits.items():
        if limit < 1:
            raise ValueError(f"pool {pool!r} limit must be at least 1, not {limit}")
    by_id = _index(jobs)
    run = _Run(
        jobs=by_id,
        runner=runner,
        max_parallel=max_parallel,
        pool_limits=pool_limits,
        keep_going=keep_going,
        faults=FaultClock(replace(retry or RetryPolicy(base_delay=backoff), max_retries=retries)),
        on_event=on_event,
        on_success=on_success,
        cancel_timeout=cancel_timeout,
        lookup=lookup,
    )
    if started_at is not None:
        run.started_at = started_at
    return run.run()


def _index(jobs: Sequence[Job]) -> dict[JobId, Job]:
    by_id: dict[JobId, Job] = {}
    for job in jobs:
        if job.id in by_id:
            raise ValueError(f"job {_name(job.id)} is listed twice")
        by_id[job.id] = job
    for job in jobs:
        for dep in job.deps:
            if dep not in by_id:
                raise ValueError(f"job {_name(job.id)} depends on unknown job {_name(dep)}")
    return by_id


def _name(build: JobId) -> str:
    return f"{build[0]} {build[1]}"


def _dependents(jobs: Mapping[JobId, Job]) -> dict[JobId, list[JobId]]:
    children: dict[JobId, list[JobId]] = {job_id: [] for job_id in jobs}
    for job in jobs.values():
        for dep in set(job.deps):
            children[dep].append(job.id)
    for found in children.values():
        found.sort()
    return children


def _topological(jobs: Mapping[JobId, Job], children: Mapping[JobId, list[JobId]]) -> list[JobId]:
    """Dependencies before dependents (Kahn); a cycle is a ValueError naming its path."""
    missing = {job_id: len(set(job.deps)) for job_id, job in jobs.items()}
    frontier = sorted(job_id for job_id, count in missing.items() if count == 0)
    order: list[JobId] = []
    while frontier:
        job_id = frontier.pop()
        order.append(job_id)
        for child in children[job_id]:
            missing[child] -= 1
            if missing[child] == 0:
                frontier.append(child)
    if len(order) < len(jobs):
        raise ValueError(f"dependency cycle: {_cycle(jobs, set(jobs) - set(order))}")
    return order


def _cycle(jobs: Mapping[JobId, Job], stuck: set[JobId]) -> str:
    """Every job Kahn could not order waits on another such job, so walking deps finds a loop."""
    path: list[JobId] = []
    seen: dict[JobId, int] = {}
    node = min(stuck)
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(dep for dep in jobs[node].deps if dep in stuck)
    loop = [*path[seen[node] :], node]
    return " -> ".join(_name(build) for build in loop)


def _critical_path(
    jobs: Mapping[JobId, Job], children: Mapping[JobId, list[JobId]]
) -> dict[JobId, float]:
    """Longest cost chain from each job through its dependents, itself included."""
    remaining: dict[JobId, float] = {}
    for job_id in reversed(_topological(jobs, children)):
        after = max((remaining[child] for child in children[job_id]), default=0.0)
        remaining[job_id] = jobs[job_id].cost + after
    return remaining


@dataclass(frozen=True)
class _Failure:
    message: str
    log_tail: str = ""
    log_path: str | None = None
    cancelled: bool = False


@dataclass(frozen=True)
class _Bug:
    error: BaseException


@dataclass(frozen=True)
class _Retry:
    attempt: int
    delay: float
    message: str


@dataclass(frozen=True)
class _Note:
    message: str


@dataclass(frozen=True)
class _Park:
    """The runner waits for something outside the run: its slot is free meanwhile."""


@dataclass(frozen=True)
class _Unpark:
    """The runner's wait is over: it goes on once ``granted`` is set (a slot is its again)."""

    granted: threading.Event


@dataclass(frozen=True)
class _Begun:
    """The lookup found nothing: the runner starts now."""


_Progress = (_Retry, _Begun, _Note, _Park, _Unpark)  # news of a job still running
_Value = Outcome | _Failure | _Bug | _Retry | _Begun | _Note | _Park | _Unpark


@dataclass(frozen=True)
class _Result:
    id: JobId
    began: float
    value: _Value


@dataclass(frozen=True)
class _Running:
    thread: threading.Thread
    cancel: threading.Event


class _Run:
    """One call of ``run_jobs``: the state only the scheduling thread touches."""

    def __init__(
        self,
        *,
        jobs: dict[JobId, Job],
        runner: Callable[[Job, threading.Event], Outcome],
        max_parallel: int,
        pool_limits: Mapping[str, int],
        keep_going: bool,
        faults: FaultClock,
        on_event: Callable[[AnyEvent], None],
        on_success: Callable[[Job, Outcome], None],
        cancel_timeout: float,
        lookup: Callable[[Job, threading.Event], Outcome | None] | None = None,
    ) -> None:
        self.jobs = jobs
        self.runner = runner
        self.max_parallel = max_parallel
        self.pool_limits = pool_limits
        self.keep_going = keep_going
        self.faults = faults
        self.emit = on_event
        self.on_success = on_success
        self.cancel_timeout = cancel_timeout
        self.lookup = lookup

        self.children = _dependents(jobs)
        self.priority = _critical_path(jobs, self.children)
        self.blocked = {job_id: set(job.deps) for job_id, job in jobs.items()}  # not started
        self.ready = {job_id for job_id, deps in self.blocked.items() if not deps}
        self.running: dict[JobId, _Running] = {}
        self.pool_busy: dict[str, int] = {}  # slots taken: running jobs, less parked ones
        self.parked: set[JobId] = set()  # running, but waiting outside the run without a slot
        self.unparking: dict[JobId, threading.Event] = {}  # parked, wanting their slot back
        self.results: queue.Queue[_Result] = queue.Queue()
        self.succeeded: list[JobId] = []
        self.cached: list[JobId] = []
        self.failed: list[JobId] = []
        self.skipped: list[JobId] = []
        self.first_failure: JobId | None = None
        self.started_at = time.monotonic()

    def run(self) -> Summary:
        started_at = self.started_at
        interrupted = False
        try:
            self.emit(RunStarted(len(self.jobs), started_at))
            self.schedule()
        except KeyboardInterrupt:
            interrupted = True
            self.cancel_running()
        except BaseException:
            self.abandon_running()
            raise
        if interrupted:
            self.skip_unsettled("interrupted")
        elif self.first_failure is not None:
            # Only fail-fast leaves jobs unsettled without an interrupt.
            failure = _name(self.first_failure)
            self.skip_unsettled(f"not started: stopping at the first failure ({failure})")
        summary = Summary(
            succeeded=tuple(self.succeeded),
            cached=tuple(self.cached),
            failed=tuple(self.failed),
            skipped=tuple(self.skipped),
            interrupted=interrupted,
            seconds=time.monotonic() - started_at,
        )
        self.emit(RunFinished(summary, time.monotonic()))
        return summary

    def schedule(self) -> None:
        while True:
            if self.keep_going or self.first_failure is None:
                self.start_ready()
            if not self.running:
                return  # with limits >= 1 and nothing running, nothing ready is left to start
            self.settle(self.next_result())

    def next_result(self) -> _Result:
        while True:
            try:
                return self.results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue

    def has_slot(self, job: Job) -> bool:
        if len(self.running) - len(self.parked) >= self.max_parallel:
            return False
        return self.pool_busy.get(job.pool, 0) < self.pool_limits.get(job.pool, 1)

    def start_ready(self) -> None:
        # Jobs back from a wait first: they were started before anything ready now.
        for job_id in sorted(self.unparking, key=lambda j: (-self.priority[j], j)):
            job = self.jobs[job_id]
            if self.has_slot(job):
                self.pool_busy[job.pool] = self.pool_busy.get(job.pool, 0) + 1
                self.parked.discard(job_id)
                self.unparking.pop(job_id).set()
        for job_id in sorted(self.ready, key=lambda j: (-self.priority[j], j)):
            if len(self.running) - len(self.parked) >= self.max_parallel:
                return
            if self.has_slot(self.jobs[job_id]):
                self.start(self.jobs[job_id])

    def start(self, job: Job) -> None:
        self.ready.discard(job.id)
        del self.blocked[job.id]
        cancel = threading.Event()
        # Daemon: a runner that ignores its cancel event must not keep bt from exiting.
        thread = threading.Thread(
            target=self.work, args=(job, cancel), name=f"bt {_name(job.id)}", daemon=True
        )
        # Registered before it starts, so a Ctrl-C at any point finds every live runner.
        self.running[job.id] = _Running(thread, cancel)
        self.pool_busy[job.pool] = self.pool_busy.get(job.pool, 0) + 1
        thread.start()
        if self.lookup is None:
            self.emit(Started(job.id, time.monotonic()))

    def work(self, job: Job, cancel: threading.Event) -> None:
        """The runner's thread: attempts with backoff; every result goes through the queue."""
        began = time.monotonic()
        _runner_thread.post = lambda value: self.results.put(_Result(job.id, began, value))
        self.results.put(_Result(job.id, began, self.attempts(job, cancel, began)))

    def attempts(
        self, job: Job, cancel: threading.Event, began: float
    ) -> Outcome | _Failure | _Bug:
        attempt = 1
        looked_up = self.lookup is None
        faulted: TransientError | None = None  # the fault the last attempt ended with
        while True:
            try:
                if not looked_up and self.lookup is not None:
                    found = self.lookup(job, cancel)
                    if found is not None:
                        return found
                    looked_up = True
                    self.results.put(_Result(job.id, began, _Begun()))
                outcome = self.runner(job, cancel)
                if faulted is not None:
                    self.faults.recovered(faulted.source)
                return outcome
            except TransientError as err:
                faulted = err
                delay = self.faults.next_delay(err, attempt)
                if delay is None or cancel.is_set():
                    return _Failure(self.faults.gave_up(err, attempt))
                attempt += 1
                self.results.put(_Result(job.id, began, _Retry(attempt, delay, str(err))))
                if cancel.wait(delay):
                    return _Failure("cancelled", cancelled=True)
            except JobFailed as err:
                return _Failure(err.message, err.log_tail, err.log_path)
            except Cancelled:
                return _Failure("cancelled", cancelled=True)
            except StateWriteError as err:
                return _Bug(err)  # bt cannot record anything: the run stops, running ones cancelled
            except BtError as err:
                return _Failure(str(err))
            except BaseException as err:  # re-raised by the scheduling thread
                return _Bug(err)

    def release(self, job_id: JobId) -> None:
        del self.running[job_id]
        self.unparking.pop(job_id, None)
        if job_id in self.parked:
            self.parked.discard(job_id)  # its slot was given back when it parked
        else:
            self.pool_busy[self.jobs[job_id].pool] -= 1

    def settle(self, result: _Result) -> None:
        value = result.value
        if isinstance(value, _Begun):
            self.emit(Started(result.id, time.monotonic()))
            return
        if isinstance(value, _Note):
            self.emit(Warned(result.id, time.monotonic(), value.message))
            return
        if isinstance(value, _Park):
            self.parked.add(result.id)
            self.pool_busy[self.jobs[result.id].pool] -= 1
            return
        if isinstance(value, _Unpark):
            self.unparking[result.id] = value.granted
            return
        if isinstance(value, _Retry):
            now = time.monotonic()
            self.emit(Retrying(result.id, now, value.attempt, value.delay, value.message))
            return
        self.release(result.id)
        if isinstance(value, _Bug):
            raise value.error
        if isinstance(value, _Failure):
            self.fail(result.id, value)
            return
        self.succeed(result.id, value, result.began)

    def succeed(self, job_id: JobId, outcome: Outcome, began: float) -> None:
        self.on_success(self.jobs[job_id], outcome)
        for message in outcome.warnings:
            self.emit(Warned(job_id, time.monotonic(), message))
        now = time.monotonic()
        if outcome.cached:
            self.cached.append(job_id)
            self.emit(Cached(job_id, now, outcome.digest, outcome.source))
        else:
            self.succeeded.append(job_id)
            self.emit(Finished(job_id, now, outcome.digest, now - began))
        for child in self.children[job_id]:
            deps = self.blocked.get(child)
            if deps is not None:
                deps.discard(job_id)
                if not deps:
                    self.ready.add(child)

    def fail(self, job_id: JobId, failure: _Failure) -> None:
        self.failed.append(job_id)
        now = time.monotonic()
        self.emit(Failed(job_id, now, failure.message, failure.log_tail, failure.log_path))
        if self.first_failure is None:
            self.first_failure = job_id
        reason = f"dependency {_name(job_id)} failed"
        # Breadth first over sorted dependents: a stable order for the Skipped events.
        frontier = list(self.children[job_id])
        while frontier:
            child = frontier.pop(0)
            if child not in self.blocked:
                continue  # already skipped through another failed dependency
            self.skip(child, reason)
            frontier.extend(self.children[child])

    def skip(self, job_id: JobId, reason: str) -> None:
        self.blocked.pop(job_id, None)
        self.ready.discard(job_id)
        self.skipped.append(job_id)
        self.emit(Skipped(job_id, time.monotonic(), reason))

    def skip_unsettled(self, reason: str) -> None:
        """Skip every job without a result yet, whatever step a Ctrl-C interrupted."""
        settled = {*self.succeeded, *self.cached, *self.failed, *self.skipped}
        for job_id in sorted(set(self.jobs) - settled):
            self.skip(job_id, reason)

    def cancel_running(self) -> None:
        """Ctrl-C: tell every runner to stop; record the successes that still arrive in time."""
        for running in self.running.values():
            running.cancel.set()
        deadline = time.monotonic() + self.cancel_timeout
        try:
            while self.running and time.monotonic() < deadline:
                try:
                    result = self.results.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    self.forget_dead_runners()
                    continue
                self.settle_cancelled(result)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: stop waiting; the rest is skipped below
        for job_id in sorted(self.running):
            self.release(job_id)
            self.skip(job_id, "interrupted; its runner had not stopped when bt gave up waiting")

    def settle_cancelled(self, result: _Result) -> None:
        if isinstance(result.value, _Progress) or result.id not in self.running:
            return
        self.release(result.id)
        if isinstance(result.value, Outcome):
            self.succeed(result.id, result.value, result.began)
        # Failures now are most likely the cancellation itself; skip_unsettled marks them.

    def forget_dead_runners(self) -> None:
        """Threads never started, or whose result was taken when Ctrl-C hit, will not report."""
        dead = [job_id for job_id, r in self.running.items() if not r.thread.is_alive()]
        while True:  # a thread puts its result before it ends: drain what the dead left
            try:
                self.settle_cancelled(self.results.get_nowait())
            except queue.Empty:
                break
        for job_id in dead:
            if job_id in self.running:
                self.release(job_id)

    def abandon_running(self) -> None:
        """A bug ends the run: stop runners (their builds and subprocesses) before raising."""
        for running in self.running.values():
            running.cancel.set()
        deadline = time.monotonic() + self.cancel_timeout
        for running in self.running.values():
            running.thread.join(max(0.0, deadline - time.monotonic()))
