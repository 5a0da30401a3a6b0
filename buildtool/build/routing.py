"""Routing: the engine each platform builds on, opened on first use, and the checks made before
anything starts (no build under emulation unless allowed, secrets its backend can pass, engines
that are down fail only their own platform's builds)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from buildtool.errors import BtError, TransientError
from buildtool.platforms import same_machine
from buildtool.workspace.config import BuilderSpec, Config
from buildtool.workspace.labels import Label
from buildtool.workspace.target import ImageTarget

if TYPE_CHECKING:
    from buildtool.build.builders import Builder
    from buildtool.plan.stale import PlannedBuild


@dataclass
class Engines:
    """The builder of each platform (``[builders]`` of .cache-spec), shared by a run's threads."""

    config: Config
    builders: dict[str, Builder] = field(default_factory=dict)
    # platform -> why its engine cannot be reached: its builds fail, the others go on
    unreachable: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def builder(self, platform: str) -> Builder:
        with self._lock:
            found = self.builders.get(platform)
            if found is None:
                spec = self.config.builder_for(platform)
                found = open_builder(
                    spec.host, spec.backend, spec.network, self.config.retry_max_seconds
                )
                self.builders[platform] = found
            return found

    def check(self, targets: Mapping[Label, ImageTarget], stale: Sequence[PlannedBuild]) -> None:
        """Refuse, before anything starts, a build that would need emulation, or whose
        secrets are missing or cannot be passed by its backend (``secret_mounts.check_secrets``)."""
        from buildtool.build.secret_mounts import check_secrets

        builds = [(targets[p.label], p.platform, p.fileset.reads.secrets) for p in stale]
        check_secrets(self.config.root, builds, lambda p: self.config.builder_for(p).backend)
        for planned in stale:
            spec: BuilderSpec = self.config.builder_for(planned.platform)
            if planned.platform in self.unreachable:
                continue
            try:
                arch = self.builder(planned.platform).architecture()
            except (BtError, TransientError) as err:
                # Down engines fail fast, and only their platform's builds: one line naming both.
                engine = spec.host or "the default engine (DOCKER_HOST)"
                detail = str(err).removeprefix(f"cannot reach the Docker engine at {engine}: ")
                self.unreachable[planned.platform] = (
                    f"the {planned.platform} engine {engine} is down: {detail}"
                )
                continue
            if same_machine(arch, planned.platform):
                continue
            if planned.manifest.has_run and not spec.allow_emulation:
                raise BtError(
                    f"refusing to build {planned.label} for {planned.platform} on "
                    f"{self.builder(planned.platform).name} ({arch}): its Dockerfile has RUN "
                    f"instructions, which would run under emulation. Route {planned.platform} to "
                    f'a native builder ([builders."{planned.platform}"] host in .cache-spec) or '
                    "set allow_emulation = true there"
                )

    def close(self) -> None:
        for builder in self.builders.values():
            builder.close()
        self.builders.clear()


def open_builder(
    host: str | None, backend: str, network: str | None = None, answer_within: float | None = None
) -> Builder:
    """The builder for one engine: ``backend`` is "buildkit" (docker CLI) or "engine" (API).
    ``answer_within`` bounds each call that should answer promptly (``[retry] max_seconds``: an
    engine that accepts and never answers is down); builds themselves are not bounded."""
    if backend == "buildkit":
        from buildtool.build.builders.buildkit import BuildKitCliBuilder

        return BuildKitCliBuilder(host, network, answer_within=answer_within)
    if backend == "engine":
        from buildtool.build.builders.engine import EngineApiBuilder

        return EngineApiBuilder(host, network, answer_within=answer_within)
    raise BtError(f'unknown builder backend "{backend}" (known: buildkit, engine)')
