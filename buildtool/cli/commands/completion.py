"""``bt completion``: print the script that makes a shell complete bt's commands and labels."""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def command(shell: str) -> None:
    """Print the completion script for SHELL: commands, options, and the workspace's labels
    and patterns (//matrix:<TAB>).

    \\b
    Examples:
      source <(bt completion bash)                       # in ~/.bashrc
      bt completion zsh > "${fpath[1]}/_bt"
      bt completion fish > ~/.config/fish/completions/bt.fish
    """
    from buildtool.cli.completion import source
    from buildtool.cli.main import cli

    click.echo(source(cli, shell), nl=False)
