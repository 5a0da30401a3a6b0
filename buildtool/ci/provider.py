"""What a CI system's writer gets, and the writers bt has.

The waves (``waves.py``) and the commands the jobs run (`bt ci plan`, `bt build --no-deps`,
`bt ci merge`) are the same on every CI system; a provider only writes its system's file: a
plan job whose output is `bt ci plan`'s JSON, a fixed number of wave slots whose jobs come from
``waves[W].matrices[M]`` of it (skipped when empty), and a merge job. A second CI system is one
module with a ``Provider`` and its entry in ``_provider`` of ``cli/commands/ci.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from buildtool import __version__


@dataclass(frozen=True)
class Login:
    """A registry the jobs log in to, with the CI secrets holding its credentials; None: the
    CI system's own token (GITHUB_TOKEN for ghcr.io). ``read_only``: the secrets pull requests
    use instead (they never push); None: pull requests log in with nothing."""

    host: str
    username: str | None = None
    password: str | None = None
    read_only: tuple[str, str] | None = None


@dataclass(frozen=True)
class WorkflowOptions:
    patterns: tuple[str, ...]
    waves: int  # wave slots: CI files cannot loop, so the file holds a fixed number
    matrices: int  # matrices per wave slot (a provider's limit of jobs each)
    # The shell command that installs bt on a runner; None: bt's action (``action``) does
    install: str | None
    builds_per_job: int = 1
    logins: tuple[Login, ...] = ()
    commit: bool = False  # commit images.lock back to the branch
    action: str = ""  # bt's own action (action.yml at the root of bt's repository)
    python_version: str | None = None  # set up this Python first; None: the runner's python3
    # Environment variables of the "env" build secrets the builds get, passed to each build
    # step from the repository's secrets of the same name; and the files of "src" ones.
    secret_env: tuple[str, ...] = ()
    secret_files: tuple[str, ...] = ()
    # (name, shell command) steps the merge job runs after the indexes are put, on events that
    # push: where releases hook in (tags by templates, copies to mirror registries).
    release_steps: tuple[tuple[str, str], ...] = ()


class Provider(Protocol):
    name: str
    matrix_limit: int  # jobs one matrix may generate

    def workflow(self, options: WorkflowOptions) -> str:
        """The CI file that runs the whole job for ``options``."""
        ...


# bt's action at the release matching this bt: it installs bt from its own source, so the
# runners run the bt that wrote the workflow.
ACTION = f"bt-images/bt@v{__version__}"
