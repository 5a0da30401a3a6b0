"""`bt build --metadata-file`: what the run left in images.lock, in the shape `docker buildx
bake --metadata-file` writes (an object keyed by target, with ``containerimage.digest`` and
``image.name``), so tools that read bake's metadata read bt's; and the check, made before any
build starts, that an output file can be written at all."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from buildtool.errors import BtError
from buildtool.state.lockfile import Lockfile
from buildtool.state.statefile import write_atomic
from buildtool.workspace.labels import Label
from buildtool.workspace.target import ImageTarget

KEY = "dev.bt.key"  # the key of a one-platform target's build
KEYS = "dev.bt.keys"  # platform -> key, every target
PLATFORMS = "dev.bt.platforms"  # platform -> that build's digest, image and key


def check_writable(path: Path, option: str) -> None:
    """Refuse an output bt could not write at the end of the run, before anything is built.

    Probes by creating (and removing) a file beside it: permission bits do not tell whether
    root, a read-only mount or a pseudo file system will take the atomic rename."""
    where = f"{option} {path}"
    if path.is_dir():
        raise BtError(f"{where}: is a directory, not a file")
    parent = path.parent
    if not parent.is_dir():
        raise BtError(f"{where}: directory {parent} does not exist")
    if path.exists() and not os.access(path, os.W_OK):
        raise BtError(f"{where}: the file is not writable")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as err:
        raise BtError(f"{where}: cannot write in {parent}: {err.strerror}") from None


def bake_metadata(
    lock: Lockfile,
    targets: Mapping[Label, ImageTarget],
    labels: Iterable[Label],
    platforms: Iterable[str] = (),
    *,
    indexes_current: bool = False,
) -> dict[str, Any]:
    """Per selected target: ``containerimage.digest`` and ``image.name`` (comma-separated) as
    bake writes them — for a multi-platform image the index digest and its tags, as bake does for
    a multi-platform push (only when ``indexes_current``: the run put the indexes), for a
    one-platform image its build's digest and image — plus ``dev.bt.*`` keys and every
    platform build. A target with nothing recorded is left out."""
    only = set(platforms)
    metadata: dict[str, Any] = {}
    for label in sorted(labels, key=str):
        target = targets[label]
        builds = {
            platform: record
            for platform in target.platforms
            if (not only or platform in only)
            and (record := lock.get(str(label), platform)) is not None
        }
        if not builds:
            continue
        entry: dict[str, Any] = {}
        index = lock.images.get(str(label))
        if len(target.platforms) > 1 and index is not None and indexes_current:
            entry["containerimage.digest"] = index.digest
            entry["image.name"] = ",".join(index.tags)
        elif len(target.platforms) == 1:
            (record,) = builds.values()
            entry["containerimage.digest"] = record.digest
            entry["image.name"] = record.image
            entry[KEY] = record.key
        entry[KEYS] = {platform: record.key for platform, record in builds.items()}
        entry[PLATFORMS] = {
            platform: {
                "containerimage.digest": record.digest,
                "image.name": record.image,
                KEY: record.key,
            }
            for platform, record in builds.items()
        }
        metadata[str(label)] = entry
    return metadata


def write_metadata(path: Path, metadata: Mapping[str, Any]) -> None:
    text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
    try:
        write_atomic(path, text.encode())
    except OSError as err:
        raise BtError(f"cannot write --metadata-file: {err.strerror}", path) from None
