"""How long each platform build took when it last ran: the estimates behind the live view's ETA
and the scheduler's critical-path costs. A cache (JSON in the cache directory), never state:
losing it costs only estimates."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path

from buildtool.state.cachedir import CacheDir, update_file

JobId = tuple[str, str]  # (label, platform), as the scheduler names a platform build


def _key(build: JobId) -> str:
    return f"{build[0]} {build[1]}"


def _parse(data: bytes | None) -> dict[str, float]:
    if not data:
        return {}
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):  # torn by hand or by another version: start over
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: float(v) for k, v in raw.items() if isinstance(v, int | float) and v >= 0}


def load_build_times(cache_dir: Path) -> dict[JobId, float]:
    """Recorded seconds per platform build."""
    try:
        data = CacheDir(cache_dir).build_times.read_bytes()
    except OSError:
        return {}
    times: dict[JobId, float] = {}
    for key, seconds in _parse(data).items():
        label, _, platform = key.rpartition(" ")
        times[(label, platform)] = seconds
    return times


def record_build_times(cache_dir: Path, finished: Mapping[JobId, float]) -> None:
    """Merge this run's build times into the cache (the newest time of a build wins)."""
    if not finished:
        return

    def change(current: bytes | None) -> bytes:
        times = _parse(current)
        times.update({_key(build): round(seconds, 3) for build, seconds in finished.items()})
        return json.dumps(times, sort_keys=True).encode()

    # An estimate lost is not worth failing a build that succeeded.
    with contextlib.suppress(OSError):
        update_file(CacheDir(cache_dir).build_times, change, durable=False)
