"""Named contexts (`image(contexts = {...})`, bake's `contexts`): a workspace target replaces the
stage or image of that name, a directory's read files are inputs sent hermetically, a
`docker-image://` reference is pinned; bad declarations stop at their BUILD.images line."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
from bake_test import FIXTURES, WHISPERX_FILES, bake_platform_builds
from btrun import bt, write_tree

DOCKER = "/usr/bin/docker"
BOTH = ("linux/amd64", "linux/arm64")


def docker(host: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([DOCKER, "-H", host, *args], capture_output=True, check=False)


def file_in(host: str, image: str, path: str) -> str:
    """The text of ``path`` in ``image`` on the engine at ``host`` (images FROM scratch too)."""
    created = docker(host, "create", image, "none")
    assert created.returncode == 0, created.stderr
    container = created.stdout.decode().strip()
    try:
        copied = docker(host, "cp", f"{container}:{path}", "-")
        assert copied.returncode == 0, copied.stderr
    finally:
        docker(host, "rm", container)
    with tarfile.open(fileobj=io.BytesIO(copied.stdout)) as tar:
        member = tar.next()
        assert member is not None
        extracted = tar.extractfile(member)
        assert extracted is not None
        return extracted.read().decode()


def lock(root: Path) -> dict[str, dict[str, dict[str, str]]]:
    return json.loads((root / "images.lock").read_text())["builds"]  # type: ignore[no-any-return]


def plan(root: Path, env: dict[str, str]) -> list[dict[str, object]]:
    out = bt("plan", "//...", "--all", "--format", "json", cwd=root, env=env, check=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def stale(root: Path, env: dict[str, str]) -> set[tuple[str, str]]:
    return {(str(b["label"]), str(b["platform"])) for b in plan(root, env) if b["stale"]}


def keys(root: Path, env: dict[str, str]) -> dict[tuple[str, str], str]:
    return {(str(b["label"]), str(b["platform"])): str(b["key"]) for b in plan(root, env)}


def two_engines(engine: str, engine2: str, backend: str = "buildkit") -> str:
    """A .cache-spec building amd64 on engine 1 and arm64 on engine 2, with new keys."""
    return (
        f'platforms = ["linux/amd64", "linux/arm64"]\nglobal_inputs = ["nonce.txt"]\n'
        f'[builders."*"]\nbackend = "{backend}"\nnetwork = "none"\nhost = "{engine}"\n'
        f'[builders."linux/arm64"]\nbackend = "{backend}"\nnetwork = "none"\nhost = "{engine2}"\n'
    )


# -- declarations ----------------------------------------------------------------------------

DOCKERFILE = "FROM scratch AS base\nCOPY a.txt /a\nFROM base AS app\nCOPY --from=shared a.txt /b\n"

BAD_CONTEXTS = [
    ("invalid name", 'image(name = "app", contexts = {"Bad Name": "shared"})\n',
     "BUILD.images:1: contexts: invalid context name 'Bad Name' (a stage name such as 'base', "
     "or an image name such as 'alpine')"),
    ("outside the workspace", 'image(name = "app", contexts = {"shared": "../elsewhere"})\n',
     "BUILD.images:1: contexts['shared'] '../elsewhere' points outside the workspace"),
    ("missing directory", 'image(name = "app", contexts = {"shared": "nothere"})\n',
     "BUILD.images:1: contexts['shared']: directory 'nothere' does not exist"),
    ("unknown label", 'image(name = "app", contexts = {"shared": "shared", "base": ":bsae"})\n',
     "BUILD.images:1: parent //:bsae of //:app (context base) not found"),
    ("also a parent", 'image(name = "b")\n'
     'image(name = "app", parents = {"base": ":b"}, contexts = {"base": ":b"})\n',
     "BUILD.images:2: 'base' is both in contexts and in parents: keep one of them"),
    ("oci layout", 'image(name = "app", contexts = {"shared": "oci-layout:///tmp/x"})\n',
     "BUILD.images:1: contexts['shared']: 'oci-layout:///tmp/x' is not supported (a label, "
     "docker-image://REF or a directory)"),
    ("git url", 'image(name = "app", contexts = {"shared": "https://github.com/a/b.git"})\n',
     "BUILD.images:1: contexts['shared']: 'https://github.com/a/b.git' is not supported"),
    ("bake spelling", 'image(name = "b")\nimage(name = "app", contexts = {"base": "target:b"})\n',
     "BUILD.images:2: contexts['base']: 'target:b' is bake's spelling; write the label ':b'"),
    ("read by no stage", 'image(name = "app", contexts = {"shared": "shared", "extra": "shared"})\n',
     "BUILD.images:1: named context 'extra' of //:app is read by no FROM, COPY --from or RUN "
     "--mount=from= of the stages Dockerfile builds"),
    ("unread when the stage is not reached",
     'image(name = "app", stage = "base", contexts = {"shared": "shared"})\n',
     "BUILD.images:1: named context 'shared' of //:app is read by no FROM"),
    ("a directory as FROM", 'image(name = "app", contexts = {"shared": "shared", "base": "shared"})\n',
     "Dockerfile:3: FROM base: named context 'base' is a directory, which bt reads only with "
     "COPY --from= and RUN --mount=from="),
]  # fmt: skip


@pytest.mark.parametrize(("case", "build", "message"), BAD_CONTEXTS, ids=[c[0] for c in BAD_CONTEXTS])
def test_a_bad_named_context_is_one_line_at_its_build_file_line_and_exit_2(
    tmp_path: Path, case: str, build: str, message: str
) -> None:
    root = write_tree(
        tmp_path / "ws",
        {".cache-spec": 'platforms = ["linux/amd64"]\n', "BUILD.images": build,
         "Dockerfile": DOCKERFILE, "a.txt": "a\n", "shared/a.txt": "shared\n"},
    )  # fmt: skip
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    result = bt("query", "//...", cwd=root)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(message), result.stderr
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_bt_inputs_lists_a_directory_contexts_files_with_their_origin(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": 'platforms = ["linux/amd64"]\n',
            "app/BUILD.images": 'image(name = "app", contexts = {"shared": "../shared"})\n',
            "app/Dockerfile": "FROM scratch\nCOPY --from=shared lib/ /lib/\n"
            "RUN --mount=from=shared,source=tools/run.sh,target=/run.sh /run.sh\n",
            "shared/lib/x.py": "x\n",
            "shared/lib/x.pyc": "compiled\n",
            "shared/tools/run.sh": "true\n",
            "shared/docs/readme.md": "docs\n",
            "shared/.dockerignore": "**/*.pyc\n",
        },
    )
    out = bt("inputs", "//app:app", "--format", "json", cwd=root, check=True).stdout
    rows = [(r["path"], r["kind"], r["origin"]) for r in json.loads(out)["inputs"]]
    assert rows == [
        ("app/Dockerfile", "dockerfile", "the Dockerfile (the stages the build reaches)"),
        ("shared/lib", "dir", "context shared: app/Dockerfile:2 ('lib')"),
        ("shared/lib/x.py", "file", "context shared: app/Dockerfile:2 ('lib')"),
        ("shared/tools/run.sh", "file", "context shared: app/Dockerfile:3 ('tools/run.sh')"),
    ]


def test_a_label_context_replaces_the_stage_of_its_name_in_the_key(tmp_path: Path) -> None:
    """The replaced stage is not reached: editing it changes only the target that builds it."""
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": 'platforms = ["linux/amd64"]\n',
            "BUILD.images": 'image(name = "base", dockerfile = "base.Dockerfile")\n'
            'image(name = "app", stage = "app", contexts = {"base": ":base"})\n'
            'image(name = "own", stage = "base")\n',
            "base.Dockerfile": "FROM scratch\nCOPY b.txt /b\n",
            "Dockerfile": "FROM scratch AS base\nCOPY a.txt /a\nFROM base AS app\nCOPY c.txt /c\n",
            "a.txt": "a\n",
            "b.txt": "b\n",
            "c.txt": "c\n",
        },
    )
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    deps = bt("query", "deps(//:app)", cwd=root, env=env, check=True).stdout.split()
    assert deps == ["//:app", "//:base"]
    before = keys(root, env)
    (root / "a.txt").write_text("edited\n")  # read only by the stage the context replaces
    after = keys(root, env)
    assert {b for b in before if before[b] != after[b]} == {("//:own", "linux/amd64")}
    (root / "b.txt").write_text("edited\n")
    last = keys(root, env)
    assert {b for b in last if last[b] != after[b]} == {
        ("//:base", "linux/amd64"),
        ("//:app", "linux/amd64"),
    }
