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
from collections.abc import Iterable, Mapping

from buildtool.dockerfile.syntax import _is_comment, _split_lines, _trim_continuation
from buildtool.errors import BtError
from buildtool.registry.reference import is_reference, shown

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
            if "=" not in lines[line - 1]:  # a JSON file's "syntax" (``foreign_syntax``)
                _json_syntax(lines, reference, new, path, line)
                continue
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


def rewrite_directory_reads(
    text: str, prefixes: Mapping[str, str], lines: Iterable[int], path: str
) -> str:
    """``text`` with each ``COPY --from=NAME`` and ``RUN --mount=from=NAME`` at ``lines`` that
    names a directory context of ``prefixes`` reading from ``prefixes[NAME]`` in the context
    instead: how such a context reaches engines that take no named contexts (the directory's
    files are sent in the context under that prefix). Each instruction stays on its lines."""
    from buildtool.dockerfile.syntax import parse_dockerfile

    escape = parse_dockerfile(text, path).escape
    physical = _split_lines(text)
    edits: list[tuple[int, int, int, str]] = []
    for line in sorted(set(lines)):
        words = _instruction_words(physical, line - 1, escape)
        found = _directory_edits(words, prefixes)
        if found is None:
            raise BtError(
                "a directory context is read here in a form bt cannot hand to this engine "
                "(write COPY in shell form, or a bind mount)",
                path,
                line,
            )
        edits += found
    for index, start, end, new in sorted(set(edits), reverse=True):
        physical[index] = physical[index][:start] + new + physical[index][end:]
    return "".join(physical)


def _directory_edits(
    words: list[_Word], prefixes: Mapping[str, str]
) -> list[tuple[int, int, int, str]] | None:
    """The edits of one instruction (None when it cannot be rewritten)."""
    if not words:
        return []
    keyword = words[0][3].upper()
    if keyword == "COPY":
        origin = next((w for w in words[1:] if w[3].startswith("--from=")), None)
        if origin is None or _unquote(origin[3][len("--from=") :]) not in prefixes:
            return []
        prefix = prefixes[_unquote(origin[3][len("--from=") :])]
        operands = [w for w in words[1:] if not w[3].startswith("--")]
        if len(operands) < 2 or operands[0][3].startswith(("[", "<<")):
            return None  # the JSON form, or a heredoc
        edits = [(origin[0], origin[1], origin[2], "")]
        for index, start, end, word in operands[:-1]:
            edits.append((index, start, end, _prefixed(prefix, word)))
        return edits
    if keyword != "RUN":
        return []
    edits = []
    for index, start, end, word in words[1:]:
        if not word.startswith("--mount="):
            continue
        fields = word[len("--mount=") :].split(",")
        values = {k.lower(): _unquote(v) for k, eq, v in (f.partition("=") for f in fields) if eq}
        if values.get("from") not in prefixes:
            continue
        if values.get("type", "bind").lower() != "bind":
            return None
        prefix = prefixes[values["from"]]
        kept = [f for f in fields if f.partition("=")[0].lower() not in ("from", "source", "src")]
        source = values.get("source", values.get("src", ""))
        kept.append("source=" + _prefixed(prefix, source))
        edits.append((index, start, end, "--mount=" + ",".join(kept)))
    return edits


def _prefixed(prefix: str, word: str) -> str:
    """A source path of a directory context as the same path below ``prefix`` in the context:
    cleaned as BuildKit cleans it (``..`` stops at the context's root), so it stays inside."""
    quote = word[0] if word[:1] in ("'", '"') and word[-1:] == word[:1] else ""
    body = word[len(quote) : len(word) - len(quote)]
    parts: list[str] = []
    for segment in body.split("/"):
        if segment == "..":
            if parts:
                parts.pop()
        elif segment not in ("", "."):
            parts.append(segment)
    return quote + "/".join([prefix, *parts]) + quote


def blank_stages(text: str, reached: Iterable[int], path: str) -> str:
    """``text`` with every stage whose FROM is not at one of the ``reached`` lines reduced to
    ``FROM scratch`` (with its name; its other lines commented out, so lines and stage indexes
    stay). The build reaches none of them (a stage a named context replaces, say), but the
    classic builder runs every stage before the target, and theirs may read files the build
    is not sent."""
    from buildtool.dockerfile.syntax import parse_dockerfile

    keep = set(reached)
    physical = _split_lines(text)
    for stage in parse_dockerfile(text, path).stages:
        if stage.line in keep:
            continue
        first = stage.line - 1
        ending = physical[first][len(physical[first].rstrip("\r\n")) :]
        named = f" AS {stage.name}" if stage.name else ""
        physical[first] = f"FROM scratch{named}{ending}"
        for index in range(first + 1, min(stage.end_line, len(physical))):
            physical[index] = "# " + physical[index]
    return "".join(physical)


def _directive_value(line: str, reference: str, new: str, path: str, number: int) -> str:
    """``# syntax=<reference>`` with ``new`` in place of the reference."""
    key, eq, value = line.partition("=")
    if not eq or value.strip() != reference:
        raise BtError(f"cannot find the frontend {reference!r} to hand over", path, number)
    start = len(key) + 1 + value.index(reference)
    return line[:start] + new + line[start + len(reference) :]


def _json_syntax(lines: list[str], reference: str, new: str, path: str, number: int) -> None:
    """``{"syntax": "<reference>"}`` with ``new`` in place of the reference, on whichever line
    of the JSON file the string stands (references hold no character JSON escapes)."""
    quoted = f'"{reference}"'
    for index, line in enumerate(lines):
        if quoted in line:
            lines[index] = line.replace(quoted, f'"{new}"', 1)
            return
    raise BtError(f"cannot find the frontend {reference!r} to hand over", path, number)
