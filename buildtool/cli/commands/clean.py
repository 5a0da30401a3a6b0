"""``bt clean``: remove the cache directory's derived state."""

from __future__ import annotations

import click

from buildtool.plan.session import Session


@click.command("clean")
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
def command(dry_run: bool) -> None:
    """Remove the cache directory's derived state: the stat and analysis caches, build and
    crash logs, input manifests of keys images.lock does not record, and temporary files a
    killed bt left. The next run makes them again (the first plan hashes every file anew).

    Kept: images.lock (never touched) and the manifests of the builds it records, which
    `bt why` reads. Refused while another bt process uses the workspace's cache directory.

    \b
    Examples:
      bt clean --dry-run
      bt clean
    """
    from buildtool.cli.clean import clean_cache

    config = Session.here().config
    cleaned = clean_cache(config, dry_run=dry_run)
    for path in cleaned.removed:
        click.echo(str(path))
    verb = "would free" if dry_run else "freed"
    click.echo(
        f"{config.cache_dir}: {len(cleaned.removed)} files, {verb} {_size(cleaned.freed)}; "
        f"kept {cleaned.kept_manifests} manifests of recorded builds",
        err=True,
    )


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1 << 20):.1f} MiB"
