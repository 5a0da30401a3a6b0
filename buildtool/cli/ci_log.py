"""Progress in a CI job's log: plain lines, never the live view (CI logs keep every cursor
movement), and under GitHub Actions its workflow commands: each failed build as an error
annotation naming the target, with its plain log tail folded into a group.

https://docs.github.com/actions/reference/workflow-commands-for-github-actions
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import IO, Protocol

from buildtool.build.events import Failed, ReportEvent

_FALSE = ("", "0", "false", "no")


class _Lines(Protocol):
    def __call__(self, event: ReportEvent) -> None: ...

    def close(self) -> None: ...


def in_ci(env: Mapping[str, str] = os.environ) -> bool:
    """CI or GITHUB_ACTIONS set (to anything but false), as CI systems set them."""
    return any(env.get(name, "").lower() not in _FALSE for name in ("CI", "GITHUB_ACTIONS"))


def on_github_actions(env: Mapping[str, str] = os.environ) -> bool:
    return env.get("GITHUB_ACTIONS", "").lower() == "true"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


class GitHubReporter:
    """The plain lines of ``plain`` (writing to ``stream``); a failed build also as an error
    annotation (message and log tail, titled with the target), its plain lines in a group."""

    def __init__(self, plain: _Lines, stream: IO[str]):
        self.plain = plain
        self.stream = stream

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def __call__(self, event: ReportEvent) -> None:
        if not isinstance(event, Failed):
            self.plain(event)
            return
        label, platform = event.id
        title = _escape_property(f"{label} {platform} failed")
        body = event.message + ("\n" + event.log_tail if event.log_tail else "")
        self._write(f"::error title={title}::{_escape_data(body)}")
        self._write(f"::group::log of {label} {platform}")
        self.plain(event)
        self._write("::endgroup::")

    def close(self) -> None:
        self.plain.close()
