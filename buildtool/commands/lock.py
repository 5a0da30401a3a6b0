"""``bt lock``: work with lockfile fragments written by parallel runs (``bt build --lock-out``)."""

from __future__ import annotations

from pathlib import Path

import click

from buildtool.errors import BtError
from buildtool.session import Workbench


@click.group("lock", context_settings={"help_option_names": ["-h", "--help"]})
def command() -> None:
    """Work with lockfile fragments from parallel runs."""


@command.command("merge", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("fragments", nargs=-1, required=True, type=click.Path(path_type=Path))
def merge(fragments: tuple[Path, ...]) -> None:
    """Fold lockfile FRAGMENTS into images.lock.

    Fragments are the lockfiles `bt build --lock-out FILE` writes in parallel CI jobs (one per
    platform, say) of one revision. Their records replace those images.lock holds for the same
    builds, since they are newer. The fragments must agree with each other: one build recorded
    with two digests, or built from two different keys (two revisions), is refused naming both
    files, and nothing is written. The result does not depend on the order of FRAGMENTS.

    \b
    Example:
      bt lock merge amd64.lock arm64.lock && bt merge //...
    """
    from buildtool.lockfile import (
        Lockfile,
        apply_fragments,
        fold_fragments,
        read_lockfile,
        update_lockfile,
    )

    loaded = []
    for path in fragments:
        if not path.is_file():
            raise BtError("no such lockfile fragment", path)
        loaded.append((str(path), read_lockfile(path)))
    folded = fold_fragments(loaded)
    bench = Workbench.open()
    changed = 0

    def change(lock: Lockfile) -> None:
        nonlocal changed
        changed = apply_fragments(lock, folded)

    update_lockfile(bench.config.lockfile, bench.lock_path, change)
    builds = sum(1 for _ in folded.records())
    click.echo(
        f"{bench.config.lockfile.name}: folded {len(fragments)} fragments "
        f"({builds} builds), {changed} records changed",
        err=True,
    )
