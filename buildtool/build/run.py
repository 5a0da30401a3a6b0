"""Turning a plan into images: one scheduler job per stale platform build, each run on the
builder of its platform (``routing``) from exact images (``pinning``), tested (``image_tests``),
pushed by digest when asked, and recorded as it finishes."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from buildtool.build.durations import load_build_times, record_build_times
from buildtool.build.events import (
    ReportEvent,
    UpToDate,
)
from buildtool.build.image_tests import run_tests
from buildtool.build.pinning import Pinning, build_contexts, exact_dockerfile
from buildtool.build.record import Claims, record_builds
from buildtool.build.routing import Engines
from buildtool.errors import (
    BtError,
    JobFailed,
    RegistryUnavailable,
    StateWriteError,
    TransientError,
)
from buildtool.plan.session import Workbench
from buildtool.plan.stale import PlannedBuild, needs_run
from buildtool.plan.stamp import KEY_LABEL, stamp, stamped_key
from buildtool.registry.reference import is_reference, shown
from buildtool.secrets import SecretSource
from buildtool.state.cachedir import CacheDir, claim
from buildtool.workspace.config import Config
from buildtool.workspace.labels import Label
from buildtool.workspace.target import ImageTarget

if TYPE_CHECKING:
    from buildtool.build.builders import MissingInput
    from buildtool.build.events import Summary
    from buildtool.build.remote_cache import RemoteLookup
    from buildtool.build.scheduler import Job, Outcome
    from buildtool.plan.keys import KeyComputer
    from buildtool.registry import RegistryClient

_TAG_UNSAFE = re.compile(r"[^a-z0-9_.\-]")
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # no build can write its state


HITS_RECORDED_EVERY = 0.25  # seconds: how long a remote cache hit may wait to be recorded


@dataclass(frozen=True)
class BuildOptions:
    push: bool = False
    jobs: int = 4
    keep_going: bool = True
    retries: int = 2
    run_tests: bool = True
    lock_out: Path | None = None
    # offer stale builds the last record's layers (``layer_cache``); `bt build --no-cache` off
    cache_layers: bool = True


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
        where = target.inputs_location or where
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
    references: dict[tuple[Label, str], str] = field(default_factory=dict)
    # Why the registry, asked as a cache by a run that does not push, did not answer: the
    # run's other builds do not ask again.
    registry_down: str | None = None
    # The graph and file sets the plan was made from: which images each build names, where.
    computer: KeyComputer | None = None
    # build -> what the remote action cache lookup warned of, shown with the build's result
    lookup_warnings: dict[tuple[Label, str], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # When the run began: probing the engines and pinning (``plan_pinned``) count in its time.
    started_at: float = field(default_factory=time.monotonic)
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
    engines: Engines = field(init=False)
    pinning: Pinning = field(init=False)

    def __post_init__(self) -> None:
        self.engines = Engines(self.config)
        self.pinning = Pinning(self.config, self.lock_path, self.engines, self.options.lock_out)

    @property
    def claims(self) -> Claims:
        with self._lock:
            if self._claims is None:
                from buildtool.state.cachedir import hold_in_use

                # before the first build lock is made
                hold_in_use(self.config.cache_dir, create=True)
                self._claims = Claims(self.config, self.options.push)
            return self._claims

    def close(self) -> None:
        self.claims.release_all()
        self.engines.close()

    def run(self, planned: Sequence[PlannedBuild]) -> Summary:
        from buildtool.build.events import Finished, RunStarted
        from buildtool.build.scheduler import Job, run_jobs

        for p in planned:
            if not p.stale and p.record is not None:
                self.references[p.id] = p.record.image
        stale = [p for p in planned if needs_run(p, self.options.push, self.config.registry)]
        self.engines.check(self.targets, stale)
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
                started_at=self.started_at,
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
            if not is_reference(ref):  # it goes on a command line: only a checked reference
                raise BtError(f"parent {parent} of {planned.label}: {shown(ref)} is no image")
            args[arg] = ref
        return tuple(sorted(args.items()))

    def dockerfile_text(self, planned: PlannedBuild) -> str | None:
        if self.computer is None:
            return None
        target = self.targets[planned.label]
        takes = self.engines.builder(planned.platform).named_contexts
        return exact_dockerfile(
            planned, target, self.computer, self.references, self.pinning, takes
        )

    def named_contexts(self, planned: PlannedBuild) -> tuple[tuple[str, str], ...]:
        """``--build-context`` values of the build's image contexts, for a builder that takes
        them (buildx); none for the others, which get them in the Dockerfile."""
        if self.computer is None or not self.engines.builder(planned.platform).named_contexts:
            return ()
        target = self.targets[planned.label]
        return build_contexts(planned, target, self.computer, self.references, self.pinning)

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
        from buildtool.build.secret_mounts import secret_warnings
        from buildtool.secrets import resolved, secret_arg_warning

        if planned.platform in self.engines.unreachable:
            raise BtError(self.engines.unreachable[planned.platform])
        self.pinning.fail_unpinned(planned, self.log_path(planned))
        target = self.targets[planned.label]
        builder = self.engines.builder(planned.platform)
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
            cache_from, warning = self.cache_source(planned)
            warnings += warning
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
                named_contexts=self.named_contexts(planned),
                # Exactly the secrets the key holds (those the reached stages mount).
                secrets=tuple(
                    resolved(self.config.root, SecretSource(*s)) for s in planned.manifest.secrets
                ),
                cache_from=cache_from,
            )
            try:
                builder.build(request, cancel)
            except MissingInput as missing:
                raise undeclared_read(self.config, target, missing) from None
        if self.options.run_tests:
            # A build from the engine's action cache is tested too when its tests (or their
            # text) have no recorded pass for this key.
            run_tests(builder, planned.platform, target, tag, planned.key, self.config.cache_dir)
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

    def cache_source(self, planned: PlannedBuild) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(cache sources, warnings) of a build about to run: its last pushed record while the
        registry still has it, else none and one warning saying why."""
        from buildtool.build.layer_cache import layer_source, missing_source

        source = layer_source(planned, self.config.cache_layers and self.options.cache_layers)
        if source is None:
            return (), ()
        missing = missing_source(self.registry_client(), source)
        return ((), (missing,)) if missing else ((source,), ())

    def verify_pushed(self, image: str) -> None:
        """Invariant 5: record a digest only once the registry serves it."""
        # One try: a registry fault raises TransientError, which the scheduler retries.
        if self.registry_client().manifest_digest(image) is None:
            raise BtError(f"pushed {image}, but the registry does not serve it")

    def log_path(self, planned: PlannedBuild) -> Path:
        name = f"{planned.label.package or '_'}/{planned.label.name}"
        platform = planned.platform.replace("/", "-")
        claim(self.config.cache_dir)  # made with bt's mark, if this run makes it
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


def build_planned(
    bench: Workbench,
    planned: Sequence[PlannedBuild],
    options: BuildOptions,
    report: Callable[[ReportEvent], None],
    run: BuildRun | None = None,
) -> Summary | None:
    """Run what ``planned`` needs; None when nothing needed a run."""
    if not any(needs_run(p, options.push, bench.config.registry) for p in planned):
        report(UpToDate(len(planned)))
        return None
    run = run or bench_run(bench, options, report)
    return run.run(planned)


def bench_run(
    bench: Workbench, options: BuildOptions, report: Callable[[ReportEvent], None]
) -> BuildRun:
    """A run over the workbench's graph and key computer."""
    targets = bench.session.graph.targets
    return BuildRun(
        bench.config, targets, bench.lock_path, options, report, computer=bench.computer
    )
