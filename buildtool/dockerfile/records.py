"""The records of a parsed Dockerfile and of what one build of it reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

# A canonical value to hash into a build key: msgpack-able, no line numbers, deterministic.
Meaning: TypeAlias = "str | int | tuple[Meaning, ...] | None"


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
    check: str | None = None  # the `# check=` directive: which build checks BuildKit runs
    syntax_line: int | None = None  # the line of the `# syntax=` directive
    # A file only another frontend reads (its `// syntax=` or JSON "syntax" names one that is
    # not the Dockerfile frontend): no stages, and the digest of its whole text, which is keyed.
    opaque: str | None = None


@dataclass(frozen=True)
class SourceRef:
    """A context path a build reads, as BuildKit resolves it: relative to the context root,
    cleaned like Go's ``path.Join("/", src)`` ("." is the whole context). It may hold glob
    characters with Go ``filepath.Match`` syntax (``*``, ``?``, ``[...]``, backslash escapes).
    ``excludes`` are the instruction's ``--exclude`` patterns, verbatim: BuildKit does not
    substitute them (dockerfile2llb passes ``ExcludePatterns`` to the copy as parsed).
    A source may match nothing (a missing COPY source fails the build; a path read only under
    the other BuildKit rule set may not exist): it then contributes no input."""

    source: str
    line: int
    instruction: str  # "COPY", "ADD" or "RUN --mount"
    parents: bool
    excludes: tuple[str, ...] = ()
    context: str | None = None  # the named context (a directory) it reads, None: the context


@dataclass(frozen=True)
class ImageRef:
    """An image (not a stage, not ``scratch``) a reached stage uses: ``FROM <image>``,
    ``COPY --from=<image>`` or ``RUN --mount=from=<image>``, after ARG substitution; or the
    frontend image a ``# syntax=`` directive names (BuildKit pulls and runs it)."""

    reference: str  # as written when ``unresolved``
    line: int
    kind: Literal["from", "copy", "mount", "syntax"]  # syntax: the frontend a directive names
    arg: str | None = None  # the ARG, when the reference is written as exactly $ARG or ${ARG}
    unresolved: bool = False  # its value is not known statically (e.g. an ARG without value)
    context: str | None = None  # the named context it is written as (``reference`` resolves it)


@dataclass(frozen=True)
class SecretMount:
    """A ``RUN --mount=type=secret`` of a reached stage. ``id`` is the secret BuildKit asks the
    client for (``flags.secret_id``), None when bt cannot tell: a value not known statically,
    or no id at all (BuildKit fails that build)."""

    id: str | None
    line: int
    required: bool  # ``required=true``: BuildKit fails the RUN when the client has no value


# Per-instruction detail of ``StageReads.meaning``: (stage name or index, line, keyword,
# canonical text), so a change can be explained as "stage final: LABEL at line 58 changed".
InstructionMeaning: TypeAlias = tuple[str | int, int, str, str]


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
    # What the reached stages build, to hash instead of the Dockerfile's bytes (see
    # evaluate.py: stages as parsed and resolved, ARGs by the value the build sees).
    meaning: tuple[Meaning, ...] = ()
    instructions: tuple[InstructionMeaning, ...] = ()
    images: tuple[ImageRef, ...] = ()
    secrets: tuple[SecretMount, ...] = ()  # the secrets the reached stages mount
    # What reached stages read from named contexts that are directories (``SourceRef.context``).
    named_sources: tuple[SourceRef, ...] = ()
