"""The grammar of tag templates (``bt merge --tag-template``, ``[release] tag_templates``):
text with ``{variable}`` placeholders. Checked where a template is read; ``release/tags.py``
expands them."""

from __future__ import annotations

import re
from typing import NamedTuple

from buildtool.errors import BtError

VARIABLES = ("tag", "sha", "sha7", "branch", "pr", "version", "major", "minor")
LATEST_RULES = ("default-branch", "highest-semver")
DEFAULT_LATEST_RULE = "default-branch"
PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")


class Template(NamedTuple):
    text: str
    variables: tuple[str, ...]


def parse_template(text: str) -> Template:
    """A template, checked: only known ``{variables}``, no stray brace, not empty."""
    if not text:
        raise BtError("a tag template must not be empty")
    names = PLACEHOLDER_RE.findall(text)
    for name in names:
        if name not in VARIABLES:
            known = ", ".join("{" + v + "}" for v in VARIABLES)
            raise BtError(f"tag template {text!r}: unknown variable {{{name}}} (known: {known})")
    rest = PLACEHOLDER_RE.sub("", text)
    if "{" in rest or "}" in rest:
        raise BtError(f"tag template {text!r} has an unmatched brace")
    return Template(text, tuple(dict.fromkeys(names)))
