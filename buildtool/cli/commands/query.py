"""``bt query``: print the targets an expression selects."""

from __future__ import annotations

import json

import click

from buildtool.cli.commands.common import complete_patterns
from buildtool.plan.session import Session
from buildtool.workspace.graph import TargetGraph
from buildtool.workspace.labels import Label
from buildtool.workspace.query import evaluate


@click.command("query")
@click.argument("expression", shell_complete=complete_patterns)
@click.option(
    "--platforms", is_flag=True, help="Print one 'LABEL PLATFORM' line per platform build."
)
@click.option(
    "--output",
    type=click.Choice(["label", "json", "dot"]),
    default="label",
    show_default=True,
    help="label: one label per line; json: an array of target objects; dot: a graphviz graph.",
)
def command(expression: str, platforms: bool, output: str) -> None:
    """Print the targets EXPRESSION selects, sorted.

    \b
    EXPRESSION is a pattern or a query:
      //...                      every target
      //matrix/...  //matrix:all every target of a package (and below, for /...)
      deps(//matrix:large-v3-zh) the target and everything it builds on
      rdeps(//..., //model:tiny) targets in the universe that build on //model:tiny
      A + B, A - B, A ^ B        union, difference, intersection
    deps and rdeps take an optional depth: deps(//matrix:tiny-en, 1).
    """
    session = Session.here()
    graph = session.graph
    labels = sorted(evaluate(expression, graph, session.current_package))
    session.save()
    if output == "json":
        from buildtool.inputs.filesets import input_rows
        from buildtool.plan.session import Workbench

        filesets = Workbench(session).computer.filesets
        described = []
        for label in labels:
            target = graph.targets[label]
            # Per platform, its own file set as `bt inputs` lists it (parents' files aside).
            inputs = {
                platform: [row.path for row in input_rows(filesets.of(target, platform), {})]
                for platform in target.platforms
            }
            described.append(_describe(graph, label, inputs))
        filesets.save()
        click.echo(json.dumps(described, indent=2))
    elif output == "dot":
        click.echo(_dot(graph, labels))
    elif platforms:
        for label in labels:
            for platform in graph.targets[label].platforms:
                click.echo(f"{label} {platform}")
    else:
        for label in labels:
            click.echo(str(label))


def _describe(graph: TargetGraph, label: Label, inputs: dict[str, list[str]]) -> dict[str, object]:
    from buildtool.secrets import REDACTED, looks_secret

    target = graph.targets[label]
    return {
        "label": str(label),
        "platforms": list(target.platforms),
        "parents": {arg: str(parent) for arg, parent in target.parents},
        # Parents inferred from the images its Dockerfile names: reference -> label.
        "inferred_parents": {
            p.name: str(p.label)
            for platform in target.platforms
            for p in graph.parents_of(label, platform)
            if not p.declared and not p.name.startswith("context ")
        },
        # Named contexts: name -> label, directory (workspace path) or docker-image://REF.
        "contexts": {
            c.name: f"docker-image://{c.value}" if c.kind == "image" else c.value
            for c in target.contexts
        },
        "dockerfile": target.dockerfile,
        "context": target.context,
        "stage": target.stage,
        # A value whose name looks secret (BuildKit's SecretsUsedInArgOrEnv) is not printed.
        "args": {name: REDACTED if looks_secret(name) else v for name, v in target.args},
        "secrets": {s.id: {s.kind: s.name} for s in target.secrets},
        "tags": list(target.tags),
        "repository": target.repository,
        "explicit_inputs": list(target.inputs) if target.inputs is not None else None,
        "inputs": inputs,
        "tests": list(target.tests),
        "declared_at": str(target.location),
    }


def _dot(graph: TargetGraph, labels: list[Label]) -> str:
    selected = set(labels)
    lines = ["digraph images {", "  rankdir=LR;", "  node [shape=box];"]
    lines += [f'  "{label}";' for label in labels]
    for label in labels:
        edges = {
            (p.label, p.name)
            for platform in graph.targets[label].platforms
            for p in graph.parents_of(label, platform)
        }
        for parent, name in sorted(edges):
            if parent in selected:
                lines.append(f'  "{label}" -> "{parent}" [label="{name}"];')
    lines.append("}")
    return "\n".join(lines)
