"""Rewriting the images a Dockerfile names, so the engine builds on exactly the image bt chose.

A build that names a workspace image (``FROM ${REGISTRY}/base:${TAG}``) must get the very image
recorded for its parent's key, not whatever the floating tag points at locally or in the
registry. bt hands the engine a copy of the Dockerfile in which that reference is replaced by
the exact one (``repo@sha256:...`` or the key-derived local tag): that works with every engine
bt drives, including Docker 20.10's CLI (no named contexts) and the classic builder. Where
buildx is available, named contexts (``--build-context <name>=docker-image://<exact>``) would
be the alternative.

Only the image word changes: every instruction stays on its lines, so build errors and bt's
line numbers keep pointing at the user's Dockerfile.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from buildtool.dockerfile.syntax import _is_comment, _split_lines, _trim_continuation
from buildtool.errors import BtError
from buildtool.imagename import is_reference, shown

# (line, kind "from"/"copy"/"mount", the reference as the analysis reports it): where an image
# is named. For "from" the reference is the resolved one; the FROM on that line names one image.
ImageSite = tuple[int, str, str]

_WORD = re.compile(r"[^ \t\r\n]+")

# (physical line index, start, end, word)
_Word = tuple[int, int, int, str]


def rewrite_images(text: str, replacements: Mapping[ImageSite, str], path: str) -> str:
    """``text`` with the image named at each site replaced; raises BtError if one is missing."""
    if not replacements:
        return text
    for (line, _, _), new in replacements.items():
        # Invariant 11: only a checked reference goes into the Dockerfile the engine runs (a
        # newline in one would be an instruction of its own).
        if not is_reference(new):
            raise BtError(f"refused to hand over {shown(new)}: not an image reference", path, line)
    from buildtool.dockerfile.syntax import parse_dockerfile

    escape = parse_dockerfile(text, path).escape
    lines = _split_lines(text)
    by_line: dict[int, list[tuple[str, str, str]]] = {}
    for (line, kind, reference), new in sorted(replacements.items()):
        if kind == "syntax":
            lines[line - 1] = _directive_value(lines[line - 1], reference, new, path, line)
            continue
        by_line.setdefault(line, []).append((kind, reference, new))
    edits: list[tuple[int, int, int, str]] = []
    for line, wanted in sorted(by_line.items()):
        words = _instruction_words(lines, line - 1, escape)
        for kind, reference, new in wanted:
            found = _edit(words, kind, reference, new)
            if not found:
                raise BtError(f"cannot find the image {reference!r} to hand over", path, line)
            edits += found
    spans = {(index, start, end) for index, start, end, _ in edits}
    if len(spans) != len(set(edits)):
        line = min(index for index, _, _, _ in edits) + 1
        raise BtError("one image reference would be handed two different images", path, line)
    for index, start, end, new in sorted(set(edits), reverse=True):
        lines[index] = lines[index][:start] + new + lines[index][end:]
    return "".join(lines)


def _instruction_words(lines: list[str], first: int, escape: str) -> list[_Word]:
    """The words of the instruction starting at line index ``first``, across continuation
    lines (comment and empty lines inside a continuation are skipped, as Docker does)."""
    words: list[_Word] = []
    index = first
    while index < len(lines):
        raw = lines[index].rstrip("\r\n")
        if index > first and (_is_comment(raw) or not raw.strip()):
            index += 1
            continue
        body, complete = _trim_continuation(raw, escape)
        words += [(index, m.start(), m.end(), m.group()) for m in _WORD.finditer(body)]
        if complete:
            break
        index += 1
    if words and words[0][3].upper() == "ONBUILD":
        words = words[1:]
    return words


def _edit(
    words: list[_Word], kind: str, reference: str, new: str
) -> list[tuple[int, int, int, str]]:
    if not words:
        return []
    keyword = words[0][3].upper()
    if kind == "from" and keyword == "FROM":
        image = next((w for w in words[1:] if not w[3].startswith("--")), None)
        return [] if image is None else [(image[0], image[1], image[2], new)]
    found = []
    for index, start, end, word in words[1:]:
        if kind == "copy" and keyword in ("COPY", "ADD") and word.startswith("--from="):
            if _unquote(word[len("--from=") :]) == reference:
                found.append((index, start, end, f"--from={new}"))
        elif kind == "mount" and keyword == "RUN" and word.startswith("--mount="):
            fields = word[len("--mount=") :].split(",")
            for i, field in enumerate(fields):
                key, eq, value = field.partition("=")
                if eq and key.lower() == "from" and _unquote(value) == reference:
                    fields[i] = f"{key}={new}"
            rewritten = "--mount=" + ",".join(fields)
            if rewritten != word:
                found.append((index, start, end, rewritten))
    return found


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _directive_value(line: str, reference: str, new: str, path: str, number: int) -> str:
    """``# syntax=<reference>`` with ``new`` in place of the reference."""
    key, eq, value = line.partition("=")
    if not eq or value.strip() != reference:
        raise BtError(f"cannot find the frontend {reference!r} to hand over", path, number)
    start = len(key) + 1 + value.index(reference)
    return line[:start] + new + line[start + len(reference) :]
