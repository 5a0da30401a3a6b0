"""A FROM or COPY --from reference is keyed as Docker resolves it: adding ``:latest`` or
``docker.io/library/`` to it, or writing a workspace parent's reference either way, changes no
key (no false positive)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from btrun import bt, write_tree

DIGEST = "sha256:" + "4" * 64
SPEC = 'platforms = ["linux/amd64"]\n[registry]\nurl = "r.example:5000/ws"\npush = false\n'
BUILD = (
    'image(name = "base", dockerfile = "base.Dockerfile", tags = ["latest"])\nimage(name = "app")\n'
)
LOCK = {
    "version": 1,
    "builds": {},
    "images": {},
    "pins": {
        "docker.io/library/python:latest": {"linux/amd64": {"digest": DIGEST, "source": "registry"}}
    },
}


def keys(tmp_path: Path, dockerfile: str) -> dict[str, str]:
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": SPEC,
            "BUILD.images": BUILD,
            "base.Dockerfile": "FROM scratch\nCOPY a.txt /\n",
            "Dockerfile": dockerfile,
            "a.txt": "a\n",
            "images.lock": json.dumps(LOCK),
        },
    )
    done = bt("plan", "//...", "--all", "--format", "json", cwd=root)
    assert done.returncode == 0, done.stderr
    return {p["label"]: p["key"] for p in json.loads(done.stdout)}


@pytest.mark.parametrize(
    "spellings",
    [
        ["python", "python:latest", "docker.io/library/python", "docker.io/library/python:latest"],
        ["r.example:5000/ws/base", "r.example:5000/ws/base:latest"],
    ],
    ids=["external", "workspace parent"],
)
def test_spelling_a_from_reference_another_way_changes_no_key(
    tmp_path: Path, spellings: list[str]
) -> None:
    found = [
        keys(tmp_path / str(i), f"FROM {ref}\nCOPY a.txt /b\n") for i, ref in enumerate(spellings)
    ]
    assert all(k == found[0] for k in found), found
    other = keys(tmp_path / "other", "FROM python:3\nCOPY a.txt /b\n")
    assert other["//:app"] != found[0]["//:app"]  # another image is another key


def test_spelling_a_copy_from_image_another_way_changes_no_key(tmp_path: Path) -> None:
    found = [
        keys(tmp_path / str(i), f"FROM scratch\nCOPY --from={ref} /x /x\n")
        for i, ref in enumerate(["python", "docker.io/library/python:latest"])
    ]
    assert found[0] == found[1]


def test_the_frontend_a_syntax_line_after_a_shebang_names_is_keyed(tmp_path: Path) -> None:
    found = [
        keys(
            tmp_path / tag,
            f"#!/usr/bin/env docker-build\n# syntax=acme/frontend:{tag}\nFROM scratch\n",
        )
        for tag in ("1", "2")
    ]
    assert found[0]["//:app"] != found[1]["//:app"]
    assert found[0]["//:base"] == found[1]["//:base"]


def test_the_frontend_a_syntax_line_names_is_pinned_and_its_pin_is_keyed(tmp_path: Path) -> None:
    dockerfile = "# syntax=python\nFROM scratch\nCOPY a.txt /\n"
    pinned = keys(tmp_path / "pinned", dockerfile)
    LOCK["pins"]["docker.io/library/python:latest"]["linux/amd64"]["digest"] = "sha256:" + "5" * 64  # type: ignore[index]
    try:
        moved = keys(tmp_path / "moved", dockerfile)
    finally:
        LOCK["pins"]["docker.io/library/python:latest"]["linux/amd64"]["digest"] = DIGEST  # type: ignore[index]
    assert pinned["//:app"] != moved["//:app"]  # the frontend's pin moved: the build is stale
    assert pinned["//:base"] == moved["//:base"]


@pytest.mark.parametrize(
    "form",
    [
        "// syntax=python\n{body}",
        "#!/usr/bin/env build\n//syntax = python\n{body}",
        '{{"syntax": "python", "body": "{body}"}}\n',
    ],
    ids=["c-style", "c-style after a shebang", "json"],
)
def test_a_frontend_named_in_bakes_other_directive_forms_is_pinned_and_its_file_keyed_whole(
    tmp_path: Path, form: str
) -> None:
    """BuildKit's DetectSyntax falls back to ``// syntax=`` and a JSON ``"syntax"`` when there is
    no ``# syntax=``: such a file belongs to that frontend. Its pin and every byte of it are
    keyed (bt cannot know what that frontend reads), and the whole context is its input."""
    first = keys(tmp_path / "a", form.format(body="one"))
    edited = keys(tmp_path / "b", form.format(body="two"))
    assert first["//:app"] != edited["//:app"]  # any byte of a file bt cannot read is keyed
    assert first["//:base"] == edited["//:base"]
    LOCK["pins"]["docker.io/library/python:latest"]["linux/amd64"]["digest"] = "sha256:" + "5" * 64  # type: ignore[index]
    try:
        moved = keys(tmp_path / "c", form.format(body="one"))
    finally:
        LOCK["pins"]["docker.io/library/python:latest"]["linux/amd64"]["digest"] = DIGEST  # type: ignore[index]
    assert moved["//:app"] != first["//:app"]  # the frontend's pin is keyed
    root = tmp_path / "a" / "ws"
    inputs = bt("inputs", "//:app", cwd=root)
    assert inputs.returncode == 0, inputs.stderr
    assert "the build runs frontend 'python', whose semantics bt does not know" in inputs.stdout
