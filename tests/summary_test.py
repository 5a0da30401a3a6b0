"""The step summary's Markdown: big runs grouped by package and capped, and `bt ci plan`'s."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from btrun import bt, write_tree

from buildtool.build.events import Finished, Planned, PlannedBuildInfo, RunFinished, Started
from buildtool.build.events import Summary as RunSummary
from buildtool.cli import summary
from buildtool.cli.summary import BuildSummary
from buildtool.release.merge import MergeReport, TagOutcome
from buildtool.workspace.labels import parse_label

AMD = "linux/amd64"
STEP = "GITHUB_STEP_SUMMARY"


def test_a_big_run_is_grouped_by_package_and_capped_saying_how_many_rows_were_left_out(
    tmp_path: Path,
) -> None:
    builds = [(f"//lang:m{n:03d}", AMD) for n in range(150)] + [("//base:cpu", AMD)]
    reader = BuildSummary(tmp_path / "summary.md", "bt build //...")
    infos = tuple(PlannedBuildInfo(b, "k" * 64, "new: never built", (), True) for b in builds)
    reader(Planned(infos, 0.0))
    for number, build in enumerate(builds):
        reader(Started(build, float(number)))
        reader(Finished(build, number + 2.0, "sha256:" + "a" * 64, 2.0))
    ok = RunSummary(tuple(builds), (), (), (), False, 200.0)
    reader(RunFinished(ok, 200.0))
    reader.close()

    text = (tmp_path / "summary.md").read_text()
    assert summary.MAX_ROWS == 100
    assert "**//base** (1)" in text and "**//lang** (150)" in text
    rows = [line for line in text.splitlines() if line.startswith("| //")]
    assert rows[0].startswith("| //base:cpu | linux/amd64 | new: never built | built | 2.0s |")
    assert [row.split(" | ")[0] for row in rows[1:]] == [f"| //lang:m{n:03d}" for n in range(99)]
    assert "_51 more of //lang not shown._" in text
    assert "| 151 | 0 | 0 | 0 | 0 | 0 |" in text


def test_ci_plan_appends_its_waves_and_the_stale_builds_with_their_reasons(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": 'platforms = ["linux/amd64", "linux/arm64"]\n',
            "BUILD.images": (
                'image(name = "base", dockerfile = "base.Dockerfile")\n'
                'image(name = "app", dockerfile = "app.Dockerfile", parents = {"BASE": ":base"})\n'
            ),
            "base.Dockerfile": "FROM scratch\nCOPY a.txt /\n",
            "app.Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY a.txt /b.txt\n",
            "a.txt": "a\n",
        },
    )
    path = tmp_path / "summary.md"
    result = bt("ci", "plan", "//...", cwd=root, env={"GITHUB_STEP_SUMMARY": str(path)})
    assert result.returncode == 0, result.stderr
    assert path.read_text() == (
        "### bt ci plan //...\n\n"
        "4 stale platform builds in 2 waves: 4 jobs, then merge.\n\n"
        "| wave | jobs | builds |\n|---:|---:|---:|\n| 1 | 2 | 2 |\n| 2 | 2 | 2 |\n\n"
        "#### Stale builds\n\n"
        "**//** (4)\n\n"
        "| build | platform | reason | wave / job |\n|---|---|---|---|\n"
        "| //:app | linux/amd64 | new: never built | 2 / w2-linux-amd64-001 |\n"
        "| //:app | linux/arm64 | new: never built | 2 / w2-linux-arm64-001 |\n"
        "| //:base | linux/amd64 | new: never built | 1 / w1-linux-amd64-001 |\n"
        "| //:base | linux/arm64 | new: never built | 1 / w1-linux-arm64-001 |\n\n"
    )


def test_merge_appends_its_tags_with_counts_by_status() -> None:

    app, lib = parse_label("//:app"), parse_label("//lib:core")
    report = MergeReport(
        tags=(
            TagOutcome(app, "r.example/app:1", "created", "sha256:" + "1" * 64),
            TagOutcome(app, "r.example/app:latest", "updated", "sha256:" + "1" * 64, "sha256:0"),
            TagOutcome(lib, "r.example/core:1", "unchanged", "sha256:" + "2" * 64),
        ),
        partial=((lib, ("linux/arm64",)),),
        skipped=(),
    )
    assert summary.merge_markdown(("//...",), report, dry_run=False) == (
        "### bt merge //...\n\n"
        "3 tags: 1 created, 1 updated, 1 unchanged.\n\n"
        "**//** (2)\n\n"
        "| image | tag | status | digest |\n|---|---|---|---|\n"
        "| //:app | r.example/app:1 | created | `sha256:111111111111` |\n"
        "| //:app | r.example/app:latest | updated | `sha256:111111111111` |\n\n"
        "**//lib** (1)\n\n"
        "| image | tag | status | digest |\n|---|---|---|---|\n"
        "| //lib:core | r.example/core:1 | unchanged | `sha256:222222222222` |\n\n"
        "- `//lib:core`: partial index, without linux/arm64"
    )


@pytest.mark.engine
def test_ci_merge_appends_what_it_recorded_the_tags_it_put_and_the_builds_the_registry_lacks(
    tmp_path: Path, engine: str, registry: str
) -> None:
    url = f"{registry}/bt-summary-{uuid.uuid4().hex[:12]}"
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": (
                f'platforms = ["{AMD}"]\n[registry]\nurl = "{url}"\npush = true\n'
                f'[builders."*"]\nhost = "{engine}"\nnetwork = "none"\n'
            ),
            "BUILD.images": 'image(name = "solo")\nimage(name = "other")\n',
            "Dockerfile": "FROM scratch\nCOPY a.txt /\n",
            "a.txt": uuid.uuid4().hex,
        },
    )
    bt("build", "//:solo", cwd=root, check=True)  # recorded here, so none from the registry
    path = tmp_path / "summary.md"

    result = bt("ci", "merge", "//...", "--event", "push", cwd=root, env={STEP: str(path)})

    assert result.returncode == 1, result.stderr  # //:other was never pushed
    lock = json.loads((root / "images.lock").read_text())
    index = lock["images"]["//:solo"]["digest"]
    assert path.read_text() == (
        "### bt ci merge //...\n\n"
        "0 platform builds recorded from the registry, 1 missing.\n\n"
        "1 tags: 0 created, 0 updated, 1 unchanged.\n\n"
        "**//** (1)\n\n"
        "| image | tag | status | digest |\n|---|---|---|---|\n"
        f"| //:solo | {url}/solo:solo | unchanged | `{index[:19]}` |\n\n"
        f"- missing: `//:other` {AMD} (its job failed or did not run)\n\n"
    )
