"""Instruction flags and ``--mount`` values, as BuildKit's ``frontend/dockerfile/instructions``
parses them (``bflag.go``, ``commands_runmount.go``)."""

from __future__ import annotations

import difflib
import posixpath

from buildtool.dockerfile.records import Instruction

_BOOL, _STRING, _STRINGS = "bool", "string", "strings"
_FLAG_SPECS: dict[str, dict[str, str]] = {
    "COPY": {
        "chown": _STRING,
        "from": _STRING,
        "chmod": _STRING,
        "link": _BOOL,
        "exclude": _STRINGS,
        "parents": _BOOL,
    },
    "ADD": {
        "chown": _STRING,
        "chmod": _STRING,
        "link": _BOOL,
        "keep-git-dir": _BOOL,
        "checksum": _STRING,
        "unpack": _BOOL,
        "exclude": _STRINGS,
    },
    "FROM": {"platform": _STRING},
}


class ParseError(Exception):
    """A rejection by Docker's parser; the caller attaches the path and line."""


def check_flags(keyword: str, flags: tuple[tuple[str, str | None], ...]) -> None:
    """BuildKit's BFlags.Parse for the instructions whose flags decide what is read."""
    spec = _FLAG_SPECS.get(keyword)
    if keyword == "RUN":
        spec = {"mount": _STRINGS}
    if spec is None:
        return
    seen: set[str] = set()
    for name, value in flags:
        kind = spec.get(name)
        if kind is None:
            if keyword == "RUN":
                continue  # --network, --security, --device and future flags read no context
            close = difflib.get_close_matches(name, list(spec), n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            raise ParseError(f"unknown flag: --{name}{hint}")
        if name in seen and kind != _STRINGS:
            raise ParseError(f"duplicate flag specified: --{name}")
        seen.add(name)
        if kind == _BOOL:
            if value == "":
                raise ParseError(f"missing a value on flag: --{name}")
            if value is not None and value.lower() not in ("true", "false"):
                raise ParseError(f"expecting boolean value for flag --{name}, not: {value}")
        elif value is None:
            raise ParseError(f"missing a value on flag: --{name}")


def flag_value(ins: Instruction, name: str) -> str | None:
    values = flag_values(ins, name)
    return values[-1] if values else None


def flag_values(ins: Instruction, name: str) -> tuple[str, ...]:
    return tuple(value or "" for key, value in ins.flags if key == name)


def bool_flag(ins: Instruction, name: str) -> bool:
    found = [value for key, value in ins.flags if key == name]
    return bool(found) and (found[-1] is None or found[-1].lower() == "true")


def _csv_fields(text: str) -> list[str]:
    """One CSV record, as go-csvvalue parses ``--mount`` values (no lazy quotes)."""
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if not text:
        raise ValueError("EOF")
    fields: list[str] = []
    i, n = 0, len(text)
    while True:
        if i >= n or text[i] != '"':
            j = text.find(",", i)
            field = text[i:] if j < 0 else text[i:j]
            if '"' in field:
                raise ValueError('bare " in non-quoted-field')
            fields.append(field)
            if j < 0:
                return fields
            i = j + 1
            continue
        i += 1
        buf: list[str] = []
        while True:
            j = text.find('"', i)
            if j < 0:
                raise ValueError('extraneous or missing " in quoted-field')
            buf.append(text[i:j])
            i = j + 1
            following = text[i] if i < n else ""
            if following == '"':
                buf.append('"')
                i += 1
                continue
            if following in ("", ","):
                break
            raise ValueError('extraneous or missing " in quoted-field')
        fields.append("".join(buf))
        if i >= n:
            return fields
        i += 1


# The ``--mount`` keys that decide what is read or which secret is mounted, by their name in
# BuildKit's ``Mount`` (``src`` is ``source``, ``dst``/``destination`` are ``target``).
_MOUNT_KEYS = {
    "type": "type", "from": "from", "source": "source", "src": "source", "id": "id",
    "target": "target", "dst": "target", "destination": "target", "required": "required",
}  # fmt: skip
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # Go's strconv.ParseBool


def mount_fields(spec: str) -> dict[str, str]:
    """The ``--mount`` keys that decide what is read (last one wins, as in BuildKit); a bare
    ``required`` is ``required=true``."""
    found: dict[str, str] = {}
    for field in _csv_fields(spec):
        key, eq, value = field.partition("=")
        name = _MOUNT_KEYS.get(key.lower())
        if name is not None and (eq or name == "required"):
            found[name] = value if eq else "true"
    return found


def secret_of(fields: dict[str, str]) -> tuple[str | None, bool]:
    """The id of the secret a ``type=secret`` mount asks for, as dockerfile2llb's
    ``dispatchSecret`` picks it (``source``, else ``id``, else the basename of ``target`` by
    Go's ``path.Base``; None without any: BuildKit fails the build), and whether it is
    ``required`` (Go's ``strconv.ParseBool``)."""
    required = fields.get("required") in _GO_TRUE
    found = fields.get("source") or fields.get("id")
    if found:
        return found, required
    target = fields.get("target", "")
    if not target:
        return None, required
    return posixpath.basename(target.rstrip("/")) or "/", required
