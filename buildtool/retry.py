"""The one retry layer: which faults are worth another attempt, how long to wait, and when to
give up, bounded in total time per fault source (``[retry] max_seconds`` in ``.cache-spec``).

A transient fault is a ``TransientError`` (``errors.is_transient_message`` says which engine
and registry messages are). Each names its ``source`` (``registry HOST`` or ``engine HOST``):
the clock of a source starts at its first fault and every attempt that fails on it afterwards
shares that clock, so a registry that is down fails every build that needs it once the bound
has passed, instead of each build waiting out a bound of its own. A success clears the clock.

Two callers use it, never nested: the build scheduler (a registry client there makes one
attempt per call), and stand-alone registry calls (``bt merge``, ``bt lock check``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from buildtool.errors import BtError, TransientError

T = TypeVar("T")

DEFAULT_MAX_SECONDS = 45.0  # under a minute: long enough for a registry restart or a 429 pause


@dataclass(frozen=True)
class RetryPolicy:
    max_seconds: float = DEFAULT_MAX_SECONDS  # total, from a source's first fault
    base_delay: float = 1.0  # before the first retry; doubled each time
    max_delay: float = 10.0
    max_retries: int | None = None  # extra attempts at most (``bt build --retries``)


@dataclass
class FaultClock:
    """The shared state of one policy across threads: when each source first failed."""

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Callable[[], float] = time.monotonic
    _first: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_delay(self, err: TransientError, attempt: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1`` after ``err`` ended attempt
        ``attempt``; None when the bound (time or count) leaves no room for it."""
        policy = self.policy
        now = self.clock()
        with self._lock:
            first = self._first.setdefault(err.source or "", now)
        if policy.max_retries is not None and attempt > policy.max_retries:
            return None
        if err.retry_after is not None:
            delay = err.retry_after  # the server said when (429/503 Retry-After)
        else:
            delay = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
        if now + delay - first > policy.max_seconds:
            return None
        return delay

    def recovered(self, source: str | None) -> None:
        with self._lock:
            self._first.pop(source or "", None)

    def gave_up(self, err: TransientError, attempts: int) -> str:
        """The one line a fault the bound stopped retrying ends with."""
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        spent = ""
        with self._lock:
            first = self._first.get(err.source or "")
        if first is not None and self.clock() - first >= 1:
            spent = f" in {self.clock() - first:.0f}s"
        waited = ""
        if err.retry_after is not None and err.retry_after > self.policy.max_seconds:
            waited = f"; it asked to wait {err.retry_after:g}s, more than [retry] max_seconds"
        return f"{err} (gave up after {tries}{spent}{waited})"


def call_with_retries(
    call: Callable[[], T], clock: FaultClock, sleep: Callable[[float], object] = time.sleep
) -> T:
    """``call()`` under the policy: transient faults are retried, the last one re-raised with
    how long bt tried. For calls outside the scheduler (which runs the same loop per build)."""
    attempt = 1
    failed: TransientError | None = None
    while True:
        try:
            result = call()
        except TransientError as err:
            delay = clock.next_delay(err, attempt)
            if delay is None:
                reword(err, clock.gave_up(err, attempt))
                raise
            failed = err
            attempt += 1
            sleep(delay)
            continue
        if failed is not None:
            clock.recovered(failed.source)
        return result


def reword(err: TransientError, message: str) -> None:
    """Give ``err`` the final message it is raised with."""
    err.args = (message,)
    if isinstance(err, BtError):
        err.message = message
