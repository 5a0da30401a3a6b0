"""The scheduler with real threads: order, limits, failure isolation, retries, cancellation."""

from __future__ import annotations

import _thread
import threading
import time
from collections.abc import Callable

import pytest

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
from buildtool.build.scheduler import Job, Outcome, note, run_jobs, waiting
from buildtool.errors import BtError, Cancelled, JobFailed, TransientError

AMD = "linux/amd64"
WAIT = 10.0  # upper bound for waits that end much sooner when the scheduler is right


def job(name: str, *deps: str, pool: str = "p", cost: float = 1.0) -> Job:
    return Job((name, AMD), tuple((d, AMD) for d in deps), pool, cost)


def names(builds: tuple[JobId, ...] | list[JobId]) -> list[str]:
    return [build[0] for build in builds]


class Recorder:
    """A runner that sleeps a little and records starts, ends and concurrency under a lock."""

    def __init__(self, delay: float = 0.01, fail: frozenset[str] = frozenset()):
        self.delay = delay
        self.fail = fail
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.ended: list[str] = []
        self.running = 0
        self.peak = 0
        self.pool_running: dict[str, int] = {}
        self.pool_peak: dict[str, int] = {}

    def __call__(self, j: Job, cancel: threading.Event) -> Outcome:
        with self.lock:
            self.started.append(j.id[0])
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.pool_running[j.pool] = self.pool_running.get(j.pool, 0) + 1
            self.pool_peak[j.pool] = max(self.pool_peak.get(j.pool, 0), self.pool_running[j.pool])
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
            self.pool_running[j.pool] -= 1
            self.ended.append(j.id[0])
        if j.id[0] in self.fail:
            raise JobFailed(f"{j.id[0]} broke", log_tail="step 3/4\nexit 1", log_path="/logs/x")
        return Outcome(digest=f"sha256:{j.id[0]}")


def run(
    jobs: list[Job], runner: Callable[[Job, threading.Event], Outcome], **options: object
) -> tuple[Summary, list[AnyEvent]]:
    events: list[AnyEvent] = []
    settings: dict[str, object] = {
        "max_parallel": 4,
        "pool_limits": {"p": 4},
        "on_event": events.append,
    }
    settings.update(options)
    summary = run_jobs(jobs, runner, **settings)  # type: ignore[arg-type]
    return summary, events


def test_every_job_starts_after_its_dependencies_ended() -> None:
    jobs = [job("c", "b"), job("b", "a"), job("a")]
    rec = Recorder()
    summary, _ = run(jobs, rec)
    assert rec.started == ["a", "b", "c"]
    assert rec.ended == ["a", "b", "c"]
    assert names(summary.succeeded) == ["a", "b", "c"]
    assert summary.ok


def test_diamond_runs_both_sides_together_and_the_top_after_both() -> None:
    both_sides = threading.Barrier(2, timeout=WAIT)  # breaks unless left and right overlap

    def runner(j: Job, cancel: threading.Event) -> Outcome:
        if j.id[0] in ("left", "right"):
            both_sides.wait()
        return Outcome(digest=j.id[0])

    jobs = [job("top", "left", "right"), job("left", "base"), job("right", "base"), job("base")]
    summary, events = run(jobs, runner)
    started = [e.id[0] for e in events if isinstance(e, Started)]
    assert started[0] == "base" and started[-1] == "top"
    assert sorted(started[1:3]) == ["left", "right"]
    top = next(i for i, e in enumerate(events) if isinstance(e, Started) and e.id[0] == "top")
    done_before_top = {e.id[0] for e in events[:top] if isinstance(e, Finished)}
    assert done_before_top == {"base", "left", "right"}
    assert summary.ok


def test_the_critical_path_starts_first_then_ties_break_by_id() -> None:
    jobs = [
        job("a-short"),
        job("b-short"),
        job("z-long1", cost=10),
        job("z-long2", "z-long1", cost=10),
        job("z-long3", "z-long2", cost=10),
    ]
    rec = Recorder(delay=0)
    run(jobs, rec, max_parallel=4, pool_limits={"p": 1})
    # Remaining chains: z-long1 30, z-long2 20, z-long3 10, shorts 1 each.
    assert rec.started == ["z-long1", "z-long2", "z-long3", "a-short", "b-short"]


def test_priority_counts_the_longest_chain_of_dependents_not_their_sum() -> None:
    # wide: 1 + max(1, 1, 1) = 2; deep: 1 + 2 = 3 -> deep starts first.
    jobs = [job("wide"), job("w1", "wide"), job("w2", "wide"), job("w3", "wide")]
    jobs += [job("deep"), job("d1", "deep", cost=2)]
    rec = Recorder(delay=0)
    run(jobs, rec, max_parallel=1, pool_limits={"p": 1})
    assert rec.started[:2] == ["deep", "d1"]


def test_global_and_per_pool_limits_are_never_exceeded() -> None:
    jobs = [job(f"a{i}", pool="amd") for i in range(8)] + [
        job(f"b{i}", pool="arm") for i in range(8)
    ]
    rec = Recorder(delay=0.05)
    summary, _ = run(jobs, rec, max_parallel=3, pool_limits={"amd": 2, "arm": 2})
    assert summary.ok
    assert rec.peak == 3
    assert rec.pool_peak == {"amd": 2, "arm": 2}


def test_a_pool_missing_from_the_limits_runs_one_job_at_a_time() -> None:
    rec = Recorder(delay=0.03)
    summary, _ = run([job(f"j{i}", pool="other") for i in range(4)], rec, pool_limits={})
    assert summary.ok
    assert rec.pool_peak == {"other": 1}


def test_a_failure_skips_exactly_its_transitive_dependents() -> None:
    jobs = [
        job("base"),
        job("bad", "base"),
        job("child", "bad"),
        job("grandchild", "child"),
        job("also", "bad", "sibling"),
        job("sibling", "base"),
        job("independent"),
    ]
    rec = Recorder(fail=frozenset({"bad"}))
    summary, events = run(jobs, rec)
    assert names(summary.failed) == ["bad"]
    assert sorted(names(summary.skipped)) == ["also", "child", "grandchild"]
    assert sorted(names(summary.succeeded)) == ["base", "independent", "sibling"]
    assert not summary.ok and not summary.interrupted
    assert sorted(rec.started) == ["bad", "base", "independent", "sibling"]
    failed = [e for e in events if isinstance(e, Failed)]
    assert [(e.message, e.log_tail, e.log_path) for e in failed] == [
        ("bad broke", "step 3/4\nexit 1", "/logs/x")
    ]
    skipped = sorted((e.id[0], e.reason) for e in events if isinstance(e, Skipped))
    reason = "dependency bad linux/amd64 failed"
    assert skipped == [("also", reason), ("child", reason), ("grandchild", reason)]


def test_fail_fast_starts_nothing_new_but_lets_running_jobs_finish() -> None:
    bad_reported = threading.Event()

    def runner(j: Job, cancel: threading.Event) -> Outcome:
        if j.id[0] == "bad":
            raise JobFailed("bad broke")
        if j.id[0] == "slow":
            assert bad_reported.wait(WAIT)  # still running when the failure is handled
        return Outcome()

    def on_event(event: AnyEvent) -> None:
        events.append(event)
        if isinstance(event, Failed):
            bad_reported.set()

    events: list[AnyEvent] = []
    jobs = [job("bad", pool="amd", cost=5), job("slow", pool="arm"), job("later", pool="amd")]
    summary = run_jobs(
        jobs, runner, max_parallel=2, pool_limits={}, keep_going=False, on_event=on_event
    )
    assert names(summary.failed) == ["bad"]
    assert names(summary.succeeded) == ["slow"]
    assert names(summary.skipped) == ["later"]
    skipped = [e for e in events if isinstance(e, Skipped)]
    assert [e.reason for e in skipped] == [
        "not started: stopping at the first failure (bad linux/amd64)"
    ]
    assert not summary.interrupted


def test_keep_going_runs_everything_independent_of_the_failure() -> None:
    jobs = [job("bad", cost=5)] + [job(f"later{i}") for i in range(3)]
    rec = Recorder(delay=0, fail=frozenset({"bad"}))
    summary, _ = run(jobs, rec, max_parallel=1, pool_limits={"p": 1})
    assert rec.started == ["bad", "later0", "later1", "later2"]
    assert names(summary.succeeded) == ["later0", "later1", "later2"]


def test_a_transient_fault_is_retried_with_doubling_delays_then_succeeds() -> None:
    calls: list[float] = []

    def flaky(j: Job, cancel: threading.Event) -> Outcome:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise TransientError("connection reset by peer")
        return Outcome(digest="sha256:ok")

    summary, events = run([job("flaky")], flaky, retries=2, backoff=0.05)
    assert names(summary.succeeded) == ["flaky"]
    retrying = [(e.attempt, e.delay, e.message) for e in events if isinstance(e, Retrying)]
    assert retrying == [(2, 0.05, "connection reset by peer"), (3, 0.1, "connection reset by peer")]
    assert calls[1] - calls[0] >= 0.05 and calls[2] - calls[1] >= 0.1
    finished = [e for e in events if isinstance(e, Finished)]
    assert len(finished) == 1 and finished[0].seconds >= 0.15


def test_exhausted_retries_fail_the_job() -> None:
    calls = 0

    def dead(j: Job, cancel: threading.Event) -> Outcome:
        nonlocal calls
        calls += 1
        raise TransientError("503 Service Unavailable")

    summary, events = run([job("dead")], dead, retries=2, backoff=0.01)
    assert calls == 3
    assert names(summary.failed) == ["dead"]
    failed = [e.message for e in events if isinstance(e, Failed)]
    assert failed == ["503 Service Unavailable (gave up after 3 attempts)"]


def test_real_failures_are_not_retried() -> None:
    calls = 0

    def broken(j: Job, cancel: threading.Event) -> Outcome:
        nonlocal calls
        calls += 1
        raise JobFailed("COPY failed: file not found")

    summary, events = run([job("broken")], broken, retries=5, backoff=0.01)
    assert calls == 1
    assert names(summary.failed) == ["broken"]
    assert not [e for e in events if isinstance(e, Retrying)]


def test_a_user_error_from_a_runner_fails_that_build_only() -> None:
    def runner(j: Job, cancel: threading.Event) -> Outcome:
        if j.id[0] == "a":
            raise BtError("pushing needs [registry] url", ".cache-spec")
        return Outcome()

    summary, events = run([job("a"), job("b")], runner)
    assert names(summary.failed) == ["a"] and names(summary.succeeded) == ["b"]
    assert [e.message for e in events if isinstance(e, Failed)] == [
        ".cache-spec: pushing needs [registry] url"
    ]


def test_a_cached_outcome_is_reported_as_cached_not_built() -> None:
    def runner(j: Job, cancel: threading.Event) -> Outcome:
        return Outcome(digest="sha256:abc", cached=j.id[0] == "hit")

    summary, events = run([job("hit"), job("miss")], runner)
    assert names(summary.cached) == ["hit"] and names(summary.succeeded) == ["miss"]
    assert [(e.id[0], e.digest) for e in events if isinstance(e, Cached)] == [("hit", "sha256:abc")]
    assert summary.ok


def test_on_success_and_on_event_run_once_per_success_in_the_calling_thread() -> None:
    calls: list[tuple[str, str | None, int]] = []
    event_threads: set[int] = set()
    me = threading.get_ident()

    def on_success(j: Job, outcome: Outcome) -> None:
        calls.append((j.id[0], outcome.digest, threading.get_ident()))

    def on_event(event: AnyEvent) -> None:
        event_threads.add(threading.get_ident())

    def runner(j: Job, cancel: threading.Event) -> Outcome:
        if j.id[0] == "bad":
            raise JobFailed("bad broke")
        if j.id[0] == "b" and not retried:
            retried.append(j.id[0])  # a retried success is still one success
            raise TransientError("connection reset")
        return Outcome(digest=f"sha256:{j.id[0]}", cached=j.id[0] == "c")

    retried: list[str] = []
    jobs = [job("a"), job("b", "a"), job("c", "b"), job("bad")]
    run_jobs(
        jobs,
        runner,
        max_parallel=2,
        pool_limits={"p": 2},
        backoff=0.01,
        on_event=on_event,
        on_success=on_success,
    )
    assert retried == ["b"]
    assert calls == [("a", "sha256:a", me), ("b", "sha256:b", me), ("c", "sha256:c", me)]
    assert event_threads == {me}


def test_on_success_runs_before_the_event_that_reports_the_success() -> None:
    order: list[str] = []
    run_jobs(
        [job("a")],
        Recorder(),
        max_parallel=1,
        pool_limits={},
        on_event=lambda e: order.append(type(e).__name__),
        on_success=lambda j, o: order.append("on_success"),
    )
    assert order == ["RunStarted", "Started", "on_success", "Finished", "RunFinished"]


def test_events_frame_the_run_and_the_summary_counts_every_job() -> None:
    summary, events = run([job("a"), job("b", "a")], Recorder())
    assert isinstance(events[0], RunStarted) and events[0].total == 2
    assert isinstance(events[-1], RunFinished) and events[-1].summary == summary
    kinds = [
        (type(e).__name__, e.id[0])
        for e in events[1:-1]
        if not isinstance(e, (RunStarted, RunFinished))
    ]
    assert kinds == [("Started", "a"), ("Finished", "a"), ("Started", "b"), ("Finished", "b")]
    assert summary.seconds >= 0.02


def test_an_empty_run_succeeds() -> None:
    summary, events = run([], Recorder())
    assert summary.ok and summary.succeeded == ()
    assert [type(e).__name__ for e in events] == ["RunStarted", "RunFinished"]


def test_ctrl_c_cancels_running_jobs_skips_the_rest_and_returns() -> None:
    saw_cancel: list[str] = []
    both_running = threading.Barrier(2, timeout=WAIT)

    def runner(j: Job, cancel: threading.Event) -> Outcome:
        if j.id[0] == "quick":
            return Outcome()
        both_running.wait()
        if j.id[0] == "slow1":
            _thread.interrupt_main()  # what Ctrl-C does to the scheduling thread
        if cancel.wait(WAIT):
            saw_cancel.append(j.id[0])
            raise Cancelled("cancelled")
        return Outcome()

    jobs = [
        job("quick", cost=5),
        job("slow1", "quick"),
        job("slow2", "quick"),
        job("after", "slow1"),
    ]
    summary, events = run(jobs, runner, max_parallel=2, pool_limits={"p": 2})
    assert summary.interrupted and not summary.ok
    assert sorted(saw_cancel) == ["slow1", "slow2"]
    assert names(summary.succeeded) == ["quick"]
    assert summary.failed == ()
    assert sorted(names(summary.skipped)) == ["after", "slow1", "slow2"]
    reasons = {e.id[0]: e.reason for e in events if isinstance(e, Skipped)}
    assert reasons == {"after": "interrupted", "slow1": "interrupted", "slow2": "interrupted"}
    assert isinstance(events[-1], RunFinished) and events[-1].summary == summary


def test_ctrl_c_during_an_event_callback_is_handled_the_same_way() -> None:
    saw_cancel = threading.Event()

    def runner(j: Job, cancel: threading.Event) -> Outcome:
        if cancel.wait(WAIT):
            saw_cancel.set()
            raise Cancelled("cancelled")
        return Outcome()

    def on_event(event: AnyEvent) -> None:
        events.append(event)
        if isinstance(event, Started) and event.id[0] == "a":
            raise KeyboardInterrupt

    events: list[AnyEvent] = []
    summary = run_jobs(
        [job("a"), job("b", "a")], runner, max_parallel=1, pool_limits={}, on_event=on_event
    )
    assert saw_cancel.is_set()
    assert summary.interrupted
    assert sorted(names(summary.skipped)) == ["a", "b"]
    assert isinstance(events[-1], RunFinished)


def test_a_build_that_succeeds_while_cancelling_is_still_recorded() -> None:
    recorded: list[str] = []

    def runner(j: Job, cancel: threading.Event) -> Outcome:
        _thread.interrupt_main()
        assert cancel.wait(WAIT)
        return Outcome(digest="sha256:done")  # finished its push before it noticed

    summary, _ = run(
        [job("a"), job("b", "a")], runner, on_success=lambda j, o: recorded.append(j.id[0])
    )
    assert summary.interrupted
    assert recorded == ["a"]
    assert names(summary.succeeded) == ["a"]
    assert names(summary.skipped) == ["b"]


def test_a_runner_that_ignores_cancel_is_given_up_on_after_the_timeout() -> None:
    release = threading.Event()

    def stubborn(j: Job, cancel: threading.Event) -> Outcome:
        _thread.interrupt_main()
        release.wait(WAIT)
        return Outcome()

    began = time.monotonic()
    summary, events = run([job("a")], stubborn, cancel_timeout=0.1)
    release.set()
    assert time.monotonic() - began < 5
    assert summary.interrupted and names(summary.skipped) == ["a"]
    reasons = [e.reason for e in events if isinstance(e, Skipped)]
    assert reasons == ["interrupted; its runner had not stopped when bt gave up waiting"]


def test_a_bug_in_a_runner_propagates_instead_of_failing_the_build() -> None:
    def buggy(j: Job, cancel: threading.Event) -> Outcome:
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError, match="bug"):
        run_jobs([job("a")], buggy, max_parallel=1, pool_limits={})


def test_an_on_success_error_propagates_after_cancelling_running_jobs() -> None:
    saw_cancel = threading.Event()

    def runner(j: Job, cancel: threading.Event) -> Outcome:
        if j.id[0] == "slow" and cancel.wait(WAIT):
            saw_cancel.set()
            raise Cancelled("cancelled")
        return Outcome()

    def on_success(j: Job, outcome: Outcome) -> None:
        raise OSError("lockfile not writable")

    with pytest.raises(OSError, match="lockfile not writable"):
        run_jobs(
            [job("fast", cost=5), job("slow")],
            runner,
            max_parallel=2,
            pool_limits={"p": 2},
            on_success=on_success,
        )
    assert saw_cancel.is_set()


def test_an_on_event_error_propagates() -> None:
    def on_event(event: AnyEvent) -> None:
        if isinstance(event, Finished):
            raise RuntimeError("reporter broke")

    with pytest.raises(RuntimeError, match="reporter broke"):
        run_jobs([job("a")], Recorder(), max_parallel=1, pool_limits={}, on_event=on_event)


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ([job("a", "ghost")], "job a linux/amd64 depends on unknown job ghost linux/amd64"),
        ([job("a"), job("a")], "job a linux/amd64 is listed twice"),
        ([job("a", "a")], "dependency cycle: a linux/amd64 -> a linux/amd64"),
        (
            [job("x"), job("a", "c", "x"), job("b", "a"), job("c", "b"), job("d", "c")],
            "dependency cycle: a linux/amd64 -> c linux/amd64 -> b linux/amd64 -> a linux/amd64",
        ),
    ],
)
def test_malformed_graphs_are_refused_before_anything_runs(jobs: list[Job], message: str) -> None:
    rec = Recorder()
    with pytest.raises(ValueError) as raised:
        run_jobs(jobs, rec, max_parallel=1, pool_limits={})
    assert str(raised.value) == message
    assert rec.started == []


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="max_parallel must be at least 1, not 0"):
        run_jobs([job("a")], Recorder(), max_parallel=0, pool_limits={})
    with pytest.raises(ValueError, match="pool 'p' limit must be at least 1, not 0"):
        run_jobs([job("a")], Recorder(), max_parallel=1, pool_limits={"p": 0})


def test_a_job_its_lookup_settles_never_starts_and_counts_as_cached() -> None:
    """The remote action cache: a lookup before the runner, under the same retries."""
    recorder = Recorder()
    asked: list[str] = []

    def lookup(j: Job, cancel: threading.Event) -> Outcome | None:
        asked.append(j.id[0])
        if j.id[0] == "flaky" and asked.count("flaky") == 1:
            raise TransientError("registry 127.0.0.1:1 is unavailable: connection refused")
        if j.id[0] in ("hit", "flaky"):
            return Outcome(digest="sha256:r", cached=True, source="registry")
        return None

    jobs = [job("hit"), job("child", "hit"), job("flaky")]
    summary, events = run(jobs, recorder, lookup=lookup, backoff=0.01)

    assert recorder.started == ["child"]
    assert sorted(asked) == ["child", "flaky", "flaky", "hit"]
    assert sorted(names(summary.cached)) == ["flaky", "hit"]
    assert names(summary.succeeded) == ["child"]
    assert [names([e.id]) for e in events if isinstance(e, Started)] == [["child"]]
    cached = [e for e in events if isinstance(e, Cached)]
    assert {(e.id[0], e.digest, e.source) for e in cached} == {
        ("hit", "sha256:r", "registry"),
        ("flaky", "sha256:r", "registry"),
    }
    assert [e.attempt for e in events if isinstance(e, Retrying)] == [2]
    started = next(i for i, e in enumerate(events) if isinstance(e, Started))
    finished = next(i for i, e in enumerate(events) if isinstance(e, Finished))
    assert started < finished


def test_a_job_waiting_outside_the_run_gives_its_slot_to_the_next_job_and_gets_it_back() -> None:
    other_done = threading.Event()
    inside: list[str] = []
    busy = threading.Lock()  # the pool's one slot: held by whoever runs outside a wait

    def runner(j: Job, cancel: threading.Event) -> Outcome:
        if j.id[0] == "waits":
            note("waiting for bt process 1234")
            with waiting(cancel):
                assert other_done.wait(WAIT)  # deadlocks unless "other" may run meanwhile
            assert busy.acquire(blocking=False), "unparked while the other job held the slot"
            busy.release()
            inside.append("waits")
            return Outcome()
        assert busy.acquire(blocking=False), "two jobs ran in a pool of one"
        time.sleep(0.1)
        busy.release()
        other_done.set()
        inside.append(j.id[0])
        return Outcome()

    jobs = [job("waits", cost=5), job("other", cost=2), job("third")]
    summary, events = run(jobs, runner, max_parallel=1, pool_limits={"p": 1})
    assert summary.ok
    assert inside[0] == "other" and sorted(inside) == ["other", "third", "waits"]
    assert [(e.id[0], e.message) for e in events if isinstance(e, Warned)] == [
        ("waits", "waiting for bt process 1234")
    ]


def test_ctrl_c_ends_a_wait_outside_the_run() -> None:
    def runner(j: Job, cancel: threading.Event) -> Outcome:
        with waiting(cancel):
            _thread.interrupt_main()
            if cancel.wait(WAIT):
                raise Cancelled("cancelled")
        return Outcome()

    started = time.monotonic()
    summary, _ = run([job("waits")], runner, max_parallel=1, pool_limits={"p": 1})
    assert summary.interrupted
    assert names(summary.skipped) == ["waits"]
    assert time.monotonic() - started < WAIT
