"""``bt ci``: fan stale builds out over native CI runners (``plan``) and write the workflow."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from buildtool.ci.provider import ACTION
from buildtool.cli.commands.common import complete_patterns
from buildtool.cli.counts import counted
from buildtool.errors import BtError
from buildtool.plan.session import Workbench
from buildtool.plan.stale import PlannedBuild, needs_run

if TYPE_CHECKING:
    from buildtool.ci.provider import Login, Provider
    from buildtool.workspace.config import Config

_event = click.option(
    "--event",
    type=click.Choice(["push", "pull_request", "tag"]),
    envvar="BT_EVENT",
    help="What the run is for, which decides the platforms ([ci.platforms] of .cache-spec) and "
    "whether it pushes (pull requests do not).  [default: from GITHUB_EVENT_NAME and "
    "GITHUB_REF, else push]",
)
_builds_per_job = click.option(
    "--builds-per-job",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    envvar="BT_BUILDS_PER_JOB",
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
@_event
def plan(
    patterns: tuple[str, ...],
    builds_per_job: int,
    max_jobs: int | None,
    max_waves: int | None,
    compact: bool,
    event: str | None,
) -> None:
    """Print the CI jobs that build the stale platform builds PATTERNS need, as JSON.

    \b
    {"event": "push", "platforms": [...], "push": true,
     "waves": [{"jobs": [{"id", "platform", "runs_on", "builds", "run"}, ...],
                "matrices": [{"include": [job, ...]}, ...]}, ...],
     "merge": {"run": "..."}}

    Builds the registry already holds under their key (bt-<key>, pushed by an earlier run) are
    not planned. A wave's builds have their parents in earlier waves, recorded in images.lock
    or in the registry, so its jobs run in parallel. Each job builds for one platform on that
    platform's runner ([ci.runners] in .cache-spec, default ubuntu-latest); its `run` builds
    exactly its builds with --push --no-deps, finding their parents in the registry. A wave's
    `matrices` split its jobs into GitHub Actions matrices of at most 256 jobs. The merge
    `run` (`bt ci merge`) records every build from the registry and puts the indexes. Nothing
    to build: "waves" is empty.

    The event decides the platforms ([ci.platforms]); a pull request pushes nothing: one job
    per platform builds its stale builds with their parents, and "merge" is null.

    \b
    Examples:
      bt ci plan //...
      bt ci plan //matrix/... --builds-per-job 5 --max-jobs 100
    """
    from buildtool.ci.collect import pushed_builds
    from buildtool.ci.waves import plan_jobs, resolve_event

    bench = Workbench.open()
    config = bench.config
    ci_event = resolve_event(config, event, os.environ)
    planned = [p for p in bench.plan(patterns) if p.platform in ci_event.platforms]
    pushed = pushed_builds(bench, planned)

    def runs(p: PlannedBuild) -> bool:
        return needs_run(p, config.registry is not None, config.registry) and p.id not in pushed

    ci_plan = plan_jobs(config, planned, runs, patterns, builds_per_job, max_jobs, ci_event)
    waves = len(ci_plan.waves)
    if max_waves is not None and waves > max_waves:
        raise BtError(
            f"the plan needs {counted(waves, 'wave')}, more than the {max_waves} of the workflow: "
            f"regenerate it with `bt ci workflow --waves {waves}`"
        )
    click.echo(ci_plan.to_json(indent=None if compact else 2))
    from buildtool.cli.story import step_summary_path

    summary = step_summary_path()
    if summary is not None:
        from buildtool.cli.summary import append_summary, ci_plan_markdown

        reasons = {(str(p.label), p.platform): p.reason for p in planned}
        append_summary(summary, ci_plan_markdown(patterns, ci_plan, reasons))
    builds = sum(len(job.builds) for wave in ci_plan.waves for job in wave.jobs)
    merge = ", then merge" if ci_plan.merge_run else " (pushing nothing)"
    click.echo(
        f"{ci_event.name}: {counted(builds, 'platform build')} to run in "
        f"{counted(waves, 'wave')}: {counted(ci_plan.job_count, 'job')}{merge}; "
        f"{len(pushed)} found in the registry",
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
    help="Install bt with this shell command instead of the action, "
    "e.g. 'pipx install bt-images==0.1.0'.  [default: the action]",
)
@click.option(
    "--python-version",
    metavar="VERSION",
    help="Set up this Python first (actions/setup-python).  [default: the runner's python3]",
)
@click.option("--commit", is_flag=True, help="Commit images.lock back to the branch.")
def workflow(
    patterns: tuple[str, ...],
    waves: int | None,
    matrices: int | None,
    builds_per_job: int,
    action: str,
    install: str | None,
    python_version: str | None,
    commit: bool,
) -> None:
    """Print a GitHub Actions workflow that builds what PATTERNS (default //...) need.

    One file does the whole job, with no action but actions/checkout and bt's own: a plan job
    runs `bt ci plan`; one job per wave and matrix runs that wave's jobs on native runners
    (skipped when the wave is empty, never failing fast), each pushing its builds; a merge job
    records every build from the registry (`bt ci merge`), puts the indexes and publishes
    images.lock (a job output and the step summary; a commit with --commit). Jobs pass images
    only through the registry ([registry] url is required), logging in to it from repository
    secrets ([ci.registry_secrets]; GITHUB_TOKEN for ghcr.io). Actions cannot loop, so the file
    holds a fixed number of waves: regenerate it when the graph gets deeper.

    \b
    Example:
      bt ci workflow //... > .github/workflows/bt.yml
    """
    from buildtool.ci.collect import require_registry
    from buildtool.ci.provider import WorkflowOptions
    from buildtool.ci.waves import graph_depth, plan_jobs

    patterns = patterns or ("//...",)
    bench = Workbench.open()
    config = bench.config
    require_registry(bench)
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
        python_version=python_version,
        builds_per_job=builds_per_job,
        logins=_logins(config),
        commit=commit,
        # `bt ci merge` puts the tags [release] tag_templates names (no flag needed); then the
        # recorded images are promoted to [registry] mirrors, by digest, building nothing.
        release_steps=_release_steps(config, patterns),
        secret_env=tuple(sorted(name for kind, name in secrets if kind == "env")),
        secret_files=tuple(sorted(name for kind, name in secrets if kind == "src")),
    )
    click.echo(_provider("github").workflow(options), nl=False)


@command.command("merge")
@click.argument("patterns", nargs=-1, required=True, shell_complete=complete_patterns)
@_event
def merge(patterns: tuple[str, ...], event: str | None) -> None:
    """Record every build of PATTERNS from the registry, then put the indexes (CI's last job).

    Each platform build the event builds ([ci.platforms]) is looked up under its key's tag
    (bt-<key>), which the job that built it pushed, and recorded in images.lock: nothing is
    built. Then every image whose builds are all there gets its multi-platform index, as
    `bt merge` puts it (not for events that leave platforms out). Builds the registry lacks are
    listed, and the command exits 1.

    \b
    Example:
      bt ci merge //... --event push
    """
    from buildtool.ci.collect import collect
    from buildtool.ci.waves import resolve_event
    from buildtool.errors import BuildFailed

    bench = Workbench.open()
    ci_event = resolve_event(bench.config, event, os.environ)
    if not ci_event.push:
        raise BtError("a pull request's run pushes nothing, so it has nothing to merge")
    found = collect(bench, patterns, ci_event)
    for tag in found.tags:
        click.echo(str(tag))
    if not found.indexes:
        click.echo(f"{ci_event.name} builds only {', '.join(ci_event.platforms)}: no index put")
    click.echo(f"{len(found.recorded)} platform builds recorded from the registry")
    from buildtool.cli.story import step_summary_path

    summary = step_summary_path()
    if summary is not None:
        from buildtool.cli.summary import append_summary, ci_merge_markdown

        append_summary(summary, ci_merge_markdown(patterns, found))
    if found.missing:
        for p in found.missing:
            click.echo(f"missing: {p.label} {p.platform} (bt-{p.key[:32]} not in the registry)")
        raise BuildFailed(
            f"{len(found.missing)} platform builds of the plan are not in the registry: their "
            "jobs failed or did not run; images with a missing build got no index"
        )


def _provider(name: str) -> Provider:
    """The writer of a CI system's file: one entry per system."""
    from buildtool.ci.github import GitHubActions

    providers: dict[str, Provider] = {"github": GitHubActions()}
    return providers[name]


def _release_steps(config: Config, patterns: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """After the indexes: `bt promote` to the mirrors of .cache-spec, when there are any (the
    merge job runs for pushes and tags only: pull requests never promote)."""
    import shlex

    if not config.mirrors:
        return ()
    return (("Promote to the mirror registries", shlex.join(["bt", "promote", *patterns])),)


def _logins(config: Config) -> tuple[Login, ...]:
    """The registries the jobs log in to: [registry] url's host and every mirror's, each with
    the secrets [ci.registry_secrets] names for it."""
    assert config.registry
    hosts = dict.fromkeys(url.split("/", 1)[0] for url in (config.registry, *config.mirrors))
    return tuple(_login(config, host) for host in hosts)


def _login(config: Config, host: str) -> Login:
    from buildtool.ci.provider import Login

    secrets = config.ci.registry_secrets.get(host)
    if secrets is not None:
        read_only = (secrets[2], secrets[3]) if len(secrets) == 4 else None
        return Login(host, secrets[0], secrets[1], read_only)
    if host == "ghcr.io":
        return Login(host)
    return Login(host, "REGISTRY_USERNAME", "REGISTRY_PASSWORD")
