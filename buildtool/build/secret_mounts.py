"""The checks a run makes of the secrets its builds mount, before any build starts, and the
warnings a build gets for secrets it declares or mounts but cannot use."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from buildtool.errors import BtError
from buildtool.secrets import SecretSource, build_secrets, conceal, read_value
from buildtool.workspace.analysis import SecretUse
from buildtool.workspace.target import ImageTarget


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
