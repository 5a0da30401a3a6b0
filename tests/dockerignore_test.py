"""Docker's .dockerignore semantics: the examples of Docker's documentation, moby/patternmatcher's
own cases, and where Docker's walkers part ways (observed with Debian's docker CLI 20.10)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buildtool.errors import BtError
from buildtool.inputs.dockerignore import IgnoreRules, go_pattern_is_valid, load_ignore_rules


def ignored(text: str, *paths: str) -> dict[str, bool]:
    rules = IgnoreRules.parse(text)
    return {path: rules.ignored(path) for path in paths}


# -- Docker's documentation, "Build context" > ".dockerignore files" --------------------------


def test_docs_leading_slash_and_relative_pattern_name_the_same_path_and_nothing_else() -> None:
    paths = ("foo/bar", "foo/bar/baz", "bar", "x/foo/bar", "foo")
    expected = {
        "foo/bar": True,
        "foo/bar/baz": True,
        "bar": False,
        "x/foo/bar": False,
        "foo": False,
    }
    assert ignored("/foo/bar\n", *paths) == expected
    assert ignored("foo/bar\n", *paths) == expected


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("somedir/temporary.txt", True),  # */temp*: a direct subdirectory's file
        ("somedir/temp", True),  # */temp*: and directory
        ("somedir/temp/inside", True),  # ... with everything below it
        ("somedir/subdir/temporary.txt", True),  # */*/temp*
        ("tempa", True),  # temp?
        ("tempb", True),
        ("temp", False),  # temp? needs exactly one more character
        ("tempab", False),
        ("temporary.txt", False),  # */temp* needs one directory level
        ("a/b/c/temp", False),  # three levels: no line matches
        ("# comment", False),  # the comment line is no pattern
    ],
)
def test_docs_example_file(path: str, excluded: bool) -> None:
    text = "# comment\n*/temp*\n*/*/temp*\ntemp?\n"
    assert IgnoreRules.parse(text).ignored(path) is excluded


def test_docs_the_pattern_dot_is_ignored() -> None:
    assert ignored(".\n./\n", "a", "a/b", ".dockerignore") == {
        "a": False,
        "a/b": False,
        ".dockerignore": False,
    }


def test_docs_double_star_matches_any_number_of_directories_including_none() -> None:
    assert ignored("**/*.go\n", "main.go", "a/main.go", "a/b/c/main.go", "main.golang", "go") == {
        "main.go": True,
        "a/main.go": True,
        "a/b/c/main.go": True,
        "main.golang": False,
        "go": False,
    }


def test_docs_the_dockerfile_and_the_ignore_file_can_be_excluded() -> None:
    assert ignored("Dockerfile\n.dockerignore\n", "Dockerfile", ".dockerignore", "app") == {
        "Dockerfile": True,
        ".dockerignore": True,
        "app": False,
    }


def test_docs_exception_keeps_readme() -> None:
    assert ignored("*.md\n!README.md\n", "CHANGES.md", "README.md", "docs/x.md") == {
        "CHANGES.md": True,
        "README.md": False,
        "docs/x.md": False,  # *.md does not cross "/"
    }


def test_docs_the_last_matching_line_decides_secret_readme_excluded() -> None:
    paths = ("notes.md", "README.md", "README-public.md", "README-secret.md")
    assert ignored("*.md\n!README*.md\nREADME-secret.md\n", *paths) == {
        "notes.md": True,
        "README.md": False,
        "README-public.md": False,
        "README-secret.md": True,
    }


def test_docs_the_last_matching_line_decides_secret_readme_included() -> None:
    paths = ("notes.md", "README.md", "README-secret.md")
    assert ignored("*.md\nREADME-secret.md\n!README*.md\n", *paths) == {
        "notes.md": True,
        "README.md": False,
        "README-secret.md": False,
    }


def test_docs_star_then_exceptions_lists_what_to_include() -> None:
    paths = ("src", "src/app/main.go", "other", "other/x", "Dockerfile")
    assert ignored("*\n!src\n", *paths) == {
        "src": False,
        "src/app/main.go": False,
        "other": True,
        "other/x": True,
        "Dockerfile": True,
    }


def test_docs_dockerfile_specific_ignore_file_takes_precedence(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("a.txt\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app/Dockerfile.dockerignore").write_text("b.txt\n")
    rules = load_ignore_rules(tmp_path, tmp_path / "app/Dockerfile")
    assert (rules.source, rules.ignored("a.txt"), rules.ignored("b.txt")) == (
        str(tmp_path / "app/Dockerfile.dockerignore"),
        False,
        True,
    )


def test_context_ignore_file_applies_when_the_dockerfile_has_none(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("a.txt\n")
    (tmp_path / "app").mkdir()
    rules = load_ignore_rules(tmp_path, tmp_path / "app/model.Dockerfile")
    assert (rules.source, rules.ignored("a.txt")) == (str(tmp_path / ".dockerignore"), True)


def test_the_dockerfile_specific_file_is_named_after_the_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "model.Dockerfile.dockerignore").write_text("weights\n")
    rules = load_ignore_rules(tmp_path, tmp_path / "model.Dockerfile")
    assert rules.ignored("weights/big.bin")
    assert load_ignore_rules(tmp_path, tmp_path / "Dockerfile").source is None


def test_no_ignore_file_means_no_rules(tmp_path: Path) -> None:
    rules = load_ignore_rules(tmp_path, tmp_path / "Dockerfile")
    assert (rules.source, rules.patterns, rules.ignored("anything/at/all")) == (None, (), False)


def test_an_unreadable_ignore_file_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").mkdir()
    with pytest.raises(BtError) as err:
        load_ignore_rules(tmp_path, tmp_path / "Dockerfile")
    assert (
        str(err.value) == f"{tmp_path / '.dockerignore'}: cannot read ignore file: Is a directory"
    )


# -- reading lines ----------------------------------------------------------------------------


def test_only_a_hash_in_column_one_starts_a_comment() -> None:
    # Docker strips whitespace after deciding what is a comment (confirmed on a real build).
    rules = IgnoreRules.parse("# real comment\n  # not a comment\n")
    assert [p.text for p in rules.patterns] == ["# not a comment"]
    assert rules.ignored("# not a comment")
    assert not rules.ignored("# real comment")


def test_blank_lines_crlf_and_a_byte_order_mark_are_tolerated() -> None:
    rules = IgnoreRules.parse("\ufeffbuild\r\n\r\n   \r\n\tlogs \r\n")
    assert [(p.text, p.line) for p in rules.patterns] == [("build", 1), ("logs", 4)]


@pytest.mark.parametrize(
    ("line", "cleaned"),
    [
        ("/logs", "logs"),
        ("./logs", "logs"),
        ("logs/", "logs"),
        ("logs//", "logs"),
        ("/logs/", "logs"),
        ("//logs", "logs"),
        ("a/./b/../logs", "a/logs"),
        ("  logs  ", "logs"),
        ("/", "/"),
        ("../x", "../x"),
    ],
)
def test_patterns_are_cleaned_like_go_filepath_clean_without_a_leading_slash(
    line: str, cleaned: str
) -> None:
    assert IgnoreRules.parse(line + "\n").patterns[0].text == cleaned


def test_exceptions_are_trimmed_and_cleaned_after_the_bang() -> None:
    rules = IgnoreRules.parse("*\n  ! /src/app/  \n")
    assert [(p.text, p.exclusion) for p in rules.patterns] == [("*", False), ("src/app", True)]


def test_trailing_slash_leading_slash_and_dot_slash_exclude_the_same_directory() -> None:
    for pattern in ("logs/", "/logs", "./logs", "logs"):
        assert ignored(pattern + "\n", "logs", "logs/today.txt", "other/logs", "logsx") == {
            "logs": True,
            "logs/today.txt": True,
            "other/logs": False,
            "logsx": False,
        }, pattern


@pytest.mark.parametrize("line", ["!", "! ", "!/", "!//"])
def test_a_bare_exclamation_mark_is_rejected_like_docker(line: str) -> None:
    with pytest.raises(BtError) as err:
        IgnoreRules.parse(f"ok\n{line}\n", "ctx/.dockerignore")
    assert str(err.value) == 'ctx/.dockerignore:2: illegal exclusion pattern: "!"'


@pytest.mark.parametrize("line", ["[", "a[", "[]a]", "[-a]", "[a-]", "x\\", "[\\"])
def test_a_malformed_pattern_names_the_file_and_line(line: str) -> None:
    with pytest.raises(BtError) as err:
        IgnoreRules.parse(f"ok\n{line}\n", "ctx/.dockerignore")
    assert str(err.value) == f"ctx/.dockerignore:2: syntax error in pattern {line!r}"


@pytest.mark.parametrize(
    ("pattern", "valid"),
    [("abc", True), ("[a-c]x", True), ("[^a]", True), ("[\\]]", True), ("]", True),
     ("[", False), ("[^]", False), ("[a", False), ("[a-", False), ("\\", False), ("a[b-]", False)],
)  # fmt: skip
def test_pattern_syntax_is_checked_as_go_filepath_match_does(pattern: str, valid: bool) -> None:
    assert go_pattern_is_valid(pattern) is valid


# -- matching ---------------------------------------------------------------------------------


def test_matching_is_case_sensitive_unlike_docker_py() -> None:
    assert ignored("*.MD\nSecret\n", "NOTES.MD", "notes.md", "Secret", "secret", "SECRET") == {
        "NOTES.MD": True,
        "notes.md": False,
        "Secret": True,
        "secret": False,
        "SECRET": False,
    }


def test_a_directory_pattern_excludes_everything_below_it() -> None:
    assert ignored("foo\n", "foo", "foo/bar", "foo/bar/baz", "foobar", "x/foo") == {
        "foo": True,
        "foo/bar": True,
        "foo/bar/baz": True,
        "foobar": False,
        "x/foo": False,
    }


def test_a_later_exception_re_includes_a_file_under_an_excluded_directory() -> None:
    rules = IgnoreRules.parse("foo\n!foo/bar/baz\n")
    assert {p: rules.ignored(p) for p in ("foo", "foo/bar", "foo/bar/baz", "foo/bar/x")} == {
        "foo": True,
        "foo/bar": True,
        "foo/bar/baz": False,
        "foo/bar/x": True,
    }
    assert rules.may_include_under("foo")
    assert rules.may_include_under("foo/bar")
    assert not rules.may_include_under("foo/other")


def test_an_exception_before_the_exclusion_has_no_effect() -> None:
    assert ignored("!foo/bar\nfoo\n", "foo/bar", "foo/x") == {"foo/bar": True, "foo/x": True}


def test_question_mark_and_star_stay_within_one_component() -> None:
    assert ignored("a?b\nx*z\n", "a-b", "a/b", "xyz", "xz", "x/z") == {
        "a-b": True,
        "a/b": False,
        "xyz": True,
        "xz": True,
        "x/z": False,
    }


def test_escaped_bang_and_star_are_literal() -> None:
    assert ignored("\\!important\na\\*b\n", "!important", "important", "a*b", "axb") == {
        "!important": True,
        "important": False,
        "a*b": True,
        "axb": False,
    }


def test_dir_double_star_excludes_below_the_directory_but_not_itself() -> None:
    assert ignored("abc/**\n", "abc", "abc/def", "abc/def/ghi") == {
        "abc": False,
        "abc/def": True,
        "abc/def/ghi": True,
    }


def test_the_context_itself_is_never_excluded() -> None:
    assert ignored("**\n*\n", ".", "a") == {".": False, "a": True}


def _documented(pattern: str, path: str) -> bool:
    """One pattern, read as BuildKit does, against a path or any of its parents."""
    matches = IgnoreRules.parse(pattern + "\n").patterns[0].matches
    parts = path.split("/")
    return any(matches("/".join(parts[: i + 1])) for i in range(len(parts)))


# moby/patternmatcher's own table (TestMatches), as data: (pattern, path, matches).
PATTERNMATCHER_CASES = [
    ("**", "file", True), ("**", "file/", True), ("**/", "file", True), ("**/", "file/", True),
    ("**", "/", True), ("**/", "/", True), ("**", "dir/file", True), ("**/", "dir/file", True),
    ("**", "dir/file/", True), ("**/", "dir/file/", True), ("**/**", "dir/file", True),
    ("**/**", "dir/file/", True), ("dir/**", "dir/file", True), ("dir/**", "dir/file/", True),
    ("dir/**", "dir/dir2/file", True), ("dir/**", "dir/dir2/file/", True),
    ("**/dir", "dir", True), ("**/dir", "dir/file", True), ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/*", "dir/dir2/file/", True), ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**/dir2/**", "dir/dir2/dir3/file/", True), ("**file", "file", True),
    ("**file", "dir/file", True), ("**/file", "dir/file", True), ("**file", "dir/dir/file", True),
    ("**/file", "dir/dir/file", True), ("**/file*", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True), ("**/file*txt", "dir/dir/file.txt", True),
    ("**/file*.txt", "dir/dir/file.txt", True), ("**/file*.txt*", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True), ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True), ("**/**/*.txt", "file.txt", True),
    ("a**/*.txt", "a/file.txt", True), ("a**/*.txt", "a/dir/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True), ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt", "a/file.txt", True), ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False), ("a[b-d]e", "ace", True), ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True), (".*", ".foo", True), (".*", "foo", False),
    ("abc.def", "abcdef", False), ("abc.def", "abc.def", True), ("abc.def", "abcZdef", False),
    ("abc?def", "abcZdef", True), ("abc?def", "abcdef", False), ("a\\\\", "a\\", True),
    ("**/foo/bar", "foo/bar", True), ("**/foo/bar", "dir/foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True), ("abc/**", "abc", False),
    ("abc/**", "abc/def", True), ("abc/**", "abc/def/ghi", True), ("**/.foo", ".foo", True),
    ("**/.foo", "bar.foo", False), ("a(b)c/def", "a(b)c/def", True),
    ("a(b)c/def", "a(b)c/xyz", False), ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("a\\*b", "a*b", True),
]  # fmt: skip


@pytest.mark.parametrize(("pattern", "path", "matches"), PATTERNMATCHER_CASES)
def test_patternmatcher_table(pattern: str, path: str, matches: bool) -> None:
    assert _documented(pattern, path) is matches


# -- where Docker's walkers differ: a path is an input if any of them sends it ---------------
# Each case was built for real: Debian's docker CLI 20.10 (BuildKit, `COPY . /`) sent exactly
# the paths these tests keep, plus those that only BuildKit >= 0.10 sends.


def test_docker_cli_20_10_reads_regexp_syntax_so_both_readings_must_exclude() -> None:
    # 20.10 reads "a+b" as the regular expression a+b (it excludes "aab", keeps "a+b");
    # BuildKit excludes only the literal "a+b".
    assert ignored("a+b\n", "aab", "a+b", "ab") == {"aab": False, "a+b": False, "ab": False}
    assert ignored("a(b)\n", "ab", "a(b)") == {"ab": False, "a(b)": False}


def test_docker_cli_20_10_reads_a_leading_double_star_as_any_directories() -> None:
    # BuildKit's "**foo" is any path ending in "foo"; 20.10's is (.*/)?foo.
    assert ignored("**foo\n", "barfoo", "d/foo", "d/xfoo", "foo") == {
        "barfoo": False,
        "d/foo": True,
        "d/xfoo": False,
        "foo": True,
    }


def test_docker_cli_20_10_checks_only_the_parent_as_deep_as_the_pattern() -> None:
    # It enters x/y/foo for the exception, then "**/foo" (two components) is tried against
    # x/y only: x/y/foo/bar is sent.
    rules = IgnoreRules.parse("**/foo\n!x/y/foo/keep\n")
    assert {p: rules.ignored(p) for p in ("x/y/foo", "x/y/foo/bar", "x/y/foo/keep")} == {
        "x/y/foo": True,
        "x/y/foo/bar": False,
        "x/y/foo/keep": False,
    }


def test_buildkit_walks_into_excluded_directories_for_wildcard_exceptions() -> None:
    # 20.10 prunes nm (no exception starts with "nm/"); BuildKit enters it and sends nm/keep.
    rules = IgnoreRules.parse("nm\n!**/keep\n")
    assert {p: rules.ignored(p) for p in ("nm/keep", "nm/x/keep", "nm/y", "k/keep")} == {
        "nm/keep": False,
        "nm/x/keep": False,
        "nm/y": True,
        "k/keep": False,
    }
    assert rules.may_include_under("nm")


def test_buildkit_reuses_parent_matches_so_an_overlapping_later_line_can_miss() -> None:
    # The documented rule and 20.10 exclude a/b/c ("a/b" matches its parent, last); BuildKit
    # skipped "a/b" at a/b (already excluded) and never applies it below: a/b/c is sent.
    assert ignored("a\n!a/b/c\na/b\n", "a/b/c", "a/b/d", "a/x") == {
        "a/b/c": False,
        "a/b/d": True,
        "a/x": True,
    }
    assert ignored("*\n!src/app\nsrc\n", "src/app", "src/app/f", "src/g") == {
        "src/app": False,
        "src/app/f": False,
        "src/g": True,
    }


def test_a_path_only_the_documented_rule_keeps_is_still_an_input() -> None:
    # "!**/**/y" matches the parent x/y: the docs keep x/y/z. BuildKit tries it on x/y/z
    # alone; 20.10 on the parent prefix of three components, which x/y/z does not have.
    assert ignored("x/y/z\n!**/**/y\n", "x/y/z", "x/y/q") == {"x/y/z": False, "x/y/q": False}


def test_the_documented_rule_re_includes_through_a_parent_exception() -> None:
    # BuildKit excludes D/x here ("!D" was skipped at D); the documented rule and 20.10 send it.
    assert ignored("D/x\n!D\n", "D/x", "D/y") == {"D/x": False, "D/y": False}


def test_without_exceptions_no_excluded_directory_is_entered() -> None:
    rules = IgnoreRules.parse("node_modules\n**/*.tmp\n")
    assert not rules.may_include_under("node_modules")
    assert not rules.may_include_under("src")


def test_literal_exceptions_enter_only_directories_on_their_path() -> None:
    rules = IgnoreRules.parse("*\n!src/app/main.go\n!docs/*\n")
    assert [rules.may_include_under(d) for d in ("src", "src/app", "src/lib", "docs", "x")] == [
        True,
        True,
        False,
        True,
        False,
    ]


# -- properties -------------------------------------------------------------------------------

names = st.sampled_from(["a", "b", "c.md", "d"])
paths = st.lists(names, min_size=1, max_size=4).map("/".join)
segments = st.sampled_from(["a", "b", "c.md", "d", "*", "*.md", "?", "**"])
globs = st.lists(segments, min_size=1, max_size=3).map("/".join)


def _segment_matches(pattern: str, name: str) -> bool:
    if pattern == "*":
        return True
    if pattern == "*.md":
        return name.endswith(".md")
    if pattern == "?":
        return len(name) == 1
    return pattern == name


def _components_match(want: list[str], have: list[str]) -> bool:
    """The documented reading: "**" spans any number of components, at least one when it
    ends the pattern ("a/**" is what lies below "a")."""
    if not want:
        return not have
    if want[0] == "**":
        least = 1 if len(want) == 1 else 0
        return any(_components_match(want[1:], have[i:]) for i in range(least, len(have) + 1))
    return (
        bool(have) and _segment_matches(want[0], have[0]) and _components_match(want[1:], have[1:])
    )


def _glob_matches(pattern: str, path: str) -> bool:
    return _components_match(pattern.split("/"), path.split("/"))


@given(patterns=st.lists(globs, min_size=1, max_size=5), path=paths)
def test_without_exceptions_a_path_is_excluded_iff_a_line_matches_it_or_a_parent(
    patterns: list[str], path: str
) -> None:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    expected = any(_glob_matches(p, prefix) for p in patterns for prefix in prefixes)
    assert IgnoreRules.parse("\n".join(patterns)).ignored(path) is expected


lines = st.tuples(st.booleans(), globs)


@given(lines=st.lists(lines, min_size=1, max_size=5), path=paths)
def test_a_path_the_documented_rule_keeps_is_never_excluded(
    lines: list[tuple[bool, str]], path: str
) -> None:
    """Reference model of the docs: the last line matching the path or a parent decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    documented = False
    for bang, pattern in lines:
        if any(_glob_matches(pattern, prefix) for prefix in prefixes):
            documented = not bang
    text = "".join(("!" if bang else "") + pattern + "\n" for bang, pattern in lines)
    if not documented:
        assert not IgnoreRules.parse(text).ignored(path)


spellings = st.sampled_from(["{}", "/{}", "./{}", "{}/", "/{}/", "  {}  ", "{}//", "x/../{}"])


@given(lines=st.lists(st.tuples(st.booleans(), globs, spellings), min_size=1, max_size=5),
       path=paths)  # fmt: skip
def test_decisions_do_not_depend_on_how_a_pattern_is_spelled(
    lines: list[tuple[bool, str, str]], path: str
) -> None:
    plain = "".join(("!" if bang else "") + p + "\n" for bang, p, _ in lines)
    spelled = "".join(("!" if bang else "") + form.format(p) + "\n" for bang, p, form in lines)
    assert IgnoreRules.parse(spelled).ignored(path) is IgnoreRules.parse(plain).ignored(path)
