"""Killing bt with SIGKILL at a chosen instant, and checking what it left: the trials of
tests/crash_test.py (a few, in CI) and bench/crash_trials.py (as many as asked)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
from chained import all_builds, chained_workspace, json_events, manifest, ran, renew, stamped_key

# The workspace of the trials: one chain of two images (a0 <- a1: a parent built and pushed
# before its child) on two platforms, each with its own builder: 4 platform builds, so that a
# trial (a killed run and the rerun that finishes it) stays short on a busy machine.
CHAINS = ("a",)
DEPTH = 2
LONERS: tuple[str, ...] = ()


# The trials start bt a hundred times: where the environment forbids writing bytecode next to
# the sources, it is cached outside them, instead of compiled again by every process.
_BYTECODE = (
    {
        "PYTHONDONTWRITEBYTECODE": "",
        "PYTHONPYCACHEPREFIX": os.path.join(tempfile.gettempdir(), "bt-test-pycache"),
    }
    if os.environ.get("PYTHONDONTWRITEBYTECODE")
    else {}
)


@dataclass
class Findings:
    """What one killed run left behind. Every list is empty after a clean trial."""

    torn: list[str] = field(default_factory=list)  # files that do not parse
    bad_records: list[str] = field(default_factory=list)  # image missing, or another key
    bad_indexes: list[str] = field(default_factory=list)  # index not listing the builds
    leftovers: list[str] = field(default_factory=list)  # temporary files left behind
    rerun: list[str] = field(default_factory=list)  # the rerun failed or did more or less
    blocked: list[str] = field(default_factory=list)  # the rerun waited for the dead run
    killed_left: int = 0  # temporary files the kill left (the next writer removes them)

    def problems(self) -> list[str]:
        found = [*self.torn, *self.bad_records, *self.bad_indexes, *self.rerun, *self.blocked]
        return found + [f"left behind: {path}" for path in self.leftovers]

    def after_kill(self) -> None:
        """Temporary files found right after the kill are expected (a SIGKILL between write
        and rename leaves one); count them, and check from now on that they are gone."""
        self.killed_left += len(self.leftovers)
        self.leftovers = []


def bt_process(args: list[str], root: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "buildtool", *args],
        cwd=root,
        env={**os.environ, **_BYTECODE, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def run_bt(args: list[str], root: Path, env: dict[str, str]) -> tuple[int, str, str]:
    process = bt_process(args, root, env)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def kill_after(args: list[str], root: Path, env: dict[str, str], delay: float) -> int:
    """Start ``bt ARGS`` and SIGKILL it ``delay`` seconds later (if it still runs); its exit code."""
    process = bt_process(args, root, env)
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    return process.returncode


def read_builds(root: Path) -> dict[tuple[str, str], dict[str, str]]:
    path = root / "images.lock"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {
        (label, platform): record
        for label, platforms in data["builds"].items()
        for platform, record in platforms.items()
    }


def check_state(root: Path, cache: Path, registry: str, findings: Findings) -> None:
    """images.lock parses; every build it records is in the registry by that digest and was
    built from that key; every index lists exactly the image's builds; every file of the cache
    directory parses; no temporary file is left."""
    try:
        data = json.loads((root / "images.lock").read_text())
    except FileNotFoundError:
        data = {"builds": {}, "images": {}}
    except ValueError as err:
        findings.torn.append(f"images.lock: {err}")
        return
    builds = data["builds"]
    for label, platforms in builds.items():
        for platform, record in platforms.items():
            key = stamped_key(registry, record["image"])
            if key != record["key"]:
                findings.bad_records.append(
                    f"{label} {platform}: {record['image']} carries key {key}, not {record['key']}"
                )
    for label, index in data.get("images", {}).items():
        repository = index["tags"][0].rsplit(":", 1)[0]
        found = manifest(registry, f"{repository}@{index['digest']}")
        listed = sorted(str(m["digest"]) for m in (found or {}).get("manifests", []))  # type: ignore[attr-defined]
        expected = sorted(r["digest"] for r in builds.get(label, {}).values())
        if listed != expected:
            findings.bad_indexes.append(f"{label}: index lists {listed}, builds are {expected}")
    for path in sorted(cache.rglob("*.msgpack")):
        try:
            msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
        except Exception as err:  # any decoding error is a torn file
            findings.torn.append(f"{path.relative_to(cache)}: {err}")
    for where in (root, cache):
        findings.leftovers += [str(p) for p in where.rglob(".*.tmp")]


@dataclass(frozen=True)
class BuildTrial:
    delay: float
    recorded: int  # builds the killed run recorded
    findings: Findings


def build_trial(
    root: Path,
    cache: Path,
    env: dict[str, str],
    registry: str,
    builds: set[tuple[str, str]],
    delay: float,
) -> BuildTrial:
    """One SIGKILL trial of `bt build //... --push` with new keys for every build (of
    ``builds``, the workspace's), the checks, and a rerun that must build exactly what the
    killed run had not recorded and remove the temporary files the kill left."""
    renew(root)
    before = read_builds(root)
    kill_after(["build", "//...", "--push", "--json"], root, env, delay)
    findings = Findings()
    check_state(root, cache, registry, findings)
    if findings.torn:
        return BuildTrial(delay, 0, findings)
    findings.after_kill()
    after = read_builds(root)
    recorded = {b for b, r in after.items() if b not in before or before[b]["key"] != r["key"]}
    code, out, err = run_bt(["build", "//...", "--push", "--json"], root, env)
    if code != 0:
        findings.rerun.append(f"rerun exited {code}: {err.strip()[-500:]}")
    remainder = sorted(builds - recorded)
    if ran(out) != remainder:
        findings.rerun.append(f"rerun ran {ran(out)}, but {remainder} were left")
    findings.blocked += [
        str(e["message"])
        for e in json_events(out)
        if e["event"] == "warning" and "waiting for" in str(e["message"])
    ]
    final = read_builds(root)
    findings.rerun += [f"{b} changed after the rerun" for b in recorded if final[b] != after[b]]
    check_state(root, cache, registry, findings)
    return BuildTrial(delay, len(recorded), findings)


def timed(args: list[str], root: Path, env: dict[str, str]) -> tuple[float, str]:
    """Run ``bt ARGS`` to its end; (seconds, stdout). It must succeed."""
    started = time.monotonic()
    code, out, err = run_bt(args, root, env)
    assert code == 0, err
    return time.monotonic() - started, out


@dataclass(frozen=True)
class Lane:
    """One workspace of the trials (``CHAINS``, ``DEPTH``, ``LONERS``), with its own cache
    directory and registry repository, warm: built and pushed once."""

    root: Path
    cache: Path
    env: dict[str, str]
    seconds: float  # how long its first whole `bt build //... --push` took


def builds() -> set[tuple[str, str]]:
    return all_builds(CHAINS, DEPTH, LONERS)


def warm_lanes(base: Path, count: int, engine: str, engine2: str, registry: str) -> list[Lane]:
    """``count`` workspaces under ``base``, built and pushed side by side; linux/amd64 builds
    on ``engine``, linux/arm64 on ``engine2`` (FROM scratch: either engine builds either)."""

    def warm(n: int) -> Lane:
        root = chained_workspace(base / f"ws{n}", engine, engine2, registry, CHAINS, DEPTH, LONERS)
        env = {"XDG_CACHE_HOME": str(base / f"xdg{n}")}
        seconds, _ = timed(["build", "//...", "--push"], root, env)
        return Lane(root, base / f"xdg{n}", env, seconds)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(warm, range(count)))


def kill_instants(lanes: list[Lane], trials: int, seed: int) -> list[float]:
    """Seeded instants, uniform over a whole run (the lanes' mean, from 0.2 s: before that
    bt has not read a file)."""
    seconds = sum(lane.seconds for lane in lanes) / len(lanes)
    rng = random.Random(seed)
    return [rng.uniform(0.2, seconds) for _ in range(trials)]


def trials_in_lanes(lanes: list[Lane], registry: str, delays: list[float]) -> list[BuildTrial]:
    """One build trial per delay, the lanes running theirs side by side (trial ``i`` in lane
    ``i % len(lanes)``, each lane's in order); the results in the order of ``delays``."""

    def run_lane(n: int) -> list[tuple[int, BuildTrial]]:
        lane = lanes[n]
        return [
            (i, build_trial(lane.root, lane.cache, lane.env, registry, builds(), delay))
            for i, delay in enumerate(delays)
            if i % len(lanes) == n
        ]

    with ThreadPoolExecutor(len(lanes)) as pool:
        done = [result for results in pool.map(run_lane, range(len(lanes))) for result in results]
    return [trial for _, trial in sorted(done, key=lambda item: item[0])]
