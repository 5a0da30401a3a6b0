"""What a release knows of the commit it publishes: its sha, time, branch, pull request, semver
tag and repository URL, read from the git checkout or, in GitHub Actions, from the run's
environment (``GITHUB_REF``, ``GITHUB_SHA``, ``GITHUB_HEAD_REF``).

A value that cannot be known here is None, never guessed: a tag template that needs it is
skipped (``tags.py``), an index annotation that would hold it is left out (``annotations.py``).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from buildtool.errors import BtError

_SHA_RE = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # SHA-1, or SHA-256 repositories
# Semantic Versioning 2.0.0's grammar, with the leading "v" metadata-action also accepts.
_SEMVER_RE = re.compile(
    r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
_PR_REF_RE = re.compile(r"refs/pull/(\d+)/(?:merge|head)")
_GIT_TIMEOUT = 30.0


class Semver(NamedTuple):
    """A ``vX.Y.Z[-pre]`` tag as Semantic Versioning reads it (build metadata dropped)."""

    major: int
    minor: int
    patch: int
    prerelease: str = ""  # "" for a release

    @classmethod
    def parse(cls, text: str) -> Semver | None:
        found = _SEMVER_RE.fullmatch(text)
        if found is None:
            return None
        major, minor, patch, pre = found.groups()
        return cls(int(major), int(minor), int(patch), pre or "")

    @property
    def version(self) -> str:
        pre = f"-{self.prerelease}" if self.prerelease else ""
        return f"{self.major}.{self.minor}.{self.patch}{pre}"

    def precedence(self) -> tuple[object, ...]:
        """A sort key in Semantic Versioning's precedence (its rule 11)."""
        if not self.prerelease:
            return (self.major, self.minor, self.patch, 1, ())
        parts = tuple(
            (0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease.split(".")
        )
        return (self.major, self.minor, self.patch, 0, parts)


class GitContext(NamedTuple):
    """The facts of the commit being released; None where this checkout cannot tell."""

    sha: str | None = None
    committed: int | None = None  # commit time, seconds since the epoch
    branch: str | None = None  # as git names it; tags.py sanitises it
    pr: str | None = None  # pull request number
    semver: Semver | None = None  # the highest semver tag on the commit
    highest: Semver | None = None  # the highest release semver tag of the repository
    default_branch: str | None = None
    source: str | None = None  # the repository's URL, without credentials


def read_context(
    root: Path, env: Mapping[str, str], default_branch: str | None = None
) -> GitContext:
    """The context of the checkout at ``root``, GitHub Actions' variables in ``env`` first.

    ``default_branch`` (``[release] default_branch``) wins over what the run's event payload
    or ``origin/HEAD`` say."""
    git = _Git(root)
    ref = env.get("GITHUB_REF", "")
    sha = env.get("GITHUB_SHA", "").lower() or git.line("rev-parse", "-q", "--verify", "HEAD")
    if sha is not None and not _SHA_RE.fullmatch(sha):
        raise BtError(f"GITHUB_SHA {sha!r} is not a commit sha")
    branch: str | None = None
    pr: str | None = None
    tags: list[str] = []
    if ref or env.get("GITHUB_SHA"):
        pr_match = _PR_REF_RE.fullmatch(ref)
        if pr_match:
            pr = pr_match.group(1)
            branch = env.get("GITHUB_HEAD_REF") or None
        elif ref.startswith("refs/heads/"):
            branch = ref.removeprefix("refs/heads/")
        elif ref.startswith("refs/tags/"):
            tags = [ref.removeprefix("refs/tags/")]
    elif sha is not None:
        branch = git.line("symbolic-ref", "-q", "--short", "HEAD")
    if sha is not None and not tags:
        tags = git.lines("tag", "--points-at", sha)
    versions = [v for v in map(Semver.parse, tags) if v is not None]
    every = [v for v in map(Semver.parse, git.lines("tag", "--list")) if v and not v.prerelease]
    committed = git.line("show", "-s", "--format=%ct", sha) if sha else None
    return GitContext(
        sha=sha,
        committed=int(committed) if committed and committed.isdigit() else None,
        branch=branch,
        pr=pr,
        semver=max(versions, key=Semver.precedence, default=None),
        highest=max([*every, *versions], key=Semver.precedence, default=None),
        default_branch=default_branch or _default_branch(git, env),
        source=_source(git, env),
    )


def _default_branch(git: _Git, env: Mapping[str, str]) -> str | None:
    """The repository's default branch: from the GitHub event payload, else ``origin/HEAD``."""
    event_path = env.get("GITHUB_EVENT_PATH")
    if event_path:
        try:
            event = json.loads(Path(event_path).read_text(encoding="utf-8"))
            name = event["repository"]["default_branch"]
            if isinstance(name, str) and name:
                return name
        except (OSError, ValueError, KeyError, TypeError):
            pass
    head = git.line("symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD")
    return head.removeprefix("origin/") if head else None


def _source(git: _Git, env: Mapping[str, str]) -> str | None:
    """The repository's web URL: origin's, else GitHub's for the run; never with credentials."""
    remote = git.line("remote", "get-url", "origin")
    if remote:
        url = web_url(remote)
        if url:
            return url
    server, repository = env.get("GITHUB_SERVER_URL"), env.get("GITHUB_REPOSITORY")
    if server and repository:
        return web_url(f"{server.rstrip('/')}/{repository}")
    return None


def web_url(remote: str) -> str | None:
    """``https://host/owner/repo`` for a git remote (https, ssh or scp-like ``git@host:o/r``);
    None for a local path. User names, tokens and ``.git`` are dropped."""
    scp = re.fullmatch(r"(?:[^@/\s]+@)?([A-Za-z0-9.-]+):(?!//)([^\s]+)", remote)
    if scp and "/" not in scp.group(1):
        host, path = scp.group(1), scp.group(2)
    else:
        parts = urlsplit(remote)
        if parts.scheme not in ("http", "https", "ssh", "git", "git+ssh") or not parts.hostname:
            return None
        host, path = parts.hostname, parts.path
        if parts.scheme in ("http", "https") and parts.port:
            host = f"{host}:{parts.port}"
    path = path.strip("/").removesuffix(".git")
    if not re.fullmatch(r"[A-Za-z0-9.-]+(?::\d+)?", host):
        return None
    if not path or not re.fullmatch(r"[A-Za-z0-9._~/-]+", path) or ".." in path.split("/"):
        return None
    return f"https://{host}/{path}"


class _Git:
    """``git -C root``: a missing git, or a directory that is no checkout, answers nothing."""

    def __init__(self, root: Path):
        self.root = root

    def lines(self, *args: str) -> list[str]:
        try:
            done = subprocess.run(
                ["git", "-C", str(self.root), *args],
                capture_output=True,
                text=True,
                timeout=_GIT_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired):
            return []
        if done.returncode != 0:
            return []
        return [line.strip() for line in done.stdout.splitlines() if line.strip()]

    def line(self, *args: str) -> str | None:
        found = self.lines(*args)
        return found[0] if found else None
