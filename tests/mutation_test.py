"""Invariants 1 and 2 on the example workspace: each kind of edit changes exactly the keys of the
platform builds that read what was edited (and their descendants), and nothing else."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from btrun import copy_example, new_workspace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildtool.plan.keys import KeyComputer
from buildtool.plan.session import Session
from buildtool.plan.stale import selected_builds
from buildtool.state.cachedir import CacheDir
from buildtool.state.hashing import StatCache

LANGUAGES = [
    "en",
    "fr",
    "de",
    "es",
    "it",
    "ja",
    "zh",
    "nl",
    "uk",
    "pt",
    "ar",
    "cs",
    "ru",
    "pl",
    "hu",
    "fi",
    "fa",
    "el",
    "tr",
    "da",
    "he",
    "vi",
    "ko",
    "ur",
    "te",
    "hi",
    "ca",
    "ml",
    "no",
    "nn",
    "sk",
    "sl",
    "hr",
    "ro",
    "eu",
    "gl",
    "ka",
]
MODELS = ("tiny", "base", "small", "medium", "large-v3")
PLATFORMS = ("linux/amd64", "linux/arm64")

STANDALONE = "//standalone:base-en"  # the final stage built through every stage, no parents

Keys = dict[tuple[str, str], str]


def compute_keys(root: Path) -> Keys:
    session = Session(root)
    config, graph = session.config, session.graph
    cache = StatCache.load(CacheDir(config.cache_dir).stat_cache)
    computer = KeyComputer(config, graph, cache, session.analyses)
    keys = {(str(lb), p): computer.key((lb, p)) for lb, p in selected_builds(graph, graph.targets)}
    cache.save()
    return keys


def changed(before: Keys, after: Keys) -> set[tuple[str, str]]:
    assert before.keys() == after.keys()
    return {build for build in before if before[build] != after[build]}


def builds(*labels: str) -> set[tuple[str, str]]:
    return {(label, platform) for label in labels for platform in PLATFORMS}


def every_build() -> set[tuple[str, str]]:
    labels = ["//base:runtime", "//base:no_model", "//distil:en", STANDALONE]
    labels += [f"//model:{m}" for m in (*MODELS, "distil-large-v3")]
    labels += [f"//matrix:{m}-{lang}" for m in MODELS for lang in LANGUAGES]
    return builds(*labels)


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return new_workspace(tmp_path, monkeypatch, cache="cache")


def append(path: Path, text: str = "x") -> None:
    with path.open("a") as f:
        f.write(text)


def test_example_has_390_distinct_keys(workspace: Path) -> None:
    keys = compute_keys(workspace)
    assert set(keys) == every_build()
    assert len(set(keys.values())) == 390


def test_keys_are_stable_across_runs_and_copies(workspace: Path, tmp_path: Path) -> None:
    first = compute_keys(workspace)
    assert compute_keys(workspace) == first  # warm stat cache
    other = copy_example(tmp_path / "elsewhere")
    assert compute_keys(other) == first  # another path, another cache, same content


ZH = {f"//matrix:{m}-zh" for m in MODELS}
EN = {f"//matrix:{m}-en" for m in MODELS} | {"//distil:en", STANDALONE}
TINY = {"//model:tiny"} | {f"//matrix:tiny-{lang}" for lang in LANGUAGES}
MATRIX = {f"//matrix:{m}-{lang}" for m in MODELS for lang in LANGUAGES}
ALL = every_build()


def on(platform: str) -> set[tuple[str, str]]:
    """Every build of one platform: what an arch-specific base stage reaches, with descendants."""
    return {build for build in ALL if build[1] == platform}


def edit(rel: str, text: str = "changed\n") -> Callable[[Path], None]:
    return lambda root: append(root / rel, text)


def chmod_x(rel: str) -> Callable[[Path], None]:
    return lambda root: os.chmod(root / rel, 0o755)


def touch_everything(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(1_000_000_000, 1_000_000_000))


def add(rel: str, text: str = "new\n") -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)

    return apply


def replace_with_symlink(rel: str, target: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / rel).unlink()
        (root / rel).symlink_to(target)

    return apply


def rename(rel: str, new: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / rel).rename(root / new)

    return apply


def rewrite_same_content(rel: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        data = (root / rel).read_bytes()
        mode = (root / rel).stat().st_mode
        (root / rel).unlink()
        (root / rel).write_bytes(data)  # new inode, new mtime, same bytes and mode
        os.chmod(root / rel, mode)

    return apply


def replace_in(rel: str, old: str, new: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / rel
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))

    return apply


MUTATIONS: list[tuple[str, Callable[[Path], None], set[tuple[str, str]]]] = [
    ("one language's alignment file", edit("docker/align/zh/alignment.bin"), builds(*ZH)),
    ("english alignment reaches distil too", edit("docker/align/en/vocab.json"), builds(*EN)),
    ("new file in a copied language dir", add("docker/align/zh/extra.txt"), builds(*ZH)),
    ("renamed file in a copied dir", rename("docker/align/zh/vocab.json", "docker/align/zh/v.json"),
     builds(*ZH)),
    ("executable bit of an input", chmod_x("docker/align/zh/vocab.json"), builds(*ZH)),
    ("file replaced by a symlink", replace_with_symlink("docker/align/zh/vocab.json", "alignment.bin"),
     builds(*ZH)),
    ("one model's weights", edit("docker/models/tiny/model.bin"), builds(*TINY)),
    ("the standalone build's model", edit("docker/models/base/config.json"),
     builds("//model:base", *(f"//matrix:base-{lang}" for lang in LANGUAGES), STANDALONE)),
    ("the distil model", edit("docker/models/distil-large-v3/config.json"),
     builds("//model:distil-large-v3", "//distil:en")),
    ("distil's own file", edit("docker/distil/prompt.txt"), builds("//distil:en")),
    ("the file every image reads", edit("docker/common/LICENSE"), ALL),
    ("the global input", edit("docker/common/versions.txt"), ALL),
    ("the runtime root fs", edit("docker/base/rootfs/etc/whisperx/whisperx.conf"), ALL),
    ("no_model's files", edit("docker/base/no_model/cache-layout.txt"),
     ALL - builds("//base:runtime")),
    ("the default prompt", edit("docker/common/prompt.txt"), builds(*MATRIX, STANDALONE)),
    ("one architecture's base files", edit("docker/base/arch/arm64/etc/whisperx/arch.conf"),
     on("linux/arm64")),
    ("the other architecture's", edit("docker/base/arch/amd64/etc/whisperx/arch.conf"),
     on("linux/amd64")),
    ("a build arg in BUILD.images", replace_in("BUILD.images", '"PROMPT_FILE": "distil/prompt.txt"}',
     '"PROMPT_FILE": "distil/prompt.txt", "EXTRA": "1"}'), builds("//distil:en")),
    ("a file of a stage no target reaches", edit("docker/base/docs/usage.txt"), set()),
    ("an ignored file inside a copied dir", add("docker/align/zh/NOTES.md"), set()),
    ("an edit to an ignored file", edit("docker/models/tiny/README.md"), set()),
    ("an unrelated new file in the context", add("docker/unrelated/file.txt"), set()),
    ("an unrelated file outside the context", add("notes.txt"), set()),
    ("mtimes of every file", touch_everything, set()),
    ("same bytes, new inode", rewrite_same_content("docker/align/zh/alignment.bin"), set()),
    ("dict order in BUILD.images", replace_in("BUILD.images", 'MODELS = ["tiny", "base", "small", "medium", "large-v3"]',
     'MODELS = ["tiny", "base", "small", "medium", "large-v3"]\nUNUSED = {"b": 1, "a": 2}'), set()),
    ("a .dockerignore rule that hides an input", edit("docker/.dockerignore", "align/zh/vocab.json\n"),
     builds(*ZH)),
    ("a .dockerignore rule that hides nothing read", edit("docker/.dockerignore", "unrelated/\n"),
     set()),
]  # fmt: skip


@pytest.mark.parametrize(("what", "mutate", "expected"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_edit_changes_exactly_the_expected_keys(
    workspace: Path, what: str, mutate: Callable[[Path], None], expected: set[tuple[str, str]]
) -> None:
    before = compute_keys(workspace)
    mutate(workspace)
    assert changed(before, compute_keys(workspace)) == expected


def test_one_language_file_changes_ten_builds_and_one_model_file_76(workspace: Path) -> None:
    before = compute_keys(workspace)
    append(workspace / "docker/align/zh/alignment.bin")
    assert len(changed(before, compute_keys(workspace))) == 10
    before = compute_keys(workspace)
    append(workspace / "docker/models/large-v3/model.bin")
    assert len(changed(before, compute_keys(workspace))) == 76


def test_reverting_an_edit_restores_every_key(workspace: Path) -> None:
    before = compute_keys(workspace)
    path = workspace / "docker/align/zh/alignment.bin"
    original = path.read_bytes()
    path.write_bytes(original + b"x")
    assert compute_keys(workspace) != before
    path.write_bytes(original)
    assert compute_keys(workspace) == before


def test_platforms_have_different_keys(workspace: Path) -> None:
    keys = compute_keys(workspace)
    label = "//matrix:large-v3-zh"
    assert keys[(label, "linux/amd64")] != keys[(label, "linux/arm64")]


# ---------------------------------------------------------------------------------------------
# Edits of the example's one Dockerfile. A build's key covers the effective content of the
# stages its target stage reaches on its platform (each instruction as parsed, the parser
# directives, the value every ARG takes in it), plus its parents' keys: so an edit stales the
# builds that reach the edited stage, and their descendants, and nothing else.
#
#   prepare_base_amd64, prepare_base_arm64   picked by TARGETARCH: one platform's builds each
#   runtime <- no_model                      //base:runtime, //base:no_model
#   docs                                     reached by no target
#   load_whisper (on ${NO_MODEL_STAGE})       //model:*; its parent is //base:no_model
#   final (on ${LOAD_WHISPER_STAGE})          //matrix:*, //distil:en; parents //model:*
#   //standalone:base-en builds `final` through every stage above it (no parents).

DOCKERFILE = "docker/Dockerfile"
BASES = {"//base:runtime", "//base:no_model"}
FINAL = MATRIX | {"//distil:en", STANDALONE}


def in_dockerfile(old: str, new: str) -> Callable[[Path], None]:
    return replace_in(DOCKERFILE, old, new)


def after(line: str, added: str) -> Callable[[Path], None]:
    """Insert the line ``added`` after the Dockerfile line ``line``."""
    return in_dockerfile(f"{line}\n", f"{line}\n{added}\n")


def prepend(text: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / DOCKERFILE
        path.write_text(text + path.read_text())

    return apply


DOCKERFILE_EDITS: list[tuple[str, Callable[[Path], None], set[tuple[str, str]]]] = [
    ("a comment", after("FROM runtime AS no_model", "# the base every model cache builds on"),
     set()),
    ("blank lines", in_dockerfile("\nFROM ${NO_MODEL_STAGE}", "\n\n\n\nFROM ${NO_MODEL_STAGE}"),
     set()),
    ("an instruction wrapped over continuation lines",
     in_dockerfile("ENV PATH=/usr/local/bin WHISPERX_HOME", "ENV PATH=/usr/local/bin \\\n    WHISPERX_HOME"),
     set()),
    ("the amd64 base stage", after("COPY base/arch/amd64/ /", "ENV WHISPERX_ARCH=x86_64"),
     on("linux/amd64")),
    ("the arm64 base stage", after("COPY base/arch/arm64/ /", "ENV WHISPERX_ARCH=aarch64"),
     on("linux/arm64")),
    ("the runtime stage", after("WORKDIR /app", "ENV TZ=UTC"), ALL),
    ("the no_model stage", after("COPY base/no_model/ ${WHISPERX_HOME}/", "ENV HF_HUB_OFFLINE=1"),
     ALL - builds("//base:runtime")),
    ("the model stage", after("ENV WHISPER_MODEL=${WHISPER_MODEL}", "ENV CT2_VERBOSE=0"),
     ALL - builds(*BASES)),
    ("the final stage", after("ENV LANG=${LANG}", "ENV PYTHONUNBUFFERED=1"), builds(*FINAL)),
    ("an instruction in a stage no target reaches", after("COPY base/docs/ /docs/", "ENV DOCS=1"),
     set()),
    ("a new stage no target reaches", in_dockerfile("FROM ${LOAD_WHISPER_STAGE} AS final\n",
     "FROM no_model AS debug\nCOPY base/docs/ /debug/\n\nFROM ${LOAD_WHISPER_STAGE} AS final\n"),
     set()),
    # Every target passes WHISPER_MODEL and LANG: the defaults serve plain `docker build` only.
    ("overridden ARG defaults", in_dockerfile("ARG WHISPER_MODEL=base\nARG LANG=en\n",
     "ARG WHISPER_MODEL=tiny\nARG LANG=zh\n"), set()),
    # Used by no_model, so by every build on it; not by //base:runtime, which never reaches it.
    ("a used ARG default", in_dockerfile("ARG CACHE_HOME=/.cache", "ARG CACHE_HOME=/var/cache"),
     ALL - builds("//base:runtime")),
    # //distil:en passes PROMPT_FILE; the matrix and the standalone build take the default.
    ("an ARG default some builds override", in_dockerfile(
     "ARG PROMPT_FILE=common/prompt.txt", "ARG PROMPT_FILE=./common/prompt.txt"),
     builds(*MATRIX, STANDALONE)),
    # The models are passed NO_MODEL_STAGE (their parent's image); only the standalone build
    # starts load_whisper from the in-file stage the default names.
    ("the default of a stage-selecting ARG", in_dockerfile(
     "ARG NO_MODEL_STAGE=no_model", "ARG NO_MODEL_STAGE=runtime"), builds(STANDALONE)),
    ("the syntax directive", prepend("# syntax=docker/dockerfile:1\n"), ALL),
    ("the escape directive", prepend("# escape=`\n"), ALL),
    ("the check directive", prepend("# check=error=true\n"), ALL),
    # After a comment line no directive is read: this is a comment like any other.
    ("a directive below the first comment", after(
     "# so the images build offline, for either platform, on one engine, without emulation.",
     "# syntax=docker/dockerfile:1"), set()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "mutate", "expected"), DOCKERFILE_EDITS, ids=[m[0] for m in DOCKERFILE_EDITS]
)
def test_dockerfile_edit_changes_exactly_the_builds_reaching_the_edit(
    workspace: Path, what: str, mutate: Callable[[Path], None], expected: set[tuple[str, str]]
) -> None:
    before = compute_keys(workspace)
    mutate(workspace)
    assert changed(before, compute_keys(workspace)) == expected


def test_a_file_copy_excludes_is_no_input(workspace: Path) -> None:
    prepend("# syntax=docker/dockerfile:1\n")(workspace)  # --exclude needs a current frontend
    in_dockerfile("COPY align/${LANG}/", "COPY --exclude=*.tmp align/${LANG}/")(workspace)
    add("docker/align/zh/draft.tmp", "first draft\n")(workspace)
    before = compute_keys(workspace)
    append(workspace / "docker/align/zh/draft.tmp", "second draft\n")
    assert changed(before, compute_keys(workspace)) == set()
    append(workspace / "docker/align/zh/vocab.json", "\n")
    assert changed(before, compute_keys(workspace)) == builds(*ZH)


# An oracle independent of bt's inference: which builds read a path of the example workspace.
def readers(rel: str) -> set[tuple[str, str]]:
    parts = rel.split("/")
    if rel.endswith(".md") or parts[:3] == ["docker", "base", "docs"]:
        return set()
    if parts[:2] == ["docker", "align"]:
        lang = parts[2]
        labels = {f"//matrix:{m}-{lang}" for m in MODELS} | (
            {"//distil:en", STANDALONE} if lang == "en" else set()
        )
        return builds(*labels)
    if parts[:2] == ["docker", "models"]:
        model = parts[2]
        if model == "distil-large-v3":
            return builds("//model:distil-large-v3", "//distil:en")
        users = {f"//model:{model}"} | {f"//matrix:{model}-{lang}" for lang in LANGUAGES}
        return builds(*users, *([STANDALONE] if model == "base" else []))
    if parts[:3] == ["docker", "base", "no_model"]:
        return ALL - builds("//base:runtime")
    if parts[:3] == ["docker", "base", "arch"]:
        return on(f"linux/{parts[3]}")
    if parts[:3] == ["docker", "distil", "prompt.txt"]:
        return builds("//distil:en")
    if parts[:3] == ["docker", "common", "prompt.txt"]:
        return builds(*MATRIX, STANDALONE)
    return ALL  # LICENSE, versions.txt, the runtime root fs


def editable_files() -> list[str]:
    from btrun import REPO

    files = []
    for path in sorted((REPO / "docker").rglob("*")):
        rel = path.relative_to(REPO).as_posix()
        if path.is_file() and "Dockerfile" not in rel and ".dockerignore" not in rel:
            files.append(rel)
    return files


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(editable_files()), st.sampled_from(["append", "touch", "same"])),
        min_size=1,
        max_size=4,
    )
)
def test_random_edits_change_exactly_the_readers_keys(
    tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[str, str]]
) -> None:
    base = tmp_path_factory.mktemp("prop")
    os.environ["XDG_CACHE_HOME"] = str(base / "cache")
    try:
        root = copy_example(base / "ws")
        before = compute_keys(root)
        expected: set[tuple[str, str]] = set()
        for rel, how in edits:
            path = root / rel
            if how == "append":
                append(path, "edit")
                expected |= readers(rel)
            elif how == "touch":
                os.utime(path, ns=(5_000_000_000, 5_000_000_000))
            else:
                rewrite_same_content(rel)(root)
        assert changed(before, compute_keys(root)) == expected
    finally:
        shutil.rmtree(base, ignore_errors=True)
        os.environ.pop("XDG_CACHE_HOME", None)


# ---------------------------------------------------------------------------------------------
# Named contexts (`contexts = {...}`): a workspace of its own, both platforms.
#
#   //:base                  stage base built with FLAVOUR=real
#   //:app    FROM base      the stage base replaced by //:base's image; reads shared/lib/x.py
#   //:tool                  RUN --mount=from=shared,source=lib: every file of shared/lib
#   //:plain                 no named context
#   //:ext    FROM img       img = docker-image://registry.example/acme/img:1
# shared/ has its own .dockerignore (*.pyc); the workspace's .dockerignore does not apply to it.

NAMED_WORKSPACE = {
    ".cache-spec": 'platforms = ["linux/amd64", "linux/arm64"]\n',
    "BUILD.images": 'image(name = "base", stage = "base", args = {"FLAVOUR": "real"})\n'
    'image(name = "app", stage = "app", contexts = {"base": ":base", "shared": "shared"})\n'
    'image(name = "tool", stage = "tool", contexts = {"shared": "shared"})\n'
    'image(name = "plain", stage = "plain")\n'
    'image(name = "ext", stage = "ext", contexts = {"img": "docker-image://registry.example/acme/img:1"})\n',
    "Dockerfile": "FROM scratch AS base\nARG FLAVOUR=stage\nCOPY base-${FLAVOUR}.txt /base.txt\n"
    "FROM base AS app\nCOPY --from=shared lib/x.py /x.py\nCOPY app.txt /app.txt\n"
    "FROM scratch AS tool\nRUN --mount=from=shared,source=lib,target=/lib true\n"
    "FROM scratch AS plain\nCOPY plain.txt /plain.txt\n"
    "FROM img AS ext\nCOPY plain.txt /plain.txt\n",
    ".dockerignore": "*.md\n",
    "base-real.txt": "real\n",
    "base-stage.txt": "stage\n",
    "app.txt": "app\n",
    "plain.txt": "plain\n",
    "shared/lib/x.py": "x\n",
    "shared/lib/y.py": "y\n",
    "shared/lib/x.pyc": "compiled\n",
    "shared/docs/readme.md": "docs\n",
    "shared/.dockerignore": "**/*.pyc\n",
}


def both(first: Callable[[Path], None], second: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        first(root)
        second(root)

    return apply


NAMED_EDITS: list[tuple[str, Callable[[Path], None], set[tuple[str, str]]]] = [
    ("a file one COPY --from= and one mount read", edit("shared/lib/x.py"), builds("//:app", "//:tool")),
    ("a file only the mount reads", edit("shared/lib/y.py"), builds("//:tool")),
    ("a new file in the mounted directory", add("shared/lib/z.py"), builds("//:tool")),
    ("a file of the folder no stage reads", edit("shared/docs/readme.md"), set()),
    ("a file the folder's own .dockerignore hides", edit("shared/lib/x.pyc"), set()),
    ("a rule of the folder's .dockerignore hiding a read file",
     edit("shared/.dockerignore", "lib/y.py\n"), builds("//:tool")),
    ("the workspace's .dockerignore, which the folder ignores",
     edit(".dockerignore", "shared/\n"), set()),
    ("the file the label context's target reads", edit("base-real.txt"), builds("//:base", "//:app")),
    ("a file only the replaced stage's default reads", edit("base-stage.txt"), set()),
    # The folder's path is not in the key, what the build reads of it is: the same image.
    ("another directory holding the same bytes", replace_in("BUILD.images",
     '"shared": "shared"})\nimage(name = "tool"', '"shared": "other"})\nimage(name = "tool"'), set()),
    ("another directory holding other bytes", both(edit("other/lib/x.py"), replace_in("BUILD.images",
     '"shared": "shared"})\nimage(name = "tool"', '"shared": "other"})\nimage(name = "tool"')),
     builds("//:app")),
    ("the image a docker-image context names", replace_in("BUILD.images", "acme/img:1", "acme/img:2"),
     builds("//:ext")),
    ("the target a label context names", replace_in("BUILD.images", '"base": ":base"', '"base": ":plain"'),
     builds("//:app")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "mutate", "expected"), NAMED_EDITS, ids=[m[0] for m in NAMED_EDITS]
)
def test_named_context_edit_changes_exactly_the_expected_keys(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    what: str,
    mutate: Callable[[Path], None],
    expected: set[tuple[str, str]],
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "named"
    for rel, text in NAMED_WORKSPACE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    shutil.copytree(root / "shared", root / "other")  # same bytes in another folder
    before = compute_keys(root)
    assert len(set(before.values())) == 10
    mutate(root)
    assert changed(before, compute_keys(root)) == expected
