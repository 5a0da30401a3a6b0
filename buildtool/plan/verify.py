"""images.lock against the registry: which recorded digests it still serves, and where the tags
bt relies on point. Used by `bt lock check` (a CI gate), `bt merge` (before an index names a
manifest) and healing (``plan.check_registry``). One HEAD per reference, several at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from buildtool.errors import BtError
from buildtool.state.lockfile import Lockfile

if TYPE_CHECKING:
    from buildtool.registry import RegistryClient

JOBS = 16


def served(client: RegistryClient, refs: Sequence[str], jobs: int = JOBS) -> dict[str, str | None]:
    """ref -> the digest the registry serves behind it (None: nothing), asked ``jobs`` at a
    time. A fault (after the client's retries) is raised."""
    unique = list(dict.fromkeys(refs))
    if not unique:
        return {}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(jobs, len(unique))) as pool:
        return dict(zip(unique, pool.map(client.manifest_digest, unique), strict=True))


def key_tag(image: str, key: str) -> str:
    """The key-derived tag every push of ``key`` gets (``build.remote_ref``), in the repository
    of the pushed ``image`` (``repo@sha256:...``)."""
    return f"{image.split('@', 1)[0]}:bt-{key[:32]}"


def lockfile_problems(lock: Lockfile, client: RegistryClient, registry: str | None) -> list[str]:
    """One line per way ``lock`` and the registry disagree: a build recorded only on an engine,
    a build or index digest the registry does not serve, a key tag or image tag pointing
    elsewhere than ``lock`` says. Empty when they agree."""
    problems: list[str] = []
    refs: list[str] = []
    checks: list[tuple[str, str, str]] = []  # (what, ref, the digest it must serve)
    for label, platform, record in lock.records():
        what = f"{label} {platform}"
        if "@" not in record.image:
            problems.append(f"{what}: recorded only on an engine ({record.image}), not pushed")
            continue
        checks.append((what, record.image, record.digest))
        checks.append((f"{what}: key tag", key_tag(record.image, record.key), record.digest))
    for label, index in sorted(lock.images.items()):
        for tag in index.tags:
            repository = tag[: tag.rfind(":")] if tag.rfind(":") > tag.rfind("/") else tag
            checks.append((f"{label} index", f"{repository}@{index.digest}", index.digest))
            checks.append((f"{label} tag", tag, index.digest))
    if not checks:
        return problems
    if registry is None:
        raise BtError("checking needs [registry] url in .cache-spec", ".cache-spec")
    refs = [ref for _, ref, _ in checks]
    found = served(client, refs)
    seen: set[str] = set()
    for what, ref, digest in checks:
        if ref in seen:
            continue
        seen.add(ref)
        actual = found[ref]
        if actual is None:
            problems.append(f"{what}: {ref} is missing from the registry")
        elif actual != digest:
            problems.append(f"{what}: {ref} points at {actual}, images.lock says {digest}")
    return problems
