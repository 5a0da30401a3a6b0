"""Progress in a CI job's log: plain lines, never the live view (CI logs keep every cursor
movement), and under GitHub Actions its workflow commands: each failed build as an error
annotation naming the target, its log tail in a collapsed group, and each run in a group.

https://docs.github.com/actions/reference/workflow-commands-for-github-actions
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from buildtool.build.events import ReportEvent
from buildtool.build.scheduler import Failed
from buildtool.cli.reporter import PlainReporter

_FALSE = ("", "0", "false", "no")


def in_ci(env: Mapping[str, str] = os.environ) -> bool:
    """CI or GITHUB_ACTIONS set (to anything but false), as CI systems set them."""
    return any(env.get(name, "").lower() not in _FALSE for name in ("CI", "GITHUB_ACTIONS"))


def on_github_actions(env: Mapping[str, str] = os.environ) -> bool:
    return env.get("GITHUB_ACTIONS", "").lower() == "true"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


class GitHubReporter(PlainReporter):
    """Plain lines; a failed build also as an error annotation (message and log tail, named
    after the target), its plain log tail folded into a group."""

    def __call__(self, event: ReportEvent) -> None:
        if not isinstance(event, Failed):
            super().__call__(event)
            return
        label, platform = event.id
        title = _escape_property(f"{label} {platform} failed")
        body = event.message + ("\n" + event.log_tail if event.log_tail else "")
        self._write(f"::error title={title}::{_escape_data(body)}")
        self._write(f"::group::log of {label} {platform}")
        super().__call__(event)
        self._write("::endgroup::")
