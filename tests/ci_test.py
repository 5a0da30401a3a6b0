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
        "run": f"bt build --push --no-deps --platform {platform} {' '.join(labels)}",
    }


def jobs_of(plan: dict[str, object]) -> list[list[dict[str, object]]]:
    waves = plan["waves"]
    assert isinstance(waves, list)
    for wave in waves:
        assert wave["matrices"] == [{"include": wave["jobs"]}]  # small waves: one matrix each
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
    assert plan["merge"] == {"run": "bt ci merge --event push //..."}


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
    assert plan["merge"] == {"run": "bt ci merge --event push //:solo"}


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
        (
            "[ci]\nrunner = 1\n",
            ".cache-spec:2: unknown key ci.runner "
            "(known: runners, default_branch, platforms, registry_secrets)",
        ),
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
    assert [len(m["include"]) for m in wave["matrices"]] == [GITHUB_MATRIX_LIMIT, 44]
    assert [j for m in wave["matrices"] for j in m["include"]] == wave["jobs"]
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
    uses = {line.strip(" -") for line in workflow.splitlines() if "uses:" in line}
    assert uses == {"uses: actions/checkout@v4", f"uses: bt-images/bt@v{__version__}"}
    assert "upload-artifact" not in workflow and "download-artifact" not in workflow


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
    assert "docker login ghcr.io" in result.stdout
    assert "BT_REGISTRY_PASSWORD: ${{ secrets.GITHUB_TOKEN }}" in result.stdout
    assert "git push" in result.stdout


def test_logins_read_the_secrets_of_ci_registry_secrets_and_pull_requests_the_read_only_ones(
    workspace: Path, tmp_path: Path
) -> None:
    spec = SPEC.replace("127.0.0.1:5000/ci", "registry.example.com/whisperx")
    secrets = '"registry.example.com" = ["REG_USER", "REG_TOKEN", "RO_USER"]'
    (workspace / ".cache-spec").write_text(f"{spec}[ci.registry_secrets]\n{secrets}\n")
    bad = bt("ci", "workflow", cwd=workspace)
    assert bad.returncode == 2
    line = spec.count("\n") + 2
    assert bad.stderr.startswith(f'.cache-spec:{line}: ci.registry_secrets."registry.example.com" ')
    secrets = '"registry.example.com" = ["REG_USER", "REG_TOKEN"]'
    (workspace / ".cache-spec").write_text(f"{spec}[ci.registry_secrets]\n{secrets}\n")
    workflow = bt("ci", "workflow", cwd=workspace, check=True).stdout
    lint = actionlint(workflow, tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    login = (
        "      - name: Log in to registry.example.com\n"
        "        env:\n"
        "          BT_REGISTRY_USERNAME: ${{ secrets.REG_USER }}\n"
        "          BT_REGISTRY_PASSWORD: ${{ github.event_name != 'pull_request' && "
        "secrets.REG_TOKEN || '' }}\n"
    )
    assert workflow.count(login) == workflow.count("      - uses: actions/checkout@v4") == 5
    assert "packages: write" not in workflow
    secrets = '"registry.example.com" = ["REG_USER", "REG_TOKEN", "RO_USER", "RO_TOKEN"]'
    (workspace / ".cache-spec").write_text(f"{spec}[ci.registry_secrets]\n{secrets}\n")
    workflow = bt("ci", "workflow", cwd=workspace, check=True).stdout
    assert actionlint(workflow, tmp_path).returncode == 0
    assert (
        workflow.count(
            "          BT_REGISTRY_PASSWORD: ${{ github.event_name != 'pull_request' && "
            "secrets.REG_TOKEN || secrets.RO_TOKEN }}\n"
        )
        == 5
    )


def test_a_python_version_sets_up_python_before_bts_action(workspace: Path, tmp_path: Path) -> None:
    workflow = bt("ci", "workflow", "--python-version", "3.12", cwd=workspace, check=True).stdout
    setup = (
        '      - uses: actions/setup-python@v5\n        with:\n          python-version: "3.12"\n'
    )
    assert workflow.count(setup + "      - name: Install bt\n") == 5
    lint = actionlint(workflow, tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    plain = bt("ci", "workflow", cwd=workspace, check=True).stdout
    assert "setup-python" not in plain


def test_the_workflow_installs_bt_with_its_action_at_this_version(workspace: Path) -> None:
    workflow = bt("ci", "workflow", cwd=workspace, check=True).stdout
    steps = workflow.count("      - name: Install bt\n        uses: bt-images/bt@v" + __version__)
    assert steps == workflow.count("      - uses: actions/checkout@v4")  # every job
    assert "pip install" not in workflow
    action = (REPO / "action.yml").read_text().splitlines()
    assert [line for line in action if line.strip(" -").startswith("uses:")] == []  # no fetch


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


# -- events: [ci.platforms] and pull requests ------------------------------------------------------

POLICY = '[ci.platforms]\npull_request = ["linux/amd64"]\npush = ["linux/amd64"]\n'


def test_pushes_to_other_branches_and_pull_requests_build_what_ci_platforms_says(
    workspace: Path,
) -> None:
    (workspace / ".cache-spec").write_text(SPEC + POLICY)
    env = {"GITHUB_EVENT_NAME": "push", "GITHUB_REF": "refs/heads/main"}
    main = json.loads(bt("ci", "plan", "//:mid", cwd=workspace, env=env, check=True).stdout)
    assert (main["event"], main["platforms"], main["push"]) == ("default_branch", [AMD, ARM], True)
    env["GITHUB_REF"] = "refs/heads/feature"
    branch = json.loads(bt("ci", "plan", "//:mid", cwd=workspace, env=env, check=True).stdout)
    assert (branch["event"], branch["platforms"]) == ("push", [AMD])
    assert jobs_of(branch) == [
        [job("w1-linux-amd64-001", AMD, "ubuntu-24.04", "//:base")],
        [job("w2-linux-amd64-001", AMD, "ubuntu-24.04", "//:mid")],
    ]
    env["GITHUB_REF"] = "refs/tags/v1"
    tag = json.loads(bt("ci", "plan", "//:mid", cwd=workspace, env=env, check=True).stdout)
    assert (tag["event"], tag["platforms"]) == ("tag", [AMD, ARM])


def test_a_pull_request_builds_each_platform_in_one_job_with_parents_and_pushes_nothing(
    workspace: Path,
) -> None:
    (workspace / ".cache-spec").write_text(SPEC + POLICY)
    env = {"GITHUB_EVENT_NAME": "push"}  # --event wins over the environment
    plan = ci_plan(workspace, "//...", "--event", "pull_request")
    pull = json.loads(
        bt("ci", "plan", "//...", "--event", "pull_request", cwd=workspace, env=env).stdout
    )
    assert pull == plan
    assert (plan["event"], plan["push"], plan["merge"]) == ("pull_request", False, None)
    (wave,) = plan["waves"]
    labels = ["//:base", "//:mid", "//:leaf1", "//:leaf2", "//:solo"]  # parents first
    assert wave["jobs"] == [
        {
            "id": "w1-linux-amd64-001",
            "platform": AMD,
            "runs_on": "ubuntu-24.04",
            "builds": [[label, AMD] for label in labels],
            "run": f"bt build --no-push --platform {AMD} {' '.join(labels)}",
        }
    ]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[ci.platforms]\nnightly = ["linux/amd64"]\n', "unknown event ci.platforms.nightly"),
        ('[ci.platforms]\npush = "linux/amd64"\n', "ci.platforms.push must be a list of"),
        ('[ci.platforms]\npush = ["amd64"]\n', "invalid platform 'amd64'"),
        ('[ci]\ndefault_branch = "a b"\n', "ci.default_branch must be a branch name"),
        ('[ci.registry_secrets]\n"a b" = ["U", "P"]\n', "ci.registry_secrets: 'a b' is not"),
        ('[ci.registry_secrets]\n"r.io" = ["U", "P-1"]\n', 'ci.registry_secrets."r.io" must'),
    ],
)
def test_bad_ci_policies_are_config_errors_with_a_line(
    workspace: Path, table: str, message: str
) -> None:
    (workspace / ".cache-spec").write_text(table)
    result = bt("ci", "plan", "//...", cwd=workspace)
    assert result.returncode == 2
    assert result.stderr.startswith(f".cache-spec:2: {message}"), result.stderr


def test_an_event_bt_does_not_plan_for_is_refused(workspace: Path) -> None:
    env = {"GITHUB_EVENT_NAME": "issues"}
    result = bt("ci", "plan", "//...", cwd=workspace, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("CI event 'issues' is not one bt plans for"), result.stderr


def test_a_workflow_needs_a_registry(workspace: Path) -> None:
    (workspace / ".cache-spec").write_text('platforms = ["linux/amd64"]\n')
    result = bt("ci", "workflow", cwd=workspace)
    assert result.returncode == 2
    assert result.stderr.startswith(".cache-spec: CI across machines needs [registry] url")


def test_a_pull_request_has_nothing_to_merge(workspace: Path) -> None:
    result = bt("ci", "merge", "//...", "--event", "pull_request", cwd=workspace)
    assert result.returncode == 2
    assert result.stderr.startswith("a pull request's run pushes nothing, so it has nothing")


def test_mirrors_are_promoted_by_the_merge_job_after_a_login_to_each(
    workspace: Path, tmp_path: Path
) -> None:
    spec = SPEC.replace(
        "push = false\n", 'push = false\nmirrors = ["ghcr.io/acme", "mirror.example.com:5000/x"]\n'
    )
    (workspace / ".cache-spec").write_text(spec)
    workflow = bt("ci", "workflow", cwd=workspace, check=True).stdout
    lint = actionlint(workflow, tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    merge_job = workflow.split("\n  merge:\n", 1)[1]
    logins = [line.strip() for line in merge_job.splitlines() if "- name: Log in to " in line]
    assert logins == [
        "- name: Log in to 127.0.0.1:5000",
        "- name: Log in to ghcr.io",
        "- name: Log in to mirror.example.com:5000",
    ]
    promote = '      - name: "Promote to the mirror registries"\n        run: "bt promote //..."\n'
    assert workflow.count(promote) == 1 and promote in merge_job
    assert merge_job.index("id: merge") < merge_job.index(promote)
    assert "packages: write" in workflow  # ghcr.io's GITHUB_TOKEN pushes
    (workspace / ".cache-spec").write_text(SPEC)
    assert "bt promote" not in bt("ci", "workflow", cwd=workspace, check=True).stdout
