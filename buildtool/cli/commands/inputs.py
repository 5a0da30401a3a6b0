"""``bt inputs``: every file one platform build's key covers, and what brought it in."""

from __future__ import annotations

import json

import click

from buildtool.cli.commands.common import complete_patterns, format_option, one_platform_option
from buildtool.errors import BtError
from buildtool.inputs.pathnames import shown_path
from buildtool.plan.session import Workbench


@click.command("inputs")
@click.argument("label", shell_complete=complete_patterns)
@one_platform_option
@format_option("text: one line per file; json: an object with the files and any fallback.")
def command(label: str, platform: str | None, output_format: str) -> None:
    """List every file LABEL's platform build hashes into its key: its digest and the
    Dockerfile line, explicit input or global input that brought it in, its parents' inputs
    included (their keys are part of its key), then the external images it uses with the
    digest images.lock pins each to. Editing a listed file stales the build; editing any other
    file does not. No Docker engine and no network is needed.

    \b
    Examples:
      bt inputs //matrix:large-v3-zh --platform linux/arm64
      bt inputs //base:no_model --platform linux/amd64 --format json
    """
    bench = Workbench.open()
    matched = bench.labels([label])
    if len(matched) != 1:
        raise BtError(f"expected one image label, got {label!r} ({len(matched)} targets)")
    (target_label,) = matched
    target = bench.session.graph.targets[target_label]
    chosen = _platform(target_label, target.platforms, platform)
    fileset = bench.computer.filesets.of(target, chosen)
    rows = bench.computer.covered_inputs((target_label, chosen))
    pins = bench.computer.manifest((target_label, chosen)).pins
    bench.computer.filesets.save()
    bench.session.save()
    if output_format == "json":
        data = {
            "label": str(target_label),
            "platform": chosen,
            "key": bench.computer.key((target_label, chosen)),
            "fallback": fileset.fallback,
            "inputs": [row.to_json() for row in rows],
            "images": [
                {"reference": written, "name": name, "pinned": value}
                for name, value, written in pins
            ],
        }
        click.echo(json.dumps(data, indent=2))
        return
    if fileset.fallback:
        click.echo(f"# the whole build context counts, because {fileset.fallback}")
    for row in rows:
        mode = "x" if row.executable else "-"
        shown = row.digest[:16] if row.kind != "dir" else "(directory)"
        click.echo(f"{shown:<16} {mode} {shown_path(row.path)}  <- {row.origin}")
    for name, value, written in pins:
        full = f" ({name})" if name != written else ""
        click.echo(f"# external image {written}{full}: {value}")


def _platform(label: object, platforms: tuple[str, ...], wanted: str | None) -> str:
    if wanted is None:
        if len(platforms) != 1:
            raise BtError(f"{label} builds for {', '.join(platforms)}: choose one with --platform")
        return platforms[0]
    if wanted not in platforms:
        raise BtError(f"{label} does not build for {wanted} ({', '.join(platforms)})")
    return wanted
