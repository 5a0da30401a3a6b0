"""Layer reuse from the last record: a stale build offers its engine the image images.lock
recorded for the same (target, platform) as a cache source, so a one-line change after a long
unchanged ``RUN`` does not rerun it on a runner whose engine never built the image.

What each backend reuses (README, "Warm layers"):
- BuildKit (the 20.10 CLI and buildx): ``--cache-from <record>``; every image bt builds carries
  inline cache metadata (``BUILDKIT_INLINE_CACHE=1``, buildx ``--cache-to type=inline``), so a
  pushed record is a cache source. Inline cache covers only the stages that end up in the image.
- The Engine API (the classic builder): it reuses only images in the engine's own store, so the
  backend pulls the record first and passes it as ``cache_from``.

Only pushed records (``repo@sha256:...``) are offered: a local record lives on the engine that
built it, whose own layer cache already has it. Cache sources never enter keys: they change how
fast an image is made, never which image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from buildtool.errors import BtError, TransientError

if TYPE_CHECKING:
    from buildtool.plan.stale import PlannedBuild
    from buildtool.registry import RegistryClient


def layer_source(planned: PlannedBuild, enabled: bool) -> str | None:
    """The image a stale build may take layers from: its previous pushed record, if any."""
    record = planned.record
    if not enabled or not planned.stale or record is None or record.key == planned.key:
        return None
    from buildtool.registry.reference import parse_reference

    try:
        reference = parse_reference(record.image)
    except BtError:
        return None  # images.lock's schema check stops such a record long before
    if reference.digest is None or reference.tag is not None:
        return None  # a local content-derived tag: only the engine that built it has it
    return str(reference.name + "@" + reference.digest)


def missing_source(client: RegistryClient, image: str) -> str | None:
    """Why ``image`` cannot be a cache source (the one warning of its build), None when the
    registry still serves it. A source is never worth failing or retrying a build for."""
    try:
        if client.manifest_digest(image) is not None:
            return None
        why = "the registry no longer has it"
    except (BtError, TransientError, OSError) as err:
        why = f"cannot ask the registry: {err}"
    return f"layer cache source {image} skipped ({why}); built without it"
