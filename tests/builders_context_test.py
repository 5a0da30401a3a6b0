"""The context bt sends: exactly the key's file set as a deterministic tar, hashed while it is
streamed; a file changed since its key aborts the build on both backends."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from btrun import write_tree

from buildtool.build.builders import Builder, BuildRequest, missing_input
from buildtool.build.builders.context import (
    FIXED_MTIME,
    ContextChanged,
    sent_context,
    tar_chunks,
)
from buildtool.build.routing import open_builder
from buildtool.inputs.filesets import DOCKERFILE_IN_TAR, FileSet
from buildtool.plan.session import Session, Workbench

DOCKER = "/usr/bin/docker"
BACKENDS = ["buildkit", "engine"]


def fileset_of(root: Path, label: str = "//:img") -> FileSet:
    bench = Workbench(Session(root))
    target = next(t for t in bench.session.graph.targets if str(t) == label)
    return bench.computer.fileset((target, "linux/amd64"))


def members(fileset: FileSet, root: Path, text: str | None = None) -> dict[str, tarfile.TarInfo]:
    sent = sent_context(fileset, root, root / fileset.dockerfile, text)
    data = b"".join(tar_chunks(sent))
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {m.name: m for m in archive.getmembers()}


WORKSPACE = {
    ".cache-spec": 'platforms = ["linux/amd64"]\n',
    "BUILD.images": 'image(name = "img")\n',
    "Dockerfile": "FROM scratch\nCOPY a.txt run.sh sub /x/\n",
    "a.txt": "a\n",
    "run.sh": "#!/bin/sh\n",
    "sub/deep/f.txt": "f\n",
    "unread.txt": "no instruction reads me\n",
}


def test_the_tar_holds_the_key_files_and_the_dockerfile_with_fixed_headers(
    tmp_path: Path,
) -> None:
    root = write_tree(tmp_path / "ws", WORKSPACE)
    (root / "run.sh").chmod(0o775)
    (root / "a.txt").chmod(0o664)
    found = members(fileset_of(root), root)
    # The Dockerfile is not an input here (nothing copies it): bt adds its own copy.
    assert {name: oct(m.mode) for name, m in found.items()} == {
        ".bt-Dockerfile": "0o644",
        "a.txt": "0o644",
        "run.sh": "0o755",
        "sub": "0o755",
        "sub/deep": "0o755",
        "sub/deep/f.txt": "0o644",
    }
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in found.values()} == {
        (0, 0, "", "", FIXED_MTIME)
    }


def test_the_same_key_sends_the_same_bytes_whatever_the_mtimes(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "ws", WORKSPACE)
    fileset = fileset_of(root)
    sent = sent_context(fileset, root, root / "Dockerfile")
    first = b"".join(tar_chunks(sent))
    os.utime(root / "a.txt", (1, 1))
    assert b"".join(tar_chunks(sent)) == first
    assert len(first) % tarfile.BLOCKSIZE == 0
    assert first.endswith(bytes(2 * tarfile.BLOCKSIZE))


def test_a_rewritten_dockerfile_is_sent_beside_the_entries_not_over_them(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "ws", {**WORKSPACE, "BUILD.images": 'image(name = "img")\n'})
    root.joinpath("Dockerfile").write_text("FROM scratch\nCOPY . /x/\n")
    fileset = fileset_of(root)
    assert "Dockerfile" in {e[0] for e in fileset.entries}
    rewritten = "FROM scratch@sha256:" + "0" * 64 + "\nCOPY . /x/\n"
    found = members(fileset, root, rewritten)
    assert DOCKERFILE_IN_TAR in found
    assert found["Dockerfile"].size == len("FROM scratch\nCOPY . /x/\n")
    sent = sent_context(fileset, root, root / "Dockerfile", rewritten)
    assert sent.dockerfile == DOCKERFILE_IN_TAR


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.write_text("b\n"),  # same size, other bytes
        lambda p: p.write_text("longer\n"),
        lambda p: p.write_text(""),
        lambda p: p.unlink(),
        lambda p: (p.unlink(), p.symlink_to("run.sh")),
    ],
)
def test_a_file_changed_since_its_key_stops_the_stream_naming_it(
    tmp_path: Path, change: Callable[[Path], object]
) -> None:
    root = write_tree(tmp_path / "ws", WORKSPACE)
    sent = sent_context(fileset_of(root), root, root / "Dockerfile")
    change(root / "a.txt")
    with pytest.raises(ContextChanged) as raised:
        b"".join(tar_chunks(sent))
    assert raised.value.message == "a.txt changed since its key was computed; run bt build again"


def test_a_retargeted_symlink_stops_the_stream(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "ws", {**WORKSPACE, "Dockerfile": "FROM scratch\nCOPY l /\n"})
    (root / "l").symlink_to("a.txt")
    sent = sent_context(fileset_of(root), root, root / "Dockerfile")
    (root / "l").unlink()
    (root / "l").symlink_to("run.sh")
    with pytest.raises(ContextChanged, match=r"^l changed since its key"):
        b"".join(tar_chunks(sent))


@pytest.mark.parametrize(
    ("message", "path"),
    [
        ('docker build on x failed: failed to compute cache key: "/b.txt" not found: not found', "b.txt"),
        ("build on x failed: COPY failed: file not found in build context or excluded by "
         ".dockerignore: stat sub/b.txt: file does not exist", "sub/b.txt"),
        ("build on x failed: ADD failed: file not found in build context or excluded by "
         ".dockerignore: stat b.txt: file does not exist", "b.txt"),
        ("docker build on x failed: executor failed running [/bin/sh -c false]: exit code: 1", None),
    ],
)  # fmt: skip
def test_missing_input_names_the_path_in_each_builders_words(
    message: str, path: str | None
) -> None:
    assert missing_input(message) == path


# -- on a real engine -------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def builder(request: pytest.FixtureRequest, engine: str) -> Iterator[Builder]:
    found = open_builder(engine, request.param, network="none")
    yield found
    found.close()


def request_for(root: Path, fileset: FileSet, tag: str) -> BuildRequest:
    return BuildRequest(
        context=root,
        dockerfile=root / "Dockerfile",
        stage=None,
        platform="linux/amd64",
        build_args=(),
        tag=tag,
        log_path=root.parent / "logs" / "build.log",
        fileset=fileset,
    )


def image_exists(engine: str, ref: str) -> bool:
    done = subprocess.run([DOCKER, "-H", engine, "image", "inspect", ref], capture_output=True)
    return done.returncode == 0


@pytest.mark.engine
def test_an_edit_between_key_and_send_fails_the_build_and_tags_nothing(
    builder: Builder, engine: str, tmp_path: Path
) -> None:
    big = {"big.bin": "x" * (3 << 20)}  # several chunks: the engine has begun reading
    files = {**WORKSPACE, **big, "Dockerfile": "FROM scratch\nCOPY big.bin a.txt /\n"}
    root = write_tree(tmp_path / "ws", files)
    fileset = fileset_of(root)
    (root / "big.bin").write_text("y" * (3 << 20))
    tag = f"bt-context-test/changed:{uuid.uuid4().hex[:12]}"
    with pytest.raises(ContextChanged, match=r"^big\.bin changed since its key was computed"):
        builder.build(request_for(root, fileset, tag), threading.Event())
    assert not image_exists(engine, tag)


@pytest.mark.engine
def test_the_engine_sees_only_the_key_files(builder: Builder, engine: str, tmp_path: Path) -> None:
    files = {
        **WORKSPACE,
        "BUILD.images": 'image(name = "img", inputs = ["a.txt", "sub"])\n',
        "Dockerfile": f"FROM scratch\nCOPY . /ctx/\n# {uuid.uuid4().hex}\n",
    }
    root = write_tree(tmp_path / "ws", files)
    tag = f"bt-context-test/only:{uuid.uuid4().hex[:12]}"
    try:
        builder.build(request_for(root, fileset_of(root), tag), threading.Event())
        container = subprocess.run(
            [DOCKER, "-H", engine, "create", tag, "none"], capture_output=True, text=True
        ).stdout.strip()
        exported = subprocess.run(
            [DOCKER, "-H", engine, "export", container], capture_output=True, check=True
        ).stdout
        subprocess.run([DOCKER, "-H", engine, "rm", container], capture_output=True)
    finally:
        subprocess.run([DOCKER, "-H", engine, "rmi", "-f", tag], capture_output=True)
    with tarfile.open(fileobj=io.BytesIO(exported)) as archive:
        names = sorted(m.name.rstrip("/") for m in archive if m.name.startswith("ctx/"))
    names = [name for name in names if name != "ctx"]
    # The classic builder drops bt's Dockerfile (a .dockerignore in the tar names it); BuildKit
    # filters no tar context, so a source taking the context root sees it too.
    extra = [] if builder.name.startswith("engine") else ["ctx/.bt-Dockerfile"]
    assert names == sorted(["ctx/a.txt", "ctx/sub", "ctx/sub/deep", "ctx/sub/deep/f.txt", *extra])
