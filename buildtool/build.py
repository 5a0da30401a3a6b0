"""Turning a plan into images: one scheduler job per stale platform build, each run on the
builder of its platform, tested, pushed by digest when asked, and recorded as it finishes."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from buildtool.cachedir import CacheDir
from buildtool.errors import BtError
from buildtool.labels import Label
from buildtool.plan import PlannedBuild, needs_run
from buildtool.platforms import same_machine
from buildtool.record import record_builds
from buildtool.stamp import KEY_LABEL, stamp, stamped_key
from buildtool.target import ImageTarget
from buildtool.workspace import BuilderSpec, Config

if TYPE_CHECKING:
    from buildtool.builders import Builder, MissingInput
    from buildtool.scheduler import AnyEvent, Job, JobFailed, Outcome, Summary

_TAG_UNSAFE = re.compile(r"[^a-z0-9_.\-]")


@dataclass(frozen=True)
class BuildOptions:
    push: bool = False
    jobs: int = 4
    keep_going: bool = True
    retries: int = 2
    run_tests: bool = True
    lock_out: Path | None = None


def local_tag(target: ImageTarget, key: str) -> str:
    """A content-derived local tag: the same key always names the same image, so it is both
    the reference children build on and the local action cache (key -> image)."""
    name = _TAG_UNSAFE.sub("-", target.label.name.lower())[:60]
    return f"bt/{target.repository}:{name}-{key[:24]}"


def remote_ref(config: Config, target: ImageTarget, key: str) -> str:
    """Where a pushed build lives: a tag derived from the key, never a floating one."""
    if not config.registry:
        raise BtError("pushing needs [registry] url in .cache-spec", ".cache-spec")
    return f"{config.registry}/{target.repository}:bt-{key[:32]}"


def undeclared_read(config: Config, target: ImageTarget, missing: MissingInput) -> JobFailed:
    """The failure of a build that read a context path its key does not cover: bt sends only
    what the key covers, so the engine said "not found". Name the file and the fix."""
    from buildtool.scheduler import JobFailed

    path, label, where = missing.path, target.label, target.location
    context = config.root / target.context
    if not os.path.lexists(context / path):
        message = f"{label} reads {path}, which is not in its context {target.context or '.'!r}"
    elif target.inputs is not None:
        message = (
            f"{label} reads {path}, which its inputs do not cover, so bt did not send it: "
            f"add it to inputs of {label} ({where})"
        )
    else:
        message = (
            f"{label} reads {path}, which bt's input inference from {target.dockerfile} missed, "
            f"so bt did not send it: declare inputs = [...] for {label} ({where})"
        )
    return JobFailed(message, log_tail=missing.log_tail, log_path=missing.log_path)


@dataclass
class BuildRun:
    """One `bt build` run over a plan."""

    config: Config
    targets: dict[Label, ImageTarget]
    lock_path: Path
    options: BuildOptions
    on_event: Callable[[AnyEvent], None]
    builders: dict[str, Builder] = field(default_factory=dict)
    references: dict[tuple[Label, str], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def builder(self, platform: str) -> Builder:
        with self._lock:
            found = self.builders.get(platform)
            if found is None:
                from buildtool.builders import open_builder

                spec = self.config.builder_for(platform)
                found = open_builder(spec.host, spec.backend, spec.network)
                self.builders[platform] = found
            return found

    def check_routing(self, stale: Sequence[PlannedBuild]) -> None:
        """Refuse, before anything starts, a build that would need emulation."""
        for planned in stale:
            spec: BuilderSpec = self.config.builder_for(planned.platform)
            arch = self.builder(planned.platform).architecture()
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

    def run(self, planned: Sequence[PlannedBuild]) -> Summary:
        from buildtool.scheduler import Job, run_jobs

        for p in planned:
            if not p.stale and p.record is not None:
                self.references[p.id] = p.record.image
        stale = [p for p in planned if needs_run(p, self.options.push, self.config.registry)]
        self.check_routing(stale)
        by_id = {p.id: p for p in stale}
        jobs = [
            Job(
                id=(str(p.label), p.platform),
                deps=tuple(
                    (str(parent), p.platform)
                    for parent in p.parents
                    if (parent, p.platform) in by_id
                ),
                pool=p.platform,
            )
            for p in stale
        ]
        lookup = {(str(p.label), p.platform): p for p in stale}

        def runner(job: Job, cancel: threading.Event) -> Outcome:
            return self.build_one(lookup[job.id], cancel)

        def on_success(job: Job, outcome: Outcome) -> None:
            self.record(lookup[job.id], outcome)

        limits = {
            p: self.config.builder_for(p).jobs for p in {planned.platform for planned in stale}
        }
        try:
            return run_jobs(
                jobs,
                runner,
                max_parallel=self.options.jobs,
                pool_limits=limits,
                keep_going=self.options.keep_going,
                retries=self.options.retries,
                on_event=self.on_event,
                on_success=on_success,
            )
        finally:
            for builder in self.builders.values():
                builder.close()

    def _build_args(self, planned: PlannedBuild) -> tuple[tuple[str, str], ...]:
        target = self.targets[planned.label]
        args = dict(target.args)
        for arg, parent in target.parents:
            ref = self.references.get((parent, planned.platform))
            if ref is None:
                raise BtError(f"parent {parent} of {planned.label} has no recorded image")
            args[arg] = ref
        return tuple(sorted(args.items()))

    def build_one(self, planned: PlannedBuild, cancel: threading.Event) -> Outcome:
        from buildtool.builders import BuildRequest, MissingInput
        from buildtool.scheduler import Outcome

        target = self.targets[planned.label]
        builder = self.builder(planned.platform)
        tag = local_tag(target, planned.key)
        # The action cache cannot lie: a key-derived tag is attached only by `docker build -t`
        # of a context that is exactly that key's file set (the stream is hashed as it is sent
        # and aborted before its end when a byte differs, so no image is made), and that build
        # stamps the key label. Any other image under the tag (`docker tag` by hand, an older
        # bt) lacks the label or names another key: it is rebuilt, never recorded.
        labels = builder.image_labels(tag)
        cached = stamped_key(labels) == planned.key
        warnings: tuple[str, ...] = ()
        if labels is not None and not cached:
            warnings = (
                f"{tag} is not an image bt built from this key (its {KEY_LABEL} label is "
                f"{stamped_key(labels) or 'missing'}); rebuilt",
            )
        if not cached:
            request = BuildRequest(
                context=self.config.root / target.context,
                dockerfile=self.config.root / target.dockerfile,
                stage=target.stage,
                platform=planned.platform,
                build_args=self._build_args(planned),
                tag=tag,
                log_path=self.log_path(planned),
                labels=stamp(planned.key, str(planned.label)),
                fileset=planned.fileset,
            )
            try:
                builder.build(request, cancel)
            except MissingInput as missing:
                raise undeclared_read(self.config, target, missing) from None
            if self.options.run_tests:
                self.run_tests(builder, planned, target, tag)
        if self.options.push:
            ref = remote_ref(self.config, target, planned.key)
            builder.tag(tag, ref)
            digest = builder.push(ref)
            image = f"{ref.rsplit(':', 1)[0]}@{digest}"
            self.verify_pushed(image)
        else:
            image_id = builder.image_id(tag)
            if image_id is None:
                raise BtError(f"image {tag} vanished from {builder.name} right after its build")
            digest, image = image_id, tag
        return Outcome(digest=digest, cached=cached, detail=image, warnings=warnings)

    def verify_pushed(self, image: str) -> None:
        """Invariant 5: record a digest only once the registry serves it."""
        from buildtool.registry import RegistryClient

        # One try: a registry fault raises TransientError, which the scheduler retries.
        client = RegistryClient(self.config.insecure_registries, attempts=1)
        if client.manifest_digest(image) is None:
            raise BtError(f"pushed {image}, but the registry does not serve it")

    def run_tests(
        self, builder: Builder, planned: PlannedBuild, target: ImageTarget, image: str
    ) -> None:
        import shlex

        from buildtool.scheduler import JobFailed

        if not target.tests or not same_machine(builder.architecture(), planned.platform):
            return  # this engine cannot run the image natively; tests run where it can
        for test in target.tests:
            code, output = builder.run(image, shlex.split(test), timeout=300)
            if code != 0:
                tail = "\n".join(output.splitlines()[-25:])
                raise JobFailed(f"test {test!r} failed with exit code {code}", log_tail=tail)

    def log_path(self, planned: PlannedBuild) -> Path:
        name = f"{planned.label.package or '_'}/{planned.label.name}"
        platform = planned.platform.replace("/", "-")
        return CacheDir(self.config.cache_dir).build_log(name, platform, planned.key)

    def record(self, planned: PlannedBuild, outcome: Outcome) -> None:
        digest = outcome.digest or ""
        image = outcome.detail
        self.references[planned.id] = image
        record_builds(
            self.config,
            self.lock_path,
            [(planned.manifest, digest, image)],
            fragment=self.options.lock_out,
        )
