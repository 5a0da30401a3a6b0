"""Dockerfile analysis follows BuildKit's frontend: parsing, substitution, reachability, reads."""

from __future__ import annotations

import json
import string
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildtool.dockerfile import (
    Dockerfile,
    Instruction,
    SourceRef,
    StageReads,
    context_reads,
    parse_dockerfile,
)
from buildtool.errors import BtError


def parse(text: str) -> Dockerfile:
    return parse_dockerfile(textwrap.dedent(text).lstrip("\n"), "Dockerfile")


def reads(
    text: str,
    stage: str | None = None,
    args: dict[str, str] | None = None,
    **kwargs: str,
) -> StageReads:
    return context_reads(parse(text), stage, args or {}, **kwargs)


def paths(result: StageReads) -> list[str]:
    return [ref.source for ref in result.sources]


def only(df: Dockerfile) -> tuple[Instruction, ...]:
    return df.stages[-1].instructions


def parse_error(text: str) -> str:
    with pytest.raises(BtError) as caught:
        parse(text)
    return str(caught.value)


# --- parser directives ----------------------------------------------------------------------


def test_escape_directive_makes_backtick_the_continuation_character() -> None:
    df = parse(
        """
        # escape=`
        FROM scratch
        COPY a\\b `
             c /dst/
        """
    )
    assert df.escape == "`"
    assert only(df)[0].args == ("a\\b", "c", "/dst/")
    assert (only(df)[0].line, only(df)[0].end_line) == (3, 4)


def test_directives_are_case_insensitive_and_syntax_is_recorded() -> None:
    df = parse(
        """
        #SYNTAX = docker/dockerfile:1.7
        # Escape = `
        FROM scratch
        """
    )
    assert (df.syntax, df.escape) == ("docker/dockerfile:1.7", "`")


def test_directive_after_a_comment_is_an_ordinary_comment() -> None:
    df = parse(
        """
        # a comment first
        # escape=`
        FROM scratch
        ENV GOPATH \\
        \\go
        """
    )
    assert df.escape == "\\"
    assert only(df)[0].args == ("GOPATH", "\\go")


def test_directive_after_a_blank_line_is_an_ordinary_comment() -> None:
    df = parse_dockerfile("\n# escape=`\nFROM scratch\n", "Dockerfile")
    assert df.escape == "\\"


def test_repeated_directive_is_rejected() -> None:
    assert parse_error("# escape=`\n# escape=\\\nFROM scratch\n") == (
        "Dockerfile:2: only one escape parser directive can be used"
    )


def test_invalid_escape_token_is_rejected() -> None:
    assert "invalid escape token '$'" in parse_error("# escape=$\nFROM scratch\n")


# --- lines, continuations, comments -----------------------------------------------------------


def test_continuation_lines_join_without_dropping_inner_whitespace() -> None:
    df = parse_dockerfile(
        "FROM scratch\n"
        "RUN echo hello\\\n  world\\\n  goodnight  \\\n  moon\\\n  light\\\nning\n"
        "RUN echo hi \\\n \\\n world \\\n\\\n good\\\n\\\nnight\n",
        "Dockerfile",
    )
    assert [ins.args for ins in only(df)] == [
        ("echo hello  world  goodnight    moon  lightning",),
        ("echo hi   world  goodnight",),
    ]


def test_comment_and_empty_lines_inside_a_continuation_are_skipped() -> None:
    df = parse(
        """
        FROM scratch
        RUN echo hello \\
        # this is a comment

        # another one

        this is more
        LABEL a=1 \\
            # inline comment
            b=2
        """
    )
    run, label = only(df)
    assert run.args == ("echo hello this is more",)
    assert (run.line, run.end_line) == (2, 7)
    assert label.args == ("a", "1", "b", "2")


def test_escaped_escape_at_end_of_line_does_not_continue() -> None:
    df = parse(
        """
        FROM scratch
        ENV C trailing\\\\backslash\\\\
        ENV D not appended
        """
    )
    assert [ins.args for ins in only(df)] == [
        ("C", "trailing\\\\backslash\\\\"),
        ("D", "not appended"),
    ]


def test_continuation_at_end_of_file_ends_the_instruction() -> None:
    df = parse_dockerfile("FROM scratch\nRUN something \\", "Dockerfile")
    assert only(df)[0].args == ("something",)


def test_trailing_spaces_after_the_escape_still_continue() -> None:
    df = parse_dockerfile("FROM scratch\nRUN echo hello  \\  \nworld\n", "Dockerfile")
    assert only(df)[0].args == ("echo hello  world",)


def test_byte_order_mark_and_crlf_line_endings_are_accepted() -> None:
    df = parse_dockerfile("\ufeffFROM scratch\r\nCOPY a \\\r\n b /dst/\r\n", "Dockerfile")
    assert only(df)[0].args == ("a", "b", "/dst/")


def test_lowercase_keywords_and_extra_whitespace() -> None:
    df = parse_dockerfile("from\tscratch   as  Build\n  copy\t. /src\n", "Dockerfile")
    assert df.stages[0].name == "build"
    assert only(df)[0].keyword == "COPY"
    assert only(df)[0].args == (".", "/src")


# --- JSON and shell forms -------------------------------------------------------------------


def test_json_form_keeps_spaces_inside_sources() -> None:
    ins = only(parse('FROM scratch\nCOPY ["a b", "c", "/dst/"]\n'))[0]
    assert (ins.args, ins.json_form) == (("a b", "c", "/dst/"), True)


def test_invalid_json_falls_back_to_shell_form() -> None:
    ins = only(parse("FROM scratch\nCOPY ['a', '/dst/']\n"))[0]
    assert (ins.args, ins.json_form) == (("['a',", "'/dst/']"), False)


def test_json_array_of_non_strings_is_rejected() -> None:
    assert parse_error('FROM scratch\nCOPY ["a", 1]\n') == (
        "Dockerfile:2: when using JSON array syntax, arrays must be comprised of strings only"
    )


def test_run_shell_form_is_one_argument_and_json_form_a_list() -> None:
    run_shell, run_json, cmd_empty = only(
        parse('FROM scratch\nRUN  make  all \nRUN ["make", "all"]\nCMD []\n')
    )
    assert run_shell.args == ("make  all",)
    assert (run_json.args, run_json.json_form) == (("make", "all"), True)
    assert (cmd_empty.args, cmd_empty.json_form) == ((), True)


def test_env_old_and_new_forms_keep_quotes_until_substitution() -> None:
    old, new = only(parse('FROM scratch\nENV A some value\nENV B="x y" C=z\\ w\n'))
    assert old.args == ("A", "some value")
    assert new.args == ("B", '"x y"', "C", "z\\ w")


# --- heredocs ---------------------------------------------------------------------------------


def test_copy_heredoc_is_inline_content_not_a_context_read() -> None:
    text = "FROM scratch\nCOPY <<EOF /etc/config\nkey=value\nEOF\nCOPY real.txt /\n"
    df = parse_dockerfile(text, "Dockerfile")
    heredoc_copy = only(df)[0]
    assert heredoc_copy.heredocs == (("EOF", "key=value\n"),)
    assert (heredoc_copy.line, heredoc_copy.end_line) == (2, 4)
    assert paths(context_reads(df, None, {})) == ["real.txt"]


def test_run_heredoc_body_is_not_parsed_as_instructions() -> None:
    text = "FROM scratch\nRUN <<EOF\nCOPY not-an-instruction /\nFROM nope\nEOF\n"
    df = parse_dockerfile(text, "Dockerfile")
    assert len(df.stages) == 1
    assert only(df)[0].heredocs == (("EOF", "COPY not-an-instruction /\nFROM nope\n"),)
    assert context_reads(df, None, {}).sources == ()


def test_dash_heredoc_strips_leading_tabs_from_body_and_terminator() -> None:
    text = "FROM scratch\nRUN <<-EOT\n\techo a\n\t\techo b\n\tEOT\nCOPY x /\n"
    df = parse_dockerfile(text, "Dockerfile")
    assert only(df)[0].heredocs == (("EOT", "echo a\necho b\n"),)
    assert [ins.line for ins in only(df)] == [2, 6]


def test_several_heredocs_on_one_line_are_read_in_order() -> None:
    text = (
        "FROM scratch\n"
        "COPY <<A <<'B' data.bin /dst/\n"
        "first\nA\nsecond $X\nB\n"
        "RUN cat <<X > /a && cat <<Y > /b\nx\nX\ny\nY\n"
    )
    df = parse_dockerfile(text, "Dockerfile")
    copy, run = only(df)
    assert copy.heredocs == (("A", "first\n"), ("B", "second $X\n"))
    assert run.heredocs == (("X", "x\n"), ("Y", "y\n"))
    assert paths(context_reads(df, None, {})) == ["data.bin"]


def test_heredoc_markers_are_not_heredocs_in_json_form() -> None:
    text = 'FROM scratch\nRUN ["sh", "-c", "cat <<EOF"]\nCOPY x /\n'
    df = parse_dockerfile(text, "Dockerfile")
    assert [ins.heredocs for ins in only(df)] == [(), ()]


def test_unterminated_heredoc_is_rejected_at_its_instruction() -> None:
    assert parse_error("FROM scratch\nRUN <<EOF\necho\n") == "Dockerfile:2: unterminated heredoc"


def test_heredoc_as_copy_destination_is_rejected() -> None:
    assert "COPY cannot accept a heredoc as a destination" in parse_error(
        "FROM scratch\nCOPY a <<EOF\nx\nEOF\n"
    )


# --- flags ------------------------------------------------------------------------------------


def test_flags_are_split_from_arguments_with_quotes_removed() -> None:
    ins = only(
        parse('FROM scratch\nCOPY --from="build" --chmod=755 --link --exclude=*.md -- a /b\n')
    )[0]
    assert ins.flags == (("from", "build"), ("chmod", "755"), ("link", None), ("exclude", "*.md"))
    assert ins.args == ("a", "/b")


def test_unknown_copy_flag_is_rejected_with_a_suggestion() -> None:
    assert parse_error("FROM scratch\nCOPY --form=build a /b\n") == (
        "Dockerfile:2: unknown flag: --form (did you mean --from?)"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("COPY --from a /b", "missing a value on flag: --from"),
        ("COPY --link= a /b", "missing a value on flag: --link"),
        ("COPY --link=maybe a /b", "expecting boolean value for flag --link, not: maybe"),
        ("COPY --chown=1 --chown=2 a /b", "duplicate flag specified: --chown"),
        ("ADD --from=build a /b", "unknown flag: --from"),
        ("RUN --mount a", "missing a value on flag: --mount"),
    ],
)
def test_malformed_flags_are_rejected(line: str, message: str) -> None:
    assert parse_error(f"FROM scratch\n{line}\n") == f"Dockerfile:2: {message}"


def test_run_flags_other_than_mount_are_accepted() -> None:
    ins = only(parse("FROM scratch\nRUN --network=none --security=insecure make\n"))[0]
    assert ins.flags == (("network", "none"), ("security", "insecure"))


# --- structure and errors -----------------------------------------------------------------------


def test_stages_record_name_base_platform_and_lines() -> None:
    df = parse(
        """
        ARG BASE=alpine
        FROM --platform=$BUILDPLATFORM ${BASE} AS Builder
        RUN make

        FROM scratch
        COPY --from=builder /out /
        """
    )
    assert df.meta_args == (("BASE", "alpine"),)
    first, second = df.stages
    assert (first.index, first.name, first.base, first.platform_flag) == (
        0,
        "builder",
        "${BASE}",
        "$BUILDPLATFORM",
    )
    assert (first.line, first.end_line, second.line, second.end_line) == (2, 3, 5, 6)
    assert second.name is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Dockerfile:1: file with no instructions"),
        ("# only a comment\n", "Dockerfile:1: file with no instructions"),
        ("ARG A=1\n", "Dockerfile:1: dockerfile contains no stages to build"),
        ("RUN x\nFROM scratch\n", "Dockerfile:1: no build stage in current context"),
        (
            "FROM scratch\nCOPPY a /b\n",
            "Dockerfile:2: unknown instruction: COPPY (did you mean COPY?)",
        ),
        ("FROM a b\n", "Dockerfile:1: FROM requires either one or three arguments"),
        ("FROM a AS 1st\n", 'Dockerfile:1: invalid name for build stage: "1st"'),
        ("FROM scratch\nCOPY onlyone\n", "Dockerfile:2: COPY requires at least two arguments"),
        ("FROM scratch\nENV A\n", "Dockerfile:2: ENV must have two arguments"),
        ("FROM scratch\nENV A=1 B\n", 'Dockerfile:2: Syntax error - can\'t find = in "B"'),
        ("FROM scratch\nARG =x\n", "Dockerfile:2: ARG names can not be blank"),
        ("FROM scratch\nSHELL sh -c\n", "Dockerfile:2: SHELL requires the arguments to be in JSON"),
        (
            "FROM scratch\nCOPY --from=$X a /b\n",
            "Dockerfile:2: variable expansion is not supported",
        ),
        ("FROM scratch\nCOPY --from=3 a /b\n", "Dockerfile:2: invalid stage index 3"),
        (
            "FROM scratch\nRUN --mount=from=$X,target=/a x\n",
            "Dockerfile:2: 'from' doesn't support variable expansion",
        ),
        ('FROM scratch\nRUN --mount=source=a\\"b x\n', "Dockerfile:2: failed to parse csv"),
        ("FROM scratch\nONBUILD ONBUILD RUN x\n", "Dockerfile:2: Chaining ONBUILD"),
        ("FROM scratch\nONBUILD FROM x\n", "Dockerfile:2: FROM isn't allowed as an ONBUILD"),
    ],
)
def test_dockerfiles_docker_rejects_raise_located_errors(text: str, message: str) -> None:
    with pytest.raises(BtError) as caught:
        parse_dockerfile(text, "Dockerfile")
    assert str(caught.value).startswith(message)


def test_onbuild_trigger_is_parsed() -> None:
    ins = only(parse("FROM scratch\nONBUILD COPY --chown=1 app /app\n"))[0]
    assert ins.args == ("COPY --chown=1 app /app",)
    assert ins.trigger is not None
    assert (ins.trigger.keyword, ins.trigger.args, ins.trigger.flags) == (
        "COPY",
        ("app", "/app"),
        (("chown", "1"),),
    )


# --- targets and reachability --------------------------------------------------------------------

MULTI = """
    FROM scratch AS deps
    COPY requirements.txt /

    FROM deps AS build
    COPY src/ /src/

    FROM scratch AS docs
    COPY docs/ /docs/

    FROM alpine AS test
    COPY --from=BUILD /src /src
    COPY tests/ /tests/

    FROM scratch
    COPY --from=1 /src /app
    COPY README.md /
    """


def test_default_target_is_the_last_stage_and_unreached_stages_read_nothing() -> None:
    result = reads(MULTI)
    assert paths(result) == ["requirements.txt", "src", "README.md"]
    assert result.stage_lines == ((1, 2), (4, 5), (14, 16))
    assert result.external_bases == ()


def test_named_target_reaches_copy_from_stages_case_insensitively() -> None:
    result = reads(MULTI, stage="Test")
    assert paths(result) == ["requirements.txt", "src", "tests"]
    assert result.external_bases == ("alpine",)


def test_unknown_target_names_the_available_stages() -> None:
    with pytest.raises(BtError) as caught:
        reads(MULTI, stage="buidl")
    assert str(caught.value) == (
        "Dockerfile: target stage 'buidl' could not be found (did you mean build?); "
        "available stages: deps, build, docs, test"
    )


def test_copy_from_an_image_is_no_context_read() -> None:
    result = reads("FROM scratch\nCOPY --from=busybox:1.36 /bin/sh /sh\nCOPY --from=scratch / /\n")
    assert result.sources == ()
    assert result.from_images == ("busybox:1.36",)


def test_from_names_only_stages_declared_above_it() -> None:
    result = reads("FROM later\nCOPY a /\nFROM scratch AS later\nCOPY b /\n", stage=None)
    assert paths(result) == ["b"]
    result = reads("FROM later\nCOPY a /\nFROM scratch AS later\nCOPY b /\n", stage="later")
    assert paths(result) == ["b"]
    first = context_reads(parse("FROM later\nCOPY a /\nFROM scratch AS later\n"), None, {})
    assert first.external_bases == ()


def test_copy_from_a_later_stage_makes_the_whole_context_count() -> None:
    result = reads("FROM scratch AS a\nCOPY --from=b / /\nFROM scratch AS b\nCOPY x /\n", "a")
    assert result.whole_context is not None
    assert "not defined before it" in result.whole_context


def test_run_mount_from_a_stage_reaches_it() -> None:
    result = reads(
        """
        FROM scratch AS assets
        COPY assets/ /assets/
        FROM alpine
        RUN --mount=type=bind,from=assets,source=/assets,target=/a cp -r /a /out
        """
    )
    assert paths(result) == ["assets"]
    assert result.has_run


def test_stage_named_scratch_is_the_source_of_mounts_without_from() -> None:
    result = reads(
        """
        FROM alpine AS scratch
        COPY seed /seed
        FROM alpine
        RUN --mount=type=cache,target=/cache true
        """
    )
    assert paths(result) == ["seed"]


# --- ARG, ENV and substitution -------------------------------------------------------------------


def test_whisperx_shaped_dockerfile_resolves_model_paths_from_build_args() -> None:
    text = """
        ARG NO_MODEL_STAGE=no_model
        FROM scratch AS no_model
        COPY whisperX/ /app/
        FROM ${NO_MODEL_STAGE} AS final
        ARG WHISPER_MODEL
        COPY models/${WHISPER_MODEL}/ /models/
        """
    local = reads(text, args={"WHISPER_MODEL": "large-v3"})
    assert paths(local) == ["whisperX", "models/large-v3"]
    assert local.whole_context is None

    parent = "registry.example/whisperx:no_model@sha256:" + "a" * 64
    with_parent = reads(text, args={"NO_MODEL_STAGE": parent, "WHISPER_MODEL": "tiny"})
    assert paths(with_parent) == ["models/tiny"]
    assert with_parent.external_bases == (parent,)
    assert with_parent.stage_lines == ((4, 6),)

    unset = reads(text, args={"NO_MODEL_STAGE": parent})
    assert unset.sources == ()
    assert unset.whole_context == (
        "line 6: cannot resolve COPY source 'models/${WHISPER_MODEL}/': variable "
        f"WHISPER_MODEL is not set in the Dockerfile and may be set by image {parent}"
    )


def test_meta_arg_is_visible_in_a_stage_only_when_redeclared() -> None:
    text = """
        ARG DIR=meta
        FROM scratch
        COPY a/${DIR} /
        ARG DIR
        COPY b/${DIR} /
        ARG DIR=stage
        COPY c/${DIR} /
        """
    assert paths(reads(text)) == ["a", "b/meta", "c/stage"]
    assert paths(reads(text, args={"DIR": "cli"})) == ["a", "b/cli", "c/cli"]


def test_build_args_are_invisible_without_an_arg_declaration() -> None:
    assert paths(reads("FROM scratch\nCOPY src/${X} /\n", args={"X": "secret"})) == ["src"]


def test_undefined_variable_is_empty_on_a_scratch_base() -> None:
    result = reads("FROM scratch\nCOPY ${NOPE}/file ${NOPE} /dst\n")
    assert paths(result) == ["file", "."]
    assert result.whole_context is None


def test_arg_without_value_stays_unset_and_falls_through_to_the_base_image() -> None:
    result = reads("FROM debian\nARG VERSION\nCOPY app-${VERSION}.jar /\n")
    assert result.whole_context is not None
    assert "variable VERSION is not set in the Dockerfile and may be set by image debian" in (
        result.whole_context
    )
    assert paths(
        reads("FROM debian\nARG VERSION\nCOPY app-${VERSION}.jar /\n", args={"VERSION": "2"})
    ) == ["app-2.jar"]


def test_env_sets_variables_for_later_instructions_not_its_own() -> None:
    result = reads(
        """
        FROM scratch
        ENV A=one
        ENV A=two B=${A}
        COPY ${A}/${B} /
        ENV C three
        COPY ${C} /
        """
    )
    assert paths(result) == ["two/one", "three"]


def test_arg_defaults_see_earlier_args_of_the_same_instruction_except_on_docker_20_10() -> None:
    # Current BuildKit gives B=xy; Docker 20.10's frontend (checked on a real engine) B=y.
    assert paths(reads("FROM scratch\nARG A=x B=${A}y\nCOPY ${B} /\n")) == ["xy", "y"]


def test_meta_arg_without_value_hides_platform_args_on_docker_20_10() -> None:
    text = "ARG TARGETARCH\nFROM scratch\nARG TARGETARCH\nCOPY bin/${TARGETARCH} /\n"
    # Current BuildKit copies bin/amd64; Docker 20.10 (checked on a real engine) copies bin.
    assert paths(reads(text, platform="linux/amd64")) == ["bin/amd64", "bin"]
    assert paths(reads(text, args={"TARGETARCH": "arm64"})) == ["bin/arm64"]


def test_later_env_overrides_arg_and_later_arg_overrides_env() -> None:
    text = "FROM scratch\nARG V=arg\nENV V=env\nCOPY ${V} /\nARG V=again\nCOPY ${V} /\n"
    assert paths(reads(text)) == ["env", "again"]


def test_child_stage_inherits_environment_of_its_base_stage() -> None:
    text = (
        "FROM scratch AS base\nARG FLAVOR=slim\nENV DIR=conf\nFROM base\nCOPY ${DIR}/${FLAVOR} /\n"
    )
    assert paths(reads(text)) == ["conf/slim"]


def test_from_resolves_meta_args_and_build_args() -> None:
    text = "ARG REPO=library\nARG TAG\nFROM ${REPO}/python:${TAG:-3.12}\nCOPY . /app\n"
    assert reads(text).external_bases == ("library/python:3.12",)
    assert reads(text, args={"TAG": "3.11", "REPO": "mirror"}).external_bases == (
        "mirror/python:3.11",
    )


def test_blank_base_name_makes_the_whole_context_count() -> None:
    result = reads("FROM ${UNDECLARED}\nCOPY a /\n", args={"UNDECLARED": "alpine"})
    assert result.whole_context == (
        "line 1: FROM ${UNDECLARED}: base name should not be blank (Docker fails this build)"
    )


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("${SET:-d}", "value"),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", "."),
        ("${UNSET-d}", "d"),
        ("${SET:+w}", "w"),
        ("${EMPTY:+w}", "."),
        ("${EMPTY+w}", "w"),
        ("${UNSET+w}", "."),
        ("x\\$SET", "x$SET"),
        ("'$SET'", "$SET"),
        ('"$SET"', "value"),
        ("${LONG#*/}", "b/c.tar.gz"),
        ("${LONG##*/}", "c.tar.gz"),
        ("${LONG%.*}", "a/b/c.tar"),
        ("${LONG%%.*}", "a/b/c"),
        ("${LONG/b/x}", "a/x/c.tar.gz"),
        ("${LONG//./_}", "a/b/c_tar_gz"),
        ("${SET?}", "value"),
        ("$1$@x", "x"),
    ],
)
def test_copy_sources_are_substituted_like_buildkit(word: str, expected: str) -> None:
    text = (
        "FROM scratch\nENV SET=value EMPTY= LONG=a/b/c.tar.gz\n"
        f'COPY [{json.dumps(word)}, "/dst/"]\n'
    )
    result = reads(text)
    assert result.whole_context is None
    assert paths(result) == [expected]


@pytest.mark.parametrize(
    ("word", "error"),
    [
        ("${UNSET:?must be set}", "UNSET: must be set"),
        ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
        ("${}", "syntax error: bad substitution"),
        ("${SET", "unsupported modifier"),
        ("${SET:-x", "syntax error: missing '}'"),
        ("${SET:=x}", "unsupported modifier (:=) in substitution"),
        ("${SET#\\x}", "invalid escape '\\x'"),
        ("'open", "matching single-quote"),
    ],
)
def test_substitution_errors_make_the_whole_context_count(word: str, error: str) -> None:
    text = f'FROM scratch\nENV SET=value EMPTY=\nCOPY [{json.dumps(word)}, "/dst/"]\n'
    result = reads(text)
    assert result.sources == ()
    assert result.whole_context is not None
    assert result.whole_context.startswith(f"line 3: cannot resolve COPY source {word!r}")
    assert error in result.whole_context


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("he'll'o", "hello"),
        ("he\\'llo", "he'llo"),
        ("abc\\tdef", "abctdef"),
        ('"abc\\tdef"', "abc\\tdef"),
        ("'abc\\tdef'", "abc\\tdef"),
        ("hello\\\\", "hello\\"),
        ("\"he'$HOME'\"", "he'/home'"),
        ("\\${}aaa", "${}aaa"),
        ("he${XXX:-${HOME:-yyy}}xx", "he/homexx"),
        ("he${XXX:-${YYY:-yyy}}xx", "heyyyxx"),
        ("he${HOME:+${XXX}}xx", "hexx"),
        ("\uc548'\ub155'", "\uc548\ub155"),
        ("$.", "$."),
        ("${999:-bbb}aaa", "bbbaaa"),
    ],
)
def test_quotes_and_escapes_in_sources_follow_buildkit(word: str, expected: str) -> None:
    text = f'FROM scratch\nENV HOME=/home\nCOPY [{json.dumps(word)}, "/dst/"]\n'
    result = reads(text)
    assert (paths(result), result.whole_context) == ([expected.strip("/")], None)


def test_backtick_escape_leaves_backslashes_literal_in_sources() -> None:
    text = "# escape=`\nFROM scratch\nCOPY dir\\file c`x `$HOME /dst/\n"
    assert paths(reads(text)) == ["dir\\file", "cx", "$HOME"]


def test_deeply_nested_substitution_makes_the_whole_context_count() -> None:
    word = "${A:-" * 400 + "}" * 400
    result = reads(f"FROM scratch\nCOPY {word} /\n")
    assert result.whole_context is not None
    assert "nested too deeply" in result.whole_context
    assert len(result.whole_context) < 200


def test_env_with_an_unknown_name_makes_later_lookups_unknown() -> None:
    text = "FROM scratch\nARG TARGETOS\nENV ${TARGETOS}_DIR=x\nCOPY ${OTHER} /\n"
    result = reads(text)
    assert result.whole_context is not None
    assert "the name set by ENV at line 3 is unknown" in result.whole_context
    assert paths(reads(text, platform="linux/amd64")) == ["."]


def test_variables_set_in_the_dockerfile_are_known_on_an_image_base() -> None:
    assert reads("FROM debian\nENV D=data\nCOPY ${D} /\n").sources == (
        SourceRef("data", 3, "COPY", False),
    )


def test_run_commands_are_not_substituted() -> None:
    result = reads("FROM scratch\nRUN echo ${BROKEN\n")
    assert (result.has_run, result.whole_context) == (True, None)


# --- platform args -----------------------------------------------------------------------------


PLATFORM_DOCKERFILE = """
    FROM scratch
    ARG TARGETARCH
    ARG TARGETVARIANT
    ARG TARGETPLATFORM
    COPY bin/${TARGETARCH}${TARGETVARIANT}/app ${TARGETPLATFORM} /
    """


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ("linux/amd64", ["bin/amd64/app", "linux/amd64"]),
        ("linux/arm64/v8", ["bin/arm64/app", "linux/arm64"]),
        ("linux/arm", ["bin/armv7/app", "linux/arm/v7"]),
        ("Linux/AArch64", ["bin/arm64/app", "linux/arm64"]),
    ],
)
def test_target_platform_args_follow_containerd_normalisation(
    platform: str, expected: list[str]
) -> None:
    assert paths(reads(PLATFORM_DOCKERFILE, platform=platform)) == expected


def test_platform_args_are_unknown_without_a_platform() -> None:
    result = reads(PLATFORM_DOCKERFILE)
    assert result.whole_context is not None
    assert "TARGETPLATFORM is not known (the target platform was not given)" in (
        result.whole_context
    )


def test_build_args_override_platform_args() -> None:
    result = reads(
        PLATFORM_DOCKERFILE,
        args={"TARGETARCH": "riscv64", "TARGETVARIANT": "", "TARGETPLATFORM": "x"},
    )
    assert paths(result) == ["bin/riscv64/app", "x"]


def test_platform_args_need_an_arg_declaration_inside_a_stage() -> None:
    result = reads("FROM scratch\nCOPY bin/${TARGETARCH} /\n", platform="linux/amd64")
    assert paths(result) == ["bin"]


def test_invalid_platform_parameter_is_rejected() -> None:
    with pytest.raises(BtError, match="invalid platform 'amd64'"):
        reads("FROM scratch\n", platform="amd64")


# --- COPY and ADD sources -------------------------------------------------------------------------


def test_sources_are_normalised_relative_to_the_context() -> None:
    result = reads("FROM scratch\nCOPY /abs ./rel ../../up dir/ a/./b//c . /dst/\n")
    assert paths(result) == ["abs", "rel", "up", "dir", "a/b/c", "."]


def test_copy_parents_and_excludes_are_recorded_verbatim() -> None:
    result = reads(
        "FROM scratch\nARG X=y\n"
        "COPY --parents --exclude=*.pyc --exclude=$X src/./pkg/*.py /app/\n"
        "COPY --parents=false a /b\n"
    )
    assert result.sources == (
        SourceRef("src/pkg/*.py", 3, "COPY", True, ("*.pyc", "$X")),
        SourceRef("a", 4, "COPY", False, ()),
    )


def test_add_urls_and_git_repositories_are_remote_sources() -> None:
    result = reads(
        """
        FROM scratch
        ARG V=1.2
        ADD https://example.com/tool-${V}.tar.gz /opt/
        ADD https://github.com/moby/buildkit.git#v0.12 /src/
        ADD git@github.com:moby/buildkit.git /src2/
        ADD ssh://git.example.com/repo /src3/
        ADD local.tar.gz github.com/not/remote /x/
        """
    )
    assert result.remote_sources == (
        "https://example.com/tool-1.2.tar.gz",
        "https://github.com/moby/buildkit.git#v0.12",
        "git@github.com:moby/buildkit.git",
        "ssh://git.example.com/repo",
    )
    # Docker 20.10's frontend fetches only http(s) URLs and reads the others from the context.
    assert paths(result) == [
        "git@github.com:moby/buildkit.git",
        "ssh:/git.example.com/repo",
        "local.tar.gz",
        "github.com/not/remote",
    ]


def test_copy_of_a_url_makes_the_whole_context_count() -> None:
    result = reads("FROM scratch\nCOPY https://example.com/f /\n")
    assert result.whole_context == (
        "line 2: COPY source 'https://example.com/f' is a URL, which COPY does not accept "
        "(Docker fails this build)"
    )


def test_heredoc_sources_mix_with_context_sources() -> None:
    text = "FROM scratch\nCOPY <<EOF conf.d/ /etc/\ninline\nEOF\n"
    assert paths(context_reads(parse_dockerfile(text, "Dockerfile"), None, {})) == ["conf.d"]


# --- RUN --mount --------------------------------------------------------------------------------


def test_bind_mounts_read_their_source_from_the_context() -> None:
    result = reads(
        """
        FROM alpine
        ARG REQ=requirements.txt
        RUN --mount=type=bind,source=${REQ},target=/r \\
            --mount=src=vendor,dst=/v,ro \\
            --mount=target=/ctx \\
            --mount="type=bind,source=a b" \\
            pip install -r /r
        """
    )
    assert result.sources == (
        SourceRef("requirements.txt", 3, "RUN --mount", False),
        SourceRef("vendor", 3, "RUN --mount", False),
        SourceRef(".", 3, "RUN --mount", False),
        SourceRef("a b", 3, "RUN --mount", False),
        # Docker 20.10's frontend does not substitute mount values.
        SourceRef("${REQ}", 3, "RUN --mount", False),
    )


def test_other_mount_types_read_nothing_from_the_context() -> None:
    result = reads(
        """
        FROM alpine
        RUN --mount=type=cache,target=/root/.cache \\
            --mount=type=tmpfs,target=/tmp \\
            --mount=type=secret,id=token \\
            --mount=type=ssh \\
            --mount=type=bind,from=golang:1.22,source=/usr/local/go,target=/go \\
            true
        """
    )
    assert (result.sources, result.from_images, result.has_run) == ((), ("golang:1.22",), True)


def test_mount_type_from_a_variable_is_resolved() -> None:
    text = "FROM scratch\nARG T=cache\nRUN --mount=type=$T,target=/c,source=x true\n"
    assert (reads(text).sources, reads(text).whole_context) == ((), None)
    assert paths(reads(text, args={"T": "BIND"})) == ["x"]
    assert reads(text, args={"T": "BIND"}).whole_context is None
    result = reads(text, args={"T": "volume"})
    assert (
        result.whole_context == "line 3: unsupported mount type 'volume' (Docker fails this build)"
    )


# --- ONBUILD ------------------------------------------------------------------------------------


def test_onbuild_triggers_of_a_base_stage_run_in_the_child_stage() -> None:
    text = """
        FROM scratch AS template
        ENV DIR=site
        ONBUILD COPY ${DIR}/ /srv/
        ONBUILD RUN make
        COPY base.txt /

        FROM template AS child
        COPY child.txt /
        """
    parent_only = reads(text, stage="template")
    assert (paths(parent_only), parent_only.has_run) == (["base.txt"], False)
    child = reads(text, stage="child")
    assert paths(child) == ["site", "base.txt", "child.txt"]
    assert child.has_run


# --- frontend and results -----------------------------------------------------------------------


def test_unknown_frontend_makes_the_whole_context_count() -> None:
    text = "# syntax=example.com/custom-frontend:1\nFROM scratch\nCOPY a /\n"
    assert reads(text).whole_context == (
        "the build runs frontend 'example.com/custom-frontend:1', whose semantics bt does not know"
    )
    assert reads("# syntax=docker/dockerfile:1-labs\nFROM scratch\n").whole_context is None
    overridden = reads("FROM scratch\n", args={"BUILDKIT_SYNTAX": "other/frontend"})
    assert overridden.whole_context is not None


def test_a_floating_current_frontend_uses_only_current_rules() -> None:
    text = "# syntax=docker/dockerfile:1\nFROM scratch\nARG A=x B=${A}y\nCOPY ${B} /\n"
    assert paths(reads(text)) == ["xy"]
    pinned = text.replace("dockerfile:1", "dockerfile:1.4")
    assert paths(reads(pinned)) == ["xy", "y"]


def test_copy_only_dockerfile_has_no_run() -> None:
    result = reads('FROM scratch\nCOPY a /\nCMD ["/a"]\n')
    assert result == StageReads(
        sources=(SourceRef("a", 2, "COPY", False),),
        whole_context=None,
        remote_sources=(),
        has_run=False,
        external_bases=(),
        stage_lines=((1, 3),),
        from_images=(),
    )


# --- properties -----------------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "FROM ",
        "scratch",
        "alpine",
        " AS ",
        "b",
        "COPY ",
        "ADD ",
        "RUN ",
        "ARG ",
        "ENV ",
        "ONBUILD ",
        "--from=b ",
        "--mount=type=bind,source=",
        "--parents ",
        "$X",
        "${X:-y}",
        "${X",
        "}",
        "<<EOF",
        "EOF",
        "\\",
        "\n",
        " ",
        "#",
        "# escape=`",
        '["a", "b"]',
        "'",
        '"',
        "/",
        "..",
        ".",
        "*",
        "=",
        "x",
        "1",
        "\t",
    ]
)


_ARGS = st.dictionaries(st.sampled_from("XYZ"), st.text(string.ascii_letters + "/.$", max_size=5))


@settings(max_examples=500, deadline=None, database=None)
@given(st.lists(_FRAGMENTS, max_size=40).map("".join), _ARGS)
def test_any_text_parses_or_raises_bt_error_and_sources_are_clean(
    text: str, args: dict[str, str]
) -> None:
    try:
        df = parse_dockerfile(text, "Dockerfile")
    except BtError:
        return
    for stage in [None, *(s.name for s in df.stages if s.name)]:
        result = context_reads(df, stage, args, platform="linux/amd64")
        for ref in result.sources:
            segments = ref.source.split("/")
            assert ref.source == "." or not {"", ".", ".."} & set(segments)
