"""File sets: what a build's key covers is exactly what ``bt inputs`` lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from btrun import bt, new_workspace, write_tree

from buildtool.plan.keys import KeyComputer
from buildtool.plan.session import Session
from buildtool.state.cachedir import CacheDir
from buildtool.state.hashing import StatCache
from buildtool.workspace.labels import parse_label

BUILD = ("//matrix:large-v3-zh", "linux/arm64")


def key_of(root: Path, label: str, platform: str) -> str:
    session = Session(root)
    config, graph = session.config, session.graph
    cache = StatCache.load(CacheDir(config.cache_dir).stat_cache)
    return KeyComputer(config, graph, cache, session.analyses).key((parse_label(label), platform))


def listed_inputs(root: Path, label: str, platform: str) -> dict[str, dict[str, object]]:
    out = bt("inputs", label, "--platform", platform, "--format", "json", cwd=root, check=True)
    data = json.loads(out.stdout)
    assert data["label"] == label and data["platform"] == platform
    return {row["path"]: row for row in data["inputs"]}


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return new_workspace(tmp_path, monkeypatch)


def test_editing_a_listed_file_changes_the_key_and_editing_any_other_does_not(
    workspace: Path,
) -> None:
    listed = listed_inputs(workspace, *BUILD)
    files = {p: row for p, row in listed.items() if row["kind"] in ("file", "global")}
    # Its own files, and through its parents' keys theirs, each saying which parent.
    assert files["docker/align/zh/vocab.json"]["origin"] == "docker/Dockerfile:55 ('align/zh')"
    assert str(files["docker/models/large-v3/config.json"]["origin"]).startswith(
        "parent //model:large-v3 (LOAD_WHISPER_STAGE): "
    )
    original = key_of(workspace, *BUILD)
    context_files = sorted(
        str(p.relative_to(workspace)) for p in (workspace / "docker").rglob("*") if p.is_file()
    )
    dockerfiles = {p for p, row in listed.items() if row["kind"] == "dockerfile"}
    changed_keys: set[str] = set()
    for rel in context_files:
        if rel in dockerfiles:
            continue  # edits of the Dockerfile count by meaning: see the mutation suite
        path = workspace / rel
        before = path.read_bytes()
        path.write_bytes(before + b"\n#edit")
        try:
            if key_of(workspace, *BUILD) != original:
                changed_keys.add(rel)
        finally:
            path.write_bytes(before)
    listed_files = {p for p in files if not p.startswith(".")}
    assert changed_keys == listed_files


def test_inputs_name_the_dockerfile_line_that_reads_each_file(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": 'platforms = ["linux/amd64"]\n',
            "BUILD.images": 'image(name = "app")\n',
            "Dockerfile": "FROM scratch\n# a comment\nCOPY a.txt /\nCOPY src/ /src/\n",
            "a.txt": "a",
            "src/m.py": "m",
            "unrelated.txt": "u",
        },
    )
    out = bt("inputs", "//:app", "--format", "json", cwd=root, check=True)
    rows = {row["path"]: row["origin"] for row in json.loads(out.stdout)["inputs"]}
    assert rows == {
        "Dockerfile": "the Dockerfile (the stages the build reaches)",
        "a.txt": "Dockerfile:3 ('a.txt')",
        "src": "Dockerfile:4 ('src')",
        "src/m.py": "Dockerfile:4 ('src')",
    }


def test_inputs_state_a_whole_context_fallback_and_its_reason(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": 'platforms = ["linux/amd64"]\n',
            "BUILD.images": 'image(name = "app")\n',
            "Dockerfile": "FROM alpine\nCOPY ${HOME}/a.txt /\n",
            "a.txt": "a",
        },
    )
    out = bt("inputs", "//:app", cwd=root, check=True).stdout
    assert out.splitlines()[0].startswith("# the whole build context counts, because ")
    assert "variable HOME is not set in the Dockerfile and may be set by image alpine" in out
    assert " - a.txt  <- whole context (line 2: cannot resolve COPY source" in out


def test_inputs_of_a_pattern_is_a_clean_error(workspace: Path) -> None:
    out = bt("inputs", "//matrix:all", "--platform", "linux/amd64", cwd=workspace)
    assert out.returncode == 2
    assert out.stderr.strip() == "expected one image label, got '//matrix:all' (185 targets)"


def test_query_json_fills_inputs_from_the_file_sets(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": 'platforms = ["linux/amd64", "linux/arm64"]\n',
            "BUILD.images": 'image(name = "app")\n',
            "Dockerfile": "FROM scratch\nCOPY a.txt /\nCOPY src/ /src/\n",
            "a.txt": "a",
            "src/m.py": "m",
            "unrelated.txt": "u",
        },
    )
    out = bt("query", "//...", "--output", "json", cwd=root, check=True)
    (described,) = json.loads(out.stdout)
    files = ["Dockerfile", "a.txt", "src", "src/m.py"]
    assert described["inputs"] == {"linux/amd64": files, "linux/arm64": files}
    assert described["explicit_inputs"] is None
