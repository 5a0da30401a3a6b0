"""`bt import-bake` on bake's documented matrix examples and a docker-whisperX-shaped print
(fixtures in tests/bake/, written by hand as `docker buildx bake --print` prints them): the
BUILD.images it writes loads, loops where the matrix was, and declares the same targets,
platforms, named contexts and tags."""

from __future__ import annotations

import json
from pathlib import Path

from btrun import bt, write_tree

from buildtool.workspace.bake import build_file, read_prints

FIXTURES = Path(__file__).parent / "bake"

# One Dockerfile for the documented examples: stages foo and bar, a VERSION arg.
APP_FILES = {
    ".cache-spec": 'platforms = ["linux/amd64"]\n',
    "Dockerfile": "FROM scratch AS foo\nARG VERSION\nCOPY foo.txt /\n"
    "FROM scratch AS bar\nARG VERSION\nCOPY bar.txt /\n",
    "foo.txt": "foo\n",
    "bar.txt": "bar\n",
}

# docker-whisperX's chain as bake builds it, unedited: each stage starts from the one before by
# name, which bake's named contexts replace with the parent target's image.
WHISPERX_FILES = {
    ".cache-spec": 'platforms = ["linux/amd64", "linux/arm64"]\n',
    "docker/Dockerfile": "FROM scratch AS no_model\nCOPY base.txt /base.txt\n"
    "FROM no_model AS load_whisper\nARG WHISPER_MODEL\nCOPY models/${WHISPER_MODEL}.txt /m\n"
    "FROM load_whisper AS final\nARG LANG\nARG BUILD_DATE\nCOPY align/${LANG}.txt /l\n",
    "docker/base.txt": "base\n",
    **{f"docker/models/{m}.txt": m for m in ("tiny", "base", "large-v3")},
    **{f"docker/align/{lang}.txt": lang for lang in ("en", "fr", "zh", "ja")},
}


def imported(name: str) -> str:
    path = FIXTURES / name
    return build_file(read_prints([(name, path.read_text())]), name)


def bake_platform_builds(name: str, default: str = "linux/amd64") -> list[str]:
    """`LABEL PLATFORM` for every target the print declares, as `bt query --platforms`."""
    targets = json.loads((FIXTURES / name).read_text())["target"]
    return sorted(
        f"//:{target} {platform}"
        for target, raw in targets.items()
        for platform in raw.get("platforms") or [default]
    )


def query_imported(tmp_path: Path, name: str, files: dict[str, str]) -> list[str]:
    write_tree(tmp_path, files)
    result = bt("import-bake", str(FIXTURES / name), "-o", "BUILD.images", cwd=tmp_path, check=True)
    assert result.stdout == ""
    listed = bt("query", "//...", "--platforms", cwd=tmp_path, check=True)
    return listed.stdout.splitlines()


def test_a_matrix_over_the_stage_becomes_a_loop_over_the_stages(tmp_path: Path) -> None:
    text = imported("matrix-stage.json")
    assert 'STAGES = ["foo", "bar"]\nfor stage in STAGES:\n    image(\n' in text
    assert '        name = "app-{}".format(stage),\n        context = ".",\n' in text
    assert "        stage = stage,\n" in text
    assert text.count("image(") == 1
    assert 'group(name = "app", targets = ["//:app-foo", "//:app-bar"])' in text
    assert query_imported(tmp_path, "matrix-stage.json", APP_FILES) == bake_platform_builds(
        "matrix-stage.json"
    )


def test_a_matrix_over_two_axes_becomes_nested_loops_with_bakes_name_spelling(
    tmp_path: Path,
) -> None:
    text = imported("matrix-axes.json")
    assert (
        'STAGES = ["foo", "bar"]\nVERSIONS = ["1.0", "2.0"]\n'
        "for stage in STAGES:\n    for version in VERSIONS:\n"
    ) in text
    assert 'name = "app-{}-{}".format(stage, version.replace(".", "-")),' in text
    assert 'args = {"VERSION": version},' in text
    assert query_imported(tmp_path, "matrix-axes.json", APP_FILES) == bake_platform_builds(
        "matrix-axes.json"
    )


def test_a_matrix_of_items_becomes_a_loop_over_rows(tmp_path: Path) -> None:
    text = imported("matrix-items.json")
    assert 'for stage, version in [("foo", "1.0"), ("bar", "2.0")]:' in text
    assert query_imported(tmp_path, "matrix-items.json", APP_FILES) == bake_platform_builds(
        "matrix-items.json"
    )


def test_a_whisperx_shaped_print_keeps_its_targets_platforms_parents_and_tags(
    tmp_path: Path,
) -> None:
    text = imported("whisperx.json")
    # base -> model loop -> models x languages, bake's `target:` contexts as labels
    assert text.index('name = "no_model"') < text.index("for whisper_model in WHISPER_MODELS:")
    assert 'WHISPER_MODELS = ["tiny", "base", "large-v3"]' in text
    assert "for whisper_model in WHISPER_MODELS:\n    for lang in LANGS:\n" in text
    assert 'contexts = {"load_whisper": "//:model-{}".format(whisper_model)},' in text
    assert 'contexts = {"no_model": "//:no_model"},' in text
    assert "ARG" not in text and "parents" not in text  # no Dockerfile edit asked for
    assert "# bake cache-from, cache-to: dropped (a build whose key is recorded never runs)" in text
    assert "# Tags were pushed to ghcr.io: set [registry] url in .cache-spec to it." in text
    assert "# bake labels: not imported" in text
    assert text.count("image(") == 3
    listed = query_imported(tmp_path, "whisperx.json", WHISPERX_FILES)
    assert listed == bake_platform_builds("whisperx.json")
    assert len(listed) == 2 * (1 + 3 + 12)
    deps = bt("query", "deps(//:large-v3-zh)", cwd=tmp_path, check=True).stdout.split()
    assert deps == ["//:large-v3-zh", "//:model-large-v3", "//:no_model"]
    record = json.loads(bt("query", "//:tiny-fr", "--output", "json", cwd=tmp_path).stdout)[0]
    assert (record["repository"], record["tags"]) == (
        "acme/whisperx",
        ["tiny-fr", "tiny-fr-latest"],
    )
    assert record["args"] == {"BUILD_DATE": "2024-01-01", "LANG": "fr", "WHISPER_MODEL": "tiny"}
    assert record["stage"] == "final"


def test_import_bake_reads_standard_input(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "buildtool", "import-bake"],
        input=(FIXTURES / "matrix-stage.json").read_text(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == imported("matrix-stage.json").replace(
        "matrix-stage.json", "`docker buildx bake --print` output (standard input)"
    )


def test_targets_that_do_not_follow_their_args_stay_separate() -> None:
    print_ = {
        "target": {
            "api": {"context": ".", "args": {"PORT": "80"}},
            "web": {"context": ".", "args": {"PORT": "8080"}},
        }
    }
    text = build_file(read_prints([("x.json", json.dumps(print_))]), "x.json")
    assert "for " not in text
    assert text.count("image(") == 2


def test_a_file_that_is_not_a_bake_print_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "bake.hcl").write_text('target "app" {}\n')
    result = bt("import-bake", "bake.hcl", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("bake.hcl: not the JSON `docker buildx bake --print` writes")
    assert len(result.stderr.splitlines()) == 1


def test_a_matrix_value_that_also_occurs_in_the_fixed_name_is_found_in_its_place() -> None:
    # "a" is also the first letter of "app": only the last one is the matrix's.
    print_ = {
        "target": {
            f"app-{v}": {"context": ".", "args": {"V": v}, "tags": [f"acme/app:{v}"]}
            for v in ("a", "b", "c")
        }
    }
    text = build_file(read_prints([("x.json", json.dumps(print_))]), "x.json")
    assert 'for v in VS:\n    image(\n        name = "app-{}".format(v),' in text
    assert "tags = [v]," in text


def test_contexts_map_one_to_one_and_foreign_kinds_are_named_in_a_comment() -> None:
    print_ = {
        "target": {
            "app": {
                "context": ".",
                "contexts": {
                    "base": "target:base",
                    "shared": "../shared",
                    "alpine": "docker-image://alpine:3.19",
                    "layout": "oci-layout:///tmp/layout",
                    "repo": "https://github.com/acme/repo.git",
                },
            },
            "base": {"context": "."},
        }
    }
    text = build_file(read_prints([("x.json", json.dumps(print_))]), "x.json")
    assert (
        '    contexts = {"alpine": "docker-image://alpine:3.19", "base": "//:base", '
        '"shared": "../shared"},\n'
    ) in text
    assert "# bake context layout = oci-layout:///tmp/layout: not imported\n" in text
    assert "# bake context repo = https://github.com/acme/repo.git: not imported\n" in text


def test_import_bake_into_a_directory_outside_any_workspace_makes_it_one(tmp_path: Path) -> None:
    files = {k: v for k, v in APP_FILES.items() if k != ".cache-spec"}
    write_tree(tmp_path / "new", files)
    result = bt(
        "import-bake",
        str(FIXTURES / "matrix-stage.json"),
        "-o",
        "BUILD.images",
        cwd=tmp_path / "new",
    )
    assert result.returncode == 0, result.stderr
    spec = tmp_path / "new" / ".cache-spec"
    assert result.stderr == (
        f"wrote {spec}, with no settings: it makes {tmp_path / 'new'} a bt workspace\n"
    )
    assert all(line.startswith("#") for line in spec.read_text().splitlines())
    listed = bt("query", "//...", cwd=tmp_path / "new", check=True)
    assert listed.stdout.splitlines() == ["//:app-bar", "//:app-foo"]
    again = bt(
        "import-bake",
        str(FIXTURES / "matrix-stage.json"),
        "-o",
        "BUILD.images",
        cwd=tmp_path / "new",
    )
    assert (again.returncode, again.stderr) == (0, "")  # a workspace already: nothing more
