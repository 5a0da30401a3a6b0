"""Options several commands share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def platform_option(func: F) -> F:
    return click.option(
        "--platform",
        "platforms",
        multiple=True,
        metavar="OS/ARCH",
        callback=_platforms,
        help="Only builds for this platform (repeatable), e.g. linux/arm64.",
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
        help="Push each platform image by digest to the registry of .cache-spec "
        "(default: [registry] push).",
    )(func)


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
