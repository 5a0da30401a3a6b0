"""``bt ci``: fan stale builds out over native CI runners (``plan``) and write the workflow."""

from __future__ import annotations

from collections.abc import Callable

import click

from buildtool.ci.waves import ACTION
from buildtool.cli.commands.common import complete_patterns
from buildtool.errors import BtError
from buildtool.plan.session import Workbench
from buildtool.plan.stale import PlannedBuild, needs_run

_builds_per_job = click.option(
    "--builds-per-job",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Platform builds one job runs, at most (more when --max-jobs asks).",
)


@click.group("ci")
def command() -> None:
    """Fan stale builds out over native CI runners."""


@command.command("plan")
@click.argument("patterns", nargs=-1, required=True, shell_complete=complete_patterns)
@_builds_per_job
@click.option(
    "--max-jobs",
    type=click.IntRange(min=1),
    help="Jobs one wave may have, at most: more builds go into each job to stay below it.  "
    "[default: no limit]",
)
@click.option(
    "--max-waves",
    type=click.IntRange(min=1),
    help="Fail (exit 2) when the plan needs more waves, as a workflow with that many would.  "
    "[default: no limit]",
)
@click.option("--compact", is_flag=True, help="Print the JSON on one line (for $GITHUB_OUTPUT).")
def plan(
    patterns: tuple[str, ...],
    builds_per_job: int,
    max_jobs: int | None,
    max_waves: int | None,
    compact: bool,
) -> None:
    """Print the CI jobs that build the stale platform builds PATTERNS need, as JSON.

    \b
    {"waves": [{"jobs": [{"id", "platform", "runs_on", "builds", "run"}, ...],
                "matrices": [[job, ...], ...]}, ...],
     "merge": {"run": "..."}}

    A wave's builds have their parents in earlier waves or recorded in images.lock, so its jobs
    run in parallel. Each job builds for one platform on that platform's runner ([ci.runners] in
    .cache-spec, default ubuntu-latest); its `run` folds the earlier waves' fragments
    (bt-lock-*.json at the checkout's root), builds exactly its builds with --push and writes
    bt-lock-<id>.json. A wave's `matrices` split its jobs into GitHub Actions matrices of at
    most 256 jobs. The merge `run` folds every fragment into images.lock and puts the indexes.
    Nothing stale: "waves" is empty.

    \b
    Examples:
      bt ci plan //...
      bt ci plan //matrix/... --builds-per-job 5 --max-jobs 100
    """
    from buildtool.ci.waves import plan_jobs

    bench = Workbench.open()
    config = bench.config
    planned = bench.plan(patterns)
    ci_plan = plan_jobs(config, planned, _runs(config.registry), patterns, builds_per_job, max_jobs)
    waves = len(ci_plan.waves)
    if max_waves is not None and waves > max_waves:
        raise BtError(
            f"the plan needs {waves} waves, more than the {max_waves} of the workflow: "
            f"regenerate it with `bt ci workflow --waves {waves}`"
        )
    click.echo(ci_plan.to_json(indent=None if compact else 2))
    builds = sum(len(job.builds) for wave in ci_plan.waves for job in wave.jobs)
    click.echo(
        f"{builds} stale platform builds in {waves} waves: {ci_plan.job_count} jobs, then merge",
        err=True,
    )


@command.command("workflow")
@click.argument("patterns", nargs=-1, shell_complete=complete_patterns)
@click.option(
    "--waves",
    type=click.IntRange(min=1),
    help="Wave jobs in the file (default: the waves a rebuild of everything takes today).",
)
@click.option(
    "--matrices",
    type=click.IntRange(min=1),
    help="Matrices per wave, of up to 256 jobs each (default: what a full rebuild needs).",
)
@_builds_per_job
@click.option(
    "--action",
    default=ACTION,
    show_default=True,
    metavar="REF",
    help="bt's GitHub Action (action.yml of bt's repository) that installs bt on each runner, "
    "as `uses:` names it: a fork's OWNER/REPO@REF, or ./PATH for a copy in your repository.",
)
@click.option(
    "--install",
    metavar="COMMAND",
    help="Install bt with this shell command instead of the action (after setup-python), "
    "e.g. 'python -m pip install bt-images==0.1.0'.  [default: the action]",
)
@click.option("--commit", is_flag=True, help="Commit images.lock back to the branch.")
def workflow(
    patterns: tuple[str, ...],
    waves: int | None,
    matrices: int | None,
    builds_per_job: int,
    action: str,
    install: str | None,
    commit: bool,
) -> None:
    """Print a GitHub Actions workflow that builds what PATTERNS (default //...) need.

    One file does the whole job: a plan job runs `bt ci plan`; one job per wave and matrix runs
    that wave's jobs on native runners (skipped when the wave is empty, never failing fast) and
    uploads each job's lock fragment; a merge job folds the fragments into images.lock, puts the
    indexes and publishes images.lock (an artifact, or a commit with --commit). Actions cannot
    loop, so the file holds a fixed number of waves: regenerate it when the graph gets deeper.

    \b
    Example:
      bt ci workflow //... > .github/workflows/bt.yml
    """
    from buildtool.ci.waves import WorkflowOptions, github_workflow, graph_depth, plan_jobs

    patterns = patterns or ("//...",)
    bench = Workbench.open()
    config = bench.config
    planned = bench.plan(patterns)
    full = plan_jobs(config, planned, lambda p: True, patterns, builds_per_job)
    if matrices is None:
        matrices = max((len(wave.matrices) for wave in full.waves), default=1)
    # The secrets the builds get (those their Dockerfiles mount), whatever is stale today.
    secrets = {(kind, name) for p in planned for _, kind, name in p.manifest.secrets}
    options = WorkflowOptions(
        patterns=patterns,
        waves=waves or max(graph_depth(planned), 1),
        matrices=matrices,
        install=install,
        action=action,
        builds_per_job=builds_per_job,
        registry=config.registry,
        commit=commit,
        secret_env=tuple(sorted(name for kind, name in secrets if kind == "env")),
        secret_files=tuple(sorted(name for kind, name in secrets if kind == "src")),
    )
    click.echo(github_workflow(options), nl=False)


def _runs(registry: str | None) -> Callable[[PlannedBuild], bool]:
    """What a CI job must build: stale builds, and fresh ones recorded only locally (CI pushes)."""
    return lambda p: needs_run(p, registry is not None, registry)
