"""A build's meaning counts what its reached stages build, not how the Dockerfile is laid out."""

from __future__ import annotations

from typing import Any

from dockerfile_cases import reads as typed_reads

SIMPLE = "FROM scratch\nARG V=1\nENV A=1 B=2\nCOPY a b /dst/\nRUN echo hi && echo there\n"


def reads(
    text: str,
    stage: str | None = None,
    args: dict[str, str] | None = None,
    *,
    platform: str | None = None,
    build_platform: str | None = None,
) -> Any:
    """The analysis, untyped: these tests index into nested meanings."""
    extra = {k: v for k, v in (("platform", platform), ("build_platform", build_platform)) if v}
    return typed_reads(text, stage, args, **extra)


def test_meaning_lists_directives_global_args_and_each_instruction_as_parsed() -> None:
    assert reads(SIMPLE).meaning == (
        ("directives", None, "\\", None),
        ("global-args",),
        (
            "stage",
            0,
            ("FROM", ("scratch",), None),
            ("ARG", ("V", "1")),
            ("ENV", "shell", (), ("A", "1", "B", "2"), ()),
            ("COPY", "shell", (), ("a", "b", "/dst/"), ()),
            ("RUN", "shell", (), ("echo hi && echo there",), ()),
        ),
    )


def test_comments_blank_lines_and_continuation_layout_leave_the_meaning_equal() -> None:
    laid_out = (
        "# a comment\nFROM scratch\n\nARG V=1\n# between\nENV A=1 \\\n    B=2\n"
        "COPY a \\\n  b \\\n\n  /dst/\nRUN echo hi \\\n# inside\n&& echo there\n"
    )
    assert reads(laid_out).meaning == reads(SIMPLE).meaning


def test_indenting_a_continued_shell_command_changes_the_meaning() -> None:
    # The joined text is the command BuildKit records in the image history.
    indented = SIMPLE.replace("echo hi && echo there", "echo hi && \\\n    echo there")
    assert reads(indented).meaning[2][-1] == (
        "RUN",
        "shell",
        (),
        ("echo hi &&     echo there",),
        (),
    )


def test_instructions_name_their_stage_line_keyword_and_canonical_text() -> None:
    text = (
        "FROM scratch AS base\nLABEL a=b\nFROM base\n# note\nRUN --mount=type=cache,target=/c ls\n"
    )
    assert reads(text).instructions == (
        ("base", 1, "FROM", '["FROM",["scratch"],null]'),
        ("base", 2, "LABEL", '["LABEL","shell",[],["a","b"],[]]'),
        (1, 3, "FROM", '["FROM",["stage","base"],null]'),
        (1, 5, "RUN", '["RUN","shell",[["mount","type=cache,target=/c"]],["ls"],[]]'),
    )


MULTI = """\
FROM scratch AS deps
COPY requirements.txt /
FROM scratch AS docs
COPY docs/ /docs/
FROM deps
COPY src/ /src/
"""


def test_an_edit_in_an_unreached_stage_leaves_the_meaning_equal() -> None:
    before = reads(MULTI)
    assert reads(MULTI.replace("docs/ /docs/", "manual/ /docs/")) == before
    changed = reads(MULTI.replace("src/ /src/", "src/ /app/"))
    assert changed.meaning != before.meaning
    assert set(changed.instructions) - set(before.instructions) == {
        (2, 6, "COPY", '["COPY","shell",[],["src/","/app/"],[]]')
    }


PER_ARCH = """\
FROM scratch AS base_amd64
COPY amd64.txt /
FROM scratch AS base_arm64
COPY arm64.txt /
FROM base_${TARGETARCH}
COPY app /
"""


def test_an_arm64_only_stage_changes_the_meaning_only_for_arm64() -> None:
    edited = PER_ARCH.replace("arm64.txt /", "arm64.txt /opt/")
    amd64, arm64 = "linux/amd64", "linux/arm64"
    assert reads(edited, platform=amd64).meaning == reads(PER_ARCH, platform=amd64).meaning
    assert reads(edited, platform=arm64).meaning != reads(PER_ARCH, platform=arm64).meaning
    assert reads(PER_ARCH, platform=arm64).meaning[2:] == (
        (
            "stage",
            "base_arm64",
            ("FROM", ("scratch",), None),
            ("COPY", "shell", (), ("arm64.txt", "/"), ()),
        ),
        (
            "stage",
            2,
            ("FROM", ("stage", "base_arm64"), None),
            ("COPY", "shell", (), ("app", "/"), ()),
        ),
    )


ARGS = "FROM scratch\nARG V=1 W\nCOPY v$V /\n"


def test_an_overridden_arg_default_leaves_the_meaning_equal() -> None:
    overridden = reads(ARGS, args={"V": "9"})
    assert reads(ARGS.replace("V=1", "V=2"), args={"V": "9"}).meaning == overridden.meaning
    assert overridden.meaning[2][3] == ("ARG", ("V", "9"), ("W", None))


def test_a_used_arg_default_changes_the_meaning() -> None:
    assert reads(ARGS).meaning[2][3] == ("ARG", ("V", "1"), ("W", None))
    assert reads(ARGS.replace("V=1", "V=2")).meaning[2][3] == ("ARG", ("V", "2"), ("W", None))


def test_each_parser_directive_changes_the_meaning() -> None:
    body = "FROM scratch\nCOPY a /\n"
    directives = [
        reads(prefix + body).meaning[0]
        for prefix in ("", "# syntax=docker/dockerfile:1\n", "# escape=`\n", "# check=skip=all\n")
    ]
    assert directives == [
        ("directives", None, "\\", None),
        ("directives", "docker/dockerfile:1", "\\", None),
        ("directives", None, "`", None),
        ("directives", None, "\\", "skip=all"),
    ]


GLOBALS = """\
ARG BASE=alpine
ARG TAG=3
ARG UNUSED=x
ARG REDECLARED=r
FROM ${BASE}:${TAG} AS build
ARG REDECLARED
FROM scratch AS other
ARG UNUSED
FROM build
"""


def test_global_args_count_when_a_reached_from_line_uses_them_or_a_reached_stage_redeclares_them() -> (
    None
):
    result = reads(GLOBALS)
    assert result.meaning[1:] == (
        ("global-args", ("BASE", "alpine"), ("TAG", "3"), ("REDECLARED", "r")),
        (
            "stage",
            "build",
            ("FROM", ("image", "docker.io/library/alpine:3"), None),
            ("ARG", ("REDECLARED", "r")),
        ),
        ("stage", 2, ("FROM", ("stage", "build"), None)),
    )
    assert reads(GLOBALS.replace("UNUSED=x", "UNUSED=y")).meaning == result.meaning
    assert reads(GLOBALS, args={"TAG": "4"}).meaning[1] == (
        ("global-args", ("BASE", "alpine"), ("TAG", "4"), ("REDECLARED", "r"))
    )


def test_a_from_platform_counts_by_its_resolved_value() -> None:
    text = "FROM --platform=$BUILDPLATFORM scratch\nCOPY a /\n"
    heads = [
        reads(text, build_platform=platform).meaning[2][2] for platform in ("linux/arm64/v8", None)
    ]
    assert heads == [("FROM", ("scratch",), "linux/arm64"), ("FROM", ("scratch",), ("unknown",))]


def test_both_meanings_count_when_docker_20_10_sees_other_arg_values() -> None:
    # Current BuildKit gives B=xy; Docker 20.10's frontend B=y (see the evaluation tests).
    current, legacy = reads("FROM scratch\nARG A=x B=${A}y\n").meaning
    assert (current[2][3], legacy[2][3]) == (
        ("ARG", ("A", "x"), ("B", "xy")),
        ("ARG", ("A", "x"), ("B", "y")),
    )
