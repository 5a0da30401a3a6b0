"""bt processes sharing one workspace: each platform build runs once (``record.Claims``), the
readers never wait for a build, and SIGTERM ends a run the way Ctrl-C does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from btrun import bt
from chained import all_builds, built, chained_workspace, json_events, renew
from crashing import Findings, bt_process, check_state

from buildtool.state.cachedir import CacheDir
from buildtool.state.statefile import HolderLock, exclusive_lock

pytestmark = pytest.mark.engine


@pytest.fixture()
def world(
    tmp_path: Path, engine: str, engine2: str, registry: str
) -> tuple[Path, Path, dict[str, str]]:
    root = chained_workspace(tmp_path / "ws", engine, engine2, registry)
    cache = tmp_path / "xdg"
    return root, cache, {"XDG_CACHE_HOME": str(cache)}


def test_two_concurrent_pushing_builds_run_every_platform_build_exactly_once(
    world: tuple[Path, Path, dict[str, str]], registry: str
) -> None:
    root, cache, env = world
    runs = [bt_process(["build", "//...", "--push", "--json"], root, env) for _ in range(2)]
    # Meanwhile the readers answer from whatever images.lock holds, never torn, never waiting.
    reads = 0
    while any(run.poll() is None for run in runs):
        for args in (["plan", "//...", "--format", "json"], ["query", "//..."]):
            started = time.monotonic()
            result = bt(*args, cwd=root, env=env)
            assert result.returncode == 0, result.stderr
            assert time.monotonic() - started < 10
            reads += 1
    outputs = [run.communicate() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    ran = Counter(build for out, _ in outputs for build in built(out))
    assert sorted(ran) == sorted(all_builds()) and set(ran.values()) == {1}, ran
    # Each process got every build: built itself, or waited for the other and used its record.
    for out, _ in outputs:
        settled = [e for e in json_events(out) if e["event"] in ("finished", "cached")]
        assert len(settled) == len(all_builds())
    lock = json.loads((root / "images.lock").read_text())
    assert {(label, p) for label, ps in lock["builds"].items() for p in ps} == all_builds()
    findings = Findings()
    check_state(root, cache, registry, findings)
    assert findings.problems() == [] and findings.leftovers == []
    assert sorted(lock["images"]) == sorted({label for label, _ in all_builds()})
    assert reads > 0
    print(f"2 concurrent runs: {sum(ran.values())} builds for {len(all_builds())} needed")


def test_a_build_another_process_holds_is_waited_for_named_and_readers_do_not_wait(
    world: tuple[Path, Path, dict[str, str]],
) -> None:
    root, _, env = world
    renew(root)
    plan = json.loads(bt("plan", "//:x", "--format", "json", cwd=root, env=env).stdout)
    cache_dir = CacheDir(_cache_of(root, env))
    held = [HolderLock(cache_dir.build_lock(p["label"], p["platform"], p["key"])) for p in plan]
    assert all(lock.try_acquire() for lock in held)
    try:
        with exclusive_lock(cache_dir.workspace_lock):
            for args in (("plan", "//..."), ("query", "//..."), ("why", "//:x")):
                result = subprocess.run(
                    [sys.executable, "-m", "buildtool", *args],
                    cwd=root, env={**os.environ, **env}, capture_output=True, text=True, timeout=20,
                )  # fmt: skip
                assert result.returncode == 0, (args, result.stderr)
        build = bt_process(["build", "//:x", "--json"], root, env)
        assert build.stdout is not None
        lines: list[str] = []
        while len([line for line in lines if '"warning"' in line]) < len(plan):
            lines.append(build.stdout.readline())  # blocks until the build says it waits
            assert lines[-1], "bt build ended without waiting"
        time.sleep(1)
        assert build.poll() is None  # still waiting for this process
    finally:
        for lock in held:
            lock.release()
    rest, err = build.communicate(timeout=120)
    out = "".join(lines) + rest
    assert build.returncode == 0, err
    waits = [e for e in json_events(out) if e["event"] == "warning"]
    assert {str(e["message"]).split(",")[0] for e in waits} == {
        f"waiting for bt process {os.getpid()}"
    }
    assert sorted((e["label"], e["platform"]) for e in waits) == sorted(
        (p["label"], p["platform"]) for p in plan
    )
    # Nothing was recorded by the holder, so the waiter built them itself.
    assert sorted(built(out)) == sorted((p["label"], p["platform"]) for p in plan)


def _cache_of(root: Path, env: dict[str, str]) -> Path:
    """The workspace's cache directory as bt sees it with ``env``."""
    code = "from pathlib import Path; from buildtool.workspace.config import *; "
    code += "print(load_config(find_root(Path.cwd())).cache_dir)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env={**os.environ, **env},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return Path(result.stdout.strip())


def test_a_lock_held_by_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "builds" / "k.lock"
    code = (
        "import sys, time; from pathlib import Path; from buildtool.state.statefile import HolderLock;"
        f"assert HolderLock(Path({str(path)!r})).try_acquire(); print('held', flush=True);"
        "time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    lock = HolderLock(path)
    assert not lock.try_acquire()
    assert lock.holder() == holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    cancel = threading.Event()
    threading.Timer(10, cancel.set).start()
    lock.acquire(cancel)  # the kernel released the dead holder's flock
    assert not cancel.is_set() and lock.holder() == os.getpid()
    cancel.set()
    lock.release()
    assert not path.exists()


def test_sigterm_cancels_like_ctrl_c_records_what_finished_with_its_indexes_and_exits_143(
    world: tuple[Path, Path, dict[str, str]], registry: str
) -> None:
    root, cache, env = world
    process = bt_process(["build", "//...", "--push", "--json"], root, env)
    lockfile = root / "images.lock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if lockfile.exists() and len(json.loads(lockfile.read_text())["builds"]) >= 3:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "interrupted" in err
    summary = [e for e in json_events(out) if e["event"] == "run_finished"]
    assert len(summary) == 1 and summary[0]["interrupted"] is True
    lock = json.loads(lockfile.read_text())
    recorded = {(label, p) for label, ps in lock["builds"].items() for p in ps}
    assert 3 <= len(recorded) < len(all_builds())
    # Every image whose builds all finished got its index, and each index lists its builds.
    complete = {label for label, _ in recorded if (label, "linux/amd64") in recorded}
    complete = {label for label in complete if (label, "linux/arm64") in recorded}
    assert sorted(lock["images"]) == sorted(complete)
    findings = Findings()
    check_state(root, cache, registry, findings)
    assert findings.problems() == []


def test_an_interrupt_after_a_record_was_written_still_puts_that_images_index(
    world: tuple[Path, Path, dict[str, str]], registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM can land after a build's record is written and before the run counts the build
    as done: the run then reports it skipped. Which indexes follow is read back from
    images.lock, not from that report. The instant cannot be hit on purpose, so the run here
    is a stand-in that reports exactly that; the builds, pushes and the merge are real."""
    from buildtool.build.events import Summary
    from buildtool.build.run import BuildOptions
    from buildtool.cli.pipeline import merge_after
    from buildtool.plan.session import Session, Workbench

    root, cache, env = world
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    done = bt("build", "//...", "--push", cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    lockfile = root / "images.lock"
    recorded = json.loads(lockfile.read_text())
    before = {**recorded, "builds": {**recorded["builds"]}, "images": {}}
    del before["builds"]["//:a1"]
    lockfile.write_text(json.dumps(before))  # what the run started from: //:a1 not built yet
    bench = Workbench(Session(root))
    planned = bench.plan(["//..."])
    assert sorted(str(p.label) for p in planned if p.stale) == ["//:a1", "//:a1"]

    class InterruptedAfterRecording:
        def run(self, builds: object) -> Summary:
            # The run wrote //:a1's records, then the interrupt came before it counted them.
            lockfile.write_text(json.dumps({**recorded, "images": {}}))
            a1 = (("//:a1", "linux/amd64"), ("//:a1", "linux/arm64"))
            return Summary((), (), (), a1, interrupted=True, seconds=0.0)

    run: Any = InterruptedAfterRecording()
    options = BuildOptions(push=True)
    summary = run.run(planned)
    assert summary.interrupted
    assert not merge_after(bench, planned, options, summary, lambda event: None)
    images = json.loads(lockfile.read_text())["images"]
    assert sorted(images) == sorted({label for label, _ in all_builds()})
