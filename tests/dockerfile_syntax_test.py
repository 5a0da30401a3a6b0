"""Dockerfile syntax follows BuildKit's parser: directives, lines, forms, heredocs, flags, errors."""

from __future__ import annotations

import pytest
from dockerfile_cases import only, parse, parse_error, paths

from buildtool.dockerfile import context_reads, parse_dockerfile
from buildtool.errors import BtError

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


def test_a_shebang_first_line_is_skipped_and_the_directives_after_it_count() -> None:
    # BuildKit's DirectiveParser skips a "#!" first line (an executable Dockerfile).
    text = "#!/usr/bin/env -S docker build -f\n# syntax=docker/dockerfile:1.7\n# check=error=true\n"
    df = parse_dockerfile(text + "# escape=`\nFROM scratch\n", "Dockerfile")
    assert (df.syntax, df.check, df.escape) == ("docker/dockerfile:1.7", "error=true", "`")
    # Only as the first line: a shebang later is a comment that ends the directives.
    later = parse_dockerfile("# check=error=true\n#!/bin/sh\n# syntax=x/y:1\nFROM scratch\n", "D")
    assert (later.check, later.syntax) == ("error=true", None)


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


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("// syntax=acme/fe:1 --flag\nanything\n", ("acme/fe:1", 1)),
        ("#!/bin/x\n// check=skip\n//SYNTAX = acme/fe:2\n", ("acme/fe:2", 3)),
        ('{"syntax": "acme/fe:3", "steps": []}', ("acme/fe:3", 1)),
        ("\ufeff// syntax=acme/fe:4\n", ("acme/fe:4", 1)),
        ("# syntax=acme/fe:5\n// syntax=acme/other\n", None),  # the usual form wins
        ("// hello\n// syntax=acme/fe:6\n", None),  # not a directive: the directives end
        ('{"syntax": 1}', None),
        ("FROM scratch\n", None),
    ],
)
def test_foreign_syntax_follows_buildkits_detect_syntax(
    text: str, found: tuple[str, int] | None
) -> None:
    from buildtool.dockerfile.syntax import foreign_syntax

    assert foreign_syntax(text) == found


def test_a_file_another_frontend_reads_is_not_parsed_and_reads_the_whole_context() -> None:
    df = parse_dockerfile("// syntax=acme/fe:1\nthis is no Dockerfile\n", "Dockerfile")
    assert (df.stages, df.syntax, df.syntax_line) == ((), "acme/fe:1", 1)
    assert df.opaque is not None
    reads = context_reads(df, None, {})
    assert (
        reads.whole_context
        == "the build runs frontend 'acme/fe:1', whose semantics bt does not know"
    )
    assert [(i.reference, i.line, i.kind) for i in reads.images] == [("acme/fe:1", 1, "syntax")]
    other = parse_dockerfile("// syntax=acme/fe:1\nthis is no Dockerfile!\n", "Dockerfile")
    assert other.opaque != df.opaque


def test_the_dockerfile_frontend_named_the_c_style_way_still_parses_as_a_dockerfile() -> None:
    with pytest.raises(BtError):  # BuildKit's Dockerfile frontend rejects the `//` line too
        parse_dockerfile("// syntax=docker/dockerfile:1\nFROM scratch\n", "Dockerfile")
