"""The annotations of an image's index: the commit it was released from, and the target's own.

They go on the index only, never into an image config: the platform images, their digests and
their keys stay what they were. ``created`` is the commit's time, not the clock's, so merging
one commit twice gives the same index digest and puts nothing the second time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from buildtool.release.gitcontext import GitContext

REVISION = "org.opencontainers.image.revision"
SOURCE = "org.opencontainers.image.source"
CREATED = "org.opencontainers.image.created"
VERSION = "org.opencontainers.image.version"


def commit_annotations(context: GitContext) -> dict[str, str]:
    """The OCI annotations (image-spec's pre-defined keys) the commit gives every index."""
    found: dict[str, str] = {}
    if context.sha:
        found[REVISION] = context.sha
    if context.source:
        found[SOURCE] = context.source
    if context.committed is not None:
        # RFC 3339, as the image spec asks; UTC so that every machine writes the same bytes.
        found[CREATED] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(context.committed))
    if context.semver is not None:
        found[VERSION] = context.semver.version
    return found


def index_annotations(
    context: GitContext, declared: Mapping[str, str] | tuple[tuple[str, str], ...]
) -> dict[str, str]:
    """The commit's annotations overlaid with the target's declared ones, keys sorted."""
    merged = {**commit_annotations(context), **dict(declared)}
    return dict(sorted(merged.items()))
