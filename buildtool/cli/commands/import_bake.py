"""``bt import-bake``: a BUILD.images from the JSON `docker buildx bake --print` writes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from buildtool.errors import BtError


@click.command("import-bake")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write BUILD.images to FILE.  [default: standard output]",
)
def command(files: tuple[Path, ...], output: Path | None) -> None:
    """Print a BUILD.images declaring what FILES (the JSON `docker buildx bake --print`
    writes; standard input when none or -) declare.

    Each bake target becomes an image() with its context, dockerfile, target (stage), args,
    platforms and tags (repository and tags; the registry host belongs in .cache-spec). The
    targets of an expanded matrix (names and args varying along axes) become a for loop.
    contexts map one to one onto named contexts (`target:base` becomes the label `//:base`;
    directories and docker-image:// stay), so the Dockerfiles build unedited. Groups become
    group().
    Fields bt has no use for are named in a comment above their target.

    \b
    Examples:
      docker buildx bake --print > bake.json && bt import-bake bake.json -o BUILD.images
      docker buildx bake --print all | bt import-bake

    With -o, a directory in no bt workspace gets a .cache-spec too (with no settings), which
    makes it one.
    """
    from buildtool.workspace.bake import build_file, read_prints

    texts: list[tuple[str, str]] = []
    for path in files or (Path("-"),):
        if str(path) == "-":
            texts.append(("standard input", sys.stdin.read()))
            continue
        try:
            texts.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as err:
            raise BtError(f"cannot read: {getattr(err, 'strerror', None) or err}", path) from None
    source = ", ".join(name for name, _ in texts)
    text = build_file(read_prints(texts), f"`docker buildx bake --print` output ({source})")
    if output is None:
        click.echo(text, nl=False)
        return
    from buildtool.state.statefile import write_atomic

    try:
        write_atomic(output, text.encode(), durable=False)
    except OSError as err:
        raise BtError(f"cannot write: {err.strerror}", output) from None
    _make_workspace(output.resolve().parent)


def _make_workspace(directory: Path) -> None:
    """A BUILD.images written outside any workspace gets the .cache-spec that makes its
    directory one (every key is optional), so `bt query //...` works next."""
    from buildtool.state.statefile import write_atomic
    from buildtool.workspace.config import SPEC_NAME

    if any((d / SPEC_NAME).is_file() for d in (directory, *directory.parents)):
        return
    spec = directory / SPEC_NAME
    try:
        write_atomic(spec, _NEW_SPEC.encode(), durable=False)
    except OSError as err:
        raise BtError(f"cannot write: {err.strerror}", spec) from None
    click.echo(f"wrote {spec}, with no settings: it makes {directory} a bt workspace", err=True)


_NEW_SPEC = """\
# bt workspace root. Every key is optional: see the README's ".cache-spec reference".
# Images pushed with `bt build --push` go below [registry] url, e.g.:
# [registry]
# url = "ghcr.io/acme"
"""
