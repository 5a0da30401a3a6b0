"""The target graph kept between runs: reused while unchanged, never stale."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from btrun import keep_mtime, write_tree

from buildtool.plan.session import Session
from buildtool.workspace.analysis import Analyses
from buildtool.workspace.graphcache import load_kept_graph
from buildtool.workspace.labels import Label

FILES = {
    ".cache-spec": 'platforms = ["linux/amd64"]\n\n[registry]\nurl = "reg.example/ws"\n',
    "BUILD.images": (
        'image(name = "base", args = {"V": "1"})\n'
        'image(name = "app", dockerfile = "App", inputs = glob(["in/*.txt"]))\n'
    ),
    "Dockerfile": "FROM scratch\nARG V\nCOPY top.txt /\n",
    "App": "FROM scratch\nCOPY in/ /in/\n",
    "top.txt": "top\n",
    "in/a.txt": "a\n",
}


def graph_of(root: Path) -> dict[str, tuple[object, ...]]:
    session = Session(root)
    graph = session.graph
    session.save()  # as a command that succeeded does
    return {
        str(label): (target.args, target.platforms, target.inputs, graph.parent_labels(label))
        for label, target in graph.targets.items()
    }


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = write_tree(tmp_path / "ws", FILES)
    graph_of(root)  # evaluates and keeps the graph
    return root


def test_an_unchanged_workspace_reuses_the_kept_graph(workspace: Path) -> None:
    session = Session(workspace)
    kept = load_kept_graph(session.config, Analyses(session.config))
    assert kept is not None
    assert kept[0] == session.graph
    assert kept[0].targets[Label("", "base")].args == (("V", "1"),)


def test_editing_build_images_is_seen_even_with_its_old_mtime(workspace: Path) -> None:
    keep_mtime(workspace / "BUILD.images", FILES["BUILD.images"].replace('"1"', '"2"'))
    assert graph_of(workspace)["//:base"] == ((("V", "2"),), ("linux/amd64",), None, ())


def test_a_build_file_added_in_a_new_directory_is_seen(workspace: Path) -> None:
    write_tree(workspace, {"sub/BUILD.images": 'image(name = "x", context = "..")\n'})
    assert "//sub:x" in graph_of(workspace)


def test_editing_cache_spec_is_seen(workspace: Path) -> None:
    spec = workspace / ".cache-spec"
    keep_mtime(spec, spec.read_text().replace("linux/amd64", "linux/arm64"))
    assert graph_of(workspace)["//:base"] == ((("V", "1"),), ("linux/arm64",), None, ())


def test_a_file_that_a_glob_now_finds_is_seen(workspace: Path) -> None:
    write_tree(workspace, {"in/b.txt": "b\n"})
    assert graph_of(workspace)["//:app"] == ((), ("linux/amd64",), ("in/a.txt", "in/b.txt"), ())


def test_a_dockerfile_that_now_names_a_workspace_image_adds_the_inferred_parent(
    workspace: Path,
) -> None:
    keep_mtime(workspace / "App", "FROM reg.example/ws/base:base\nCOPY in/ /in/\n")
    assert graph_of(workspace)["//:app"][3] == (Label("", "base"),)


def test_every_field_of_every_target_survives_the_round_trip(tmp_path: Path) -> None:
    """A field added to ImageTarget and forgotten by the encoding would be silently reset to its
    default by every warm run: here each field holds a value other than its default."""

    from buildtool.secrets import SecretSource
    from buildtool.workspace.graph import TargetGraph
    from buildtool.workspace.graphcache import _decode_graph, _encode_graph
    from buildtool.workspace.target import ImageTarget, Location, NamedContext

    target = ImageTarget(
        label=Label("pkg", "app"),
        context="pkg",
        dockerfile="pkg/Dockerfile",
        stage="final",
        args=(("V", "1"),),
        parents=(("BASE", Label("", "base")),),
        platforms=("linux/amd64",),
        tags=("latest",),
        repository="reg.example/app",
        inputs=("pkg/a.txt",),
        tests=("true", ("cat", "/a.txt")),
        location=Location("pkg/BUILD.images", 3),
        aliases=("reg.example/app:1",),
        secrets=(SecretSource("tok", "env", "HF_TOKEN"),),
        annotations=(("org.opencontainers.image.title", "app"),),
        contexts=(NamedContext("shared", "dir", "lib"), NamedContext("base", "target", "//:b")),
        inputs_location=Location("pkg/BUILD.images", 5),
    )
    missing = object()  # a field without a default
    defaults = {
        name: ImageTarget._field_defaults.get(name, missing) for name in ImageTarget._fields
    }
    assert all(getattr(target, name) != default for name, default in defaults.items())
    graph = TargetGraph({target.label: target}, {}, {})
    packed = msgpack.packb(_encode_graph(graph), use_bin_type=True)
    raw = msgpack.unpackb(packed, raw=False, use_list=False, strict_map_key=False)
    assert _decode_graph(raw) == graph


def test_a_new_cache_spec_setting_discards_the_kept_graph(workspace: Path) -> None:
    spec = workspace / ".cache-spec"
    spec.write_text(spec.read_text() + '\n[secrets]\ntok = {env = "HF_TOKEN"}\n')
    session = Session(workspace)
    assert load_kept_graph(session.config, Analyses(session.config)) is None


def test_a_search_found_racy_is_kept_once_it_is_not(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from buildtool.state.cachedir import CacheDir
    from buildtool.workspace import graphcache, loader

    config = Session(workspace).config
    path = CacheDir(config.cache_dir).graph
    assert msgpack.unpackb(path.read_bytes())["searched"] is None  # saved just after mkdir
    monkeypatch.setattr(graphcache, "RACY_WINDOW_NS", 0)
    assert load_kept_graph(config, Analyses(config)) is not None  # searched again, then kept
    searched = msgpack.unpackb(path.read_bytes())["searched"]
    assert [row[0] for row in searched] == [".", "in"]
    searches: list[Path] = []
    find = loader.find_build_files
    monkeypatch.setattr(loader, "find_build_files", lambda root, *a: searches.append(root))
    assert load_kept_graph(config, Analyses(config)) is not None
    assert searches == []  # the kept stats vouch for the search
    monkeypatch.setattr(loader, "find_build_files", find)
    (workspace / "in" / "BUILD.images").write_text('image(name = "x")\n')
    assert load_kept_graph(config, Analyses(config)) is None
