"""The records that flow out of BUILD.images: image targets and groups."""

from __future__ import annotations

from typing import NamedTuple

from buildtool.secrets import SecretSource
from buildtool.workspace.labels import Label, parse_label

# One platform build: the unit of hashing, scheduling, caching and locking.
BuildId = tuple[Label, str]  # (target, platform)


class Location(NamedTuple):
    """Where a declaration was made, for ``path:line`` messages."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


class NamedContext(NamedTuple):
    """A named build context (bake's ``contexts``, buildx's ``--build-context``): what the
    reached stages get when a ``FROM``, ``COPY --from=`` or ``RUN --mount=from=`` names it.

    ``kind`` is "target" (``value``: the label of a workspace target, a parent of the build),
    "dir" (``value``: a workspace-relative directory whose read files are inputs) or "image"
    (``value``: an external image reference, pinned like any other)."""

    name: str
    kind: str
    value: str


class ImageTarget(NamedTuple):
    """One image, built once per platform.

    Paths are workspace-relative POSIX paths. ``parents`` maps a build-arg name to the label
    whose exact image reference is passed in that arg at build time. ``aliases`` are full image
    references the target's image is also known by, besides ``<registry>/<repository>:<tag>``:
    a Dockerfile naming one of them builds on this target (see ``parents.py``). ``secrets``
    are the build secrets its builds get (``.cache-spec``'s, overridden by its own), by id.
    ``annotations`` go on the image's index only (``release/annotations.py``): they change no
    platform image and no key.
    """

    label: Label
    context: str
    dockerfile: str
    stage: str | None
    args: tuple[tuple[str, str], ...]
    parents: tuple[tuple[str, Label], ...]
    platforms: tuple[str, ...]
    tags: tuple[str, ...]
    repository: str
    inputs: tuple[str, ...] | None
    # A string runs through the image's shell (``sh -c``), a tuple is exec form after the
    # image's ENTRYPOINT: Dockerfile's RUN/CMD forms.
    tests: tuple[str | tuple[str, ...], ...]
    location: Location
    aliases: tuple[str, ...] = ()
    secrets: tuple[SecretSource, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()  # sorted by key
    contexts: tuple[NamedContext, ...] = ()  # sorted by name
    # Where ``inputs =`` is written (``bt inputs`` credits it), when given.
    inputs_location: Location | None = None

    @property
    def parent_labels(self) -> tuple[Label, ...]:
        return tuple(label for _, label in self.parents)

    @property
    def context_parents(self) -> tuple[tuple[str, Label], ...]:
        """("context NAME", label) of each named context that is a workspace target."""
        return tuple(
            (f"context {c.name}", parse_label(c.value)) for c in self.contexts if c.kind == "target"
        )


class Group(NamedTuple):
    """A named set of targets; building a group builds its members."""

    label: Label
    members: tuple[Label, ...]
    location: Location
