"""Options several commands share."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

F = TypeVar("F", bound=Callable[..., Any])


def complete_patterns(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Labels and patterns of the workspace, for the shell's tab key."""
    from buildtool.cli.completion import shell_complete_labels

    return shell_complete_labels(ctx, param, incomplete)


def platform_option(func: F) -> F:
    return click.option(
        "--platform",
        "platforms",
        multiple=True,
        metavar="OS/ARCH",
        envvar="BT_PLATFORM",
        callback=_platforms,
        help="Only builds for this platform (repeatable; in BT_PLATFORM, space-separated), "
        "e.g. linux/arm64.  [default: every platform of each target]",
    )(func)


def _platforms(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    """Each ``--platform`` checked and spelt as the graph spells it (``linux/aarch64`` is
    ``linux/arm64``): a typo is an error, not an empty plan."""
    from buildtool.platforms import normalise

    return tuple(normalise(value) for value in values)


def push_option(func: F) -> F:
    return click.option(
        "--push/--no-push",
        default=None,
        envvar="BT_PUSH",
        help="Push each platform image by digest to the registry of .cache-spec.  "
        "[default: [registry] push]",
    )(func)


def progress_option(func: F) -> F:
    """``--progress`` as buildx takes it (its modes: ``reporter.PROGRESS_MODES``), and
    ``--json``, its old spelling of ``rawjson``."""
    from buildtool.cli.reporter import PROGRESS_MODES

    modes = "; ".join(f"{name}: {mode.help}" for name, mode in PROGRESS_MODES.items())
    func = click.option(
        "--json",
        "json_events",
        is_flag=True,
        help="Print one JSON event per line on stdout (the same as --progress=rawjson).",
    )(func)
    return click.option(
        "--progress",
        type=click.Choice(list(PROGRESS_MODES)),
        default="auto",
        show_default=True,
        envvar="BT_PROGRESS",
        help=f"{modes}. NO_COLOR turns colours off.",
    )(func)


def progress_mode(progress: str, json_events: bool) -> str:
    return "rawjson" if json_events else progress


def format_option(help_text: str) -> Callable[[F], F]:
    """``--format text|json`` (default text), as the listing commands take it."""

    def decorate(func: F) -> F:
        return click.option(
            "--format",
            "output_format",
            type=click.Choice(["text", "json"]),
            default="text",
            show_default=True,
            help=help_text,
        )(func)

    return decorate
