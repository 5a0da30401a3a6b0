"""`bt watch` and the key find .cache-spec's global inputs with one matcher: a path matches a
pattern exactly when glob.glob(pattern, recursive=True), which keys use, finds it."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

from buildtool.inputs.globs import glob_matches

FILES = [
    "a/b.txt",
    "a/x/b.txt",
    "a/x/y/b.txt",
    "a/.hidden/b.txt",
    "a/.b.txt",
    "b.txt",
    "c/versions.txt",
    "c/d/versions.txt",
    "c/[x].txt",
    "c/x.txt",
    "c/y.txt",
    "top.txt",
    "weird name?.txt",
]
PATTERNS = [
    "a/**/b.txt",
    "**/b.txt",
    "**/*.txt",
    "a/**",
    "**",
    "*.txt",
    "a/*.txt",
    "a/.*",
    "a/*/b.txt",
    "c/[xy].txt",
    "c/[!x].txt",
    "c/?.txt",
    "c/**/versions.txt",
    "top.txt",
    "weird name?.txt",
    "a/.hidden/*",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_matcher_agrees_with_glob_on_every_file(tmp_path: Path, pattern: str) -> None:
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    found = {
        p for p in glob.glob(pattern, root_dir=tmp_path, recursive=True) if (tmp_path / p).is_file()
    }
    assert {f for f in FILES if glob_matches(f, pattern)} == found


def test_a_double_star_matches_no_directory_too_where_fnmatch_would_not() -> None:
    assert glob_matches("a/b.txt", "a/**/b.txt")
    assert not glob_matches("a/b/c", "a/*")
