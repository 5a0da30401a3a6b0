"""Parents inferred from image references: a reached FROM (or --from, from=) naming an image the
workspace builds makes that target a parent, as if declared; declared parents' args are checked."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from btrun import bt, write_tree

from buildtool.plan.keys import KeyComputer
from buildtool.plan.session import Session
from buildtool.plan.stale import selected_builds
from buildtool.state.cachedir import CacheDir
from buildtool.state.hashing import StatCache
from buildtool.workspace.labels import Label

AMD, ARM = "linux/amd64", "linux/arm64"
SPEC = '[registry]\nurl = "127.0.0.1:5000/acme"\n'
CHILD = "ARG REGISTRY\nARG TAG\nFROM ${REGISTRY}/base:${TAG}\nCOPY child.txt /child.txt\n"
ARGS = '{"REGISTRY": "127.0.0.1:5000/acme", "TAG": "cpu"}'
BUILD = f"""\
image(name = "base", dockerfile = "base/Dockerfile", repository = "base", tags = ["cpu"])
image(name = "child", dockerfile = "child/Dockerfile", args = {ARGS})
image(name = "other", dockerfile = "other/Dockerfile")
"""
FILES = {
    ".cache-spec": 'platforms = ["linux/amd64"]\n' + SPEC,
    "BUILD.images": BUILD,
    "base/Dockerfile": "FROM scratch\nCOPY base.txt /base.txt\n",
    "child/Dockerfile": CHILD,
    "other/Dockerfile": "FROM scratch\nCOPY other.txt /other.txt\n",
    "base.txt": "base\n",
    "child.txt": "child\n",
    "other.txt": "other\n",
}


def workspace(tmp_path: Path, files: dict[str, str] | None = None) -> Path:
    return write_tree(tmp_path / "ws", {**FILES, **(files or {})})


def query(root: Path, expression: str) -> list[str]:
    return bt("query", expression, cwd=root, check=True).stdout.splitlines()


def error(root: Path) -> str:
    result = bt("query", "//...", cwd=root)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    return result.stderr.strip()


def keys(root: Path) -> dict[tuple[str, str], str]:
    session = Session(root)
    graph = session.graph
    cache = StatCache.load(CacheDir(session.config.cache_dir).stat_cache)
    computer = KeyComputer(session.config, graph, cache, session.analyses)
    return {(str(lb), p): computer.key((lb, p)) for lb, p in selected_builds(graph, graph.targets)}


def test_a_from_naming_a_workspace_image_makes_its_target_a_parent(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    assert "parents" not in (root / "BUILD.images").read_text()
    assert query(root, "deps(//:child)") == ["//:base", "//:child"]
    assert query(root, "rdeps(//..., //:base)") == ["//:base", "//:child"]
    assert query(root, "deps(//:other)") == ["//:other"]
    graph = Session(root).graph
    (parent,) = graph.parents_of(Label("", "child"), AMD)
    assert (parent.label, parent.name, parent.declared) == (
        Label("", "base"),
        "127.0.0.1:5000/acme/base:cpu",
        False,
    )
    assert parent.sites == ((3, "from", "127.0.0.1:5000/acme/base:cpu"),)
    plan = bt("plan", "//:child", "--format", "json", cwd=root, check=True).stdout
    assert '"//:base"' in plan


def test_editing_the_parents_input_changes_exactly_the_parent_and_the_child(
    tmp_path: Path,
) -> None:
    root = workspace(tmp_path)
    before = keys(root)
    (root / "base.txt").write_text("base, edited\n")
    after = keys(root)
    assert {build for build in before if before[build] != after[build]} == {
        ("//:base", AMD),
        ("//:child", AMD),
    }
    # A comment moves the FROM down a line: the key names the parent by reference, not line.
    (root / "child/Dockerfile").write_text("# the child\n\n" + CHILD)
    assert keys(root) == after


def test_copy_from_and_mount_from_a_workspace_image_make_parents(tmp_path: Path) -> None:
    base = "127.0.0.1:5000/acme/base:cpu"
    root = workspace(
        tmp_path,
        {
            "child/Dockerfile": f"FROM scratch\nCOPY --from={base} /base.txt /\n",
            "other/Dockerfile": f"FROM scratch\nRUN --mount=from={base},target=/b true\n",
        },
    )
    assert query(root, "rdeps(//..., //:base)") == ["//:base", "//:child", "//:other"]


def test_aliases_name_the_image_under_another_repository(tmp_path: Path) -> None:
    aliased = 'tags = ["cpu"], aliases = ["ghcr.io/acme/base:cpu"])'
    root = workspace(
        tmp_path,
        {
            "BUILD.images": BUILD.replace('tags = ["cpu"])', aliased),
            "other/Dockerfile": "FROM ghcr.io/acme/base:cpu\n",
        },
    )
    assert query(root, "rdeps(//..., //:base)") == ["//:base", "//:child", "//:other"]
    (root / "BUILD.images").write_text(BUILD.replace('tags = ["cpu"])', 'aliases = ["Bad"])'))
    assert error(root).startswith("BUILD.images:1: aliases: invalid image reference 'Bad'")


def test_references_compare_as_docker_resolves_them(tmp_path: Path) -> None:
    """With the registry docker.io/acme, ``acme/x`` and ``docker.io/acme/x:latest`` are one
    image; ``python`` is docker.io/library/python:latest, an image of no target."""
    build = """\
image(name = "x", dockerfile = "base/Dockerfile", repository = "x", tags = ["latest", "cpu"])
image(name = "hub", dockerfile = "child/Dockerfile", args = {"REGISTRY": "acme", "TAG": "cpu"})
image(name = "short", dockerfile = "short/Dockerfile")
image(name = "long", dockerfile = "long/Dockerfile")
image(name = "python", dockerfile = "python/Dockerfile")
"""
    files = {
        ".cache-spec": 'platforms = ["linux/amd64"]\n[registry]\nurl = "docker.io/acme"\n',
        "BUILD.images": build,
        "child/Dockerfile": CHILD.replace("/base:", "/x:"),
        "short/Dockerfile": "FROM acme/x\n",
        "long/Dockerfile": "FROM docker.io/acme/x:latest\n",
        "python/Dockerfile": "FROM python\n",
    }
    root = write_tree(tmp_path / "ws", {**FILES, **files})
    assert query(root, "rdeps(//..., //:x)") == ["//:hub", "//:long", "//:short", "//:x"]
    assert query(root, "deps(//:python)") == ["//:python"]


def test_parents_follow_the_platform_a_from_resolves_for(tmp_path: Path) -> None:
    build = """\
image(name = "base-amd64", dockerfile = "base/Dockerfile", repository = "base",
      tags = ["amd64"], platforms = ["linux/amd64"])
image(name = "base-arm64", dockerfile = "base/Dockerfile", repository = "base",
      tags = ["arm64"], platforms = ["linux/arm64"])
image(name = "child", dockerfile = "child/Dockerfile", platforms = ["linux/amd64", "linux/arm64"],
      args = {"REGISTRY": "127.0.0.1:5000/acme"})
"""
    child = "ARG REGISTRY\nFROM ${REGISTRY}/base:${TARGETARCH}\n"
    root = workspace(tmp_path, {"BUILD.images": build, "child/Dockerfile": child})
    graph = Session(root).graph
    child_label = Label("", "child")
    assert [p.label.name for p in graph.parents_of(child_label, AMD)] == ["base-amd64"]
    assert [p.label.name for p in graph.parents_of(child_label, ARM)] == ["base-arm64"]
    assert query(root, "deps(//:child)") == ["//:base-amd64", "//:base-arm64", "//:child"]
    before = keys(root)
    (root / "base.txt").write_text("edited\n")
    after = keys(root)
    # Each platform build of the child changes with its own parent's key.
    assert {build for build in before if before[build] != after[build]} == {
        ("//:base-amd64", AMD),
        ("//:base-arm64", ARM),
        ("//:child", AMD),
        ("//:child", ARM),
    }


def test_a_cycle_through_inferred_parents_is_reported_with_its_path(tmp_path: Path) -> None:
    build = """\
image(name = "a", dockerfile = "a/Dockerfile", repository = "a", tags = ["1"])
image(name = "b", dockerfile = "b/Dockerfile", repository = "b", tags = ["1"])
"""
    files = {
        "BUILD.images": build,
        "a/Dockerfile": "FROM 127.0.0.1:5000/acme/b:1\n",
        "b/Dockerfile": "# b\nFROM 127.0.0.1:5000/acme/a:1\n",
    }
    root = workspace(tmp_path, files)
    assert error(root) == (
        "BUILD.images:1: dependency cycle: //:a -> //:b (127.0.0.1:5000/acme/b:1, a/Dockerfile:1)"
        " -> //:a (127.0.0.1:5000/acme/a:1, b/Dockerfile:2)"
    )


def test_a_declared_parent_arg_no_from_uses_is_an_error_naming_it(tmp_path: Path) -> None:
    build = BUILD + 'image(name = "d", dockerfile = "d/Dockerfile", parents = {"BASE": ":base"})\n'
    files = {"BUILD.images": build, "d/Dockerfile": "ARG BASE\nFROM scratch\nCOPY child.txt /\n"}
    root = workspace(tmp_path, files)
    assert error(root) == (
        "BUILD.images:4: parents arg BASE of //:d is used by no FROM, COPY --from or RUN "
        "--mount=from= of the stages d/Dockerfile builds as a whole image reference "
        "(write FROM ${BASE})"
    )
    (root / "d/Dockerfile").write_text("ARG BASE\n\nFROM ${BASE}-slim\n")
    assert error(root) == (
        "d/Dockerfile:3: parents arg BASE of //:d is used only as part of the image reference "
        "'${BASE}-slim' (FROM); bt hands it the parent's exact image, so it must be the whole "
        "reference (FROM ${BASE})"
    )
    (root / "d/Dockerfile").write_text("ARG BASE\nFROM ${BASE}\n")
    assert query(root, "deps(//:d)") == ["//:base", "//:d"]


def test_a_workspace_image_named_through_an_unresolved_arg_is_an_error_with_a_hint(
    tmp_path: Path,
) -> None:
    build = BUILD.replace(ARGS, '{"REGISTRY": "127.0.0.1:5000/acme"}')
    root = workspace(tmp_path, {"BUILD.images": build})
    assert error(root) == (
        "child/Dockerfile:3: FROM ${REGISTRY}/base:${TAG} (resolves to "
        "'127.0.0.1:5000/acme/base:') may name 127.0.0.1:5000/acme/base:cpu, which //:base "
        "builds, but bt cannot resolve it statically: pass TAG in args = {...} of //:child"
    )


def test_a_tag_the_workspace_does_not_build_in_its_own_repository_is_an_error(
    tmp_path: Path,
) -> None:
    build = BUILD.replace('"TAG": "cpu"', '"TAG": "gpu"')
    root = workspace(tmp_path, {"BUILD.images": build})
    assert error(root) == (
        "child/Dockerfile:3: 127.0.0.1:5000/acme/base:gpu is in 127.0.0.1:5000/acme/base, which "
        "this workspace builds, but no target builds its tag 'gpu' (built: cpu)"
    )


def test_an_inferred_parent_must_build_the_childs_platform(tmp_path: Path) -> None:
    build = BUILD.replace("args = {", 'platforms = ["linux/amd64", "linux/arm64"], args = {')
    root = workspace(tmp_path, {"BUILD.images": build})
    assert error(root) == (
        "child/Dockerfile:3: //:child builds for linux/arm64 on 127.0.0.1:5000/acme/base:cpu, "
        "but //:base, which builds that image, has only linux/amd64"
    )


# ---------------------------------------------------------------------------------------------
# Real builds: the child builds on the image just built for its parent, whatever the tag says.

DOCKER = "/usr/bin/docker"


def docker(host: str, *args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    done = subprocess.run(
        [DOCKER, "-H", host, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def layers(host: str, ref: str) -> list[str]:
    out = docker(host, "image", "inspect", "--format", "{{json .RootFS.Layers}}", ref)
    return [str(layer) for layer in json.loads(out)]


@pytest.mark.engine
@pytest.mark.parametrize("backend", ["buildkit", "engine"])
def test_the_child_builds_on_its_parents_image_not_on_the_tag_it_names(
    tmp_path: Path, engine: str, registry: str, backend: str
) -> None:
    prefix = f"{registry}/t{uuid.uuid4().hex[:12]}"
    run = uuid.uuid4().hex
    spec = f'platforms = ["linux/amd64"]\n[registry]\nurl = "{prefix}"\ninsecure = true\npush = false\n'
    spec += f'[builders."*"]\nbackend = "{backend}"\nnetwork = "none"\n'
    root = workspace(
        tmp_path,
        {
            ".cache-spec": spec,
            "BUILD.images": BUILD.replace("127.0.0.1:5000/acme", prefix),
            "base.txt": f"base of run {run}\n",
            "child.txt": f"child of run {run}\n",
        },
    )
    # An older image under the very tag the child names, locally and in the registry.
    old = tmp_path / "old"
    write_tree(old, {"Dockerfile": "FROM scratch\nCOPY old.txt /\n", "old.txt": run})
    floating = f"{prefix}/base:cpu"
    docker(engine, "build", "--network=none", "-t", floating, ".", cwd=old)
    docker(engine, "push", floating)
    old_layers = layers(engine, floating)

    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = bt("build", "//:child", "--json", cwd=root, env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    finished = {
        json.loads(line)["label"]
        for line in result.stdout.splitlines()
        if line.startswith("{") and json.loads(line)["event"] == "finished"
    }
    assert finished == {"//:base", "//:child"}
    records = json.loads((root / "images.lock").read_text())["builds"]
    base_image, child_image = (records[f"//:{n}"][AMD]["image"] for n in ("base", "child"))
    assert base_image.startswith("bt/base:base-")  # nothing was pushed
    base, child = layers(engine, base_image), layers(engine, child_image)
    assert len(base) == 1 and len(child) == 2
    assert child[0] == base[0] != old_layers[0]
    # The floating tag still names the older image, locally and in the registry.
    assert layers(engine, floating) == old_layers
    docker(engine, "pull", floating)
    assert layers(engine, floating) == old_layers
