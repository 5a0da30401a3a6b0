"""Parents of platform builds: declared in BUILD.images, or inferred from image references.

A declared parent (``parents = {ARG: label}``) hands the build its parent's exact image in a
build arg, which a reached ``FROM``/``--from``/``from=`` must use as a whole reference. An
inferred parent is a workspace target whose image a reached stage names: ``FROM
${REGISTRY}/base:${TAG}`` with args that resolve to ``<[registry] url>/base:<tag>`` builds on
the target that has that repository and tag (or declares that reference in ``aliases``).
References are compared the way Docker resolves them (``acme/x`` is ``docker.io/acme/x:latest``).
Inferred parents are per platform (a FROM may depend on TARGETARCH); the graph uses their union.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from buildtool.errors import BtError
from buildtool.registry.reference import normalise_reference, parse_reference
from buildtool.workspace.analysis import Analyses, ImageUse, Reads, parent_placeholder
from buildtool.workspace.labels import Label
from buildtool.workspace.target import BuildId, ImageTarget

# (line, kind, reference as the analysis gives it): one place a build names its parent's image
ImageSite = tuple[int, str, str]

# ``$NAME``, ``${NAME}`` and ``${NAME:-word}``-style substitutions, as written.
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class Parent(NamedTuple):
    """A parent of one platform build; its build for the same platform is built first."""

    label: Label
    # What identifies it in the child's key: the build arg that carries it (declared) or the
    # normalised reference the Dockerfile names (inferred). Never a line number.
    name: str
    declared: bool
    sites: tuple[ImageSite, ...] = ()  # inferred: where the Dockerfile names it


def declared_parents(target: ImageTarget) -> tuple[Parent, ...]:
    return tuple(Parent(label, arg, True) for arg, label in target.parents)


class WorkspaceImages:
    """The images the workspace builds, by every name it knows them by (normalised)."""

    def __init__(self, targets: Iterable[ImageTarget], registry: str | None):
        self.owners: dict[str, list[Label]] = {}
        self.spelled: list[tuple[str, Label]] = []  # (name as written, owner), for hints
        # Repositories below the workspace's registry URL -> the tags the workspace builds.
        self.repositories: dict[str, set[str]] = {}
        for target in targets:
            names = [f"{registry}/{target.repository}:{tag}" for tag in target.tags if registry]
            for name in [*names, *target.aliases]:
                self.spelled.append((name, target.label))
                owners = self.owners.setdefault(normalise_reference(name), [])
                if target.label not in owners:
                    owners.append(target.label)
            if registry:
                repository = parse_reference(f"{registry}/{target.repository}").name
                self.repositories.setdefault(repository, set()).update(target.tags)

    def unbuilt_tag(self, reference: str) -> str | None:
        """Why ``reference`` cannot be external: it names a tag the workspace does not build
        in a repository below the workspace's own registry URL (None when it may be)."""
        try:
            ref = parse_reference(reference)
        except BtError:
            return None
        tags = self.repositories.get(ref.name)
        if tags is None or ref.digest:
            return None
        return (
            f"{reference} is in {ref.name}, which this workspace builds, but no target builds "
            f"its tag {ref.tag or 'latest'!r} (built: {', '.join(sorted(tags))})"
        )

    def owner(self, reference: str, where: tuple[str, int]) -> Label | None:
        """The target that builds ``reference`` (None when none does)."""
        try:
            name = normalise_reference(reference)
        except BtError:
            return None
        owners = self.owners.get(name)
        if not owners:
            return None
        if len(owners) > 1:
            both = " and ".join(str(label) for label in sorted(owners))
            raise BtError(
                f"image {name} is built by {both}: give one of them other tags or aliases",
                *where,
            )
        return owners[0]

    def matching(self, written: str) -> list[tuple[str, Label]]:
        """Workspace names a reference written with variables could stand for (none when its
        literal text holds no name characters: ``${IMAGE}`` could be anything)."""
        parts = _VARIABLE.split(written)
        literals = parts[::3]
        if not any(re.search(r"[A-Za-z0-9]", text) for text in literals):
            return []
        pattern = re.compile(".*".join(re.escape(text) for text in literals))
        found: list[tuple[str, Label]] = []
        for name, label in self.spelled:
            candidates = {name, normalise_reference(name)}
            if any(pattern.fullmatch(c) for c in candidates):
                found.append((name, label))
        return found


def infer_parents(
    targets: Mapping[Label, ImageTarget], registry: str | None, analyses: Analyses
) -> dict[BuildId, tuple[Parent, ...]]:
    """Each platform build's inferred parents; checks declared parents' args on the way."""
    images = WorkspaceImages(targets.values(), registry)
    inferred: dict[BuildId, tuple[Parent, ...]] = {}
    for target in targets.values():
        # A target without its Dockerfile names no image; reading it later says it is missing.
        if not analyses.exists(target.dockerfile):
            continue
        used: set[str] = set()
        read: set[str] = set()  # named contexts the reached stages read
        for platform in target.platforms:
            reads = analyses.reads(target, platform)
            used |= {use[3] for use in reads.images if use[3] is not None}
            read |= {use[5] for use in reads.images if use[5] is not None}
            read |= {source[0] for source in reads.named_sources}
            found = (*_context_parents(target, reads), *_inferred(target, reads, images, analyses))
            if found:
                inferred[(target.label, platform)] = found
        for arg, _ in target.parents:
            if arg not in used:
                raise _unused_parent_arg(target, arg, analyses)
        for context in target.contexts:
            if context.name not in read:
                raise _unread_context(target, context.name)
    return inferred


def _context_parents(target: ImageTarget, reads: Reads) -> tuple[Parent, ...]:
    """The parents the build's named contexts that are workspace targets hand it: each with
    the sites naming the context, which the engine is sent rewritten to the parent's image."""
    labels = dict(target.context_parents)
    sites: dict[str, list[ImageSite]] = {}
    for _, line, kind, _, _, context in reads.images:
        if context is not None and f"context {context}" in labels:
            sites.setdefault(f"context {context}", []).append((line, kind, context))
    return tuple(
        Parent(labels[name], name, False, tuple(found)) for name, found in sorted(sites.items())
    )


def _unread_context(target: ImageTarget, name: str) -> BtError:
    loc = target.location
    return BtError(
        f"named context {name!r} of {target.label} is read by no FROM, COPY --from or RUN "
        f"--mount=from= of the stages {target.dockerfile} builds",
        loc.path,
        loc.line,
    )


def _inferred(
    target: ImageTarget, reads: Reads, images: WorkspaceImages, analyses: Analyses
) -> tuple[Parent, ...]:
    declared = {arg for arg, _ in target.parents}
    by_target = {c.name for c in target.contexts if c.kind == "target"}
    sites: dict[tuple[str, Label], list[ImageSite]] = {}
    for use in reads.images:
        reference, line, kind, arg, unresolved, context = use
        if arg in declared or context in by_target:
            continue
        where = (target.dockerfile, line)
        label = None
        if not unresolved and "$" not in reference:
            label = images.owner(reference, where)
        if label is None:
            _check_static(target, use, images, analyses)
            problem = None if unresolved or "$" in reference else images.unbuilt_tag(reference)
            if problem is not None:
                raise BtError(problem, *where)
            continue
        # A named context is rewritten where the Dockerfile names it: by its name.
        sites.setdefault((normalise_reference(reference), label), []).append(
            (line, kind, context or reference)
        )
    return tuple(
        Parent(label, name, False, tuple(found)) for (name, label), found in sorted(sites.items())
    )


def _check_static(
    target: ImageTarget, use: ImageUse, images: WorkspaceImages, analyses: Analyses
) -> None:
    """A reference bt cannot resolve to a valid image name must not name a workspace image:
    its parent would be silently missing from the key."""
    reference, line, kind, _, unresolved, _ = use
    if not unresolved and "$" not in reference and _valid(reference):
        return
    written = reference
    if kind == "from" and not unresolved:
        written = _written_base(analyses, target.dockerfile, line) or reference
    matches = images.matching(written)
    if not matches:
        return
    variables = list(dict.fromkeys(a or b for a, b in _VARIABLE.findall(written)))
    given = dict(target.args)
    missing = [name for name in variables if name not in given]
    if missing:
        hint = f"pass {', '.join(missing)} in args = {{...}} of {target.label}"
    else:
        values = ", ".join(f"{name}={given[name]!r}" for name in variables)
        hint = f"check the args of {target.label} ({values})"
    name, label = matches[0]
    shown = "" if written == reference else f" (resolves to {reference!r})"
    raise BtError(
        f"{_instruction(kind)} {written}{shown} may name {name}, which {label} builds, but bt "
        f"cannot resolve it statically: {hint}",
        target.dockerfile,
        line,
    )


def _valid(reference: str) -> bool:
    try:
        normalise_reference(reference)
    except BtError:
        return False
    return True


def _instruction(kind: str) -> str:
    kinds = {"from": "FROM", "copy": "COPY --from=", "syntax": "# syntax="}
    return kinds.get(kind, "RUN --mount=from=")


def _written_base(analyses: Analyses, dockerfile: str, line: int) -> str | None:
    """The FROM image of the stage at ``line``, as written (parses the Dockerfile)."""
    for stage in analyses.parse(dockerfile).stages:
        if stage.line == line:
            return stage.base
    return None


def _unused_parent_arg(target: ImageTarget, arg: str, analyses: Analyses) -> BtError:
    """The error for a declared parent's arg that no reached stage uses as a whole image."""
    placeholder = parent_placeholder(arg)
    for platform in target.platforms:
        for reference, line, kind, _, _, _ in analyses.reads(target, platform).images:
            if placeholder in reference:
                written = reference.replace(placeholder, f"${{{arg}}}")
                return BtError(
                    f"parents arg {arg} of {target.label} is used only as part of the image "
                    f"reference {written!r} ({_instruction(kind)}); bt hands it the parent's "
                    f"exact image, so it must be the whole reference (FROM ${{{arg}}})",
                    target.dockerfile,
                    line,
                )
    loc = target.location
    return BtError(
        f"parents arg {arg} of {target.label} is used by no FROM, COPY --from or RUN "
        f"--mount=from= of the stages {target.dockerfile} builds as a whole image reference "
        f"(write FROM ${{{arg}}})",
        loc.path,
        loc.line,
    )
