"""``[ci]`` of ``.cache-spec``: where each platform's CI jobs run and what each event builds.

    [ci]
    default_branch = "main"            # pushes to it are the "default_branch" event
    [ci.runners]                       # platform -> runs-on label(s); "*" for the rest
    "linux/arm64" = "ubuntu-24.04-arm"
    [ci.platforms]                     # event -> the platforms its runs build
    pull_request = ["linux/amd64"]     # events: push, default_branch, tag, pull_request
    push = ["linux/amd64"]
    [ci.registry_secrets]              # registry host -> repository secrets holding its login;
    "registry.example.com" = ["REGISTRY_USERNAME", "REGISTRY_PASSWORD"]
                                       # two more: read-only ones, for pull requests

An event not in ``[ci.platforms]`` builds every platform ("push" is a push to any other branch
than the default one). Pull requests never push, whatever the table says.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from buildtool.errors import BtError

EVENTS = ("push", "default_branch", "tag", "pull_request")
DEFAULT_BRANCH = "main"
_KEYS = ("runners", "default_branch", "platforms", "registry_secrets")
# GitHub's rule for secret names; also what a shell variable may be called.
_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?")
# git's check-ref-format, reduced to what branch names need not to break a shell or YAML.
_BRANCH = re.compile(r"[A-Za-z0-9._/-]+")

Fail = Callable[[str, str], BtError]


@dataclass(frozen=True)
class CiSpec:
    # platform -> GitHub Actions `runs-on` (a label, or a list of labels); "*" for the rest
    runners: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    default_branch: str = DEFAULT_BRANCH
    # event -> platforms its runs build (see EVENTS); absent: every platform
    platforms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # registry host -> (username secret, password secret), then maybe the read-only pair
    registry_secrets: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def platforms_of(self, event: str, all_platforms: tuple[str, ...]) -> tuple[str, ...]:
        """The platforms a run for ``event`` builds."""
        return self.platforms.get(event, all_platforms)


def read_ci(table: Any, fail: Fail, platform: Callable[[str, str], str]) -> CiSpec:
    """``[ci]`` checked: each error names the key, whose line ``fail`` finds."""
    if not isinstance(table, dict):
        raise fail("ci must be a table", "ci")
    for key in table:
        if key not in _KEYS:
            raise fail(f"unknown key ci.{key} (known: {', '.join(_KEYS)})", key)
    branch = table.get("default_branch", DEFAULT_BRANCH)
    if not isinstance(branch, str) or not _BRANCH.fullmatch(branch) or ".." in branch:
        raise fail('ci.default_branch must be a branch name, e.g. "main"', "default_branch")
    return CiSpec(
        runners=_runners(table.get("runners", {}), fail, platform),
        default_branch=branch,
        platforms=_platforms(table.get("platforms", {}), fail, platform),
        registry_secrets=_secrets(table.get("registry_secrets", {}), fail),
    )


def _runners(
    runners: Any, fail: Fail, platform: Callable[[str, str], str]
) -> dict[str, str | tuple[str, ...]]:
    if not isinstance(runners, dict):
        raise fail("ci.runners must be a table of platform -> runner label(s)", "runners")
    found: dict[str, str | tuple[str, ...]] = {}
    for written, labels in runners.items():
        name = platform(written, written)
        if isinstance(labels, str) and labels.strip():
            found[name] = labels
        elif (
            isinstance(labels, list)
            and labels
            and all(isinstance(label, str) and label.strip() for label in labels)
        ):
            found[name] = tuple(labels)
        else:
            raise fail(
                f'ci.runners."{name}" must be a runner label or a non-empty list of '
                'labels, e.g. "ubuntu-24.04-arm"',
                name,
            )
    return found


def _platforms(
    table: Any, fail: Fail, platform: Callable[[str, str], str]
) -> dict[str, tuple[str, ...]]:
    if not isinstance(table, dict):
        raise fail("ci.platforms must be a table of event -> platforms", "platforms")
    found: dict[str, tuple[str, ...]] = {}
    for event, platforms in table.items():
        if event not in EVENTS:
            raise fail(f"unknown event ci.platforms.{event} (known: {', '.join(EVENTS)})", event)
        if not isinstance(platforms, list) or not all(isinstance(p, str) for p in platforms):
            raise fail(
                f'ci.platforms.{event} must be a list of platforms, e.g. ["linux/amd64"]', event
            )
        found[event] = tuple(platform(p, event) for p in platforms)
    return found


def _secrets(table: Any, fail: Fail) -> dict[str, tuple[str, ...]]:
    if not isinstance(table, dict):
        raise fail(
            "ci.registry_secrets must be a table of registry host -> secret names",
            "registry_secrets",
        )
    found: dict[str, tuple[str, ...]] = {}
    for host, names in table.items():
        if not _HOST.fullmatch(host):
            raise fail(f"ci.registry_secrets: {host!r} is not a registry host[:port]", host)
        if (
            not isinstance(names, list)
            or len(names) not in (2, 4)
            or not all(isinstance(n, str) and _SECRET_NAME.fullmatch(n) for n in names)
        ):
            raise fail(
                f'ci.registry_secrets."{host}" must name two secrets, the username\'s and the '
                'password\'s, e.g. ["REGISTRY_USERNAME", "REGISTRY_PASSWORD"], then maybe two '
                "read-only ones for pull requests",
                host,
            )
        found[host] = tuple(names)
    return found
