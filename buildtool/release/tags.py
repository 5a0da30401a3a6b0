"""Tag templates: the tags a release adds to an image's declared ones, expanded from the commit's
git context (``gitcontext.py``) the way docker/metadata-action names them.

Variables: ``{tag}`` (each declared tag), ``{sha}``, ``{sha7}``, ``{branch}`` (sanitised to a
valid tag), ``{pr}``, and ``{version}``, ``{major}``, ``{minor}`` from a ``vX.Y.Z`` tag on the
commit (a pre-release gives ``{version}`` only). The template ``latest`` is put only where the
``latest`` rule allows: on the default branch, or for the highest semver tag. A template whose
variable has no value here is skipped whole, never put half-expanded; an expansion that is not
a valid tag is an error before anything is put.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from buildtool.errors import BtError
from buildtool.registry.reference import is_tag
from buildtool.release.gitcontext import GitContext
from buildtool.workspace.tagtemplate import (
    DEFAULT_LATEST_RULE,
    PLACEHOLDER_RE,
    Template,
    parse_template,
)

LATEST = "latest"
_NOT_IN_TAG_RE = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_TAG = 128


def sanitise(name: str) -> str:
    """``name`` as metadata-action makes a branch a tag: each run of characters a tag cannot
    hold becomes '-', and what a tag cannot start with ('.', '-') is dropped."""
    return _NOT_IN_TAG_RE.sub("-", name).lstrip(".-")[:_MAX_TAG]


class Release(NamedTuple):
    """The templates usable in one context with the values they expand with, and one line per
    template skipped."""

    templates: tuple[Template, ...]
    values: dict[str, str]
    skipped: tuple[str, ...]

    def tags_for(self, declared: Sequence[str]) -> tuple[str, ...]:
        """Every tag of an image whose declared tags are ``declared``: those, then each
        template's expansions, without repeats. Raises on an expansion that is no valid tag."""
        found = dict.fromkeys(declared)
        for template in self.templates:
            for tag in declared if "tag" in template.variables else ("",):
                text = _expand(template.text, {**self.values, "tag": tag})
                if not is_tag(text):
                    raise BtError(
                        f"tag template {template.text!r} gives {text!r}, which is not a valid "
                        "tag (up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -)"
                    )
                found.setdefault(text)
        return tuple(found)


def _expand(text: str, values: Mapping[str, str]) -> str:
    return PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], text)


def release(
    templates: Sequence[str], context: GitContext, latest_rule: str = DEFAULT_LATEST_RULE
) -> Release:
    """The templates of ``templates`` that ``context`` gives a value to every variable of."""
    values = _values(context)
    usable: list[Template] = []
    skipped: list[str] = []
    for text in dict.fromkeys(templates):
        template = parse_template(text)
        if text == LATEST:
            reason = _why_not_latest(context, latest_rule)
        else:
            reason = next(
                (
                    _why_missing(name, context)
                    for name in template.variables
                    if name != "tag" and name not in values
                ),
                None,
            )
        if reason is None:
            usable.append(template)
        else:
            skipped.append(f"tag template {text!r} skipped: {reason}")
    return Release(tuple(usable), values, tuple(skipped))


def _values(context: GitContext) -> dict[str, str]:
    values: dict[str, str] = {}
    if context.sha:
        values["sha"] = context.sha
        values["sha7"] = context.sha[:7]
    if context.branch and sanitise(context.branch):
        values["branch"] = sanitise(context.branch)
    if context.pr:
        values["pr"] = context.pr
    version = context.semver
    if version is not None:
        values["version"] = version.version
        if not version.prerelease:
            values["major"] = str(version.major)
            values["minor"] = f"{version.major}.{version.minor}"
    return values


def _why_missing(name: str, context: GitContext) -> str:
    if name in ("sha", "sha7"):
        return f"{{{name}}} has no value: not a git checkout, and GITHUB_SHA is not set"
    if name == "branch":
        return "{branch} has no value: not on a branch (a detached HEAD, a tag or a pull request)"
    if name == "pr":
        return "{pr} has no value: not a pull request"
    if context.semver is not None:  # major, minor of a pre-release
        return f"{{{name}}} has no value: {context.semver.version} is a pre-release"
    return f"{{{name}}} has no value: no vX.Y.Z tag on this commit"


def _why_not_latest(context: GitContext, rule: str) -> str | None:
    if rule == "highest-semver":
        version = context.semver
        if version is None or version.prerelease:
            return "latest goes to the highest vX.Y.Z release, and this commit has none"
        if context.highest is not None and context.highest.precedence() > version.precedence():
            return (
                f"latest goes to the highest vX.Y.Z release; {version.version} is lower than "
                f"{context.highest.version}"
            )
        return None
    if context.default_branch is None:
        return (
            "latest goes to the default branch, which is unknown here (set [release] "
            "default_branch in .cache-spec)"
        )
    if context.pr is not None or context.branch != context.default_branch:
        where = f"pull request {context.pr}" if context.pr else (context.branch or "no branch")
        return f"latest goes to the default branch ({context.default_branch}), not {where}"
    return None
