"""Layer reuse from the last record: a stale build offers its engine the image images.lock
recorded for the same target and platform, here across two real engines and the registry."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from btrun import bt, write_tree
from registries import delete_manifest, push_base

pytestmark = pytest.mark.engine
AMD = "linux/amd64"
SLEEP = 8  # the unchanged RUN: long enough that running it again cannot pass for a reuse


def workspace(
    root: Path, url: str, engine: str, token: str, layers: bool = True, backend: str = "buildkit"
) -> Path:
    """An image whose unchanged RUN takes SLEEP seconds and whose last COPY is what changes,
    built for linux/amd64 on ``engine``, FROM a base pushed to ``url``/busybox that no engine
    holds (CI runners pull their base); ``token`` makes a RUN no engine has cached yet."""
    spec = (
        'platforms = ["linux/amd64"]\n'
        f'[registry]\nurl = "{url}"\npush = true\n'
        f'[builders."linux/amd64"]\nhost = "{engine}"\nnetwork = "none"\nbackend = "{backend}"\n'
        f"[cache]\nlayers = {'true' if layers else 'false'}\n"
    )
    return write_tree(
        root,
        {
            ".cache-spec": spec,
            "BUILD.images": 'image(name = "slow")\n',
            "Dockerfile": (
                f"FROM {url}/busybox:base\n"
                f"RUN sleep {SLEEP} && echo {token} > /token\n"
                "COPY app.txt /app.txt\n"
            ),
            "app.txt": "version 1\n",
        },
    )


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def build_events(stdout: str) -> list[str]:
    """The scheduler's events of a run, without the pins before and the merge after."""
    return [e["event"] for e in events(stdout) if e["event"] not in ("pinned", "merged")]


def records(root: Path) -> dict[str, dict[str, str]]:
    return {
        label: platforms[AMD]
        for label, platforms in json.loads((root / "images.lock").read_text())["builds"].items()
    }


def build_log(tmp_path: Path, key: str) -> Path:
    (log,) = (tmp_path / "xdg-cache").rglob(f"{AMD.replace('/', '-')}-{key[:16]}.log")
    return log


def pushed_from_engine_1(
    tmp_path: Path, engine: str, then_on: str, registry: str, backend: str = "buildkit"
) -> Path:
    """The record of version 1 pushed from engine 1; then the workspace moves to ``then_on``
    (engine 2: a fresh runner) and app.txt changes: one stale build."""
    url = f"{registry}/bt-layers-{uuid.uuid4().hex[:12]}"
    token = uuid.uuid4().hex
    push_base(engine, f"{url}/busybox:base")
    root = workspace(tmp_path / "ws", url, engine, token, backend=backend)
    first = bt("build", "//...", "--json", cwd=root)
    assert first.returncode == 0, first.stderr
    assert build_events(first.stdout) == ["run_started", "started", "finished", "run_finished"]
    workspace(root, url, then_on, token, backend=backend)
    (root / "app.txt").write_text("version 2\n")
    return root


def test_a_stale_build_on_another_engine_reuses_the_unchanged_run_of_the_last_record(
    tmp_path: Path, engine: str, engine2: str, registry: str
) -> None:
    root = pushed_from_engine_1(tmp_path, engine, engine2, registry)
    before = records(root)["//:slow"]

    result = bt("build", "//...", "--json", cwd=root)

    assert result.returncode == 0, result.stderr
    assert build_events(result.stdout) == ["run_started", "started", "finished", "run_finished"]
    after = records(root)["//:slow"]
    assert after["key"] != before["key"] and after["digest"] != before["digest"]
    text = build_log(tmp_path, after["key"]).read_text()
    assert f"--cache-from {before['image']}" in text
    # BuildKit's plain progress: the RUN step's vertex is answered from the cache source.
    run_step = re.search(r"^(#\d+) \[2/3\] RUN sleep", text, re.M)
    assert run_step is not None, text
    assert f"{run_step.group(1)} CACHED" in text.splitlines()
    copy_step = re.search(r"^(#\d+) \[3/3\] COPY app.txt", text, re.M)
    assert copy_step is not None and f"{copy_step.group(1)} CACHED" not in text.splitlines()
    took = next(e["seconds"] for e in events(result.stdout) if e["event"] == "finished")
    assert took < SLEEP / 2, f"the build took {took:.1f}s"


def plan_keys(root: Path) -> list[tuple[str, str, str]]:
    result = bt("plan", "//...", "--all", "--format", "json", cwd=root)
    assert result.returncode == 0, result.stderr
    return [(p["label"], p["platform"], p["key"]) for p in json.loads(result.stdout)]


def test_turning_layer_reuse_off_changes_no_key_and_no_recorded_digest(
    tmp_path: Path, engine: str, engine2: str, registry: str
) -> None:
    root = pushed_from_engine_1(tmp_path, engine, engine2, registry)
    spec = (root / ".cache-spec").read_text()
    on = plan_keys(root)
    (root / ".cache-spec").write_text(spec.replace("layers = true", "layers = false"))
    assert plan_keys(root) == on

    off = bt("build", "//...", "--json", cwd=root)  # without reuse, the RUN runs again

    assert off.returncode == 0, off.stderr
    built = records(root)["//:slow"]
    assert [("//:slow", AMD, built["key"])] == on
    text = build_log(tmp_path, built["key"]).read_text()
    assert "--cache-from" not in text
    took = next(e["seconds"] for e in events(off.stdout) if e["event"] == "finished")
    assert took >= SLEEP
    lock = (root / "images.lock").read_bytes()
    (root / ".cache-spec").write_text(spec)  # reuse on again: nothing is stale for it
    assert plan_keys(root) == on
    again = bt("build", "//...", "--json", cwd=root)
    assert again.returncode == 0, again.stderr
    assert build_events(again.stdout) == ["up_to_date"]
    no_cache = bt("build", "//...", "--no-cache", "--json", cwd=root)
    assert build_events(no_cache.stdout) == ["up_to_date"]
    assert (root / "images.lock").read_bytes() == lock


def test_a_cache_source_deleted_from_the_registry_costs_one_warning_and_the_build_runs(
    tmp_path: Path, engine: str, registry: str
) -> None:
    root = pushed_from_engine_1(tmp_path, engine, engine, registry)
    gone = records(root)["//:slow"]["image"]
    delete_manifest(gone)

    result = bt("build", "//...", "--json", cwd=root)

    assert result.returncode == 0, result.stderr
    assert build_events(result.stdout) == [
        "run_started", "started", "warning", "finished", "run_finished"
    ]  # fmt: skip
    (warning,) = [e for e in events(result.stdout) if e["event"] == "warning"]
    assert (warning["label"], warning["platform"], warning["message"]) == (
        "//:slow",
        AMD,
        f"layer cache source {gone} skipped (the registry no longer has it); built without it",
    )
    built = records(root)["//:slow"]
    assert "--cache-from" not in build_log(tmp_path, built["key"]).read_text()
    assert built["image"] != gone


def test_the_engine_api_backend_pulls_the_last_record_and_reuses_its_unchanged_run(
    tmp_path: Path, engine: str, engine2: str, registry: str
) -> None:
    root = pushed_from_engine_1(tmp_path, engine, engine2, registry, backend="engine")

    result = bt("build", "//...", "--json", cwd=root)

    assert result.returncode == 0, result.stderr
    assert build_events(result.stdout) == ["run_started", "started", "finished", "run_finished"]
    text = build_log(tmp_path, records(root)["//:slow"]["key"]).read_text()
    # The classic builder's own words for a step it took from an image: "Using cache".
    steps = re.split(r"^Step \d+/\d+ : ", text, flags=re.M)
    (run_step,) = [step for step in steps if step.startswith("RUN sleep")]
    assert "---> Using cache" in run_step
    (copy_step,) = [step for step in steps if step.startswith("COPY app.txt")]
    assert "---> Using cache" not in copy_step
    # No bound on its time here: it includes pulling the whole record, which a loaded machine
    # stretches; the step's report is the evidence (the BuildKit test above bounds the time).
