from __future__ import annotations

import pytest

from buildtool.errors import BtError
from buildtool.workspace.labels import Label, Pattern, parse_label, parse_pattern


def test_absolute_label_parses_package_and_name() -> None:
    assert parse_label("//matrix:large-v3-zh") == Label("matrix", "large-v3-zh")
    assert str(Label("matrix", "large-v3-zh")) == "//matrix:large-v3-zh"


def test_relative_label_takes_the_current_package() -> None:
    assert parse_label(":no_model", "base") == Label("base", "no_model")


def test_package_only_label_names_the_last_path_component() -> None:
    assert parse_label("//tools/lint") == Label("tools/lint", "lint")


def test_root_package_label() -> None:
    assert parse_label("//:app") == Label("", "app")


@pytest.mark.parametrize(
    "text", ["matrix:x", "//matrix:", "//a/../b:x", "//:", "//m:a b", "//m:all", "//:"]
)
def test_invalid_labels_are_refused(text: str) -> None:
    with pytest.raises(BtError):
        parse_label(text)


def test_recursive_pattern_matches_package_and_subpackages_only() -> None:
    pattern = parse_pattern("//matrix/...")
    assert pattern == Pattern("matrix", None, True)
    assert pattern.matches(Label("matrix", "x"))
    assert pattern.matches(Label("matrix/sub", "x"))
    assert not pattern.matches(Label("matrixx", "x"))
    assert not pattern.matches(Label("", "x"))


def test_everything_pattern_matches_root_and_all_packages() -> None:
    pattern = parse_pattern("//...")
    assert pattern.matches(Label("", "x")) and pattern.matches(Label("a/b", "y"))


def test_all_pattern_matches_one_package_not_subpackages() -> None:
    pattern = parse_pattern("//model:all")
    assert pattern.matches(Label("model", "tiny"))
    assert not pattern.matches(Label("model/sub", "tiny"))
    assert parse_pattern(":all", "model") == pattern


def test_single_label_pattern_matches_exactly_that_label() -> None:
    pattern = parse_pattern("//model:tiny")
    assert pattern.matches(Label("model", "tiny"))
    assert not pattern.matches(Label("model", "tiny2"))
