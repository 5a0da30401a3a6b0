"""``--trace FILE``: the run as Chrome trace-event JSON, which Perfetto (ui.perfetto.dev) and
``chrome://tracing`` open as a timeline.

One track per builder slot (a platform's builds at once: "linux/amd64 slot 2"), a span per
build that ran (category "build": label, platform, key, the `bt plan` reason, its layer cache
source, result, digest), the plan and merge phases and `bt watch` rounds on the "run" track,
and instant events for retries, warnings (waits for another bt process among them), cache hits
and pins. Times are microseconds from the run's first event, as the format has them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from buildtool.build.events import (
    Cached,
    Failed,
    Finished,
    JobId,
    Phase,
    Pinned,
    Planned,
    PlannedBuildInfo,
    ReportEvent,
    Retrying,
    Round,
    Skipped,
    Started,
    StoryEvent,
    Warned,
)
from buildtool.errors import BtError

_PID = 1
_RUN_TRACK = 0  # phases, rounds, and what happened to builds holding no slot


class TraceWriter:
    """Collects a run's events and writes the trace when closed. (Not after each `bt watch`
    round: a trace written inside the workspace would be a change the watcher sees.)"""

    def __init__(self, path: Path, command: str):
        self.path = path
        self.command = command
        self.records: list[dict[str, Any]] = []  # "ts"/"dur" in monotonic seconds until written
        self.plan: dict[JobId, PlannedBuildInfo] = {}
        self.tracks: dict[tuple[str, int], int] = {}  # (platform, slot) -> tid
        self.busy: dict[str, set[int]] = {}  # platform -> slots taken
        self.running: dict[JobId, tuple[float, int]] = {}  # build -> (began, slot)

    def __call__(self, event: ReportEvent | StoryEvent) -> None:
        if isinstance(event, Planned):
            self.plan.update((build.id, build) for build in event.builds)
        elif isinstance(event, Phase):
            self._span(event.name, "phase", event.began, event.ended, _RUN_TRACK, {})
        elif isinstance(event, Started):
            self._start(event.id, event.time)
        elif isinstance(event, (Finished, Failed, Cached, Skipped)):
            self._end(event)
        elif isinstance(event, Retrying):
            args = {"attempt": event.attempt, "delay": event.delay, "message": event.message}
            self._instant("retry", event.id, event.time, args)
        elif isinstance(event, Warned):
            self._instant("warning", event.id, event.time, {"message": event.message})
        elif isinstance(event, Pinned):
            args = {"reference": event.reference, "platform": event.platform}
            self._instant("pinned", None, time.monotonic(), args | {"digest": event.digest})
        elif isinstance(event, Round):
            now = time.monotonic()
            args = {"changed": list(event.changed), "failed": event.failed}
            self._span("round", "phase", now - event.seconds, now, _RUN_TRACK, args)

    def _start(self, build: JobId, at: float) -> None:
        taken = self.busy.setdefault(build[1], set())
        slot = next(n for n in range(1, len(taken) + 2) if n not in taken)
        taken.add(slot)
        self._track(build[1], slot)
        self.running[build] = (at, slot)

    def _end(self, event: Finished | Failed | Cached | Skipped) -> None:
        build = event.id
        if build not in self.running:  # settled without a slot: a cache hit, or skipped
            name = "cached" if isinstance(event, Cached) else "skipped"
            self._instant(name, build, event.time, _result(event))
            return
        began, slot = self.running.pop(build)
        self.busy[build[1]].discard(slot)
        category = {Finished: "build", Failed: "build", Cached: "cached"}.get(type(event), "stop")
        info = self.plan.get(build)
        args: dict[str, Any] = {"label": build[0], "platform": build[1]}
        if info is not None:
            args |= {"key": info.key, "reason": info.reason, "cache_from": info.cache_from}
        track = self._track(build[1], slot)
        self._span(build[0], category, began, event.time, track, args | _result(event))

    def _track(self, platform: str, slot: int) -> int:
        if (platform, slot) not in self.tracks:
            self.tracks[(platform, slot)] = len(self.tracks) + 1
        return self.tracks[(platform, slot)]

    def _span(
        self, name: str, category: str, began: float, ended: float, tid: int, args: dict[str, Any]
    ) -> None:
        record = {"name": name, "cat": category, "ph": "X", "ts": began, "dur": ended - began}
        self.records.append(record | {"pid": _PID, "tid": tid, "args": args})

    def _instant(self, name: str, build: JobId | None, at: float, args: dict[str, Any]) -> None:
        tid = _RUN_TRACK
        if build is not None:
            args = {"label": build[0], "platform": build[1]} | args
            if build in self.running:
                tid = self._track(build[1], self.running[build][1])
        record = {"name": name, "cat": "event", "ph": "i", "s": "t", "ts": at}
        self.records.append(record | {"pid": _PID, "tid": tid, "args": args})

    def trace(self) -> dict[str, Any]:
        """The trace as the format has it: microseconds from the first event."""
        start = min((r["ts"] for r in self.records), default=0.0)
        events: list[dict[str, Any]] = [
            _meta("process_name", _RUN_TRACK, self.command),
            _meta("thread_name", _RUN_TRACK, "run"),
        ]
        for rank, ((platform, slot), tid) in enumerate(sorted(self.tracks.items()), 1):
            events.append(_meta("thread_name", tid, f"{platform} slot {slot}"))
            events.append(_meta("thread_sort_index", tid, rank, key="sort_index"))
        for record in sorted(self.records, key=lambda r: r["ts"]):
            timed = record | {"ts": round((record["ts"] - start) * 1e6)}
            if "dur" in record:
                timed["dur"] = max(1, round(record["dur"] * 1e6))
            events.append(timed)
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def write(self) -> None:
        from buildtool.state.statefile import write_atomic

        text = json.dumps(self.trace(), indent=None, separators=(",", ":")) + "\n"
        try:
            write_atomic(self.path, text.encode(), durable=False)
        except OSError as err:
            raise BtError(f"cannot write --trace: {err.strerror}", self.path) from None

    def close(self) -> None:
        self.write()


def _meta(name: str, tid: int, value: str | int, key: str = "name") -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": _PID, "tid": tid, "args": {key: value}}


def _result(event: Finished | Failed | Cached | Skipped) -> dict[str, Any]:
    if isinstance(event, Finished):
        return {"result": "built", "digest": event.digest or ""}
    if isinstance(event, Failed):
        return {"result": "failed", "message": event.message}
    if isinstance(event, Cached):
        return {"result": f"cached ({event.source})", "digest": event.digest or ""}
    return {"result": "skipped", "message": event.reason}
