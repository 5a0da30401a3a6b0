"""The remote action cache: before a stale build runs, the registry is asked whether any machine
already pushed that key (``<registry>/<repo>:bt-<key>``, the tag every push of it gets).

A hit counts only when the image's config carries the key label a bt build of that very key
stamped (``buildtool.plan.stamp``), as for the local action cache: a tag moved by hand (another
image pushed under it) is a warning and the build runs. Two machines that raced to build one key
both pushed a valid image for it; whichever the tag names now is as good as the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from buildtool.errors import ManifestNotFound, RegistryUnavailable
from buildtool.plan.stamp import KEY_LABEL, stamped_key

if TYPE_CHECKING:
    from buildtool.registry import RegistryClient


@dataclass(frozen=True)
class RemoteLookup:
    """What the registry holds for one key: ``image`` (``repo@sha256:...``) and ``digest`` on a
    hit, else both empty; ``warning`` when the tag names an image bt did not build from it."""

    image: str = ""
    digest: str = ""
    warning: str = ""

    @property
    def hit(self) -> bool:
        return bool(self.digest)


def lookup(client: RegistryClient, ref: str, key: str) -> RemoteLookup:
    """Ask the registry for ``ref`` (a ``bt-<key>`` tag): the manifest (its digest is that of
    the bytes received, so a tag moved meanwhile cannot mix two images; a HEAD first would
    answer nothing the GET does not) and its config's labels.

    An unreachable registry raises RegistryUnavailable (transient: the scheduler retries it,
    then fails the build), saying what was being looked up."""
    repository = ref.rsplit(":", 1)[0]
    try:
        media_type, body, digest = client.get_manifest(ref)
        image = f"{repository}@{digest}"
        labels = client.manifest_labels(image, media_type, body)
    except ManifestNotFound:
        return RemoteLookup()
    except RegistryUnavailable as err:
        raise RegistryUnavailable(
            f"cannot ask the registry for {ref}: {err}",
            source=err.source,
            retry_after=err.retry_after,
        ) from None
    if stamped_key(labels) == key:
        return RemoteLookup(image, digest)
    what = "an index" if labels is None else f"its {KEY_LABEL} label is "
    if labels is not None:
        what += stamped_key(labels) or "missing"
    return RemoteLookup(
        warning=f"{ref} in the registry is not an image bt built from this key ({what}); ignored"
    )
