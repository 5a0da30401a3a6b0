"""The records of a parsed Dockerfile and of what one build of it reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction after continuation lines are joined.

    ``args`` by keyword: COPY/ADD/VOLUME/FROM/EXPOSE the words (or JSON list); RUN/CMD/
    ENTRYPOINT/SHELL the JSON list or the whole command as one string; ARG the ``name[=default]``
    words; ENV/LABEL flattened ``(key, value, key, value, ...)``; HEALTHCHECK the type then its
    command; ONBUILD the trigger text (parsed into ``trigger``); others the text as one string.
    Values keep their quotes: substitution happens only when a build is evaluated.
    """

    keyword: str
    original: str
    args: tuple[str, ...]
    flags: tuple[tuple[str, str | None], ...]
    json_form: bool
    heredocs: tuple[tuple[str, str], ...]
    line: int
    end_line: int
    trigger: Instruction | None = None


@dataclass(frozen=True)
class Stage:
    index: int
    name: str | None
    base: str
    platform_flag: str | None
    line: int
    end_line: int
    instructions: tuple[Instruction, ...]


@dataclass(frozen=True)
class Dockerfile:
    path: str
    escape: str
    meta_args: tuple[tuple[str, str | None], ...]
    stages: tuple[Stage, ...]
    syntax: str | None = None  # the `# syntax=` directive: which frontend BuildKit runs


@dataclass(frozen=True)
class SourceRef:
    """A context path a build reads, as BuildKit resolves it: relative to the context root,
    cleaned like Go's ``path.Join("/", src)`` ("." is the whole context). It may hold glob
    characters with Go ``filepath.Match`` syntax (``*``, ``?``, ``[...]``, backslash escapes).
    ``excludes`` are ``--exclude`` patterns verbatim: BuildKit does not substitute them.
    A source may match nothing (a missing COPY source fails the build; a path read only under
    the other BuildKit rule set may not exist): it then contributes no input."""

    source: str
    line: int
    instruction: str  # "COPY", "ADD" or "RUN --mount"
    parents: bool
    excludes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StageReads:
    sources: tuple[SourceRef, ...]
    whole_context: str | None
    remote_sources: tuple[str, ...]
    has_run: bool
    external_bases: tuple[str, ...]
    stage_lines: tuple[tuple[int, int], ...]
    # Images (not stages) named by `COPY --from=` or `RUN --mount=from=` in reached stages.
    from_images: tuple[str, ...] = ()
