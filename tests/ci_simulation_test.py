"""The workflow `bt ci plan` describes, run as CI would run it: every job in a fresh clone of its
own with an empty cache directory, on the engine of its platform (engine 1 stands in for the
amd64 runners, engine 2 for the arm64 ones), sharing only the registry; then the merge job in
another fresh clone, which records every build from the registry.

The workspace is the example reduced to 3 languages (de, fr, zh) of its 37, with all 5 models,
so a language is still 10 builds: 25 images, 50 platform builds in 3 waves. Each job runs its
`run` string exactly as `bt ci plan` prints it, through `bash -c`, with `bt` on PATH.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from btrun import REPO, bt, copy_example, own_repository

pytestmark = pytest.mark.engine
AMD, ARM = "linux/amd64", "linux/arm64"
LANGUAGES = ("de", "fr", "zh")
BUILDS_PER_JOB = 8  # 3 waves of 1, 1 and 2 jobs per platform: 8 build jobs
GIT = ("git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid")
ACCEPT = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    )
)


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def reduced_example(root: Path, url: str, engine: str, engine2: str) -> Path:
    """The example with 3 languages, builders routed per platform and keys no run had."""
    copy_example(root)
    build = root / "BUILD.images"
    text, count = re.subn(
        r"LANGUAGES = \[.*?\]", f"LANGUAGES = {list(LANGUAGES)!r}", build.read_text(), flags=re.S
    )
    assert count == 1
    build.write_text(text.replace("'", '"'))
    (root / ".cache-spec").write_text(
        'global_inputs = ["docker/common/versions.txt"]\n'
        'platforms = ["linux/amd64", "linux/arm64"]\n'
        f'[registry]\nurl = "{url}"\n'
        f'[builders."linux/amd64"]\nhost = "{engine}"\nnetwork = "none"\n'
        f'[builders."linux/arm64"]\nhost = "{engine2}"\nnetwork = "none"\n'
    )
    with (root / "docker/common/versions.txt").open("a") as f:
        f.write(f"# ci simulation {uuid.uuid4().hex}\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "workspace")
    return root


class Ci:
    """Runs jobs as CI runners would: fresh clones of ``base``, nothing passed along."""

    def __init__(self, base: Path, work: Path):
        self.base = base
        self.work = work
        work.mkdir(parents=True)
        bin_dir = work / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "bt"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m buildtool "$@"\n')
        shim.chmod(0o755)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
        }
        self.runs = 0

    def clone(self, name: str) -> Path:
        checkout = self.work / name / "checkout"
        git(self.work, "clone", "-q", str(self.base), str(checkout))
        return checkout

    def run(self, name: str, command: str) -> tuple[Path, str]:
        """``command`` at the root of a fresh clone, with a cache directory of its own; the
        clone and the output."""
        checkout = self.clone(name)
        env = {**self.env, "XDG_CACHE_HOME": str(checkout.parent / "cache")}
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{name}: {command}\n{output[-3000:]}"
        return checkout, output

    def plan(self, name: str) -> Any:
        checkout = self.clone(name)
        args = ("ci", "plan", "//...", "--builds-per-job", str(BUILDS_PER_JOB))
        return json.loads(bt(*args, cwd=checkout, check=True).stdout)

    def run_plan(self, plan: Any) -> Path:
        """Every wave's jobs (a wave's jobs at once), then the merge job; its checkout."""
        self.runs += 1
        for wave in plan["waves"]:

            def job(spec: dict[str, Any]) -> None:
                self.run(f"{self.runs}-{spec['id']}", spec["run"])

            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(job, wave["jobs"]))
        checkout, _ = self.run(f"{self.runs}-merge", plan["merge"]["run"])
        return checkout

    def commit_lockfile(self, merged: Path) -> None:
        """The merged images.lock committed back, as `bt ci workflow --commit` does."""
        shutil.copy2(merged / "images.lock", self.base / "images.lock")
        git(self.base, "add", "images.lock")
        git(self.base, "commit", "-q", "-m", "images.lock")


def served(registry: str, reference: str) -> str | None:
    """The digest the registry serves for ``repo:tag`` or ``repo@digest`` (HEAD), or None."""
    name, sep, ref = reference.partition("@")
    if not sep:
        name, ref = reference.rsplit(":", 1)
    repository = name.split("/", 1)[1]
    conn = http.client.HTTPConnection(registry, timeout=10)
    try:
        conn.request("HEAD", f"/v2/{repository}/manifests/{ref}", headers={"Accept": ACCEPT})
        response = conn.getresponse()
        response.read()
        return response.getheader("Docker-Content-Digest") if response.status == 200 else None
    finally:
        conn.close()


def builds_of(plan: Any) -> list[tuple[str, str]]:
    return sorted(
        (label, platform)
        for wave in plan["waves"]
        for job in wave["jobs"]
        for label, platform in job["builds"]
    )


def test_every_ci_job_on_its_own_runner_records_the_single_machine_plan(
    tmp_path: Path, engine: str, engine2: str, registry: str
) -> None:
    url = own_repository(registry, "bt-ci")
    base = reduced_example(tmp_path / "repo", url, engine, engine2)
    ci = Ci(base, tmp_path / "ci")
    keys_out = bt("plan", "//...", "--format", "json", cwd=base, check=True).stdout
    keys = sorted((b["label"], b["platform"], b["key"]) for b in json.loads(keys_out))
    assert len(keys) == 50

    plan = ci.plan("plan-1")
    assert [len(w["jobs"]) for w in plan["waves"]] == [2, 2, 4]
    assert all(job["platform"] in job["run"] for w in plan["waves"] for job in w["jobs"])
    merged = ci.run_plan(plan)

    lock = json.loads((merged / "images.lock").read_text())
    recorded = sorted(
        (label, platform, record["key"])
        for label, platforms in lock["builds"].items()
        for platform, record in platforms.items()
    )
    assert recorded == keys
    for platforms in lock["builds"].values():
        for record in platforms.values():
            assert record["image"].startswith(f"{url}/")
            assert served(registry, record["image"]) == record["digest"], record
    assert sorted(lock["images"]) == sorted({label for label, _, _ in keys})
    for index in lock["images"].values():
        assert index["tags"]
        for tag in index["tags"]:
            assert served(registry, tag) == index["digest"], tag

    # A runner re-running a job (a retry, a fresh machine) asks the registry and builds nothing.
    first = plan["waves"][0]["jobs"][0]
    _, again = ci.run(f"{ci.runs}-rerun", first["run"])
    assert " started " not in again
    assert again.count("from the registry") == len(first["builds"])

    ci.commit_lockfile(merged)
    assert ci.plan("plan-2")["waves"] == []

    with (base / "docker/align/zh/alignment.bin").open("ab") as f:
        f.write(b"\0edited")
    git(base, "commit", "-q", "-am", "zh alignment")
    edited = ci.plan("plan-3")
    models = ("base", "large-v3", "medium", "small", "tiny")
    assert builds_of(edited) == sorted(
        (f"//matrix:{model}-zh", platform) for model in models for platform in (AMD, ARM)
    )
