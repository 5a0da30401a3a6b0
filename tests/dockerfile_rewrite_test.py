"""Handing a build exact images: the image words of FROM, COPY --from and RUN --mount=from=
are replaced in place, every instruction staying on its lines."""

from __future__ import annotations

import pytest

from buildtool.dockerfile import parse_dockerfile
from buildtool.dockerfile.rewrite import rewrite_images
from buildtool.errors import BtError

DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG REGISTRY
FROM --platform=$BUILDPLATFORM \\
  # a comment inside the instruction
  ${REGISTRY}/base:${TAG}   AS   build
COPY --from=acme/tools:1 /x /y
RUN --mount=type=bind,from=acme/tools:1,target=/t \\
    --mount=type=cache,target=/c true
ONBUILD COPY --from=acme/tools:1 a b
FROM scratch
COPY --from=build /y /y
"""


def test_each_kind_of_image_use_is_rewritten_on_its_own_lines() -> None:
    replacements = {
        (3, "from", "r.example/base:cpu"): "bt/base:cpu-0123",
        (6, "copy", "acme/tools:1"): "r.example/tools@sha256:" + "1" * 64,
        (7, "mount", "acme/tools:1"): "r.example/tools@sha256:" + "2" * 64,
        (9, "copy", "acme/tools:1"): "r.example/tools@sha256:" + "3" * 64,
    }
    result = rewrite_images(DOCKERFILE, replacements, "Dockerfile")
    expected = (
        DOCKERFILE.replace("${REGISTRY}/base:${TAG}", "bt/base:cpu-0123")
        .replace("COPY --from=acme/tools:1 /x", "COPY --from=r.example/tools@sha256:" + "1" * 64 + " /x")
        .replace("from=acme/tools:1,target", "from=r.example/tools@sha256:" + "2" * 64 + ",target")
        .replace("ONBUILD COPY --from=acme/tools:1", "ONBUILD COPY --from=r.example/tools@sha256:" + "3" * 64)
    )  # fmt: skip
    assert result == expected
    assert len(result.splitlines()) == len(DOCKERFILE.splitlines())
    stages = parse_dockerfile(result, "Dockerfile").stages
    assert [(s.base, s.name, s.line) for s in stages] == [
        ("bt/base:cpu-0123", "build", 3),
        ("scratch", None, 10),
    ]


def test_the_escape_directive_decides_continuations() -> None:
    text = "# escape=`\nFROM `\n  acme/base:1\nCOPY a b\n"
    result = rewrite_images(text, {(2, "from", "acme/base:1"): "bt/base:x"}, "Dockerfile")
    assert result == "# escape=`\nFROM `\n  bt/base:x\nCOPY a b\n"


def test_nothing_to_replace_leaves_the_text_alone() -> None:
    assert rewrite_images(DOCKERFILE, {}, "Dockerfile") is DOCKERFILE


def test_a_site_that_names_no_image_is_an_error() -> None:
    with pytest.raises(BtError) as err:
        rewrite_images(DOCKERFILE, {(6, "copy", "other:1"): "x"}, "docker/Dockerfile")
    assert str(err.value) == "docker/Dockerfile:6: cannot find the image 'other:1' to hand over"


def test_the_frontend_of_a_syntax_directive_is_handed_over_pinned() -> None:
    text = "#!/usr/bin/env docker-build\n# syntax = docker/dockerfile:1.7 \nFROM scratch\n"
    pinned = "docker/dockerfile:1.7@sha256:" + "6" * 64
    result = rewrite_images(text, {(2, "syntax", "docker/dockerfile:1.7"): pinned}, "Dockerfile")
    assert result == f"#!/usr/bin/env docker-build\n# syntax = {pinned} \nFROM scratch\n"
    assert parse_dockerfile(result, "Dockerfile").syntax == pinned


def test_the_frontend_of_a_json_file_is_handed_over_pinned() -> None:
    text = '{\n  "syntax": "acme/fe:1",\n  "steps": []\n}\n'
    pinned = "acme/fe:1@sha256:" + "6" * 64
    result = rewrite_images(text, {(1, "syntax", "acme/fe:1"): pinned}, "build.json")
    assert result == text.replace('"acme/fe:1"', f'"{pinned}"')
    assert parse_dockerfile(result, "build.json").syntax == pinned
