"""Named build contexts of ``image(contexts = {NAME: VALUE})``: bake's ``contexts`` and buildx's
``--build-context``, read from BUILD.images and checked where they are declared.

A value is a workspace label (``":base"``, ``"//pkg:base"``: that target's image, a parent of the
build), ``docker-image://REF`` (an external image, pinned in images.lock like any other), or a
directory relative to the BUILD.images file, inside the workspace (the files the reached stages
read from it are inputs). Other kinds buildx knows (``oci-layout://``, URLs, git) are refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

from buildtool.errors import BtError
from buildtool.registry.reference import parse_reference
from buildtool.workspace.labels import parse_label
from buildtool.workspace.target import NamedContext

IMAGE_PREFIX = "docker-image://"
# Docker's stage names; a named context may also be named as an image (``alpine``, ``acme/x:1``).
_STAGE_NAME = re.compile(r"[a-z][a-z0-9_.-]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def valid_name(name: str) -> bool:
    """Whether ``name`` can name a context: a stage name, or an image name without digest."""
    if _STAGE_NAME.fullmatch(name):
        return True
    try:
        reference = parse_reference(name)
    except BtError:
        return False
    return not reference.digest and name == name.strip()


def parse_contexts(
    value: object,
    *,
    package: str,
    relative: Callable[[str, object], str],
    root: Path,
    taken: Mapping[str, object],
    error: Callable[[str], BtError],
) -> tuple[NamedContext, ...]:
    """The named contexts of one ``image()`` call, sorted by name. ``relative`` turns a
    directory as written into a workspace path (raising when it leaves the workspace);
    ``taken`` holds the names of its ``parents``, which a context may not reuse."""
    if not isinstance(value, Mapping):
        raise error("contexts must be a dict of strings")
    found: list[NamedContext] = []
    for name, text in value.items():
        if not isinstance(name, str) or not valid_name(name):
            raise error(
                f"contexts: invalid context name {name!r} (a stage name such as 'base', or an "
                "image name such as 'alpine')"
            )
        if not isinstance(text, str) or not text:
            raise error(f"contexts[{name!r}] must be a non-empty string")
        if name in taken:
            raise error(f"{name!r} is both in contexts and in parents: keep one of them")
        found.append(_parse_one(name, text, package, relative, root, error))
    return tuple(sorted(found))


def _parse_one(
    name: str,
    text: str,
    package: str,
    relative: Callable[[str, object], str],
    root: Path,
    error: Callable[[str], BtError],
) -> NamedContext:
    what = f"contexts[{name!r}]"
    if text.startswith(IMAGE_PREFIX):
        reference = text[len(IMAGE_PREFIX) :]
        try:
            parse_reference(reference)
        except BtError as err:
            raise error(f"{what}: {err.message}") from None
        return NamedContext(name, "image", reference)
    if text.startswith("target:"):
        raise error(f"{what}: {text!r} is bake's spelling; write the label ':{text[7:]}'")
    if _SCHEME.match(text) or text.startswith("git@") or text.endswith(".git"):
        raise error(
            f"{what}: {text!r} is not supported (a label, docker-image://REF or a directory)"
        )
    if text.startswith((":", "//")):
        try:
            label = parse_label(text, package)
        except BtError as err:
            raise error(f"{what}: {err.message}") from None
        return NamedContext(name, "target", str(label))
    path = relative(what, text)
    if not (root / path).is_dir():
        raise error(f"{what}: directory {text!r} does not exist")
    if not (root / path).resolve().is_relative_to(root.resolve()):
        raise error(f"{what}: directory {text!r} is a link to outside the workspace")
    return NamedContext(name, "dir", path)
