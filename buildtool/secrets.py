"""Build secrets and the strings bt must never print (DESIGN invariant 7).

A secret is declared by where its value comes from (``SecretSource``): an environment variable
or a file. A build gets the declared secrets its reached stages mount (``build_secrets``).
bt never keeps the value: the key holds those secrets' ids and sources, BuildKit's CLI
reads the value itself (``--secret id=tok,env=HF_TOKEN``). bt reads a value only to check,
before any build starts, that it is there, and to conceal it: every concealed string is
replaced by ``<redacted>`` in build logs, reporter output and error messages (``scrub``).
Registry credentials and the values of build args whose names look secret are concealed too.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any, NamedTuple

from buildtool.errors import BtError

# What a build's reached stages mount: (id or None when not static, line, required), as the
# Dockerfile analysis reports it (``workspace.analysis.SecretUse``).
Mount = tuple[str | None, int, bool]

REDACTED = "<redacted>"
SECRET_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Shorter strings are not concealed: replacing every "ab" in the output would garble it.
_MIN_CONCEALED = 4

# BuildKit's SecretsUsedInArgOrEnv check (frontend/dockerfile/dockerfile2llb, getSecretsRegex):
# a name is secret-looking when one of these words is its whole, first or last _-separated
# part, unless one of the allowed words is (PUBLIC_KEY, KEY_FILE, TOKEN_VERSION are fine).
_SECRET_WORDS = re.compile(
    r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)"
    r"(?:_|$)"
)
_ALLOWED_WORDS = re.compile(r"(?i)(?:_|^)(?:public|file|version)(?:_|$)")


class SecretSource(NamedTuple):
    """Where a build secret's value comes from; the value itself is never kept (invariant 7).

    ``kind`` is "env" (``name`` is an environment variable) or "src" (``name`` is a file, as
    written: relative to the workspace root, or absolute)."""

    id: str
    kind: str
    name: str


def parse_table(
    value: object, where: str, fail: Callable[[str, str], BtError]
) -> tuple[SecretSource, ...]:
    """``{"tok": {"env": "HF_TOKEN"}, "key": {"src": "path"}}`` as sorted sources.

    ``fail(message, key)`` makes the error; ``key`` is the offending id (for a line number)."""
    shape = f'{where} must be a table of id -> {{"env": "VAR"}} or {{"src": "path"}}'
    if not isinstance(value, Mapping):
        raise fail(shape, where)
    found = []
    for sid, spec in value.items():
        if not isinstance(sid, str) or not SECRET_ID_RE.fullmatch(sid):
            raise fail(f"{where}: invalid secret id {sid!r} (letters, digits, _ . -)", str(sid))
        if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in _KINDS:
            raise fail(
                f'{where}[{sid!r}] must be {{"env": "VAR"}} or {{"src": "path"}} '
                "(exactly one of env, src)",
                sid,
            )
        kind, name = next(iter(spec.items()))
        if not isinstance(name, str) or not name:
            raise fail(f"{where}[{sid!r}].{kind} must be a non-empty string", sid)
        if kind == "env" and not _ENV_NAME_RE.fullmatch(name):
            raise fail(f"{where}[{sid!r}]: invalid environment variable name {name!r}", sid)
        if kind == "src" and any(c in name for c in ',"\n\r'):
            # The docker CLI reads --secret as CSV: such a path would be split.
            raise fail(f'{where}[{sid!r}]: a secret file path cannot hold , " or newlines', sid)
        found.append(SecretSource(sid, kind, name))
    return tuple(sorted(found))


_KINDS = ("env", "src")


def merged(
    defaults: Iterable[SecretSource], own: Iterable[SecretSource]
) -> tuple[SecretSource, ...]:
    """``.cache-spec``'s secrets with a target's own replacing those of the same id."""
    by_id = {s.id: s for s in defaults}
    by_id.update({s.id: s for s in own})
    return tuple(sorted(by_id.values()))


def source_path(root: Path, source: SecretSource) -> Path:
    """The file of a "src" secret: ``~`` expanded, relative to the workspace root."""
    return root / os.path.expanduser(source.name)


def inside(path: Path, directory: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(directory)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def read_value(root: Path, source: SecretSource) -> tuple[str | None, str]:
    """(the value, or None and why it is missing)."""
    if source.kind == "env":
        value = os.environ.get(source.name)
        return value, f"environment variable {source.name} is not set"
    path = source_path(root, source)
    try:
        return path.read_bytes().decode("utf-8", errors="replace"), ""
    except OSError as err:
        return None, f"cannot read file {path} ({err.strerror})"


def build_secrets(
    declared: Iterable[SecretSource], mounts: Iterable[Mount]
) -> tuple[SecretSource, ...]:
    """The declared secrets one build gets, is keyed by and passes: those its reached stages
    mount (``analysis.Reads.secrets``); every declared one when a mounted id is not known
    statically. A secret no RUN mounts cannot change the image, so it stales nothing."""
    ids = {sid for sid, _, _ in mounts}
    if None in ids:
        return tuple(declared)
    return tuple(source for source in declared if source.id in ids)


def resolved(root: Path, source: SecretSource) -> SecretSource:
    """``source`` with a file's path made absolute (builders run in other directories)."""
    if source.kind == "env":
        return source
    return source._replace(name=str(source_path(root, source)))


def buildkit_flag(source: SecretSource) -> str:
    """The value of the docker CLI's ``--secret`` for a ``resolved`` source: where the CLI
    reads the value (Docker 20.10's CLI knows ``env=``), never the value."""
    return f"id={source.id},{source.kind}={source.name}"


def looks_secret(name: str) -> bool:
    """Whether BuildKit's SecretsUsedInArgOrEnv check would flag a build arg of this name."""
    return bool(_SECRET_WORDS.search(name)) and not _ALLOWED_WORDS.search(name)


def secret_arg_warning(names: Iterable[str]) -> str | None:
    flagged = sorted(name for name in names if looks_secret(name))
    if not flagged:
        return None
    return (
        f"build arg {', '.join(flagged)} looks like a secret (BuildKit's SecretsUsedInArgOrEnv): "
        "a build arg's value stays in the image's history; pass it with secrets = "
        '{"id": {"env": "VAR"}} and RUN --mount=type=secret,id=id instead'
    )


# -- concealing ---------------------------------------------------------------------------

_concealed: set[str] = set()
_concealed_lock = threading.Lock()


def conceal(*values: str | None) -> None:
    """Never print these strings again in this process (see ``scrub``)."""
    with _concealed_lock:
        _concealed.update(v for v in values if v and len(v) >= _MIN_CONCEALED)
        if _concealed:
            _scrub_standard_streams()
        # A value may reach output one line at a time.
        for value in values:
            if value and "\n" in value:
                _concealed.update(
                    line for line in value.splitlines() if len(line.strip()) >= _MIN_CONCEALED
                )


def scrub(text: str) -> str:
    """``text`` with every concealed string replaced by ``<redacted>``."""
    if not _concealed or not text:
        return text
    with _concealed_lock:
        found = sorted((v for v in _concealed if v in text), key=len, reverse=True)
    for value in found:
        text = text.replace(value, REDACTED)
    return text


def holds_concealed(data: bytes | str) -> bool:
    """Whether ``data`` (text, or bytes such as a cache about to be written) holds a concealed
    string: bytes that cannot be scrubbed in place (msgpack) are then not written at all."""
    if not _concealed or not data:
        return False
    with _concealed_lock:
        values = list(_concealed)
    if isinstance(data, str):
        return any(v in data for v in values)
    return any(v.encode() in data for v in values)


def _scrub_standard_streams() -> None:
    """From the first concealed value on, everything this process prints passes ``scrub``:
    commands print with click (``bt plan``'s reasons name images, and images may hold a
    secret-looking build arg's value), not only through the reporter."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, ScrubbedStream):
            setattr(sys, name, ScrubbedStream(stream))


class ScrubbedStream:
    """A text stream that scrubs what is written to it (for reporters)."""

    def __init__(self, stream: IO[str]):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(scrub(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
