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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from buildtool.errors import BtError
from buildtool.workspace.target import ImageTarget, SecretSource

if TYPE_CHECKING:
    from buildtool.workspace.analysis import SecretUse

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
    declared: Iterable[SecretSource], mounts: Iterable[SecretUse]
) -> tuple[SecretSource, ...]:
    """The declared secrets one build gets, is keyed by and passes: those its reached stages
    mount (``analysis.Reads.secrets``); every declared one when a mounted id is not known
    statically. A secret no RUN mounts cannot change the image, so it stales nothing."""
    ids = {sid for sid, _, _ in mounts}
    if None in ids:
        return tuple(declared)
    return tuple(source for source in declared if source.id in ids)


def check_secrets(
    root: Path,
    builds: Iterable[tuple[ImageTarget, str, Sequence[SecretUse]]],
    backend_of: Callable[[str], str],
) -> None:
    """Before any build starts, for each (target, platform, mounted secrets) of ``builds``: a
    build that mounts a secret runs on a backend that can pass it (the classic builder the
    Engine API drives has no ``RUN --mount``), a ``required=true`` mount has a declared
    secret (BuildKit would fail the RUN, maybe hours into the run), and every secret the
    build gets has a value (concealed from now on)."""
    checked: set[SecretSource] = set()
    for target, platform, mounts in builds:
        if not mounts:
            continue
        where = target.location
        backend = backend_of(platform)
        if backend != "buildkit":
            ids = ", ".join(dict.fromkeys(sid or "an id bt cannot resolve" for sid, _, _ in mounts))
            raise BtError(
                f"{target.label} has build secrets ({ids}), which the {backend} backend of "
                f"{platform} cannot pass (the classic builder has no secret mounts); set "
                f'backend = "buildkit" in [builders."{platform}"] of .cache-spec',
                where.path,
                where.line,
            )
        declared = {source.id for source in target.secrets}
        for sid, line, required in mounts:
            if sid is not None and required and sid not in declared:
                raise BtError(
                    f"RUN mounts secret {sid!r} with required=true, which {target.label} does "
                    f'not declare: add secrets = {{"{sid}": {{"env": "VAR"}}}} to it ({where}) '
                    "or the id to [secrets] of .cache-spec",
                    target.dockerfile,
                    line,
                )
        for source in build_secrets(target.secrets, mounts):
            if source in checked:
                continue
            value, problem = read_value(root, source)
            if value is None:
                raise BtError(
                    f"secret {source.id!r} of {target.label}: {problem}", where.path, where.line
                )
            conceal(value)
            checked.add(source)


def secret_warnings(
    target: ImageTarget, mounts: Sequence[SecretUse], defaults: Iterable[SecretSource]
) -> list[str]:
    """What one build does not do with secrets, as warnings: a secret it mounts that is
    declared nowhere (BuildKit builds without it), and one the target itself declares that its
    reached stages never mount (``.cache-spec``'s ``defaults`` are for every target: not
    warned of)."""
    declared = {source.id for source in target.secrets}
    first_lines: dict[str | None, int] = {}
    for sid, line, _ in mounts:
        first_lines.setdefault(sid, line)
    warnings = [
        f"{target.dockerfile}:{line}: RUN mounts secret {sid!r}, which {target.label} does not "
        f"declare, so BuildKit builds without it: declare it in secrets of {target.location} "
        "or [secrets] of .cache-spec"
        for sid, line in first_lines.items()
        if sid is not None and sid not in declared
    ]
    if None not in first_lines:
        mounted = set(first_lines)
        shared = set(defaults)
        warnings += [
            f"secret {source.id!r} of {target.label} ({target.location}) is mounted by no RUN "
            "of the stages this build reaches: it is neither passed nor keyed"
            for source in target.secrets
            if source.id not in mounted and source not in shared
        ]
    return warnings


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


def value_digest(value: str) -> str:
    """What bt keeps of a build arg's value: its blake3, never the value."""
    import blake3

    return "blake3:" + blake3.blake3(value.encode()).hexdigest()


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
