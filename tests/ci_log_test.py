"""Progress in CI logs (``buildtool.cli.ci_log``): plain lines even on a terminal, and GitHub's
workflow commands for a failed build."""

from __future__ import annotations

import io

import pytest

from buildtool.build.events import Failed, RunStarted, Started
from buildtool.cli.ci_log import GitHubReporter, in_ci
from buildtool.cli.reporter import LiveReporter, PlainReporter, progress_reporter

SMOKE = ("//check:smoke", "linux/amd64")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"CI": "true"}, True),
        ({"CI": "1"}, True),
        ({"CI": "false"}, False),
        ({"GITHUB_ACTIONS": "true"}, True),
        ({"CI": "", "GITHUB_ACTIONS": ""}, False),
    ],
)
def test_ci_is_told_by_ci_or_github_actions(env: dict[str, str], expected: bool) -> None:
    assert in_ci(env) is expected


def test_auto_on_a_terminal_in_ci_is_plain_and_on_github_actions_annotated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.setenv("CI", "true")
    assert type(progress_reporter("auto", Tty())) is PlainReporter
    assert isinstance(progress_reporter("tty", Tty()), LiveReporter)  # asked for: drawn
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    for mode in ("auto", "plain"):
        reporter = progress_reporter(mode, Tty())
        assert isinstance(reporter, GitHubReporter) and type(reporter.plain) is PlainReporter


def test_a_failed_build_is_an_error_annotation_naming_the_target_with_its_log_folded() -> None:
    stream = io.StringIO()
    reporter = GitHubReporter(PlainReporter(stream), stream)
    reporter(RunStarted(1, 0.0))
    reporter(Started(SMOKE, 0.0))
    reporter(Failed(SMOKE, 1.0, "RUN exited with code 1", "step 3/3\n100% done, a:b", None))
    assert stream.getvalue().splitlines() == [
        "1 platform builds to run",
        "[0/1] started //check:smoke linux/amd64",
        "::error title=//check%3Asmoke linux/amd64 failed::RUN exited with code 1%0Astep 3/3"
        "%0A100%25 done, a:b",
        "::group::log of //check:smoke linux/amd64",
        "[1/1] FAILED //check:smoke linux/amd64: RUN exited with code 1",
        "    step 3/3",
        "    100% done, a:b",
        "::endgroup::",
    ]
