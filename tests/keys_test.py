"""Stage-precise keys on one multi-stage Dockerfile shaped like docker-whisperX's: an edit of
the Dockerfile changes exactly the keys of the builds whose reached stages it changes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from btrun import new_workspace, write_tree

from buildtool.plan.keys import KeyComputer
from buildtool.plan.session import Session
from buildtool.plan.stale import selected_builds
from buildtool.state.cachedir import CacheDir
from buildtool.state.hashing import StatCache

DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG NO_MODEL_STAGE=no_model
ARG LOAD_WHISPER_STAGE=load_whisper

FROM scratch AS prepare_base_amd64
COPY amd64.txt /arch.txt

FROM scratch AS prepare_base_arm64
COPY arm64.txt /arch.txt

FROM prepare_base_${TARGETARCH} AS no_model
ARG VERSION=1
COPY LICENSE /LICENSE
LABEL version=${VERSION}

FROM ${NO_MODEL_STAGE} AS load_whisper
ARG WHISPER_MODEL=tiny
COPY models/${WHISPER_MODEL}/ /models/

FROM ${LOAD_WHISPER_STAGE} AS final
ARG LANG=en
COPY align/${LANG}/ /align/
LABEL lang=${LANG}
"""

BUILD = """\
image(name = "no_model", stage = "no_model")
for model in ["tiny", "base"]:
    image(name = model, stage = "load_whisper", args = {"WHISPER_MODEL": model},
          parents = {"NO_MODEL_STAGE": ":no_model"})
    for lang in ["en", "zh"]:
        image(name = model + "-" + lang, stage = "final", args = {"LANG": lang},
              parents = {"LOAD_WHISPER_STAGE": ":" + model})
image(name = "standalone", stage = "final", args = {"WHISPER_MODEL": "tiny", "LANG": "en"})
"""

FILES = {
    ".cache-spec": 'platforms = ["linux/amd64", "linux/arm64"]\n',
    "BUILD.images": BUILD,
    "Dockerfile": DOCKERFILE,
    "amd64.txt": "amd64",
    "arm64.txt": "arm64",
    "LICENSE": "MIT",
    "models/tiny/weights.bin": "tiny",
    "models/base/weights.bin": "base",
    "align/en/vocab.json": "en",
    "align/zh/vocab.json": "zh",
}
IMAGES = ["no_model", "tiny", "base", "tiny-en", "tiny-zh", "base-en", "base-zh", "standalone"]
FINAL = ["tiny-en", "tiny-zh", "base-en", "base-zh", "standalone"]
Build = tuple[str, str]


def builds(
    names: list[str], platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64")
) -> set[Build]:
    return {(f"//:{name}", platform) for name in names for platform in platforms}


def keys(root: Path) -> dict[Build, str]:
    session = Session(root)
    config, graph = session.config, session.graph
    computer = KeyComputer(
        config, graph, StatCache.load(CacheDir(config.cache_dir).stat_cache), session.analyses
    )
    return {(str(lb), p): computer.key((lb, p)) for lb, p in selected_builds(graph, graph.targets)}


def replace(old: str, new: str) -> Callable[[str], str]:
    def apply(text: str) -> str:
        assert old in text
        return text.replace(old, new, 1)

    return apply


EDITS: list[tuple[str, Callable[[str], str], set[Build]]] = [
    ("a comment", replace("FROM scratch AS prepare_base_amd64", "# amd64\nFROM scratch AS prepare_base_amd64"), set()),
    ("blank lines", replace("LABEL lang=${LANG}\n", "\n\nLABEL lang=${LANG}\n\n"), set()),
    ("a continuation line", replace("COPY LICENSE /LICENSE", "COPY LICENSE \\\n     /LICENSE"), set()),
    ("an unreached new stage", lambda t: t + "\nFROM scratch AS docs\nCOPY LICENSE /docs/\n", set()),
    ("an overridden ARG default", replace("ARG WHISPER_MODEL=tiny", "ARG WHISPER_MODEL=large"), set()),
    ("another overridden ARG default", replace("ARG LANG=en", "ARG LANG=fr"), set()),
    ("the arm64-only stage", replace("COPY arm64.txt /arch.txt", "COPY arm64.txt /arch.txt\nLABEL arch=arm64"),
     builds(IMAGES, ("linux/arm64",))),
    ("a LABEL in the final stage", replace("LABEL lang=${LANG}", "LABEL lang=${LANG} maintainer=me"), builds(FINAL)),
    ("a used ARG default", replace("ARG VERSION=1", "ARG VERSION=2"), builds(IMAGES)),
    ("the syntax directive", replace("# syntax=docker/dockerfile:1", "# syntax=docker/dockerfile:1.7"), builds(IMAGES)),
    ("an escape directive", lambda t: "# escape=`\n" + t, builds(IMAGES)),
    ("a check directive", lambda t: "# check=skip=all\n" + t, builds(IMAGES)),
]  # fmt: skip


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return new_workspace(tmp_path, monkeypatch, FILES)


def test_the_workspace_has_eight_images_for_two_platforms(workspace: Path) -> None:
    assert set(keys(workspace)) == builds(IMAGES)


@pytest.mark.parametrize(("case", "edit", "expected"), EDITS, ids=[e[0] for e in EDITS])
def test_a_dockerfile_edit_changes_exactly_the_keys_of_the_builds_it_reaches(
    workspace: Path, case: str, edit: Callable[[str], str], expected: set[Build]
) -> None:
    before = keys(workspace)
    dockerfile = workspace / "Dockerfile"
    dockerfile.write_text(edit(dockerfile.read_text()))
    after = keys(workspace)
    assert {build for build in before if before[build] != after[build]} == expected


@pytest.mark.parametrize(
    ("copy", "ignore", "comment_changes_key"),
    [
        ("COPY app/ /app/", "", False),  # bt's copy of the Dockerfile is never copied
        ("COPY . /app/", "", True),  # the Dockerfile itself is copied: an input by its bytes
        ("COPY . /app/", "Dockerfile\n", True),  # bt's copy would be: its bytes are keyed
        ("COPY * /app/", "Dockerfile\n", True),
    ],
)
def test_a_build_that_copies_the_context_root_keys_the_dockerfile_bytes_it_is_sent(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    copy: str,
    ignore: str,
    comment_changes_key: bool,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": 'platforms = ["linux/amd64"]\n',
            "BUILD.images": 'image(name = "app")\n',
            "Dockerfile": f"FROM scratch\n{copy}\n",
            ".dockerignore": ignore,
            "app/main.py": "print()\n",
        },
    )
    before = keys(root)
    (root / "Dockerfile").write_text(f"# a comment\nFROM scratch\n{copy}\n")
    assert (keys(root) != before) == comment_changes_key
