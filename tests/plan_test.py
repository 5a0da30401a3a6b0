"""``bt plan`` and ``bt why`` on the example workspace, run as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from btrun import bt, new_workspace, record_all_as_built


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return new_workspace(tmp_path, monkeypatch)


def plan_json(root: Path, *args: str) -> list[dict[str, object]]:
    return json.loads(bt("plan", *args, "--format", "json", cwd=root, check=True).stdout)  # type: ignore[no-any-return]


def test_fresh_copy_plans_all_390_builds_parents_first(workspace: Path) -> None:
    plan = plan_json(workspace, "//...")
    assert len(plan) == 390
    assert all(p["stale"] and p["reason"] == "new: never built" for p in plan)
    position = {(p["label"], p["platform"]): i for i, p in enumerate(plan)}
    for p in plan:
        for parent in p["parents"]:  # type: ignore[attr-defined]
            assert position[(parent, p["platform"])] < position[(p["label"], p["platform"])]
    assert set(plan[0]) >= {"label", "platform", "key", "stale", "reason", "parents"}


def test_after_recording_editing_zh_alignment_stales_exactly_the_10_zh_builds(
    workspace: Path,
) -> None:
    record_all_as_built(workspace)
    assert plan_json(workspace, "//...") == []
    zh = workspace / "docker/align/zh/alignment.bin"
    old = bt("why", "//matrix:large-v3-zh", "--platform", "linux/arm64", cwd=workspace).stdout
    assert "up to date" in old
    with zh.open("ab") as f:
        f.write(b"retrained")
    plan = plan_json(workspace, "//...")
    assert sorted((p["label"], p["platform"]) for p in plan) == sorted(
        (f"//matrix:{m}-zh", platform)
        for m in ("tiny", "base", "small", "medium", "large-v3")
        for platform in ("linux/amd64", "linux/arm64")
    )
    assert {p["reason"] for p in plan} == {"inputs changed: docker/align/zh/alignment.bin"}
    text = bt("plan", "//...", cwd=workspace, check=True)
    assert len(text.stdout.splitlines()) == 10
    assert "10 of 390 platform builds stale" in text.stderr


def test_why_names_the_changed_file_with_both_digests(workspace: Path) -> None:
    from buildtool.state.hashing import digest_file

    zh = workspace / "docker/align/zh/alignment.bin"
    old_digest = digest_file(str(zh))
    record_all_as_built(workspace)
    with zh.open("ab") as f:
        f.write(b"retrained")
    new_digest = digest_file(str(zh))
    out = bt("why", "//matrix:large-v3-zh", "--platform", "linux/arm64", cwd=workspace, check=True)
    assert (
        f"changed docker/align/zh/alignment.bin: blake3:{old_digest} -> blake3:{new_digest}"
        in out.stdout
    )
    assert out.stdout.startswith("//matrix:large-v3-zh linux/arm64: stale")


MODEL_STAGE_LINE = "COPY models/${WHISPER_MODEL}/ /opt/whisperx/models/${WHISPER_MODEL}/\n"


def edit_model_stage(root: Path) -> int:
    """Add an instruction to the model cache stage of the example's Dockerfile; its line."""
    dockerfile = root / "docker/Dockerfile"
    text = dockerfile.read_text()
    assert MODEL_STAGE_LINE in text
    dockerfile.write_text(
        text.replace(MODEL_STAGE_LINE, MODEL_STAGE_LINE + "LABEL maintainer=me\n")
    )
    before = text[: text.index(MODEL_STAGE_LINE) + len(MODEL_STAGE_LINE)]
    return before.count("\n") + 1


def test_why_shows_args_dockerfile_lines_and_parents(workspace: Path) -> None:
    record_all_as_built(workspace)
    line = edit_model_stage(workspace)
    out = bt("why", "//matrix:tiny-en", "--platform", "linux/amd64", cwd=workspace, check=True)
    assert "parent //model:tiny (LOAD_WHISPER_STAGE) changed: key" in out.stdout
    text = bt("why", "//model:tiny", "--platform", "linux/amd64", cwd=workspace, check=True).stdout
    # The instruction that changed, by stage, keyword and line.
    assert (
        f"Dockerfile docker/Dockerfile changed: stage load_whisper: LABEL at line {line} added"
        in text
    )


def test_a_model_stage_edit_stales_what_reaches_that_stage(workspace: Path) -> None:
    record_all_as_built(workspace)
    edit_model_stage(workspace)
    plan = {(p["label"], p["platform"]): p["reason"] for p in plan_json(workspace, "//...")}
    assert plan[("//model:tiny", "linux/amd64")] == "Dockerfile changed"
    assert plan[("//standalone:base-en", "linux/amd64")] == "Dockerfile changed"
    assert plan[("//matrix:tiny-en", "linux/amd64")] == "parent //model:tiny changed"
    assert plan[("//distil:en", "linux/arm64")] == "parent //model:distil-large-v3 changed"
    # Every build but the two bases', which do not reach the model stage.
    assert len(plan) == 2 * (6 + 1 + 185 + 1)


def test_why_a_pattern_explains_each_platform_build_it_matches(workspace: Path) -> None:
    record_all_as_built(workspace)
    with (workspace / "docker/align/zh/alignment.bin").open("ab") as f:
        f.write(b"retrained")
    query = bt("query", "//matrix:all", "--platforms", cwd=workspace, check=True).stdout
    matches = query.splitlines()
    assert len(matches) == 2 * 185
    out = bt("why", "//matrix:all", cwd=workspace, check=True).stdout
    blocks = out.rstrip("\n").split("\n\n")
    printed = [block.splitlines()[0].rsplit(":", 1)[0] for block in blocks]  # LABEL PLATFORM
    assert sorted(printed) == sorted(matches)
    stale = {m for m in matches if m.split()[0].endswith("-zh")}
    assert len(stale) == 10
    assert [block.splitlines()[0] for block in blocks] == [
        f"{m}: {'stale' if m in stale else 'up to date'}" for m in printed
    ]
    for block in blocks:
        changed = "changed docker/align/zh/alignment.bin: blake3:" in block
        assert changed == (block.splitlines()[0].endswith(": stale")), block

    everything = bt("why", "//...", "--platform", "linux/arm64", cwd=workspace, check=True)
    assert everything.stdout.count("\n\n") + 1 == 195  # every image, on one platform
    assert all(" linux/arm64: " in b.splitlines()[0] for b in everything.stdout.split("\n\n"))


def test_why_for_a_platform_no_match_builds_for_is_one_line_exit_2(workspace: Path) -> None:
    result = bt("why", "//matrix:tiny-en", "--platform", "linux/s390x", cwd=workspace)
    assert (result.returncode, result.stderr) == (
        2,
        "//matrix:tiny-en does not build for linux/s390x (linux/amd64, linux/arm64)\n",
    )


def test_plan_filters_platforms_and_includes_parents(workspace: Path) -> None:
    plan = plan_json(workspace, "//matrix:tiny-en", "--platform", "linux/arm64")
    assert [(p["label"], p["platform"]) for p in plan] == [
        ("//base:no_model", "linux/arm64"),
        ("//model:tiny", "linux/arm64"),
        ("//matrix:tiny-en", "linux/arm64"),
    ]


def test_plan_all_lists_fresh_builds_too(workspace: Path) -> None:
    record_all_as_built(workspace)
    plan = plan_json(workspace, "//distil:en", "--all")
    assert [(p["label"], p["stale"], p["reason"]) for p in plan[-2:]] == [
        ("//distil:en", False, "up to date"),
        ("//distil:en", False, "up to date"),
    ]


BAD_INPUT = [
    ("missing COPY source", "COPY base/rootfs/ /\n", "COPY nothing-here.txt /\n"),
    ("Dockerfile syntax error", "WORKDIR /app\n", "WORKDIR\n"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "old", "new"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_dockerfile_input_is_one_line_exit_2(
    workspace: Path, what: str, old: str, new: str
) -> None:
    dockerfile = workspace / "docker/Dockerfile"
    text = dockerfile.read_text()
    assert old in text
    dockerfile.write_text(text.replace(old, new))
    prefix = f"docker/Dockerfile:{text[: text.index(old)].count(chr(10)) + 1}:"
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    result = bt("plan", "//...", cwd=workspace)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(prefix)
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*")) == before


def test_symlink_escaping_the_context_is_one_line_exit_2(workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("s")
    (workspace / "docker/distil/prompt.txt").unlink()
    (workspace / "docker/distil/prompt.txt").symlink_to(outside / "secret.txt")
    result = bt("plan", "//...", cwd=workspace)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "docker/distil/prompt.txt" in result.stderr or "prompt.txt" in result.stderr
