"""The labels bt stamps on every image it builds, and the one check of them.

A key-derived tag (``bt/<repo>:<name>-<key>`` locally, ``<registry>/<repo>:bt-<key>`` remotely)
is what the action cache looks up, but anyone can attach any image to a tag. The key label is
set by the build itself, from the key whose exact file set the build was sent, so a cache hit
counts only when the image's config carries it.
"""

from __future__ import annotations

from collections.abc import Mapping

KEY_LABEL = "dev.bt.key"
TARGET_LABEL = "dev.bt.label"


def stamp(key: str, label: str) -> tuple[tuple[str, str], ...]:
    """The labels a build of ``label`` under ``key`` carries in its image config."""
    return ((KEY_LABEL, key), (TARGET_LABEL, label))


def stamped_key(config_labels: Mapping[str, str] | None) -> str | None:
    """The key an image was built from, as its config labels say; None for an image bt did not
    build (or ``None`` labels: no image at all)."""
    if not config_labels:
        return None
    key = config_labels.get(KEY_LABEL)
    return key if isinstance(key, str) and key else None
