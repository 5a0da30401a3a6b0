"""Recording finished platform builds: the lockfile entry and the input manifest behind its
key; and claiming a build before it runs, so that bt processes sharing a workspace build each
key once."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from buildtool.build.scheduler import note, waiting
from buildtool.plan.keys import KeyManifest, save_manifest
from buildtool.state.cachedir import CacheDir
from buildtool.state.lockfile import BuildRecord, Lockfile, read_lockfile, update_lockfile
from buildtool.state.statefile import HolderLock
from buildtool.workspace.config import Config


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
            record = BuildRecord(manifest.key, digest, image)
            lock.record_build(manifest.label, manifest.platform, record)

    if fragment is not None:
        update_lockfile(fragment, lock_path, change)
    return update_lockfile(config.lockfile, lock_path, change)


class Claims:
    """The platform builds this process is running, each under a lock of its key held from
    before the build until it is recorded (``CacheDir.build_lock``).

    A build another bt process holds is waited for, said once with that process's pid; then
    images.lock is read again, and when the other process recorded this very key (pushed, if
    this run pushes) its record is used instead of building. A process that died released its
    locks with it (they are flocks), so its builds are simply taken over."""

    def __init__(self, config: Config, push: bool) -> None:
        self.config = config
        self.push = push
        self._held: dict[tuple[str, str], HolderLock] = {}
        self._guard = threading.Lock()

    def claim(
        self,
        label: str,
        platform: str,
        key: str,
        cancel: threading.Event,
        rejected: BuildRecord | None = None,
    ) -> BuildRecord | None:
        """Take the build's lock (waiting for another holder, until ``cancel``); return the
        record of this key another process made meanwhile, else None: build it now.
        ``rejected`` is the record the plan already found wanting (its digest gone from the
        registry, say): finding it again is no reason not to build."""
        lock = HolderLock(CacheDir(self.config.cache_dir).build_lock(label, platform, key))
        if not lock.try_acquire():
            holder = lock.holder()
            who = f"bt process {holder}" if holder else "another bt process"
            note(f"waiting for {who}, which is building it (key {key[:16]})")
            with waiting(cancel):  # other builds of this run take its slot meanwhile
                lock.acquire(cancel)
        with self._guard:
            self._held[(label, platform)] = lock
        record = read_lockfile(self.config.lockfile).get(label, platform)
        if record is None or record.key != key or record == rejected:
            return None
        if self.push and not record.image.startswith(f"{self.config.registry}/"):
            return None  # recorded, but only on an engine: this run still pushes it
        return record

    def release(self, label: str, platform: str) -> None:
        with self._guard:
            lock = self._held.pop((label, platform), None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        with self._guard:
            held, self._held = list(self._held.values()), {}
        for lock in held:
            lock.release()
