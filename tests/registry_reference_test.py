"""Image references and the names bt checks with Docker's reference grammar."""

from __future__ import annotations

import pytest

from buildtool.errors import BtError
from buildtool.registry import (
    Reference,
    is_repository,
    is_tag,
    normalise_reference,
    parse_reference,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000/whisperx/base@sha256:" + "a" * 64,
         Reference("127.0.0.1:5000", "whisperx/base", None, "sha256:" + "a" * 64)),
        ("127.0.0.1:5000/whisperx/base:runtime", Reference("127.0.0.1:5000", "whisperx/base", "runtime", None)),
        ("localhost/x:1.0", Reference("localhost", "x", "1.0", None)),
        ("ghcr.io/org/img:v1@sha256:" + "b" * 64, Reference("ghcr.io", "org/img", "v1", "sha256:" + "b" * 64)),
        ("ubuntu", Reference("docker.io", "library/ubuntu", None, None)),
        ("org/img:tag", Reference("docker.io", "org/img", "tag", None)),
        ("[::1]:5000/a/b", Reference("[::1]:5000", "a/b", None, None)),
    ],
)  # fmt: skip
def test_parse_reference_normalizes_like_docker(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1:5000/Upper/case", "repository 'Upper/case' must be lower-case path components"),
        ("127.0.0.1:5000/a:bad tag", "bad tag 'bad tag'"),
        ("127.0.0.1:5000/a@sha256:short", "bad digest 'sha256:short'"),
    ],
)
def test_parse_reference_rejects_invalid_references(text: str, message: str) -> None:
    with pytest.raises(BtError) as err:
        parse_reference(text)
    assert message in err.value.message


def test_reference_renders_back_to_its_text() -> None:
    text = "127.0.0.1:5000/whisperx/base:runtime@sha256:" + "c" * 64
    assert str(parse_reference(text)) == text
    assert parse_reference(text).at(tag="x") == Reference("127.0.0.1:5000", "whisperx/base", "x")


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("acme/x:cpu", "docker.io/acme/x:cpu"),
        ("python", "docker.io/library/python:latest"),
        ("python:3.11-slim", "docker.io/library/python:3.11-slim"),
        ("docker.io/library/python@sha256:" + "d" * 64, "docker.io/library/python@sha256:" + "d" * 64),
        ("localhost:5000/x", "localhost:5000/x:latest"),
    ],
)  # fmt: skip
def test_references_normalise_to_the_name_docker_pulls(text: str, normalised: str) -> None:
    assert normalise_reference(text) == normalised


@pytest.mark.parametrize(
    ("tag", "valid"),
    [
        ("latest", True), ("large-v3-zh", True), ("v1.2_rc", True), ("_x", True),
        ("x" * 128, True), ("x" * 129, False), ("-x", False), (".x", False),
        ("caf\u00e9", False), ("a b", False), ("", False),
    ],
)  # fmt: skip
def test_tags_follow_dockers_grammar(tag: str, valid: bool) -> None:
    assert is_tag(tag) is valid


@pytest.mark.parametrize(
    ("repository", "valid"),
    [
        ("whisperx/base", True), ("a__b", True), ("a---b/c.d_e", True), ("x", True),
        ("Upper", False), ("a..b", False), ("a._b", False), ("a/", False), ("/a", False),
        ("a//b", False), ("-a", False), ("", False),
    ],
)  # fmt: skip
def test_repositories_follow_dockers_grammar(repository: str, valid: bool) -> None:
    assert is_repository(repository) is valid
