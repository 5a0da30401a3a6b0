"""`bt ci plan`, `bt ci workflow` and `bt build --shard` on small workspaces written here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from btrun import REPO, bt, copy_example, new_workspace, write_tree

from buildtool import __version__
from buildtool.build.record import record_builds
from buildtool.ci.waves import GITHUB_MATRIX_LIMIT, parse_shard, plan_jobs, ready_builds, shard
from buildtool.plan.session import Session, Workbench
from buildtool.plan.stale import PlannedBuild

SPEC = """\
platforms = ["linux/amd64", "linux/arm64"]

[registry]
url = "127.0.0.1:5000/ci"
push = false

[ci.runners]
"linux/amd64" = "ubuntu-24.04"
"linux/arm64" = ["self-hosted", "arm64"]
"""

# base -> mid -> (leaf1, leaf2) for both platforms; solo stands alone, amd64 only.
BUILD = """\
image(name = "base", dockerfile = "base.Dockerfile")
image(name = "mid", dockerfile = "child.Dockerfile", args = {"FILE": "mid.txt"},
      parents = {"PARENT": "//:base"})
image(name = "leaf1", dockerfile = "child.Dockerfile", args = {"FILE": "leaf1.txt"},
      parents = {"PARENT": "//:mid"})
image(name = "leaf2", dockerfile = "child.Dockerfile", args = {"FILE": "leaf2.txt"},
      parents = {"PARENT": "//:mid"})
image(name = "solo", dockerfile = "base.Dockerfile", args = {"X": "1"}, platforms = ["linux/amd64"])
"""

FILES = {
    ".cache-spec": SPEC,
    "BUILD.images": BUILD,
    "base.Dockerfile": "FROM scratch\nARG X\nCOPY base.txt /base.txt\n",
    "child.Dockerfile": "ARG PARENT\nFROM ${PARENT}\nARG FILE\nCOPY ${FILE} /${FILE}\n",
    "base.txt": "base\n",
    "mid.txt": "mid\n",
    "leaf1.txt": "leaf1\n",
    "leaf2.txt": "leaf2\n",
}

FOLD = "if ls bt-lock-*.json >/dev/null 2>&1; then bt lock merge bt-lock-*.json; fi"
AMD, ARM = "linux/amd64", "linux/arm64"
ARM_RUNNER = ["self-hosted", "arm64"]


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return new_workspace(tmp_path, monkeypatch, FILES)


def ci_plan(root: Path, *args: str) -> Any:
    """The JSON `bt ci plan` prints (untyped: tests index into it)."""
    result = bt("ci", "plan", *args, cwd=root, check=True)
    return json.loads(result.stdout)


def job(job_id: str, platform: str, runs_on: object, *labels: str) -> dict[str, object]:
    return {
        "id": job_id,
        "platform": platform,
        "runs_on": runs_on,
        "builds": [[label, platform] for label in labels],
        "run": f"{FOLD} && bt build --push --no-deps --platform {platform} "
        f"--lock-out bt-lock-{job_id}.json {' '.join(labels)}",
    }


def jobs_of(plan: dict[str, object]) -> list[list[dict[str, object]]]:
    waves = plan["waves"]
    assert isinstance(waves, list)
    for wave in waves:
        assert wave["matrices"] == [wave["jobs"]]  # small waves: one matrix each
    return [wave["jobs"] for wave in waves]


def record_all(root: Path) -> None:
    """Stand-in for a build of everything: record each platform build with a made-up digest."""
    bench = Workbench(Session(root))
    record_builds(
        bench.config,
        bench.lock_path,
        [
            (p.manifest, f"sha256:{p.key[:64]}", f"127.0.0.1:5000/ci/x@sha256:{p.key[:64]}")
            for p in bench.plan(["//..."])
        ],
    )


def test_a_full_rebuild_puts_each_build_one_wave_after_its_parents(workspace: Path) -> None:
    plan = ci_plan(workspace, "//...")
    assert jobs_of(plan) == [
        [
            job("w1-linux-amd64-001", AMD, "ubuntu-24.04", "//:base"),
            job("w1-linux-amd64-002", AMD, "ubuntu-24.04", "//:solo"),
            job("w1-linux-arm64-001", ARM, ARM_RUNNER, "//:base"),
        ],
        [
            job("w2-linux-amd64-001", AMD, "ubuntu-24.04", "//:mid"),
            job("w2-linux-arm64-001", ARM, ARM_RUNNER, "//:mid"),
        ],
        [
            job("w3-linux-amd64-001", AMD, "ubuntu-24.04", "//:leaf1"),
            job("w3-linux-amd64-002", AMD, "ubuntu-24.04", "//:leaf2"),
            job("w3-linux-arm64-001", ARM, ARM_RUNNER, "//:leaf1"),
            job("w3-linux-arm64-002", ARM, ARM_RUNNER, "//:leaf2"),
        ],
    ]
    assert plan["merge"] == {"run": f"{FOLD} && bt merge //..."}


def test_only_stale_builds_appear_and_recorded_parents_start_no_wave(workspace: Path) -> None:
    record_all(workspace)
    assert ci_plan(workspace, "//...")["waves"] == []
    (workspace / "mid.txt").write_text("mid, edited\n")
    assert jobs_of(ci_plan(workspace, "//...", "--builds-per-job", "2")) == [
        [
            job("w1-linux-amd64-001", AMD, "ubuntu-24.04", "//:mid"),
            job("w1-linux-arm64-001", ARM, ARM_RUNNER, "//:mid"),
        ],
        [
            job("w2-linux-amd64-001", AMD, "ubuntu-24.04", "//:leaf1", "//:leaf2"),
            job("w2-linux-arm64-001", ARM, ARM_RUNNER, "//:leaf1", "//:leaf2"),
        ],
    ]


def test_the_plan_of_selected_patterns_merges_those_patterns(workspace: Path) -> None:
    plan = ci_plan(workspace, "//:solo")
    assert jobs_of(plan) == [[job("w1-linux-amd64-001", AMD, "ubuntu-24.04", "//:solo")]]
    assert plan["merge"] == {"run": f"{FOLD} && bt merge //:solo"}


def test_runners_default_to_ubuntu_latest(workspace: Path) -> None:
    (workspace / ".cache-spec").write_text('platforms = ["linux/arm64"]\n')
    plan = ci_plan(workspace, "//:base", "--compact")
    assert jobs_of(plan) == [[job("w1-linux-arm64-001", ARM, "ubuntu-latest", "//:base")]]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[ci.runners]\n"linux/amd64" = 3\n', '.cache-spec:2: ci.runners."linux/amd64" must be'),
        ('[ci.runners]\n"linux/amd64" = []\n', '.cache-spec:2: ci.runners."linux/amd64" must be'),
        ('[ci.runners]\n"amd64" = "x"\n', ".cache-spec:2: invalid platform 'amd64'"),
        ("[ci]\nrunner = 1\n", ".cache-spec:2: unknown key ci.runner (known: runners)"),
    ],
)
def test_bad_ci_runners_are_config_errors_with_a_line(
    workspace: Path, table: str, message: str
) -> None:
    (workspace / ".cache-spec").write_text(table)
    result = bt("ci", "plan", "//...", cwd=workspace)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr


def many_targets(root: Path, count: int) -> None:
    write_tree(
        root,
        {
            ".cache-spec": 'platforms = ["linux/amd64"]\n',
            "BUILD.images": f'[image(name = "t%03d" % i, dockerfile = "base.Dockerfile", '
            f'args = {{"X": str(i)}}) for i in range({count})]\n',
        },
    )


def test_a_wave_beyond_256_jobs_is_sharded_into_matrices(workspace: Path) -> None:
    many_targets(workspace, 300)
    plan = ci_plan(workspace, "//...")
    (wave,) = plan["waves"]
    assert len(wave["jobs"]) == 300
    assert [len(m) for m in wave["matrices"]] == [GITHUB_MATRIX_LIMIT, 44]
    assert [j for m in wave["matrices"] for j in m] == wave["jobs"]
    ids = [j["id"] for j in wave["jobs"]]
    assert ids[0] == "w1-linux-amd64-001" and ids[-1] == "w1-linux-amd64-300"
    assert len(set(ids)) == 300


def test_max_jobs_packs_more_builds_into_each_job(workspace: Path) -> None:
    many_targets(workspace, 300)
    (wave,) = ci_plan(workspace, "//...", "--max-jobs", "100")["waves"]
    assert [len(j["builds"]) for j in wave["jobs"]] == [3] * 100
    assert len(wave["matrices"]) == 1
    (wave,) = ci_plan(workspace, "//...", "--builds-per-job", "7")["waves"]
    sizes = [len(j["builds"]) for j in wave["jobs"]]
    assert len(sizes) == 43 and set(sizes) == {6, 7} and sum(sizes) == 300
    built = [b for j in wave["jobs"] for b in j["builds"]]
    assert built == [[f"//:t{i:03d}", AMD] for i in range(300)]


def test_max_jobs_below_the_platforms_of_a_wave_is_refused(workspace: Path) -> None:
    result = bt("ci", "plan", "//...", "--max-jobs", "1", cwd=workspace)
    assert result.returncode == 2
    assert "--max-jobs 1 is too small: wave 1 has builds for 2 platforms" in result.stderr


def test_max_waves_refuses_a_deeper_plan(workspace: Path) -> None:
    result = bt("ci", "plan", "//...", "--max-waves", "2", cwd=workspace)
    assert result.returncode == 2
    assert "the plan needs 3 waves, more than the 2 of the workflow" in result.stderr


# -- shards --------------------------------------------------------------------------------------


def planned_of(root: Path) -> list[PlannedBuild]:
    return Workbench(Session(root)).plan(["//..."])


def test_shards_are_disjoint_cover_the_ready_builds_and_do_not_move(workspace: Path) -> None:
    many_targets(workspace, 30)
    ready = ready_builds(planned_of(workspace), lambda p: p.stale)
    assert len(ready) == 30
    for count in (1, 4, 7, 30, 31):
        slices = [shard(ready, i, count) for i in range(1, count + 1)]
        ids = [p.id for s in slices for p in s]
        assert len(ids) == len(set(ids)) == 30
        assert max(map(len, slices)) - min(map(len, slices)) <= 1
        # the input's order does not matter: a build always lands in the same slice
        again = [shard(list(reversed(ready)), i, count) for i in range(1, count + 1)]
        assert [[p.id for p in s] for s in again] == [[p.id for p in s] for s in slices]


def test_only_builds_whose_parents_are_recorded_are_ready(workspace: Path) -> None:
    ready = ready_builds(planned_of(workspace), lambda p: p.stale)
    assert sorted((str(p.label), p.platform) for p in ready) == [
        ("//:base", AMD),
        ("//:base", ARM),
        ("//:solo", AMD),
    ]


@pytest.mark.parametrize("value", ["0/4", "5/4", "1/0", "x", "1/", "-1/2", "1/2/3"])
def test_bad_shards_are_usage_errors(workspace: Path, value: str) -> None:
    with pytest.raises(ValueError):
        parse_shard(value)
    result = bt("build", "//...", "--shard", value, cwd=workspace)
    assert result.returncode == 2
    assert "Invalid value for '--shard'" in result.stderr


def test_ci_plan_and_a_plan_with_everything_recorded_agree(workspace: Path) -> None:
    bench = Workbench(Session(workspace))
    full = plan_jobs(bench.config, bench.plan(["//..."]), lambda p: p.stale, ["//..."])
    assert full.job_count == 9
    assert [len(w.jobs) for w in full.waves] == [3, 2, 4]


# -- the workflow ----------------------------------------------------------------------------------


def actionlint(workflow: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("actionlint")
    if exe is None:
        message = "actionlint is not installed: pip install -e '.[test]'"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    repo = tmp_path / "repo"
    (repo / ".github/workflows").mkdir(parents=True, exist_ok=True)
    (repo / ".github/workflows/bt.yml").write_text(workflow)
    return subprocess.run(
        [exe, "-no-color", ".github/workflows/bt.yml"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_example_workflow_passes_actionlint(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "ws")
    workflow = bt("ci", "workflow", cwd=root, check=True).stdout
    lint = actionlint(workflow, tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # 3 waves (bases, models, the rest), 2 matrices each (a full rebuild's 372 jobs in wave 3)
    body = workflow.split("\njobs:\n", 1)[1]
    jobs = [line.strip() for line in body.splitlines() if line[:2] == "  " != line[2:4]]
    assert jobs == ["plan:", *[f"wave-{w}-{m}:" for w in (1, 2, 3) for m in (1, 2)], "merge:"]
    assert "bt ci plan //... --compact --max-waves 3 --max-jobs 512 --builds-per-job 1" in workflow
    assert "fail-fast: false" in workflow
    assert "docker/login-action" not in workflow  # a loopback registry needs no login


def test_a_workflow_with_commit_and_a_remote_registry_passes_actionlint(
    workspace: Path, tmp_path: Path
) -> None:
    spec = SPEC.replace("127.0.0.1:5000/ci", "ghcr.io/example/whisperx")
    (workspace / ".cache-spec").write_text(spec)
    result = bt("ci", "workflow", "//:leaf1", "--waves", "5", "--commit", cwd=workspace, check=True)
    lint = actionlint(result.stdout, tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "wave-5-1:" in result.stdout and "wave-6-1:" not in result.stdout
    assert "contents: write" in result.stdout and "packages: write" in result.stdout
    assert 'registry: "ghcr.io"' in result.stdout
    assert "git push" in result.stdout


def test_the_workflow_installs_bt_with_its_action_at_this_version(workspace: Path) -> None:
    workflow = bt("ci", "workflow", cwd=workspace, check=True).stdout
    steps = workflow.count("      - name: Install bt\n        uses: bt-images/bt@v" + __version__)
    assert steps == workflow.count("      - uses: actions/checkout@v4")  # every job
    assert "pip install" not in workflow


def test_the_repositorys_action_passes_actionlint_as_the_workflow_uses_it(
    workspace: Path, tmp_path: Path
) -> None:
    workflow = bt("ci", "workflow", "--action", "./", cwd=workspace, check=True).stdout
    assert "        uses: ./\n" in workflow
    # actionlint reads a local action's action.yml and checks the workflow against it.
    # ... found from the repository's root, which actionlint knows by its .git directory.
    (tmp_path / "repo/.git").mkdir(parents=True)
    shutil.copy(REPO / "action.yml", tmp_path / "repo/action.yml")
    lint = actionlint(workflow, tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    uses_command = workflow.replace(
        "        uses: ./\n",
        "        uses: ./\n        with:\n          command: bt plan //...\n",
        1,
    )
    assert actionlint(uses_command, tmp_path).returncode == 0
    unknown_input = workflow.replace(
        "        uses: ./\n", "        uses: ./\n        with:\n          nope: 1\n", 1
    )
    lint = actionlint(unknown_input, tmp_path)
    assert lint.returncode == 1 and 'input "nope" is not defined' in lint.stdout


def test_install_replaces_the_action_with_a_shell_command(workspace: Path, tmp_path: Path) -> None:
    command = "python -m pip install bt-images==0.1.0"
    workflow = bt("ci", "workflow", "--install", command, cwd=workspace, check=True).stdout
    assert f'        run: "{command}"' in workflow and "bt-images/bt@" not in workflow
    lint = actionlint(workflow, tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_build_steps_get_the_env_secrets_the_dockerfiles_mount_and_pass_actionlint(
    workspace: Path, tmp_path: Path
) -> None:
    (workspace / ".cache-spec").write_text(
        SPEC + '[secrets]\nhf = {env = "HF_TOKEN"}\nunused = {env = "UNUSED_TOKEN"}\n'
    )
    (workspace / "child.Dockerfile").write_text(
        FILES["child.Dockerfile"]
        + "RUN --mount=type=secret,id=hf --mount=type=secret,target=/run/keys/deploy true\n"
    )
    (workspace / "BUILD.images").write_text(
        BUILD.replace('args = {"FILE": "leaf1.txt"},', 'args = {"FILE": "leaf1.txt"}, '
                      'secrets = {"deploy": {"src": "/etc/bt/deploy-key"}},')
    )  # fmt: skip
    workflow = bt("ci", "workflow", cwd=workspace, check=True).stdout
    lint = actionlint(workflow, tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    build_step = (
        "      - name: Build\n"
        "        # Build secrets read from files must exist on the runner: /etc/bt/deploy-key\n"
        "        env:\n"
        "          HF_TOKEN: ${{ secrets.HF_TOKEN }}\n"
        "        run: ${{ matrix.run }}\n"
    )
    assert workflow.count(build_step) == workflow.count("      - name: Build\n") == 3
    assert "UNUSED_TOKEN" not in workflow  # declared, mounted by no Dockerfile
    assert workflow.count("secrets.HF_TOKEN") == 3  # the plan and merge jobs build nothing


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: ${{ matrix.x }}\n"
    assert actionlint(broken, tmp_path).returncode == 1
