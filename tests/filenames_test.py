"""Any file name a file system allows (bytes that are not UTF-8, newlines, a leading '-',
spaces, 255 bytes) is hashed, keyed, sent to the engine in the context tar, and shown escaped
and unambiguous by `bt inputs` and `bt why`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
from btrun import bt, write_tree

from buildtool.inputs.pathnames import shown_path

DOCKER = "/usr/bin/docker"
NAMES = [b"bad\xff\xfe", b"new\nline", b"-leading", b"with space", b"n" * 255, b" padded "]


def workspace(root: Path, backend: str = "buildkit") -> Path:
    write_tree(
        root,
        {
            ".cache-spec": (
                f'platforms = ["linux/amd64"]\n[builders."*"]\nnetwork = "none"\n'
                f'backend = "{backend}"\n'
            ),
            "BUILD.images": 'image(name = "app")\n',
            "Dockerfile": "FROM scratch\nCOPY d/ /d/\n",
            "d/nonce": uuid.uuid4().hex,
        },
    )
    for name in NAMES:
        with open(os.fsencode(root / "d") + b"/" + name, "wb") as f:
            f.write(b"content of " + name)
    return root


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("plain/name.txt", "plain/name.txt"),
        ("with space", "with space"),
        ("-leading", "-leading"),
        (os.fsdecode(b"bad\xff\xfe"), '"bad\\xff\\xfe"'),
        ("new\nline", '"new\\nline"'),
        (" padded ", '" padded "'),
        ('quo"te\\', '"quo\\"te\\\\"'),
        ("two  spaces", '"two  spaces"'),
        ("bell\x07", '"bell\\x07"'),
    ],
)
def test_a_file_name_is_shown_on_one_line_and_unambiguously(name: str, shown: str) -> None:
    assert shown_path(name) == shown


def test_odd_names_are_hashed_keyed_and_listed_escaped_by_inputs_and_why(tmp_path: Path) -> None:
    root = workspace(tmp_path / "ws")
    plan = bt("plan", "//...", cwd=root)
    assert plan.returncode == 0, plan.stderr
    inputs = bt("inputs", "//:app", cwd=root)
    assert inputs.returncode == 0, inputs.stderr
    # "<digest or (directory), 16 wide> <mode> <path>  <- <origin>"
    listed = [line[19:].rsplit("  <- ", 1)[0] for line in inputs.stdout.splitlines()]
    assert listed == [
        "Dockerfile",
        "d",
        '"d/ padded "',
        "d/-leading",
        '"d/bad\\xff\\xfe"',
        '"d/new\\nline"',
        "d/" + "n" * 255,
        "d/nonce",
        "d/with space",
    ]
    # Each odd name's content is keyed.
    keys = [json.loads(bt("plan", "//...", "--format", "json", cwd=root).stdout)[0]["key"]]
    for name in (b"bad\xff\xfe", b"new\nline", b"n" * 255):
        with open(os.fsencode(root / "d") + b"/" + name, "ab") as f:
            f.write(b" edited")
        keys.append(json.loads(bt("plan", "//...", "--format", "json", cwd=root).stdout)[0]["key"])
    assert len(set(keys)) == 4, keys


@pytest.mark.engine
@pytest.mark.parametrize("backend", ["buildkit", "engine"])
def test_odd_names_reach_the_image_byte_for_byte(tmp_path: Path, engine: str, backend: str) -> None:
    root = workspace(tmp_path / "ws", backend)
    built = bt("build", "//...", cwd=root, env={"DOCKER_HOST": engine})
    assert built.returncode == 0, built.stdout + built.stderr
    image = next(
        line for line in (root / "images.lock").read_text().splitlines() if "image" in line
    )
    ref = image.split('"')[3]
    container = subprocess.run(
        [DOCKER, "-H", engine, "create", ref, "x"], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        exported = subprocess.run(
            [DOCKER, "-H", engine, "export", container], capture_output=True, check=True
        ).stdout
    finally:
        subprocess.run([DOCKER, "-H", engine, "rm", container], capture_output=True, check=False)
    with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
        contents = {
            os.fsencode(m.name): tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile() and m.name.startswith("d/") and m.name != "d/nonce"
        }
    assert contents == {b"d/" + name: b"content of " + name for name in NAMES}

    # why after an edit names the file escaped
    with open(os.fsencode(root / "d") + b"/new\nline", "ab") as f:
        f.write(b" edited")
    why = bt("why", "//:app", cwd=root, env={"DOCKER_HOST": engine}, check=True).stdout
    assert '  changed "d/new\\nline": blake3:' in why, why
    assert why.count("\n  changed ") == 1, why
