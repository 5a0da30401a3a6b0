"""What a push costs in CI for the example: platform builds and CI jobs of a full run, a
one-language edit, a one-model edit and a no-op push, bt against seed 000's workflows.

bt's numbers come from `bt ci plan //...` on a copy of the example, the jobs of the workflow
`bt ci workflow` writes: one plan job, one job per build (--builds-per-job 1, the default) and
one merge job (it always runs). The full run starts without images.lock; the others start with
every build recorded (as after a full run) and then edit one file: docker/align/zh/vocab.json
(a language) or docker/models/tiny/config.json (a model). Seed 000's five chained workflows
rebuild every image on every push, whatever changed: its own scale table gives 388 platform
builds and 601 jobs (build, test, merge and other jobs of the 194 images of its matrix).

Writes bench/results/ci_cost.md (the table) and ci_cost.png (the plot; matplotlib, the `bench`
extra). Usage: python bench/bench_ci_cost.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_plan import bench_env, copy_example

RESULTS = Path(__file__).resolve().parent / "results"
SEED_BUILDS, SEED_JOBS = 388, 601  # seed 000, "Scale Breakdown": every push
SCENARIOS = ("full run", "one-language edit", "one-model edit", "no-op")
EDITS = {
    "one-language edit": "docker/align/zh/vocab.json",
    "one-model edit": "docker/models/tiny/config.json",
}


def record_pushed(root: Path, env: dict[str, str]) -> None:
    """Record every platform build as pushed to the registry of .cache-spec (what a full CI
    run leaves in images.lock), without building: only plans are measured."""
    code = (
        "import sys; from pathlib import Path\n"
        "from buildtool.build.record import record_builds\n"
        "from buildtool.plan.session import Session, Workbench\n"
        "bench = Workbench(Session(Path(sys.argv[1])))\n"
        "targets = bench.session.graph.targets\n"
        "planned = bench.plan(['//...'])\n"
        "record_builds(bench.config, bench.lock_path, [(p.manifest, 'sha256:' + p.key,"
        " f'{bench.config.registry}/{targets[p.label].repository}@sha256:{p.key}')"
        " for p in planned])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(root)], env=env, check=True)


def ci_cost(root: Path, env: dict[str, str]) -> tuple[int, int]:
    """(platform builds, CI jobs) of the workflow bt writes, for the workspace as it is."""
    done = subprocess.run(
        [sys.executable, "-m", "buildtool", "ci", "plan", "//..."],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    plan = json.loads(done.stdout)
    jobs = [job for wave in plan["waves"] for job in wave["jobs"]]
    builds = sum(len(job["builds"]) for job in jobs)
    return builds, 1 + len(jobs) + 1  # plan, the wave jobs, merge


def measure() -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = bench_env(Path(tmp, "cache"))
        for scenario in SCENARIOS:
            root = Path(tmp, scenario.replace(" ", "-"))
            root.mkdir()
            copy_example(root)
            if scenario != "full run":
                record_pushed(root, env)
            if scenario in EDITS:
                with (root / EDITS[scenario]).open("a") as edited:
                    edited.write("\n")
            found[scenario] = ci_cost(root, env)
    return found


def write_table(found: dict[str, tuple[int, int]]) -> str:
    lines = [
        "| push | bt builds | seed 000 builds | bt CI jobs | seed 000 CI jobs |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for scenario, (builds, jobs) in found.items():
        lines.append(f"| {scenario} | {builds} | {SEED_BUILDS} | {jobs} | {SEED_JOBS} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "ci_cost.md").write_text(text)
    return text


def plot(found: dict[str, tuple[int, int]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    positions = range(len(found))
    for axis, index, what in ((axes[0], 0, "platform builds"), (axes[1], 1, "CI jobs")):
        seed = SEED_BUILDS if index == 0 else SEED_JOBS
        bt = [found[s][index] for s in found]
        axis.bar([p - 0.2 for p in positions], [seed] * len(found), 0.4, label="seed 000")
        axis.bar([p + 0.2 for p in positions], bt, 0.4, label="bt")
        for p, value in zip(positions, bt, strict=True):
            axis.annotate(str(value), (p + 0.2, value), ha="center", va="bottom", fontsize=8)
        axis.set_xticks(list(positions), list(found), rotation=15, fontsize=8)
        axis.set_title(f"{what} per push")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS / "ci_cost.png", dpi=90)


def main() -> None:
    found = measure()
    print(write_table(found), end="")
    plot(found)
    print(f"wrote {RESULTS / 'ci_cost.md'} and {RESULTS / 'ci_cost.png'}")


if __name__ == "__main__":
    main()
