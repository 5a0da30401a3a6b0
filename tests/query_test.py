"""``bt query`` on the example workspace, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from btrun import REPO, bt

LANGUAGES = 37
MODELS = ("tiny", "base", "small", "medium", "large-v3")


def lines(text: str) -> list[str]:
    return text.splitlines()


def test_everything_is_195_images_and_390_platform_builds() -> None:
    labels = lines(bt("query", "//...", cwd=REPO, check=True).stdout)
    assert len(labels) == 195
    assert labels == sorted(labels)
    assert sum(label.startswith("//matrix:") for label in labels) == LANGUAGES * len(MODELS)
    assert [lb for lb in labels if lb.startswith("//model:")] == sorted(
        f"//model:{m}" for m in (*MODELS, "distil-large-v3")
    )
    assert [lb for lb in labels if lb.startswith(("//base:", "//distil:", "//standalone:"))] == [
        "//base:no_model",
        "//base:runtime",
        "//distil:en",
        "//standalone:base-en",
    ]
    builds = lines(bt("query", "--platforms", "//...", cwd=REPO, check=True).stdout)
    assert len(builds) == 390
    assert {line.split()[1] for line in builds} == {"linux/amd64", "linux/arm64"}


def test_the_standalone_build_has_no_parents_and_no_dependents() -> None:
    out = bt("query", "deps(//standalone:base-en)", cwd=REPO, check=True).stdout
    assert lines(out) == ["//standalone:base-en"]
    out = bt("query", "rdeps(//..., //standalone:base-en)", cwd=REPO, check=True).stdout
    assert lines(out) == ["//standalone:base-en"]


def test_deps_of_a_matrix_image_are_its_model_and_the_base() -> None:
    out = bt("query", "deps(//matrix:large-v3-zh)", cwd=REPO, check=True).stdout
    assert lines(out) == ["//base:no_model", "//matrix:large-v3-zh", "//model:large-v3"]


def test_rdeps_of_a_model_are_its_37_matrix_images_and_itself() -> None:
    out = lines(bt("query", "rdeps(//..., //model:tiny)", cwd=REPO, check=True).stdout)
    matrix = [lb for lb in out if lb.startswith("//matrix:")]
    assert len(matrix) == LANGUAGES
    assert all(lb.startswith("//matrix:tiny-") for lb in matrix)
    assert set(out) - set(matrix) == {"//model:tiny"}


def test_rdeps_respects_the_universe() -> None:
    out = lines(bt("query", "rdeps(//base/..., //base:no_model)", cwd=REPO, check=True).stdout)
    assert out == ["//base:no_model"]


def test_depth_limits_deps() -> None:
    out = lines(bt("query", "deps(//matrix:tiny-en, 1)", cwd=REPO, check=True).stdout)
    assert out == ["//matrix:tiny-en", "//model:tiny"]


def test_set_operators() -> None:
    out = bt("query", "deps(//matrix:tiny-en) - //matrix/...", cwd=REPO, check=True).stdout
    assert lines(out) == ["//base:no_model", "//model:tiny"]
    out = bt("query", "//model:all ^ deps(//distil:en)", cwd=REPO, check=True).stdout
    assert lines(out) == ["//model:distil-large-v3"]


def test_package_patterns_and_groups() -> None:
    assert len(lines(bt("query", "//model:all", cwd=REPO, check=True).stdout)) == 6
    out = bt("query", "//:release", cwd=REPO, check=True).stdout
    assert lines(out) == ["//base:no_model", "//distil:en", "//matrix:large-v3-zh"]


def test_json_output_describes_each_target() -> None:
    out = bt("query", "--output", "json", "//matrix:large-v3-zh", cwd=REPO, check=True).stdout
    (obj,) = json.loads(out)
    assert obj["label"] == "//matrix:large-v3-zh"
    assert obj["platforms"] == ["linux/amd64", "linux/arm64"]
    assert obj["parents"] == {"LOAD_WHISPER_STAGE": "//model:large-v3"}
    assert obj["dockerfile"] == "docker/Dockerfile"
    assert obj["context"] == "docker"
    assert obj["args"] == {"LANG": "zh"}
    assert obj["repository"] == "matrix"
    assert obj["tags"] == ["large-v3-zh"]


def test_dot_output_draws_parent_edges() -> None:
    out = bt("query", "--output", "dot", "deps(//matrix:tiny-en)", cwd=REPO, check=True).stdout
    assert out.startswith("digraph images {")
    assert '"//matrix:tiny-en" -> "//model:tiny" [label="LOAD_WHISPER_STAGE"];' in out
    assert '"//model:tiny" -> "//base:no_model" [label="NO_MODEL_STAGE"];' in out


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "//matrix:large-v3-zz",
            "no target //matrix:large-v3-zz (did you mean //matrix:large-v3-zh?)",
        ),
        ("//nothing/...", "pattern '//nothing/...' matches no targets"),
        ("deps(//matrix:tiny-en", "unexpected end of expression"),
    ],
)
def test_bad_queries_exit_2_with_one_line(expression: str, message: str) -> None:
    result = bt("query", expression, cwd=REPO)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert message in result.stderr


def test_dash_c_runs_as_if_started_in_the_directory(tmp_path: Path) -> None:
    out = bt("-C", str(REPO / "docker"), "query", "//distil:all", cwd=tmp_path, check=True)
    assert lines(out.stdout) == ["//distil:en"]
