"""Shell completion: the scripts `bt completion SHELL` prints (click's, with bash taught that a
label's ``:`` is part of the word), and the labels and patterns a workspace offers.

Loaded only when completing or printing a script: nothing here is on `bt`'s start-up path.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from click.shell_completion import BashComplete, CompletionItem, add_completion_class

COMPLETE_VAR = "_BT_COMPLETE"

# Bash splits words at COMP_WORDBREAKS, which holds ":" by default: `//matrix:lar` reaches
# the completer as three words. The script sends the line up to the cursor instead, and the
# completer answers with what follows the word's last ":" when bash split there (as
# bash-completion's __ltrim_colon_completions does).
_BASH_SOURCE = """\
%(complete_func)s() {
    local IFS=$'\\n'
    local response
    response=$(env COMP_LINE="${COMP_LINE:0:$COMP_POINT}" COMP_WORDBREAKS="$COMP_WORDBREAKS" \\
        %(complete_var)s=bash_complete $1)
    for completion in $response; do
        IFS=',' read type value <<< "$completion"
        if [[ $type == 'dir' ]]; then
            COMPREPLY=()
            compopt -o dirnames
        elif [[ $type == 'file' ]]; then
            COMPREPLY=()
            compopt -o default
        elif [[ $type == 'plain' ]]; then
            COMPREPLY+=($value)
        fi
    done
    return 0
}

%(complete_func)s_setup() {
    complete -o nosort -o nospace -F %(complete_func)s %(prog_name)s
}

%(complete_func)s_setup;
"""


class LabelBashComplete(BashComplete):
    """click's bash completion, reading the line up to the cursor so labels stay one word."""

    source_template = _BASH_SOURCE

    def get_completion_args(self) -> tuple[list[str], str]:
        line = os.environ.get("COMP_LINE", "")
        try:
            words = shlex.split(line)
        except ValueError:  # an open quote: complete what there is
            words = line.split()
        incomplete = "" if not words or line[-1:].isspace() else words.pop()
        return words[1:], incomplete

    def get_completions(self, args: list[str], incomplete: str) -> list[CompletionItem]:
        items = super().get_completions(args, incomplete)
        if ":" not in os.environ.get("COMP_WORDBREAKS", ":") or ":" not in incomplete:
            return items
        cut = incomplete.rindex(":") + 1
        return [
            CompletionItem(item.value[cut:], type=item.type, help=item.help)
            if str(item.value).startswith(incomplete[:cut])
            else item
            for item in items
        ]


add_completion_class(LabelBashComplete, "bash")


def source(command: click.Command, shell: str) -> str:
    """The script that makes ``shell`` complete `bt`."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:
        raise click.BadParameter(f"no completion for {shell}")
    return cls(command, {}, "bt", COMPLETE_VAR).source()


def complete_labels(workspace: Path, incomplete: str) -> list[str]:
    """Labels and patterns of the workspace at ``workspace`` that start with ``incomplete``.

    Packages complete to ``//pkg:`` (and ``//pkg/`` when sub-packages exist); after the
    ``:``, the package's targets and ``all``. Reads the BUILD.images files through the normal
    loader (no Dockerfile analysis)."""
    from buildtool.workspace.config import load_config
    from buildtool.workspace.loader import load_workspace

    loaded = load_workspace(load_config(workspace))
    labels = [*loaded.targets, *loaded.groups]
    return _matching(((label.package, label.name) for label in labels), incomplete)


def _matching(labels: Iterable[tuple[str, str]], incomplete: str) -> list[str]:
    by_package: dict[str, set[str]] = {}
    for package, name in labels:
        by_package.setdefault(package, set()).add(name)
    if ":" in incomplete:
        head, _, _ = incomplete.partition(":")
        package = head.removeprefix("//")
        names = sorted(by_package.get(package, set()) | {"all"})
        return [c for c in (f"//{package}:{n}" for n in names) if c.startswith(incomplete)]
    parents = {prefix for p in by_package for prefix in _ancestors(p)}
    candidates = {"//..."}
    for package in by_package:
        candidates.add(f"//{package}:")
    for package in parents:
        candidates.add(f"//{package}/")
        candidates.add(f"//{package}/...")
    return sorted(c for c in candidates if c.startswith(incomplete))


def _ancestors(package: str) -> list[str]:
    parts = package.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def shell_complete_labels(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """click's ``shell_complete`` for label and pattern arguments: quiet when the workspace
    cannot be loaded (a broken BUILD.images must not spill errors into the prompt)."""
    from buildtool.errors import BtError
    from buildtool.workspace.config import find_root

    directory = _directory(ctx)
    try:
        root = find_root(Path(directory or os.getcwd()).resolve())
        return [CompletionItem(c) for c in complete_labels(root, incomplete)]
    except (BtError, OSError):
        return []


def _directory(ctx: click.Context) -> Any:
    """The ``-C DIRECTORY`` given before the command, if any."""
    while ctx.parent is not None:
        ctx = ctx.parent
    return ctx.params.get("directory")
