"""CI fan-out: the stale set as waves of jobs for native runners, and the workflow that runs them.

A wave holds builds whose parents are all in earlier waves (or already recorded), so the jobs of
one wave never wait on each other. Each job builds builds of one platform, on that platform's
runner, and writes its lock fragment `bt-lock-<id>.json`; jobs of later waves fold the earlier
fragments first, so their parents are recorded by digest. One merge job folds every fragment into
images.lock and puts the indexes. Pure functions over plans and config: no engine, no click.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from buildtool import __version__
from buildtool.errors import BtError
from buildtool.plan.stale import PlannedBuild, needs_run
from buildtool.workspace.config import Config
from buildtool.workspace.labels import Label
from buildtool.workspace.target import BuildId

GITHUB_MATRIX_LIMIT = 256  # jobs one GitHub Actions matrix may generate
FRAGMENT_GLOB = "bt-lock-*.json"
# Fold the fragments earlier jobs left at the checkout's root, if there are any.
FOLD_FRAGMENTS = f"if ls {FRAGMENT_GLOB} >/dev/null 2>&1; then bt lock merge {FRAGMENT_GLOB}; fi"
_ID_UNSAFE = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class CiJob:
    """One CI job: builds of one platform on that platform's runner."""

    id: str
    platform: str
    runs_on: str | tuple[str, ...]
    builds: tuple[BuildId, ...]

    @property
    def fragment(self) -> str:
        return f"bt-lock-{self.id}.json"

    @property
    def run(self) -> str:
        """The shell command the job runs at the root of a fresh checkout."""
        labels = " ".join(shlex.quote(str(label)) for label, _ in self.builds)
        return (
            f"{FOLD_FRAGMENTS} && bt build --push --no-deps --platform {self.platform} "
            f"--lock-out {self.fragment} {labels}"
        )

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "platform": self.platform,
            "runs_on": self.runs_on if isinstance(self.runs_on, str) else list(self.runs_on),
            "builds": [[str(label), platform] for label, platform in self.builds],
            "run": self.run,
        }


@dataclass(frozen=True)
class CiWave:
    jobs: tuple[CiJob, ...]

    @property
    def matrices(self) -> list[tuple[CiJob, ...]]:
        """The jobs in matrices GitHub accepts (at most 256 jobs each)."""
        step = GITHUB_MATRIX_LIMIT
        return [self.jobs[i : i + step] for i in range(0, len(self.jobs), step)]

    def as_json(self) -> dict[str, object]:
        return {
            "jobs": [job.as_json() for job in self.jobs],
            "matrices": [[job.as_json() for job in matrix] for matrix in self.matrices],
        }


@dataclass(frozen=True)
class CiPlan:
    waves: tuple[CiWave, ...]
    patterns: tuple[str, ...]

    @property
    def merge_run(self) -> str:
        patterns = " ".join(shlex.quote(p) for p in self.patterns)
        return f"{FOLD_FRAGMENTS} && bt merge {patterns}"

    @property
    def job_count(self) -> int:
        return sum(len(wave.jobs) for wave in self.waves)

    def as_json(self) -> dict[str, object]:
        return {
            "waves": [wave.as_json() for wave in self.waves],
            "merge": {"run": self.merge_run},
        }

    def to_json(self, indent: int | None = 2) -> str:
        separators = None if indent else (",", ":")
        return json.dumps(self.as_json(), indent=indent, separators=separators)


def build_waves(
    planned: Sequence[PlannedBuild], runs: Callable[[PlannedBuild], bool]
) -> list[list[PlannedBuild]]:
    """The builds that ``runs`` selects, by wave: a build goes one wave after its latest
    selected parent; parents not selected are recorded already. ``planned`` is in build order."""
    wave_of: dict[BuildId, int] = {}
    waves: list[list[PlannedBuild]] = []
    for p in planned:
        if not runs(p):
            continue
        parent_waves = [
            wave_of[(parent, p.platform)] for parent in p.parents if (parent, p.platform) in wave_of
        ]
        wave = 1 + max(parent_waves, default=-1)
        wave_of[p.id] = wave
        if wave == len(waves):
            waves.append([])
        waves[wave].append(p)
    return waves


def plan_jobs(
    config: Config,
    planned: Sequence[PlannedBuild],
    runs: Callable[[PlannedBuild], bool],
    patterns: Iterable[str],
    builds_per_job: int = 1,
    max_jobs: int | None = None,
) -> CiPlan:
    """Waves of jobs for the builds ``runs`` selects (the stale ones)."""
    waves = build_waves(planned, runs)
    return CiPlan(
        waves=tuple(
            CiWave(_wave_jobs(config, number, builds, builds_per_job, max_jobs))
            for number, builds in enumerate(waves, 1)
        ),
        patterns=tuple(patterns),
    )


def _wave_jobs(
    config: Config,
    number: int,
    builds: Sequence[PlannedBuild],
    builds_per_job: int,
    max_jobs: int | None,
) -> tuple[CiJob, ...]:
    by_platform: dict[str, list[BuildId]] = {}
    for p in builds:
        by_platform.setdefault(p.platform, []).append(p.id)
    size = _job_size({k: len(v) for k, v in by_platform.items()}, builds_per_job, max_jobs, number)
    jobs = []
    for platform in sorted(by_platform):
        for n, chunk in enumerate(_even_chunks(by_platform[platform], size), 1):
            jobs.append(
                CiJob(
                    id=f"w{number}-{_ID_UNSAFE.sub('-', platform.lower())}-{n:03d}",
                    platform=platform,
                    runs_on=config.runner_for(platform),
                    builds=tuple(chunk),
                )
            )
    return tuple(jobs)


def _job_size(counts: dict[str, int], builds_per_job: int, max_jobs: int | None, wave: int) -> int:
    """Builds per job: ``builds_per_job``, or more when the wave would exceed ``max_jobs``."""
    if max_jobs is None:
        return builds_per_job
    if len(counts) > max_jobs:
        raise BtError(
            f"--max-jobs {max_jobs} is too small: wave {wave} has builds for {len(counts)} "
            "platforms, and a job builds for one platform"
        )
    size = builds_per_job
    while sum(-(-n // size) for n in counts.values()) > max_jobs:
        size += 1
    return size


def _even_chunks(items: Sequence[BuildId], size: int) -> list[Sequence[BuildId]]:
    """``items`` in ceil(len/size) consecutive chunks whose sizes differ by at most one."""
    count = -(-len(items) // size)
    return [items[i * len(items) // count : (i + 1) * len(items) // count] for i in range(count)]


def graph_depth(planned: Sequence[PlannedBuild]) -> int:
    """Waves a rebuild of everything in ``planned`` takes."""
    return len(build_waves(planned, lambda p: True))


# -- shards: deterministic slices for engines that index jobs -----------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` (1 <= I <= N) as (I, N); raises ValueError with a sentence for users."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not I/N (e.g. 1/4: the first of four slices)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"{text!r}: I must be between 1 and N, and N at least 1")
    return index, count


def ready_builds(
    planned: Sequence[PlannedBuild], runs: Callable[[PlannedBuild], bool]
) -> list[PlannedBuild]:
    """The builds ``runs`` selects whose parents need no run: the first wave."""
    waves = build_waves(planned, runs)
    return waves[0] if waves else []


def shard(builds: Sequence[PlannedBuild], index: int, count: int) -> list[PlannedBuild]:
    """The ``index``-th (from 1) of ``count`` disjoint slices that together cover ``builds``.
    Dealt round-robin in (label, platform) order, so each slice gets a share of every platform
    and the same builds always land in the same slice."""
    ordered = sorted(builds, key=lambda p: (str(p.label), p.platform))
    return ordered[index - 1 :: count]


# -- the GitHub Actions workflow ------------------------------------------------------------------


@dataclass(frozen=True)
class WorkflowOptions:
    patterns: tuple[str, ...]
    waves: int  # wave slots: Actions cannot loop, so the file holds a fixed number
    matrices: int  # matrices per wave slot, each at most 256 jobs
    # The shell command that installs bt on a runner; None: bt's action (``action``) does
    install: str | None
    builds_per_job: int = 1
    registry: str | None = None  # host[:port][/prefix] of .cache-spec, to log in to
    commit: bool = False  # commit images.lock back to the branch
    action: str = ""  # `uses:` of bt's action (action.yml at the root of bt's repository)
    # Environment variables of the "env" build secrets the builds get, passed to each build
    # step from the repository's secrets of the same name; and the files of "src" ones.
    secret_env: tuple[str, ...] = ()
    secret_files: tuple[str, ...] = ()


# bt's composite action (action.yml), at the release matching this bt: it installs bt from its
# own source, so the runners run the bt that wrote the workflow.
ACTION = f"bt-images/bt@v{__version__}"
_PLAN = "fromJSON(needs.plan.outputs.plan)"
_CHECKOUT = "actions/checkout@v4"
_SETUP_PYTHON = "actions/setup-python@v5"
_UPLOAD = "actions/upload-artifact@v4"
_DOWNLOAD = "actions/download-artifact@v4"
_LOGIN = "docker/login-action@v3"
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def github_workflow(options: WorkflowOptions) -> str:
    """One workflow file doing the whole job: plan, every wave's matrices, merge."""
    slots = [(w, m) for w in range(options.waves) for m in range(options.matrices)]
    patterns = " ".join(shlex.quote(p) for p in options.patterns)
    plan_command = (
        f"bt ci plan {patterns} --compact --max-waves {options.waves} "
        f"--max-jobs {options.matrices * GITHUB_MATRIX_LIMIT} "
        f"--builds-per-job {options.builds_per_job}"
    )
    lines = [
        f"# Generated by `bt ci workflow {patterns}`: bt builds only the stale platform builds,",
        f"# in at most {options.waves} waves of native jobs. Regenerate it when `bt ci plan` says",
        "# the graph needs more waves or jobs than this file holds.",
        "name: bt",
        "on:",
        "  push:",
        "  workflow_dispatch:",
        "permissions:",
        f"  contents: {'write' if options.commit else 'read'}",
        *(["  packages: write"] if _is_ghcr(options.registry) else []),
        "concurrency:",
        "  group: bt-${{ github.ref }}",
        "  cancel-in-progress: false",
        "jobs:",
        "  plan:",
        "    runs-on: ubuntu-latest",
        "    outputs:",
        "      plan: ${{ steps.plan.outputs.plan }}",
        "    steps:",
        *_setup_steps(options, login=False),
        "      - id: plan",
        "        name: Plan the stale builds",
        "        run: |",
        f"          plan=$({plan_command})",
        '          echo "plan=$plan" >> "$GITHUB_OUTPUT"',
    ]
    for w, m in slots:
        lines += _wave_job(options, w, m, needs=[_slot_id(*s) for s in slots if s[0] < w])
    lines += _merge_job(options, [_slot_id(*s) for s in slots])
    return "\n".join(lines) + "\n"


def _slot_id(wave: int, matrix: int) -> str:
    return f"wave-{wave + 1}-{matrix + 1}"


def _needs(ids: Sequence[str]) -> str:
    return f"    needs: [{', '.join(['plan', *ids])}]"


def _wave_job(options: WorkflowOptions, wave: int, matrix: int, needs: Sequence[str]) -> list[str]:
    jobs = f"{_PLAN}.waves[{wave}].matrices[{matrix}]"
    lines = [
        f"  {_slot_id(wave, matrix)}:",
        _needs(needs),
        "    # Skipped when the plan has no such wave; runs on past failures of earlier waves",
        "    # (a build whose parent failed fails alone, the rest are built).",
        f"    if: ${{{{ !cancelled() && needs.plan.result == 'success' && {jobs} != null }}}}",
        "    strategy:",
        "      fail-fast: false",
        "      matrix:",
        f"        include: ${{{{ {jobs} }}}}",
        "    name: ${{ matrix.id }}",
        "    runs-on: ${{ matrix.runs_on }}",
        "    steps:",
        *_setup_steps(options, login=True),
    ]
    if wave > 0:
        lines += _download_fragments()
    lines += [
        "      - name: Build",
        *_secret_env(options),
        "        run: ${{ matrix.run }}",
        "      - name: Upload the lock fragment",
        "        if: ${{ !cancelled() }}",
        f"        uses: {_UPLOAD}",
        "        with:",
        "          name: bt-lock-${{ matrix.id }}",
        "          path: bt-lock-${{ matrix.id }}.json",
        "          if-no-files-found: ignore",
        "          retention-days: 7",
    ]
    return lines


def _merge_job(options: WorkflowOptions, needs: Sequence[str]) -> list[str]:
    lines = [
        "  merge:",
        _needs(needs),
        "    if: ${{ !cancelled() && needs.plan.result == 'success' }}",
        "    runs-on: ubuntu-latest",
        "    steps:",
        *_setup_steps(options, login=True),
        *_download_fragments(),
        "      - name: Fold the fragments into images.lock and put the indexes",
        f"        run: ${{{{ {_PLAN}.merge.run }}}}",
        "      - name: Publish images.lock",
        "        if: ${{ !cancelled() }}",
        f"        uses: {_UPLOAD}",
        "        with:",
        "          name: images.lock",
        "          path: images.lock",
    ]
    if options.commit:
        lines += [
            "      - name: Commit images.lock",
            "        run: |",
            '          git config user.name "github-actions[bot]"',
            "          git config user.email"
            ' "41898282+github-actions[bot]@users.noreply.github.com"',
            "          git add images.lock",
            "          if ! git diff --cached --quiet; then",
            '            git commit -m "images.lock: images built for ${{ github.sha }}"',
            "            git push",
            "          fi",
        ]
    return lines


def _download_fragments() -> list[str]:
    return [
        "      - name: Download the lock fragments of earlier jobs",
        f"        uses: {_DOWNLOAD}",
        "        with:",
        "          pattern: bt-lock-*",
        "          merge-multiple: true",
    ]


def _setup_steps(options: WorkflowOptions, login: bool) -> list[str]:
    lines = [f"      - uses: {_CHECKOUT}"]
    if options.install is None:
        lines += ["      - name: Install bt", f"        uses: {options.action or ACTION}"]
    else:
        lines += [
            f"      - uses: {_SETUP_PYTHON}",
            "        with:",
            '          python-version: "3.11"',
            "      - name: Install bt",
            f"        run: {_yaml_scalar(options.install)}",
        ]
    host = options.registry.split("/", 1)[0] if options.registry else None
    if login and host and host.rsplit(":", 1)[0] not in _LOCAL_HOSTS:
        ghcr = _is_ghcr(options.registry)
        user = "github.actor" if ghcr else "secrets.REGISTRY_USERNAME"
        password = "secrets.GITHUB_TOKEN" if ghcr else "secrets.REGISTRY_PASSWORD"
        lines += [
            f"      - uses: {_LOGIN}",
            "        with:",
            f"          registry: {_yaml_scalar(host)}",
            f"          username: ${{{{ {user} }}}}",
            f"          password: ${{{{ {password} }}}}",
        ]
    return lines


def _secret_env(options: WorkflowOptions) -> list[str]:
    """The build step's ``env``: each "env" secret from the repository secret of its name."""
    lines = [
        f"        # Build secrets read from files must exist on the runner: {path}"
        for path in options.secret_files
    ]
    if options.secret_env:
        lines.append("        env:")
        lines += [f"          {name}: ${{{{ secrets.{name} }}}}" for name in options.secret_env]
    return lines


def _is_ghcr(registry: str | None) -> bool:
    return bool(registry) and str(registry).split("/", 1)[0] == "ghcr.io"


def _yaml_scalar(text: str) -> str:
    """A YAML double-quoted scalar (JSON's escaping is valid YAML)."""
    return json.dumps(text)


def without_stale_parents(
    planned: list[PlannedBuild], selected: set[Label], push: bool, config: Config
) -> list[PlannedBuild]:
    """`bt build --no-deps`: the selected targets' builds, and the recorded builds they take as
    parents; a stale parent is left out, so its child fails instead of building it."""
    return [p for p in planned if p.label in selected or not needs_run(p, push, config.registry)]


def shard_of(
    planned: list[PlannedBuild], which: tuple[int, int], push: bool, config: Config
) -> tuple[list[PlannedBuild], str]:
    """`bt build --shard I/N`: the I-th slice of the ready stale builds (parents recorded), and
    a line saying what the slice holds."""

    def runs(p: PlannedBuild) -> bool:
        return needs_run(p, push, config.registry)

    ready = ready_builds(planned, runs)
    mine = {p.id for p in shard(ready, *which)}
    waiting = sum(map(runs, planned)) - len(ready)
    index, count = which
    message = f"shard {index}/{count}: {len(mine)} of {len(ready)} ready stale builds"
    if waiting:
        message += f"; {waiting} wait on parents not built yet"
    return [p for p in planned if p.id in mine or not runs(p)], message
