"""The meaning of one build of a Dockerfile: what the stages it reaches build, as canonical
values a build key can hash instead of the Dockerfile's bytes.

An instruction counts as BuildKit parsed it: keyword, flags, arguments and heredoc bodies, so
comments, blank lines and how words are laid out over continuation lines do not count. An ARG
counts by the value the build sees (BuildKit records ``ARG name=value`` in the image history
with that value), so an overridden default does not count and a used one does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from buildtool.dockerfile.records import Instruction, InstructionMeaning, Meaning

UNKNOWN: Meaning = ("unknown",)  # a value not known statically (a str or None otherwise)


def instruction_meaning(ins: Instruction) -> tuple[Meaning, ...]:
    """An instruction other than ARG, as parsed. Shell-form text stays as joined from its
    lines: BuildKit records RUN's command in the image history and CMD's in the config."""
    # The form counts: ["a"] runs `a`, `a` runs `sh -c a`.
    form = "json" if ins.json_form else "shell"
    return (ins.keyword, form, ins.flags, ins.args, ins.heredocs)


def arg_meaning(values: Iterable[tuple[str, Meaning]]) -> tuple[Meaning, ...]:
    """``ARG a=1 b``: each name with the value the build sees (None: the ARG stays unset)."""
    return ("ARG", *values)


def described(stage: str | int, line: int, keyword: str, meaning: Meaning) -> InstructionMeaning:
    """One entry of ``StageReads.instructions``: the meaning as canonical JSON text. It is
    stored (``bt why`` explains changes with it), so an ARG's value appears by its digest: a
    build arg's value is never stored (invariant 7)."""
    if keyword == "ARG" and isinstance(meaning, tuple):
        from buildtool.state.hashing import value_digest

        meaning = tuple(_arg_digest(value, value_digest) for value in meaning)
    text = json.dumps(meaning, ensure_ascii=False, separators=(",", ":"))
    return (stage, line, keyword, text)


def _arg_digest(value: Meaning, digest: Callable[[str], str]) -> Meaning:
    """``(name, value)`` -> ``(name, digest of value)``; anything else as it is."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        return (value[0], digest(value[1]))
    return value
