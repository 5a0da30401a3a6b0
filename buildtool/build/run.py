"""Turning a plan into images: one scheduler job per stale platform build, each run on the
builder of its platform, tested, pushed by digest when asked, and recorded as it finishes; after
a complete push, the multi-platform merge. `bt test` reruns the same image tests."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from buildtool.build.durations import load_build_times, record_build_times
from buildtool.build.events import (
    ImageTestsFailed,
    ImageTestsFinished,
    ImageTestsPassed,
    ImageTestsSkipped,
    Merged,
    Pinned,
    ReportEvent,
    UpToDate,
)
from buildtool.build.record import Claims, record_builds
from buildtool.errors import (
    BtError,
    BuildFailed,
    JobFailed,
    RegistryUnavailable,
    StateWriteError,
    TransientError,
)
from buildtool.plan.pins import ExternalImage, Pins
from buildtool.plan.session import Workbench
from buildtool.plan.stale import PlannedBuild, needs_run
from buildtool.plan.stamp import KEY_LABEL, stamp, stamped_key
from buildtool.platforms import same_machine
from buildtool.state.cachedir import CacheDir
from buildtool.state.lockfile import Lockfile, PinRecord, update_lockfile
from buildtool.workspace.config import BuilderSpec, Config
from buildtool.workspace.labels import Label
from buildtool.workspace.target import ImageTarget, SecretSource

if TYPE_CHECKING:
    from buildtool.build.builders import Builder, MissingInput
    from buildtool.build.remote_cache import RemoteLookup
    from buildtool.build.scheduler import Job, Outcome, Summary
    from buildtool.dockerfile.rewrite import ImageSite
    from buildtool.plan.keys import KeyComputer
    from buildtool.registry import RegistryClient

_TAG_UNSAFE = re.compile(r"[^a-z0-9_.\-]")
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # no build can write its state


@dataclass(frozen=True)
class BuildOptions:
    push: bool = False
    jobs: int = 4
    keep_going: bool = True
    retries: int = 2
    run_tests: bool = True
    lock_out: Path | None = None


HITS_RECORDED_EVERY = 0.25  # seconds: how long a remote cache hit may wait to be recorded


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
    from buildtool.errors import JobFailed

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
    on_event: Callable[[ReportEvent], None]
    builders: dict[str, Builder] = field(default_factory=dict)
    references: dict[tuple[Label, str], str] = field(default_factory=dict)
    # platform -> why its engine cannot be reached: its builds fail, the others go on
    unreachable: dict[str, str] = field(default_factory=dict)
    # Why the registry, asked as a cache by a run that does not push, did not answer: the
    # run's other builds do not ask again.
    registry_down: str | None = None
    # The graph and file sets the plan was made from: which images each build names, where.
    computer: KeyComputer | None = None
    pins: Pins = field(default_factory=dict)  # images.lock's, which the plan's keys hold
    # (normalised reference, platform) -> why it could not be pinned
    pin_failures: dict[tuple[str, str], str] = field(default_factory=dict)
    # build -> what the remote action cache lookup warned of, shown with the build's result
    lookup_warnings: dict[tuple[Label, str], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _client: RegistryClient | None = None
    _claims: Claims | None = None
    # Hits of the remote action cache asked for every stale build at once (``prefetch_hits``)
    # (by build: the key asked for, and the hit), or the thread asking, while it runs
    _prefetched: dict[tuple[Label, str], tuple[str, RemoteLookup]] = field(default_factory=dict)
    _prefetching: threading.Thread | None = None
    _prefetch_asked: bool = False
    _prefetch_stop: threading.Event = field(default_factory=threading.Event)
    # Finished builds not yet in images.lock (``record``), and since when the first waits.
    _unrecorded: list[tuple[PlannedBuild, Outcome]] = field(default_factory=list)
    _unrecorded_since: float = 0.0

    @property
    def claims(self) -> Claims:
        with self._lock:
            if self._claims is None:
                from buildtool.state.cachedir import hold_in_use

                with contextlib.suppress(OSError):  # the build lock reports it, at the file
                    self.config.cache_dir.mkdir(parents=True, exist_ok=True)
                hold_in_use(self.config.cache_dir)  # before the first build lock is made
                self._claims = Claims(self.config, self.options.push)
            return self._claims

    def builder(self, platform: str) -> Builder:
        with self._lock:
            found = self.builders.get(platform)
            if found is None:
                from buildtool.build.builders import open_builder

                spec = self.config.builder_for(platform)
                found = open_builder(spec.host, spec.backend, spec.network)
                self.builders[platform] = found
            return found

    def pin(
        self, images: Sequence[tuple[ExternalImage, str]]
    ) -> list[tuple[ExternalImage, str, PinRecord, PinRecord | None]]:
        """Resolve each (image, platform) now (``pins.resolve_pin``) and record the pins in
        images.lock (and the fragment, if any); return (image, platform, pin, previous pin).
        An image that cannot be resolved is left out and kept in ``pin_failures``: the builds
        using it fail with that message, the others go on."""
        from buildtool.plan.pins import resolve_pin
        from buildtool.registry import RegistryClient

        client = RegistryClient(self.config.insecure_registries, retry=self.config.retry)
        resolved = []
        for image, platform in images:
            try:
                pin = resolve_pin(image, platform, client, self.builder(platform))
            except (BtError, TransientError) as err:
                self.pin_failures[(image.name, platform)] = str(err)
                continue
            resolved.append((image, platform, pin))
        previous: dict[tuple[str, str], PinRecord | None] = {}

        def change(lock: Lockfile) -> None:
            for image, platform, pin in resolved:
                previous.setdefault((image.name, platform), lock.pin(image.name, platform))
                lock.put_pin(image.name, platform, pin)

        if self.options.lock_out is not None:
            update_lockfile(self.options.lock_out, self.lock_path, change)
        previous.clear()
        self.pins = update_lockfile(self.config.lockfile, self.lock_path, change).pins
        return [(i, p, pin, previous[(i.name, p)]) for i, p, pin in resolved]

    def external_reference(self, ref: str, platform: str) -> str | None:
        """The reference a build of ``platform`` hands the engine for the external image
        ``ref`` (as the Dockerfile names it): pinned to the digest images.lock records, or None
        when nothing is to be rewritten (a reference with its own digest, or no pin)."""
        from buildtool.plan.pins import engine_reference

        image = ExternalImage.of(ref)
        pin = self.pins.get(image.name, {}).get(platform)
        if not image.pinnable or pin is None:
            return None
        return engine_reference(image, pin, self.builder(platform))

    def fail_unpinned(self, planned: PlannedBuild) -> None:
        """Invariant 9: never build (and record) a key that holds an unpinned image. The build
        fails, with why the pin could not be made in its log; its dependents are skipped."""
        from buildtool.errors import JobFailed
        from buildtool.plan.pins import UNPINNED

        unpinned = [(n, w) for n, value, w in planned.manifest.pins if value.startswith(UNPINNED)]
        if not unpinned:
            return
        name, written = unpinned[0]
        message = self.pin_failures.get(
            (name, planned.platform), f"{written} is not pinned in images.lock yet"
        )
        log_path = self.log_path(planned)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(message + "\n", encoding="utf-8")
        raise JobFailed(message, log_tail=message, log_path=str(log_path))

    def close(self) -> None:
        self.claims.release_all()
        for builder in self.builders.values():
            builder.close()
        self.builders.clear()

    def check_routing(self, stale: Sequence[PlannedBuild]) -> None:
        """Refuse, before anything starts, a build that would need emulation, or whose
        secrets are missing or cannot be passed by its backend (``secrets.check_secrets``)."""
        from buildtool.secrets import check_secrets

        builds = [(self.targets[p.label], p.platform, p.fileset.reads.secrets) for p in stale]
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

    def run(self, planned: Sequence[PlannedBuild]) -> Summary:
        from buildtool.build.scheduler import Finished, Job, RunStarted, run_jobs

        for p in planned:
            if not p.stale and p.record is not None:
                self.references[p.id] = p.record.image
        stale = [p for p in planned if needs_run(p, self.options.push, self.config.registry)]
        self.check_routing(stale)
        by_id = {p.id: p for p in stale}
        times = load_build_times(self.config.cache_dir)
        jobs = [
            Job(
                id=(str(p.label), p.platform),
                deps=tuple(
                    (str(parent), p.platform)
                    for parent in p.parents
                    if (parent, p.platform) in by_id
                ),
                pool=p.platform,
                cost=times.get((str(p.label), p.platform), 1.0),
            )
            for p in stale
        ]
        estimates = tuple((job.id, times[job.id]) for job in jobs if job.id in times)
        took: dict[tuple[str, str], float] = {}

        def on_event(event: ReportEvent) -> None:
            if isinstance(event, RunStarted):
                event = dataclasses.replace(event, estimates=estimates)
            elif isinstance(event, Finished):
                took[event.id] = event.seconds
            self.on_event(event)

        lookup = {(str(p.label), p.platform): p for p in stale}

        def runner(job: Job, cancel: threading.Event) -> Outcome:
            return self.claim_and_build(lookup[job.id], cancel)

        def remote(job: Job, cancel: threading.Event) -> Outcome | None:
            return self.remote_hit(lookup[job.id])

        def on_success(job: Job, outcome: Outcome) -> None:
            self.record(lookup[job.id], outcome)

        limits = {
            p: self.config.builder_for(p).jobs for p in {planned.platform for planned in stale}
        }
        self.end_prefetch()
        if not self._prefetch_asked:
            self.prefetch_hits(stale)
        try:
            return run_jobs(
                jobs,
                runner,
                max_parallel=self.options.jobs,
                pool_limits=limits,
                keep_going=self.options.keep_going,
                retries=self.options.retries,
                retry=self.config.retry,
                on_event=on_event,
                on_success=on_success,
                lookup=remote if self.config.registry else None,
            )
        finally:
            try:
                self.record_unrecorded()
            finally:
                self.close()
                record_build_times(self.config.cache_dir, took)

    def _build_args(self, planned: PlannedBuild) -> tuple[tuple[str, str], ...]:
        target = self.targets[planned.label]
        args = dict(target.args)
        for arg, parent in target.parents:
            ref = self.references.get((parent, planned.platform))
            if ref is None:
                raise BtError(f"parent {parent} of {planned.label} has no recorded image")
            args[arg] = ref
        return tuple(sorted(args.items()))

    def dockerfile_text(self, planned: PlannedBuild) -> str | None:
        """The Dockerfile to send when the build names images bt hands over exactly, else None.

        A child must build on the very image recorded for its parent's key, never on what the
        floating tag it names points at (an older image in the registry, or nothing yet). The
        references are rewritten in a copy of the Dockerfile (dockerfile/rewrite.py): Docker
        20.10's CLI has no named contexts, which buildx would offer instead
        (``--build-context <name>=docker-image://<exact>``)."""
        if self.computer is None:
            return None
        target = self.targets[planned.label]
        replacements: dict[ImageSite, str] = {}
        for parent in self.computer.graph.parents_of(planned.label, planned.platform):
            if parent.declared:
                continue  # handed over in its build arg
            exact = self.references.get((parent.label, planned.platform))
            if exact is None:
                raise BtError(f"parent {parent.label} of {planned.label} has no recorded image")
            replacements.update(dict.fromkeys(parent.sites, exact))
        fileset = self.computer.filesets.of(target, planned.platform)
        declared = {arg for arg, _ in target.parents}
        for reference, line, kind, arg, unresolved in fileset.reads.images:
            site = (line, kind, reference)
            if site in replacements or unresolved or arg in declared:
                continue
            exact = self.external_reference(reference, planned.platform)
            if exact is not None:
                replacements[site] = exact
        if not replacements:
            return None
        from buildtool.dockerfile.rewrite import rewrite_images

        return rewrite_images(fileset.dockerfile_text, replacements, target.dockerfile)

    def registry_client(self) -> RegistryClient:
        """One client for the run's registry calls; one try each, the scheduler retries."""
        from buildtool.registry import RegistryClient

        with self._lock:
            if self._client is None:
                self._client = RegistryClient(
                    self.config.insecure_registries, attempts=1, retry=self.config.retry
                )
            return self._client

    def remote_hit(self, planned: PlannedBuild) -> Outcome | None:
        """The remote action cache (``remote_cache``): the image some machine pushed for this
        key, recorded by digest as a push would be; None when the build must run. Asked before
        the build starts, whether or not this run pushes."""
        from buildtool.build.remote_cache import lookup
        from buildtool.build.scheduler import Outcome

        if not self.config.registry or planned.manifest.unpinned:
            return None
        if self.registry_down is not None:
            self.lookup_warnings[planned.id] = self.registry_down
            return None
        ref = remote_ref(self.config, self.targets[planned.label], planned.key)
        prefetched = self._prefetched.pop(planned.id, None)
        try:
            if prefetched is not None and prefetched[0] == planned.key:
                found = prefetched[1]
            else:
                found = lookup(self.registry_client(), ref, planned.key)
        except RegistryUnavailable as err:
            if self.options.push:
                raise  # the push would fail the same way: a failed build
            # Not pushing: the registry is only a cache here, and a cache that cannot be
            # reached is a miss (said once per build), not a reason to fail an offline build.
            self.registry_down = f"remote action cache not asked: {err}"
            self.lookup_warnings[planned.id] = self.registry_down
            return None
        if found.warning:
            self.lookup_warnings[planned.id] = found.warning
        if not found.hit:
            return None
        return Outcome(digest=found.digest, cached=True, source="registry", detail=found.image)

    def prefetch_hits(self, stale: Sequence[PlannedBuild]) -> None:
        """Ask the remote action cache for every stale build at once, ``connections.SIZE`` at a
        time (the scheduler asks one build at a time per job slot, each waiting for its parents).
        Only hits are kept for the scheduler: a miss is asked again when its build is due (a
        parent's image may be pushed by another runner meanwhile), a fault too (under the
        retry policy), and after a fault nothing more is prefetched."""
        from concurrent.futures import ThreadPoolExecutor

        from buildtool.build.remote_cache import lookup
        from buildtool.registry.connections import SIZE

        self._prefetch_asked = True
        asked = [p for p in stale if self.config.registry and not p.manifest.unpinned]
        if len(asked) < 2:
            return
        client = self.registry_client()
        # One fault ends the prefetch (no timeout waited 390 times), as does a refused run.
        faulted = self._prefetch_stop

        def ask(planned: PlannedBuild) -> None:
            if faulted.is_set():
                return
            ref = remote_ref(self.config, self.targets[planned.label], planned.key)
            try:
                found = lookup(client, ref, planned.key)
            except (BtError, TransientError):
                faulted.set()
                return
            if found.hit:
                self._prefetched[planned.id] = (planned.key, found)

        with ThreadPoolExecutor(max_workers=min(SIZE, len(asked))) as pool:
            list(pool.map(ask, asked))

    def start_prefetch(self, stale: Sequence[PlannedBuild]) -> None:
        """``prefetch_hits`` in a thread, while the run checks its engines."""
        self._prefetching = threading.Thread(
            target=self.prefetch_hits, args=(list(stale),), name="bt prefetch", daemon=True
        )
        self._prefetching.start()

    def end_prefetch(self, *, stop: bool = False) -> None:
        """Wait for ``start_prefetch``'s thread; with ``stop``, after telling it to stop."""
        if stop:
            self._prefetch_stop.set()
        if self._prefetching is not None:
            self._prefetching.join()
            self._prefetching = None

    def claim_and_build(self, planned: PlannedBuild, cancel: threading.Event) -> Outcome:
        """Build under the build's cross-process lock (``record.Claims``), which ``record``
        releases once the build is recorded; or use what another bt process recorded."""
        from buildtool.build.scheduler import Outcome

        label, platform = str(planned.label), planned.platform
        found = self.claims.claim(label, platform, planned.key, cancel, rejected=planned.record)
        if found is not None:
            return Outcome(digest=found.digest, cached=True, source="lockfile", detail=found.image)
        try:
            return self.build_one(planned, cancel)
        except BaseException:
            self.claims.release(label, platform)
            raise

    def build_one(self, planned: PlannedBuild, cancel: threading.Event) -> Outcome:
        try:
            return self._build_one(planned, cancel)
        except TransientError as err:
            if err.source is None:  # the engine's: the registry client names itself
                err.source = f"engine {self.config.builder_for(planned.platform).host}"
            raise
        except OSError as err:
            if err.errno not in _NO_ROOM:
                raise
            # The build log (cache directory) cannot be written: the whole run stops cleanly,
            # leaving no empty log behind.
            log = self.log_path(planned)
            with contextlib.suppress(OSError):
                if log.stat().st_size == 0:
                    log.unlink()
            raise StateWriteError(f"cannot write: {err.strerror}", err.filename or log) from None

    def _build_one(self, planned: PlannedBuild, cancel: threading.Event) -> Outcome:
        from buildtool.build.builders import BuildRequest, MissingInput
        from buildtool.build.scheduler import Outcome
        from buildtool.secrets import resolved, secret_arg_warning, secret_warnings

        if planned.platform in self.unreachable:
            raise BtError(self.unreachable[planned.platform])
        self.fail_unpinned(planned)
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
        if planned.id in self.lookup_warnings:
            warnings += (self.lookup_warnings[planned.id],)
        secret_args = secret_arg_warning(name for name, _ in target.args)
        if secret_args is not None and not cached:
            warnings += (f"{secret_args} ({target.location})",)
        if not cached:
            mounts = planned.fileset.reads.secrets
            warnings += tuple(secret_warnings(target, mounts, self.config.secrets))
        if labels is not None and not cached:
            warnings += (
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
                dockerfile_text=self.dockerfile_text(planned),
                # Exactly the secrets the key holds (those the reached stages mount).
                secrets=tuple(
                    resolved(self.config.root, SecretSource(*s)) for s in planned.manifest.secrets
                ),
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
        # One try: a registry fault raises TransientError, which the scheduler retries.
        if self.registry_client().manifest_digest(image) is None:
            raise BtError(f"pushed {image}, but the registry does not serve it")

    def run_tests(
        self, builder: Builder, planned: PlannedBuild, target: ImageTarget, image: str
    ) -> bool:
        """Run the target's tests in containers of ``image``; False when ``builder`` cannot run
        the platform natively (tests run where it can). Raises JobFailed at the first failure."""
        import shlex

        if not target.tests or not same_machine(builder.architecture(), planned.platform):
            return False
        for test in target.tests:
            code, output = builder.run(image, shlex.split(test), timeout=300)
            if code != 0:
                tail = "\n".join(output.splitlines()[-25:])
                raise JobFailed(f"test {test!r} failed with exit code {code}", log_tail=tail)
        return True

    def log_path(self, planned: PlannedBuild) -> Path:
        name = f"{planned.label.package or '_'}/{planned.label.name}"
        platform = planned.platform.replace("/", "-")
        return CacheDir(self.config.cache_dir).build_log(name, platform, planned.key)

    def record(self, planned: PlannedBuild, outcome: Outcome) -> None:
        """Record a finished build in images.lock. A build is recorded at once; a hit of the
        remote action cache is one lookup to learn again, so hits are recorded together, one
        write of images.lock per ``HITS_RECORDED_EVERY`` and at the end of the run: recorded
        one by one, a fresh runner's 390 hits rewrote the lockfile 390 times (90% of its run)."""
        self.references[planned.id] = outcome.detail
        now = time.monotonic()
        if not self._unrecorded:
            self._unrecorded_since = now
        self._unrecorded.append((planned, outcome))
        if outcome.source == "registry" and now - self._unrecorded_since < HITS_RECORDED_EVERY:
            return
        self.record_unrecorded()

    def record_unrecorded(self) -> None:
        items, self._unrecorded = self._unrecorded, []
        if not items:
            return
        try:
            record_builds(
                self.config,
                self.lock_path,
                [
                    (planned.manifest, outcome.digest or "", outcome.detail)
                    for planned, outcome in items
                ],
                fragment=self.options.lock_out,
            )
        finally:
            for planned, _ in items:
                self.claims.release(str(planned.label), planned.platform)


def plan_pinned(
    bench: Workbench,
    run: BuildRun,
    patterns: Iterable[str],
    platforms: Iterable[str],
    report: Callable[[ReportEvent], None],
) -> list[PlannedBuild]:
    """The plan `bt build` runs: builds refused by their routing are refused before anything is
    written; then the external images images.lock does not pin yet are pinned (each reported
    with where from), and the builds are planned against the pins. The builds using an image
    that could not be pinned fail when they run (``BuildRun.fail_unpinned``)."""
    config = bench.config
    push = run.options.push
    planned = bench.plan(patterns, platforms)
    needing = [p for p in planned if needs_run(p, push, config.registry)]
    lock = bench.lockfile()
    missing = [
        (image, platform)
        for image, platform in bench.external_images(patterns, platforms)
        if lock.pin(image.name, platform) is None
    ]
    if not missing:
        # The keys are final: the remote action cache is asked while the engines are checked.
        run.start_prefetch(needing)
    try:
        run.check_routing(needing)
    except BaseException:
        run.end_prefetch(stop=True)
        raise
    run.end_prefetch()
    if missing:
        for image, platform, pin, _ in run.pin(missing):
            report(Pinned(image.written, platform, pin.digest, pin.source))
        for (name, platform), problem in sorted(run.pin_failures.items()):
            report(Pinned(name, platform, "", "", problem))
        lock = bench.lockfile()
        planned = bench.plan(patterns, platforms, lock)
    run.pins = lock.pins
    return planned


def build_planned(
    bench: Workbench,
    planned: Sequence[PlannedBuild],
    options: BuildOptions,
    report: Callable[[ReportEvent], None],
    merge: bool = False,
    run: BuildRun | None = None,
) -> Summary | None:
    """Run what ``planned`` needs (None when nothing needed a run) and, with ``merge`` and a
    complete run, put the multi-platform index of every planned image."""
    config = bench.config
    summary = None
    if any(needs_run(p, options.push, config.registry) for p in planned):
        run = run or bench_run(bench, options, report)
        summary = run.run(planned)
    else:
        report(UpToDate(len(planned)))
    if merge and (summary is None or summary.ok):
        merge_built(bench, {p.label for p in planned}, report)
    elif merge and summary is not None and summary.interrupted:
        # The indexes that follow from what finished: images none of whose builds still needs a
        # run, as images.lock records them now (an interrupt may land after a build's record
        # was written and before the run counted the build as done).
        lock = bench.lockfile()
        unfinished = {
            p.label
            for p in planned
            if needs_run(_as_recorded(p, lock), options.push, config.registry)
        }
        complete = {p.label for p in planned} - unfinished
        if complete:
            with contextlib.suppress(BtError):  # the interrupt is what the user hears of
                merge_built(bench, complete, report)
    return summary


def _as_recorded(planned: PlannedBuild, lock: Lockfile) -> PlannedBuild:
    """``planned`` against the record ``lock`` holds for it."""
    record = lock.get(str(planned.label), planned.platform)
    stale = record is None or record.key != planned.key
    return dataclasses.replace(planned, stale=stale, record=record)


def bench_run(
    bench: Workbench, options: BuildOptions, report: Callable[[ReportEvent], None]
) -> BuildRun:
    """A run over the workbench's graph and key computer."""
    targets = bench.session.graph.targets
    return BuildRun(
        bench.config, targets, bench.lock_path, options, report, computer=bench.computer
    )


def merge_built(
    bench: Workbench, labels: Iterable[Label], report: Callable[[ReportEvent], None]
) -> None:
    """After a complete push, every built image gets its multi-platform index. A registry that
    cannot be reached now fails the run as a push would have (exit 1), not as bad input."""
    from buildtool.release.merge import merge_images

    try:
        outcomes = merge_images(bench.config, bench.session.graph.targets, labels, bench.lock_path)
    except RegistryUnavailable as err:
        raise BuildFailed(f"built, but the multi-platform merge failed: {err}") from None
    for tag in outcomes.tags:
        report(Merged(str(tag.label), tag.tag, tag.status, tag.digest, str(tag)))


def run_image_tests(
    bench: Workbench, planned: Sequence[PlannedBuild], report: Callable[[ReportEvent], None]
) -> ImageTestsFinished:
    """Run again the image tests of built builds, each on its platform's builder when that
    builder runs the platform natively: the runner and the rule `bt build` uses."""
    targets = bench.session.graph.targets
    run = BuildRun(bench.config, targets, bench.lock_path, BuildOptions(), report)
    ran = failed = 0
    try:
        for p in planned:
            target = targets[p.label]
            if not target.tests or p.record is None:
                continue
            builder = run.builder(p.platform)
            build = (str(p.label), p.platform)
            try:
                tested = run.run_tests(builder, p, target, p.record.image)
            except JobFailed as err:
                ran, failed = ran + 1, failed + 1
                report(ImageTestsFailed(build, err.message, err.log_tail))
                continue
            if tested:
                ran += 1
                report(ImageTestsPassed(build, len(target.tests)))
            else:
                reason = f"{builder.name} runs {builder.architecture()}"
                report(ImageTestsSkipped(build, reason))
    finally:
        run.close()
    finished = ImageTestsFinished(ran, failed)
    report(finished)
    return finished
