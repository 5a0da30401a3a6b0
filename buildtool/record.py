"""Recording finished platform builds: the lockfile entry and the input manifest behind its key."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from buildtool.keys import KeyManifest, save_manifest
from buildtool.lockfile import BuildRecord, Lockfile, update_lockfile
from buildtool.workspace import Config


def record_builds(
    config: Config,
    lock_path: Path,
    built: Iterable[tuple[KeyManifest, str, str]],
    *,
    fragment: Path | None = None,
) -> Lockfile:
    """Record (manifest, digest, image) triples in images.lock, and in ``fragment`` when given
    (a lockfile holding only this run's builds, for `bt lock merge`). Manifests are saved first,
    so a lockfile entry never names a key whose inputs `bt why` cannot show."""
    items = list(built)
    for manifest, _, _ in items:
        save_manifest(config.cache_dir, manifest)

    def change(lock: Lockfile) -> None:
        for manifest, digest, image in items:
            lock.put(manifest.label, manifest.platform, BuildRecord(manifest.key, digest, image))

    if fragment is not None:
        update_lockfile(fragment, lock_path, change)
    return update_lockfile(config.lockfile, lock_path, change)
