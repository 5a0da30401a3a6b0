"""The exact file set a COPY/ADD/bind-mount source reads from a build context: globs, ignore
rules, symlinks, modes and errors, checked in real directories (and against a real build)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildtool.errors import BtError
from buildtool.inputs.context_tree import ContextTree, InputEntry, resolve_inputs
from buildtool.inputs.dockerignore import IgnoreRules, load_ignore_rules


def make(root: Path, *paths: str) -> Path:
    """Files (``a/b.txt``) and empty directories (``a/empty/``) under ``root``."""
    for rel in paths:
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rel)
    return root


def tree(root: Path, ignore: str = "", exclude: tuple[str, ...] = ()) -> ContextTree:
    return ContextTree(root, IgnoreRules.parse(ignore), exclude)


def expand(t: ContextTree, source: str) -> list[tuple[str, str]]:
    return [(e.path, e.kind) for e in t.expand(source, origin="Dockerfile", line=7)]


def error(t: ContextTree, source: str) -> str:
    with pytest.raises(BtError) as err:
        t.expand(source, origin="docker/Dockerfile", line=3)
    return str(err.value)


F, D, L = "file", "dir", "symlink"


# -- directories and files --------------------------------------------------------------------


def test_a_directory_source_is_its_whole_subtree_including_empty_directories(
    tmp_path: Path,
) -> None:
    make(tmp_path, "src/a.py", "src/pkg/b.py", "src/pkg/empty/", "other.txt")
    assert expand(tree(tmp_path), "src") == [
        ("src", D),
        ("src/a.py", F),
        ("src/pkg", D),
        ("src/pkg/b.py", F),
        ("src/pkg/empty", D),
    ]


def test_a_file_source_is_that_file(tmp_path: Path) -> None:
    make(tmp_path, "src/a.py", "src/b.py")
    assert tree(tmp_path).expand("src/a.py", origin="Dockerfile", line=1) == [
        InputEntry("src/a.py", "file", False, None)
    ]


def test_dot_and_its_spellings_are_the_whole_context(tmp_path: Path) -> None:
    make(tmp_path, "a", "b/c", "b/d/")
    t = tree(tmp_path)
    whole = [("a", F), ("b", D), ("b/c", F), ("b/d", D)]
    assert [(e.path, e.kind) for e in t.whole()] == whole
    for source in (".", "./", "/", "", "b/.."):
        assert expand(t, source) == whole, source


def test_sources_are_rooted_at_the_context_as_buildkit_roots_them(tmp_path: Path) -> None:
    make(tmp_path, "app/main.go")
    t = tree(tmp_path)
    for source in (
        "app/main.go",
        "/app/main.go",
        "./app/main.go",
        "../app/main.go",
        "app//main.go",
    ):
        assert expand(t, source) == [("app/main.go", F)], source


def test_the_owner_exec_bit_is_recorded_for_files(tmp_path: Path) -> None:
    make(tmp_path, "bin/run.sh", "bin/data.txt")
    (tmp_path / "bin/run.sh").chmod(0o744)
    (tmp_path / "bin/data.txt").chmod(0o655)  # group/other exec bits do not count
    assert [(e.path, e.executable) for e in tree(tmp_path).expand("bin", origin="D", line=1)] == [
        ("bin", False),
        ("bin/data.txt", False),
        ("bin/run.sh", True),
    ]


def test_output_is_sorted_by_path_string_not_walk_order(tmp_path: Path) -> None:
    make(tmp_path, "a/b", "a-c", "a.d")
    assert [p for p, _ in expand(tree(tmp_path), ".")] == ["a", "a-c", "a.d", "a/b"]


def test_a_missing_source_names_the_dockerfile_line_and_context(tmp_path: Path) -> None:
    make(tmp_path, "a.txt")
    assert error(tree(tmp_path), "nope.txt") == (
        f"docker/Dockerfile:3: COPY source 'nope.txt' not found in context {tmp_path}"
    )


def test_a_file_used_as_a_directory_is_missing(tmp_path: Path) -> None:
    make(tmp_path, "a.txt")
    assert error(tree(tmp_path), "a.txt/b") == (
        f"docker/Dockerfile:3: COPY source 'a.txt/b' not found in context {tmp_path}"
    )


# -- wildcards --------------------------------------------------------------------------------


def test_star_and_question_mark_match_within_one_component(tmp_path: Path) -> None:
    make(tmp_path, "a.txt", "b.txt", "c.md", "sub/d.txt", "x1", "x22")
    t = tree(tmp_path)
    assert expand(t, "*.txt") == [("a.txt", F), ("b.txt", F)]
    assert expand(t, "x?") == [("x1", F)]


def test_a_wildcard_in_a_middle_component_matches_directories(tmp_path: Path) -> None:
    make(tmp_path, "src/a/main.go", "src/b/main.go", "src/b/x.go", "src/c.go", "src/d/e/main.go")
    assert expand(tree(tmp_path), "src/*/main.go") == [("src/a/main.go", F), ("src/b/main.go", F)]


def test_a_matched_directory_is_copied_whole(tmp_path: Path) -> None:
    make(tmp_path, "pkg-a/x.py", "pkg-a/sub/y.py", "pkg-b/", "pkgc")
    assert expand(tree(tmp_path), "pkg-*") == [
        ("pkg-a", D),
        ("pkg-a/sub", D),
        ("pkg-a/sub/y.py", F),
        ("pkg-a/x.py", F),
        ("pkg-b", D),
    ]


def test_character_classes_follow_go_filepath_match(tmp_path: Path) -> None:
    make(tmp_path, "f1", "f2", "f9", "fa", "f!", "f^")
    t = tree(tmp_path)
    assert [p for p, _ in expand(t, "f[1-2]")] == ["f1", "f2"]
    assert [p for p, _ in expand(t, "f[^0-9]")] == ["f!", "f^", "fa"]  # "^" negates
    assert [p for p, _ in expand(t, "f[!a]")] == ["f!", "fa"]  # "!" does not, in Go
    assert [p for p, _ in expand(t, "f[\\^]")] == ["f^"]


def test_an_escaped_wildcard_in_a_glob_is_literal(tmp_path: Path) -> None:
    make(tmp_path, "d/a*b", "d/axb", "e*/f")
    assert [p for p, _ in expand(tree(tmp_path), "*/a\\*b")] == ["d/a*b"]


def test_double_star_spans_any_number_of_directories_including_none(tmp_path: Path) -> None:
    make(tmp_path, "main.go", "a/b.go", "a/b/c.go", "a/b/c.txt", "x/y/z/d.go")
    t = tree(tmp_path)
    assert [p for p, _ in expand(t, "**/*.go")] == [
        "a/b.go",
        "a/b/c.go",
        "main.go",
        "x/y/z/d.go",
    ]
    assert [p for p, _ in expand(t, "a/**/*.go")] == ["a/b.go", "a/b/c.go"]


def test_a_glob_matching_nothing_is_a_missing_source(tmp_path: Path) -> None:
    make(tmp_path, "a.txt")
    assert error(tree(tmp_path), "*.md") == (
        f"docker/Dockerfile:3: COPY source '*.md' not found in context {tmp_path}"
    )


def test_a_malformed_glob_matches_nothing(tmp_path: Path) -> None:
    make(tmp_path, "a[")
    assert error(tree(tmp_path), "a[").endswith(f"COPY source 'a[' not found in context {tmp_path}")


# -- .dockerignore ----------------------------------------------------------------------------


def test_an_ignored_file_inside_a_copied_directory_is_not_an_input(tmp_path: Path) -> None:
    make(tmp_path, "src/a.py", "src/a.pyc", "src/pkg/b.pyc", "src/pkg/b.py")
    assert expand(tree(tmp_path, "**/*.pyc\n"), "src") == [
        ("src", D),
        ("src/a.py", F),
        ("src/pkg", D),
        ("src/pkg/b.py", F),
    ]


def test_a_re_included_file_under_an_ignored_directory_is_an_input(tmp_path: Path) -> None:
    make(tmp_path, "docs/README.md", "docs/big.pdf", "docs/img/x.png", "app.py")
    t = tree(tmp_path, "docs\n!docs/README.md\n")
    assert expand(t, ".") == [("app.py", F), ("docs", D), ("docs/README.md", F)]
    assert expand(t, "docs") == [("docs", D), ("docs/README.md", F)]


def test_an_excluded_directory_is_sent_only_for_what_is_re_included_below_it(
    tmp_path: Path,
) -> None:
    # Only BuildKit walks into nm for a wildcard exception, and sends nm as keep's parent.
    make(tmp_path, "nm/keep", "nm/x/keep", "nm/y", "other/z", "app.js")
    t = tree(tmp_path, "nm\nother\n!**/keep\n")
    assert expand(t, ".") == [
        ("app.js", F),
        ("nm", D),
        ("nm/keep", F),
        ("nm/x", D),
        ("nm/x/keep", F),
    ]
    assert expand(t, "nm/x") == [("nm/x", D), ("nm/x/keep", F)]
    assert error(t, "other").endswith("(excluded by .dockerignore)")
    assert expand(t, "*") == expand(t, ".")


def test_an_ignored_directory_is_pruned_without_being_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make(tmp_path, "node_modules/x/y.js", "app.js")
    listed = count_listings(monkeypatch, tmp_path)
    assert expand(tree(tmp_path, "node_modules\n"), ".") == [("app.js", F)]
    assert listed == ["."]


def test_a_glob_skips_ignored_matches(tmp_path: Path) -> None:
    make(tmp_path, "a.txt", "secret.txt")
    assert expand(tree(tmp_path, "secret.txt\n"), "*.txt") == [("a.txt", F)]


def test_copying_an_ignored_path_fails_and_says_why(tmp_path: Path) -> None:
    make(tmp_path, "Dockerfile", "secret.txt")
    (tmp_path / ".dockerignore").write_text("secret.txt\nDockerfile\n")
    t = ContextTree(tmp_path, load_ignore_rules(tmp_path, tmp_path / "Dockerfile"))
    for source in ("secret.txt", "Dockerfile"):
        assert error(t, source) == (
            f"docker/Dockerfile:3: COPY source {source!r} not found in context {tmp_path} "
            f"(excluded by {tmp_path / '.dockerignore'})"
        )


def test_the_ignore_file_is_an_input_unless_it_ignores_itself(tmp_path: Path) -> None:
    make(tmp_path, "a")
    (tmp_path / ".dockerignore").write_text("b\n")
    rules = load_ignore_rules(tmp_path, tmp_path / "Dockerfile")
    assert [p for p, _ in expand(ContextTree(tmp_path, rules), ".")] == [".dockerignore", "a"]
    (tmp_path / ".dockerignore").write_text(".dockerignore\n")
    rules = load_ignore_rules(tmp_path, tmp_path / "Dockerfile")
    assert [p for p, _ in expand(ContextTree(tmp_path, rules), ".")] == ["a"]


def test_excluded_tool_paths_are_never_inputs(tmp_path: Path) -> None:
    make(tmp_path, "images.lock", ".bt-cache/stat.msgpack", "app.py")
    t = tree(tmp_path, exclude=("images.lock", ".bt-cache/"))
    assert expand(t, ".") == [("app.py", F)]
    assert error(t, "images.lock") == (
        f"docker/Dockerfile:3: COPY source 'images.lock' not found in context {tmp_path} "
        "(images.lock is bt's own state, never a build input)"
    )


# -- symlinks ---------------------------------------------------------------------------------


def test_symlinks_inside_a_copied_directory_are_entries_with_their_text(tmp_path: Path) -> None:
    make(tmp_path, "app/real.txt", "outside/")
    os.symlink("real.txt", tmp_path / "app/in")
    os.symlink("/etc/passwd", tmp_path / "app/abs")
    os.symlink("../../elsewhere", tmp_path / "app/up")
    os.symlink("../outside", tmp_path / "app/dirlink")
    assert tree(tmp_path).expand("app", origin="D", line=1) == [
        InputEntry("app", "dir", False, None),
        InputEntry("app/abs", "symlink", False, "/etc/passwd"),
        InputEntry("app/dirlink", "symlink", False, "../outside"),  # not followed
        InputEntry("app/in", "symlink", False, "real.txt"),
        InputEntry("app/real.txt", "file", False, None),
        InputEntry("app/up", "symlink", False, "../../elsewhere"),
    ]


def test_a_symlink_source_is_followed_inside_the_context(tmp_path: Path) -> None:
    make(tmp_path, "data/v2/model.bin", "data/v2/extra/")
    os.symlink("data/v2", tmp_path / "current")
    os.symlink("../data/v2/model.bin", tmp_path / "data/latest")
    t = tree(tmp_path)
    assert expand(t, "current") == [
        ("current", L),
        ("data/v2", D),
        ("data/v2/extra", D),
        ("data/v2/model.bin", F),
    ]
    assert expand(t, "data/latest") == [("data/latest", L), ("data/v2/model.bin", F)]
    assert expand(t, "current/model.bin") == [("current", L), ("data/v2/model.bin", F)]


def test_a_matched_symlink_is_followed(tmp_path: Path) -> None:
    make(tmp_path, "b.data")
    os.symlink("b.data", tmp_path / "a.txt")
    assert expand(tree(tmp_path), "*.txt") == [("a.txt", L), ("b.data", F)]


def test_an_absolute_symlink_into_the_context_is_followed(tmp_path: Path) -> None:
    make(tmp_path, "real/x")
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert expand(tree(tmp_path), "link") == [("link", L), ("real", D), ("real/x", F)]


def test_a_source_leaving_the_context_through_a_symlink_is_an_error(tmp_path: Path) -> None:
    ctx = make(tmp_path / "ctx", "app/")
    make(tmp_path, "secret/key")
    os.symlink("../../secret", ctx / "app/keys")
    os.symlink("/etc", ctx / "etc")
    t = tree(ctx)
    assert error(t, "app/keys/key") == (
        "docker/Dockerfile:3: COPY source 'app/keys/key' leaves the build context through "
        f"symlink {ctx / 'app/keys'} -> ../../secret"
    )
    assert error(t, "etc").endswith(f"through symlink {ctx / 'etc'} -> /etc")
    # The link itself is still an input when its directory is copied.
    assert ("app/keys", L) in expand(t, "app")


def test_a_symlink_loop_is_an_error(tmp_path: Path) -> None:
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    assert error(tree(tmp_path), "a") == (
        f"docker/Dockerfile:3: cannot use {tmp_path}/a: too many levels of symbolic links"
    )


def test_a_dangling_symlink_source_is_missing(tmp_path: Path) -> None:
    os.symlink("nowhere", tmp_path / "a")
    assert error(tree(tmp_path), "a") == (
        f"docker/Dockerfile:3: COPY source 'a' not found in context {tmp_path}"
    )


def test_a_glob_does_not_descend_through_a_symlinked_directory(tmp_path: Path) -> None:
    make(tmp_path, "real/x.go")
    os.symlink("real", tmp_path / "link")
    assert [p for p, _ in expand(tree(tmp_path), "*/x.go")] == ["real/x.go"]


# -- unusable files ---------------------------------------------------------------------------


def test_a_fifo_in_a_copied_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    make(tmp_path, "app/a")
    os.mkfifo(tmp_path / "app/pipe")
    assert error(tree(tmp_path), "app") == (
        f"docker/Dockerfile:3: cannot use {tmp_path}/app/pipe: "
        "not a regular file, directory or symlink"
    )
    assert expand(tree(tmp_path, "app/pipe\n"), "app") == [("app", D), ("app/a", F)]
    assert expand(tree(tmp_path), "app/a") == [("app/a", F)]  # a sibling is fine


def as_unprivileged(fn: Callable[[], object]) -> str:
    """``fn()`` run in a child process with the permission checks a non-root user gets (as
    nobody when the tests run as root); its result's repr, or its BtError as text."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read)
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            text = repr(fn())
        except BtError as err:
            text = str(err)
        except BaseException as err:
            text = f"unexpected {err!r}"
        os.write(write, text.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        out = pipe.read()
    os.waitpid(pid, 0)
    return out


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may traverse (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="bt-inputs-"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir() and not sub.is_symlink():
            sub.chmod(0o755)
    shutil.rmtree(path)


def test_unreadable_files_and_directories_are_errors_naming_them(open_dir: Path) -> None:
    ctx = make(open_dir, "ok.txt", "secret.txt", "locked/x", "ignored.txt")
    for path in (ctx / "secret.txt", ctx / "ignored.txt", ctx / "locked"):
        path.chmod(0o000)
    rules = IgnoreRules.parse("ignored.txt\n")

    def expand_unprivileged(source: str) -> str:
        return as_unprivileged(lambda: ContextTree(ctx, rules).expand(source, origin="D", line=2))

    assert (
        expand_unprivileged("secret.txt") == f"D:2: cannot use {ctx}/secret.txt: permission denied"
    )
    assert expand_unprivileged("locked") == f"D:2: cannot use {ctx}/locked: permission denied"
    assert expand_unprivileged("ok.txt") == repr([InputEntry("ok.txt", "file", False, None)])
    assert expand_unprivileged("*.txt") == f"D:2: cannot use {ctx}/secret.txt: permission denied"
    # An ignored file is never opened, readable or not.
    assert ContextTree(ctx, IgnoreRules.parse("secret.txt\nlocked\nignored.txt\n")).whole() == [
        InputEntry("ok.txt", "file", False, None)
    ]


# -- sharing one tree between many targets ---------------------------------------------------


def test_resolve_inputs_is_the_sorted_union_of_overlapping_sources(tmp_path: Path) -> None:
    make(tmp_path, "a/x", "a/y", "b", "c")
    t = tree(tmp_path)
    entries = resolve_inputs(
        t, [(s, "D", n, "COPY", ()) for n, s in enumerate(("a", "a/x", "c", "*"))]
    )
    assert [e.path for e in entries] == ["a", "a/x", "a/y", "b", "c"]
    assert resolve_inputs(t, []) == []


def test_resolve_inputs_reports_the_failing_source_line(tmp_path: Path) -> None:
    make(tmp_path, "a")
    with pytest.raises(BtError) as err:
        resolve_inputs(tree(tmp_path), [("a", "df", 1, "COPY", ()), ("b", "df", 9, "COPY", ())])
    assert str(err.value) == f"df:9: COPY source 'b' not found in context {tmp_path}"


def test_a_missing_bind_mount_source_is_named_as_the_run_mount_that_reads_it(
    tmp_path: Path,
) -> None:
    with pytest.raises(BtError) as err:
        resolve_inputs(tree(tmp_path), [("req.txt", "df", 4, "RUN --mount", ())])
    assert (
        str(err.value) == f"df:4: RUN --mount bind source 'req.txt' not found in context {tmp_path}"
    )


def test_a_missing_source_inside_an_unchecked_submodule_says_so(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitmodules").write_text(
        '[submodule "vendor/lib"]\n\tpath = vendor/lib\n\turl = https://example.invalid/lib\n'
    )
    (tmp_path / "vendor/lib").mkdir(parents=True)
    with pytest.raises(BtError) as err:
        resolve_inputs(tree(tmp_path), [("vendor/lib/setup.py", "df", 3, "COPY", ())])
    assert str(err.value) == (
        f"df:3: COPY source 'vendor/lib/setup.py' not found in context {tmp_path}: it is inside "
        "git submodule vendor/lib, which is not checked out (run `git submodule update --init`)"
    )


@pytest.mark.parametrize(
    ("source", "excludes", "kept"),
    [
        # relative to a directory source
        ("src/", ("*.md",), ["src", "src/a.py", "src/sub", "src/sub/b.py", "src/sub/c.md"]),
        ("src", ("**/*.md",), ["src", "src/a.py", "src/sub", "src/sub/b.py"]),
        ("src", ("sub",), ["src", "src/a.py", "src/top.md"]),
        (
            "src",
            ("*.md", "!top.md"),
            ["src", "src/a.py", "src/sub", "src/sub/b.py", "src/sub/c.md", "src/top.md"],
        ),
        # a file source matches by its own name
        ("src/top.md", ("*.md",), []),
        ("src/a.py", ("*.md",), ["src/a.py"]),
        # a wildcard: dropped only when excluded under every root the match could have
        ("src/*", ("*.md",), ["src/a.py", "src/sub", "src/sub/b.py", "src/sub/c.md"]),
        (
            "src/*",
            ("sub/b.py",),
            ["src/a.py", "src/sub", "src/sub/b.py", "src/sub/c.md", "src/top.md"],
        ),
    ],
)
def test_copy_exclude_drops_what_it_keeps_out_of_the_copy(
    tmp_path: Path, source: str, excludes: tuple[str, ...], kept: list[str]
) -> None:
    make(tmp_path, "src/a.py", "src/top.md", "src/sub/b.py", "src/sub/c.md")
    entries = resolve_inputs(tree(tmp_path), [(source, "df", 2, "COPY", excludes)])
    assert [e.path for e in entries] == kept


def count_listings(monkeypatch: pytest.MonkeyPatch, root: Path) -> list[str]:
    """The directories (relative to ``root``) that os.scandir lists from now on."""
    listed: list[str] = []
    real_scandir = os.scandir

    def counting_scandir(path: str) -> Iterator[os.DirEntry[str]]:
        listed.append(os.path.relpath(path, root))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    return listed


def test_each_directory_is_listed_once_however_many_sources_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make(tmp_path, "data/1/a", "data/1/b", "data/2/a", "common.txt")
    listed = count_listings(monkeypatch, tmp_path)
    t = tree(tmp_path)
    for i in range(50):
        resolve_inputs(
            t, [("common.txt", "D", 1, "COPY", ()), (f"data/{i % 2 + 1}/", "D", 2, "COPY", ())]
        )
    t.expand("data/*/a", origin="D", line=3)
    t.expand(".", origin="D", line=4)
    assert sorted(listed) == [".", "data", "data/1", "data/2"]


def test_an_expansion_is_computed_once(tmp_path: Path) -> None:
    make(tmp_path, "src/a")
    t = tree(tmp_path)
    first = t.expand("src", origin="D", line=1)
    shutil.rmtree(tmp_path / "src")
    assert t.expand("./src/", origin="D", line=2) == first


def test_the_stat_taken_while_listing_is_kept_for_digests(tmp_path: Path) -> None:
    make(tmp_path, "a.txt")
    t = tree(tmp_path)
    assert t.file_stat("a.txt") is None  # nothing listed yet
    t.whole()
    st = t.file_stat("a.txt")
    assert st is not None and st.st_ino == os.lstat(tmp_path / "a.txt").st_ino
    assert t.file_stat("missing") is None


# -- the walk agrees with the per-path rule ---------------------------------------------------

tree_paths = st.lists(
    st.lists(st.sampled_from(["a", "b", "k.md"]), min_size=1, max_size=3).map("/".join),
    min_size=1,
    max_size=8,
)
ignore_lines = st.lists(
    st.tuples(
        st.booleans(),
        st.lists(st.sampled_from(["a", "b", "k.md", "*", "**", "*.md"]), min_size=1, max_size=3),
    ).map(lambda t: ("!" if t[0] else "") + "/".join(t[1])),
    max_size=4,
)


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60, deadline=None
)
@given(files=tree_paths, lines=ignore_lines)
def test_the_walk_sends_every_path_the_rules_keep_and_only_directories_besides(
    tmp_path_factory: pytest.TempPathFactory, files: list[str], lines: list[str]
) -> None:
    root = tmp_path_factory.mktemp("ctx")
    for rel in files:  # a path that is both a file and a directory prefix stays a directory
        if not any(other.startswith(rel + "/") for other in files):
            make(root, rel)
    rules = IgnoreRules.parse("\n".join(lines))
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*")}
    sent = {e.path for e in ContextTree(root, rules).whole()}
    kept = {p for p in on_disk if not rules.ignored(p)}
    assert kept <= sent
    assert all((root / p).is_dir() for p in sent - kept)
    for path in sent:  # a sent path's directories are sent too
        assert "/" not in path or path.rsplit("/", 1)[0] in sent


# -- against a real build ---------------------------------------------------------------------

# (.dockerignore, files, paths only BuildKit >= 0.10 sends). Debian's docker CLI 20.10 sends
# exactly the rest; for these the walk keeps a union of both.
REAL_CASES = [
    ("a\n!a/b/c\na/b\n", ["a/b/c", "a/b/d", "a/x", "src/f", "D/x"], {"a/b/c"}),
    ("**/foo\n!x/y/foo/keep\n", ["x/y/foo/bar", "x/y/foo/keep", "x/z"], set()),
    ("D/x\n!D\n", ["D/x", "D/y"], set()),
    ("a+b\n", ["aab", "a+b", "c"], {"aab"}),
    ("**foo\n", ["barfoo", "d/foo", "d/xfoo", "e"], set()),
    ("nm\n!**/keep\n", ["nm/keep", "nm/x/keep", "nm/y", "k/keep"], {"nm", "nm/keep", "nm/x", "nm/x/keep"}),
    ("*\n!src/app\nsrc\n", ["src/app/f", "src/g", "t"], {"src/app/f"}),
    ("# c\n*/temp*\n*/*/temp*\ntemp?\n", ["s/temporary.txt", "s/temp/x", "s/t/temp", "tempa", "temp", "a/b/c/temp"], set()),
    ("*.md\n!README*.md\nREADME-secret.md\n", ["x.md", "README.md", "README-secret.md", "README-a.md"], set()),
    ("build\n!build/keep.txt\n", ["build/keep.txt", "build/drop.txt", "build/sub/x"], set()),
    ("*\n!src\n", ["src/a", "src/b/c", "other", "o/p"], set()),
    ("  # not a comment\n", ["  # not a comment", "# not a comment", "x"], set()),
    ("/logs/\n./tmp\n\\!x\n", ["logs/a", "tmp/b", "c/logs/d", "!x"], set()),
    ("Secret\n*.MD\n", ["Secret", "secret", "A.MD", "a.md"], set()),
    ("dir/*\n!dir/keep\n", ["dir/keep/x", "dir/drop/y", "dir/f"], set()),
    ("**\n!a/b/**\n", ["a/b/c", "a/d", "e"], set()),
]  # fmt: skip


@pytest.mark.engine
@pytest.mark.parametrize(("ignore", "files", "buildkit_only"), REAL_CASES)
def test_the_walk_matches_what_a_real_build_copies(
    engine: str, docker_cli: str, tmp_path: Path, ignore: str, files: list[str],
    buildkit_only: set[str],
) -> None:  # fmt: skip
    ctx = make(tmp_path / "ctx", *files)
    (ctx / ".dockerignore").write_text(ignore)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /ctx/\n")
    out = tmp_path / "out"
    env = {**os.environ, "DOCKER_BUILDKIT": "1", "DOCKER_HOST": engine}
    result = subprocess.run(
        [docker_cli, "build", "-q", "--network=none", "-o", f"type=local,dest={out}", str(ctx)],
        env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    copied = {str(p.relative_to(out / "ctx")) for p in (out / "ctx").rglob("*")}
    rules = load_ignore_rules(ctx, ctx / "Dockerfile")
    ours = {e.path for e in ContextTree(ctx, rules).whole()}
    assert (ours - copied, copied - ours) == (buildkit_only, set())
