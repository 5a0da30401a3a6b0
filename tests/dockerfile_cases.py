"""Helpers shared by the Dockerfile tests: parse dedented text, evaluate what a build reads."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from buildtool.dockerfile import (
    Dockerfile,
    Instruction,
    StageReads,
    context_reads,
    parse_dockerfile,
)
from buildtool.errors import BtError


def parse(text: str) -> Dockerfile:
    return parse_dockerfile(textwrap.dedent(text).lstrip("\n"), "Dockerfile")


def reads(
    text: str,
    stage: str | None = None,
    args: dict[str, str] | None = None,
    **kwargs: Any,
) -> StageReads:
    return context_reads(parse(text), stage, args or {}, **kwargs)


def paths(result: StageReads) -> list[str]:
    return [ref.source for ref in result.sources]


def only(df: Dockerfile) -> tuple[Instruction, ...]:
    return df.stages[-1].instructions


def parse_error(text: str) -> str:
    with pytest.raises(BtError) as caught:
        parse(text)
    return str(caught.value)
