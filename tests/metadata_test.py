"""`bt build --metadata-file` (bake's metadata shape), the progress modes and BT_* variables on
a real engine and registry, and outputs that cannot be written refused before any build."""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from btrun import bt, write_tree

from buildtool.build.metadata import bake_metadata
from buildtool.state.lockfile import BuildRecord, IndexRecord, Lockfile
from buildtool.workspace.labels import Label
from buildtool.workspace.target import ImageTarget, Location

AMD, ARM = "linux/amd64", "linux/arm64"
FILES = {
    "BUILD.images": 'image(name = "parent", dockerfile = "parent.Dockerfile")\n'
    'image(name = "child", dockerfile = "child.Dockerfile", parents = {"PARENT": ":parent"},\n'
    '      platforms = ["linux/amd64"], tags = ["v1", "latest"])\n',
    "parent.Dockerfile": "FROM scratch\nCOPY parent.txt nonce.txt /\n",
    "child.Dockerfile": "ARG PARENT\nFROM ${PARENT}\nCOPY child.txt /\n",
    "parent.txt": "parent\n",
    "child.txt": "child\n",
}
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def workspace(root: Path, engine: str, registry: str) -> Path:
    spec = (
        'platforms = ["linux/amd64", "linux/arm64"]\n'
        f'[registry]\nurl = "{registry}/bt-meta-{uuid.uuid4().hex[:12]}"\npush = false\n'
        f'[builders."*"]\nhost = "{engine}"\nnetwork = "none"\n'
    )
    # A nonce: keys no engine built before, so the builds run and are timed.
    return write_tree(root, {**FILES, ".cache-spec": spec, "nonce.txt": uuid.uuid4().hex})


def build_order(lines: list[str]) -> list[str]:
    return [" ".join(line.split(" ")[2:4]) for line in lines]


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.mark.engine
@pytest.mark.registry
def test_a_pushed_build_writes_bakes_metadata_with_the_index_digest_and_bts_keys(
    tmp_path: Path, engine: str, registry: str
) -> None:
    root = workspace(tmp_path / "ws", engine, registry)
    result = bt(
        "build", "//...", "--push", "--progress=rawjson", "--metadata-file", "out/meta.json",
        cwd=root, env={"BT_JOBS": "1"},
    )  # fmt: skip
    assert result.returncode == 2  # out/ does not exist: refused before anything ran
    assert result.stderr == ("--metadata-file out/meta.json: directory out does not exist\n")
    assert not (root / "images.lock").exists()
    (root / "out").mkdir()
    result = bt(
        "build", "//...", "--push", "--progress=rawjson", "--metadata-file", "out/meta.json",
        cwd=root, env={"BT_JOBS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lock = json.loads((root / "images.lock").read_text())
    meta = json.loads((root / "out/meta.json").read_text())
    assert sorted(meta) == ["//:child", "//:parent"]
    # Multi-platform: the index digest and its tags, as bake writes for a multi-platform push.
    parent = meta["//:parent"]
    assert parent["containerimage.digest"] == lock["images"]["//:parent"]["digest"]
    assert parent["image.name"] == ",".join(lock["images"]["//:parent"]["tags"])
    assert "dev.bt.key" not in parent
    assert parent["dev.bt.keys"] == {p: lock["builds"]["//:parent"][p]["key"] for p in (AMD, ARM)}
    assert parent["dev.bt.platforms"][ARM] == {
        "containerimage.digest": lock["builds"]["//:parent"][ARM]["digest"],
        "image.name": lock["builds"]["//:parent"][ARM]["image"],
        "dev.bt.key": lock["builds"]["//:parent"][ARM]["key"],
    }
    # One platform: that build's digest and image, and its key.
    child = meta["//:child"]
    record = lock["builds"]["//:child"][AMD]
    assert child["containerimage.digest"] == record["digest"]
    assert DIGEST.fullmatch(child["containerimage.digest"])
    assert child["image.name"] == record["image"]
    assert child["dev.bt.key"] == record["key"]
    # BT_JOBS=1: one build at a time, so no build starts before the previous one ended.
    running = 0
    for event in events(result.stdout):
        running += {"started": 1, "finished": -1}.get(event["event"], 0)
        assert running <= 1
    assert [e["event"] for e in events(result.stdout)].count("finished") == 3


@pytest.mark.engine
def test_plain_progress_prints_one_line_per_build_and_the_estimate_from_the_last_run(
    tmp_path: Path, engine: str, registry: str
) -> None:
    root = workspace(tmp_path / "ws", engine, registry)
    first = bt("build", "//...", "--progress=plain", "--jobs", "2", cwd=root)
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""
    lines = first.stderr.splitlines()
    assert lines[0] == "3 platform builds to run"
    # One line when each build starts and one when it ends, counted as builds finish.
    started = [line for line in lines if " started " in line]
    assert sorted(line.split(" ", 2)[2] for line in started) == [
        f"//:child {AMD}",
        f"//:parent {AMD}",
        f"//:parent {ARM}",
    ]
    built = [line for line in lines[1:-1] if line not in started]
    assert [re.sub(r" sha256:[0-9a-f]{12} \([0-9.]+s\)$", "", line) for line in built] == [
        f"[{n}/3] built {build}" for n, build in zip((1, 2, 3), build_order(built), strict=True)
    ]
    assert re.fullmatch(r"built 3, cached 0, failed 0, skipped 0 in [0-9.]+s", lines[-1])
    # The next run of the same builds knows how long they took.
    (root / "nonce.txt").write_text(uuid.uuid4().hex)
    quiet = bt("build", "//...", "--progress=quiet", cwd=root)
    assert quiet.returncode == 0, quiet.stderr
    assert re.fullmatch(r"built 3, cached 0, failed 0, skipped 0 in [0-9.]+s\n", quiet.stderr)
    (root / "nonce.txt").write_text(uuid.uuid4().hex)
    again = bt("build", "//...", "--json", cwd=root)
    run_started = events(again.stdout)[0]
    assert run_started["event"] == "run_started"
    assert sorted(run_started["estimated"]) == [
        f"//:child {AMD}",
        f"//:parent {AMD}",
        f"//:parent {ARM}",
    ]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--lock-out", "missing/arm64.lock", "directory missing does not exist"),
        ("--lock-out", "adir", "is a directory, not a file"),
        ("--metadata-file", "adir", "is a directory, not a file"),
        ("--metadata-file", "/proc/bt-meta.json", "cannot write in /proc:"),
        ("--lock-out", "/proc/bt.lock", "cannot write in /proc:"),
    ],
)
def test_an_unwritable_output_is_refused_before_any_build_starts(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    # No engine answers at this host: a build that started would fail differently (exit 1).
    spec = 'platforms = ["linux/amd64"]\n[builders."*"]\nhost = "unix:///nonexistent.sock"\n'
    root = write_tree(tmp_path / "ws", {**FILES, ".cache-spec": spec, "nonce.txt": "x"})
    (root / "adir").mkdir()
    before = sorted(os.listdir(root))
    result = bt("build", "//...", option, value, cwd=root)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"{option} {value}: {message}")
    assert len(result.stderr.splitlines()) == 1
    assert sorted(os.listdir(root)) == before


def target(name: str, platforms: tuple[str, ...]) -> ImageTarget:
    return ImageTarget(
        label=Label("", name), context=".", dockerfile="Dockerfile", stage=None, args=(),
        parents=(), platforms=platforms, tags=(name,), repository=name, inputs=None, tests=(),
        location=Location("BUILD.images", 1),
    )  # fmt: skip


def test_an_index_is_named_only_when_the_run_put_it() -> None:
    lock = Lockfile()
    key = "k" * 64
    for platform in (AMD, ARM):
        lock.put("//:app", platform, BuildRecord(key, f"sha256:{platform[-1] * 64}", "r@d"))
    lock.images["//:app"] = IndexRecord("sha256:" + "f" * 64, ("reg/app:v1", "reg/app:v2"))
    targets = {Label("", "app"): target("app", (AMD, ARM))}
    fresh = bake_metadata(lock, targets, targets, indexes_current=True)["//:app"]
    assert (fresh["containerimage.digest"], fresh["image.name"]) == (
        "sha256:" + "f" * 64,
        "reg/app:v1,reg/app:v2",
    )
    stale = bake_metadata(lock, targets, targets)["//:app"]
    assert "containerimage.digest" not in stale
    assert sorted(stale["dev.bt.platforms"]) == [AMD, ARM]
    only_arm = bake_metadata(lock, targets, targets, [ARM])["//:app"]
    assert sorted(only_arm["dev.bt.platforms"]) == [ARM]
    assert bake_metadata(Lockfile(), targets, targets) == {}
