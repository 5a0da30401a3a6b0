"""Variable substitution in Dockerfile words follows BuildKit's shell word processor."""

from __future__ import annotations

import json

import pytest
from dockerfile_cases import paths, reads


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
