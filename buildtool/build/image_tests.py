"""Image tests: a target's ``tests`` run in containers of its image, on its platform's builder
when that builder runs the platform natively, after each build and again by `bt test`."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from buildtool.build.events import (
    ImageTestsFailed,
    ImageTestsFinished,
    ImageTestsPassed,
    ImageTestsSkipped,
    ReportEvent,
)
from buildtool.build.routing import Engines
from buildtool.errors import JobFailed
from buildtool.platforms import same_machine
from buildtool.state.cachedir import CacheDir, update_file
from buildtool.workspace.target import ImageTarget

if TYPE_CHECKING:
    from buildtool.build.builders import Builder
    from buildtool.plan.session import Workbench
    from buildtool.plan.stale import PlannedBuild


# Dockerfile's default shell for RUN/CMD's shell form, which a string test runs through.
SHELL = "/bin/sh"
# Exit codes docker gives a container whose command it could not start (`docker run`'s 126
# and 127), with the engine's `exec: "/bin/sh": ...` when that command is the shell.
_NOT_STARTED = (126, 127)
_KEEP = 20_000  # recorded passes kept, newest last


def written_test(test: str | Sequence[str]) -> str:
    """A test as users wrote it: the string, or the exec-form list as JSON."""
    return test if isinstance(test, str) else json.dumps(list(test))


def result_key(key: str, platform: str, test: str | Sequence[str]) -> str:
    """What a recorded test result is keyed by: the build's key (the image), its platform, and
    the test's text and form, so an edited test runs again on an unchanged image."""
    form = "shell" if isinstance(test, str) else "exec"
    material = json.dumps([key, platform, form, written_test(test)]).encode()
    return hashlib.sha256(material).hexdigest()


def passed_tests(cache_dir: Path) -> set[str]:
    """The record keys (``result_key``) of the tests that passed."""
    try:
        raw = json.loads(CacheDir(cache_dir).tests_passed.read_bytes())
    except (OSError, ValueError):
        return set()
    return {k for k in raw if isinstance(k, str)} if isinstance(raw, list) else set()


def record_passed(cache_dir: Path, keys: Sequence[str]) -> None:
    """Add ``keys`` to the record of passed tests (the newest ``_KEEP``). A cache: losing it
    costs only test runs."""
    if not keys:
        return

    def change(current: bytes | None) -> bytes:
        try:
            old = json.loads(current or b"[]")
        except ValueError:  # torn by hand or by another version: start over
            old = []
        old = old if isinstance(old, list) else []
        kept = [k for k in old if isinstance(k, str) and k not in keys]
        return json.dumps([*kept, *keys][-_KEEP:]).encode()

    with contextlib.suppress(OSError):
        update_file(CacheDir(cache_dir).tests_passed, change, durable=False)


def due_tests(
    target: ImageTarget, platform: str, key: str, passed: set[str]
) -> tuple[str | tuple[str, ...], ...]:
    """The target's tests with no recorded pass for this build's key."""
    return tuple(t for t in target.tests if result_key(key, platform, t) not in passed)


def run_tests(
    builder: Builder,
    platform: str,
    target: ImageTarget,
    image: str,
    key: str,
    cache_dir: Path,
    only_due: bool = True,
) -> int | None:
    """Run the target's tests (``only_due``: those without a recorded pass for ``key``) in
    containers of ``image``; the number run, or None when ``builder`` cannot run ``platform``
    natively (tests run where it can). A string test runs through the image's shell, a list
    in exec form after the image's ENTRYPOINT, as Dockerfile's RUN/CMD forms do. Each pass is
    recorded; raises JobFailed at the first failure, with the exit code and the output's end."""
    if not target.tests:
        return 0
    tests = due_tests(target, platform, key, passed_tests(cache_dir)) if only_due else target.tests
    if not tests:
        return 0
    if not same_machine(builder.architecture(), platform):
        return None
    for test in tests:
        if isinstance(test, str):
            code, output = builder.run(image, ["-c", test], timeout=300, entrypoint=SHELL)
        else:
            code, output = builder.run(image, list(test), timeout=300)
        if code == 0:
            record_passed(cache_dir, [result_key(key, platform, test)])
            continue
        tail = "\n".join(output.splitlines()[-25:])
        shown = written_test(test)
        if isinstance(test, str) and code in _NOT_STARTED and f'"{SHELL}"' in output:
            raise JobFailed(
                f"test {shown!r} needs the image's shell {SHELL}, which could not be run "
                f"(exit code {code}); write it as a list to run it in exec form",
                log_tail=tail,
            )
        raise JobFailed(f"test {shown!r} failed with exit code {code}", log_tail=tail)
    return len(tests)


def run_image_tests(
    bench: Workbench,
    planned: Sequence[PlannedBuild],
    report: Callable[[ReportEvent], None],
    only_due: bool = False,
) -> ImageTestsFinished:
    """Run the image tests of recorded builds (``only_due``: those tests with no recorded pass
    for the build's key, as `bt build` does for builds it did not run; skips then go unsaid),
    each on its platform's builder when that builder runs the platform natively: the runner
    and the rule `bt build` uses."""
    targets = bench.session.graph.targets
    cache_dir = bench.config.cache_dir
    engines = Engines(bench.config)
    ran = failed = 0
    passed = passed_tests(cache_dir) if only_due else set()
    try:
        for p in planned:
            target = targets[p.label]
            if not target.tests or p.record is None:
                continue
            if only_due and not due_tests(target, p.platform, p.key, passed):
                continue
            builder = engines.builder(p.platform)
            build = (str(p.label), p.platform)
            try:
                count = run_tests(
                    builder, p.platform, target, p.record.image, p.key, cache_dir, only_due
                )
            except JobFailed as err:
                ran, failed = ran + 1, failed + 1
                report(ImageTestsFailed(build, err.message, err.log_tail))
                continue
            if count is not None:
                ran += 1
                report(ImageTestsPassed(build, count))
            elif not only_due:
                reason = f"{builder.name} runs {builder.architecture()}"
                report(ImageTestsSkipped(build, reason))
    finally:
        engines.close()
    finished = ImageTestsFinished(ran, failed)
    report(finished)
    return finished
