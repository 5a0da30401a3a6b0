"""The trace's tracks and instants, from events fed by hand (the real run: story_test.py)."""

from __future__ import annotations

import json
from pathlib import Path

from buildtool.build.events import Cached, Finished, Phase, Retrying, Round, Started
from buildtool.cli.trace import TraceWriter

AMD, ARM = "linux/amd64", "linux/arm64"


def test_builds_take_the_lowest_free_slot_of_their_platform_and_retries_mark_their_track(
    tmp_path: Path,
) -> None:
    writer = TraceWriter(tmp_path / "trace.json", "bt build //...")
    writer(Phase("plan", 10.0, 11.0))
    writer(Started(("//:a", AMD), 11.0))
    writer(Started(("//:b", AMD), 11.5))
    writer(Started(("//:c", ARM), 11.5))
    writer(Retrying(("//:b", AMD), 12.0, 2, 1.0, "connection reset"))
    writer(Finished(("//:a", AMD), 13.0, "sha256:" + "a" * 64, 2.0))
    writer(Started(("//:d", AMD), 13.5))
    writer(Finished(("//:b", AMD), 14.0, "sha256:" + "b" * 64, 2.5))
    writer(Finished(("//:c", ARM), 14.0, "sha256:" + "c" * 64, 2.5))
    writer(Finished(("//:d", AMD), 15.0, "sha256:" + "d" * 64, 1.5))
    writer(Cached(("//:e", ARM), 15.5, "sha256:" + "e" * 64, "registry"))
    writer.close()

    events = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    tracks = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert tracks == {0: "run", 1: f"{AMD} slot 1", 2: f"{AMD} slot 2", 3: f"{ARM} slot 1"}
    spans = {e["name"]: (tracks[e["tid"]], e["ts"], e["dur"]) for e in events if e["ph"] == "X"}
    assert spans == {
        "plan": ("run", 0, 1_000_000),
        "//:a": (f"{AMD} slot 1", 1_000_000, 2_000_000),
        "//:b": (f"{AMD} slot 2", 1_500_000, 2_500_000),
        "//:c": (f"{ARM} slot 1", 1_500_000, 2_500_000),
        "//:d": (f"{AMD} slot 1", 3_500_000, 1_500_000),
    }
    instants = [(e["name"], tracks[e["tid"]], e["ts"]) for e in events if e["ph"] == "i"]
    assert instants == [("retry", f"{AMD} slot 2", 2_000_000), ("cached", "run", 5_500_000)]


def test_watch_rounds_are_spans_of_the_run_track_written_when_the_session_ends(
    tmp_path: Path,
) -> None:
    writer = TraceWriter(tmp_path / "trace.json", "bt watch //...")
    writer(Started(("//:a", AMD), 1.0))
    writer(Finished(("//:a", AMD), 2.0, "sha256:" + "a" * 64, 1.0))
    writer(Round(("a.txt",), (("//:a", AMD),), 0, 1.5))
    # Not before: a trace written inside the workspace would be a change the watcher sees.
    assert not (tmp_path / "trace.json").exists()
    writer.close()

    events = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    assert [(e["name"], e["cat"]) for e in events if e["ph"] == "X"] == [
        ("//:a", "build"),
        ("round", "phase"),
    ]
