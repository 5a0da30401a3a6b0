"""Image tests: a target's ``tests`` run in containers of its image, on its platform's builder
when that builder runs the platform natively, after each build and again by `bt test`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from buildtool.workspace.target import ImageTarget

if TYPE_CHECKING:
    from buildtool.build.builders import Builder
    from buildtool.plan.session import Workbench
    from buildtool.plan.stale import PlannedBuild


def run_tests(builder: Builder, platform: str, target: ImageTarget, image: str) -> bool:
    """Run the target's tests in containers of ``image``; False when ``builder`` cannot run
    ``platform`` natively (tests run where it can). Raises JobFailed at the first failure."""
    import shlex

    if not target.tests or not same_machine(builder.architecture(), platform):
        return False
    for test in target.tests:
        code, output = builder.run(image, shlex.split(test), timeout=300)
        if code != 0:
            tail = "\n".join(output.splitlines()[-25:])
            raise JobFailed(f"test {test!r} failed with exit code {code}", log_tail=tail)
    return True


def run_image_tests(
    bench: Workbench, planned: Sequence[PlannedBuild], report: Callable[[ReportEvent], None]
) -> ImageTestsFinished:
    """Run again the image tests of built builds, each on its platform's builder when that
    builder runs the platform natively: the runner and the rule `bt build` uses."""
    targets = bench.session.graph.targets
    engines = Engines(bench.config)
    ran = failed = 0
    try:
        for p in planned:
            target = targets[p.label]
            if not target.tests or p.record is None:
                continue
            builder = engines.builder(p.platform)
            build = (str(p.label), p.platform)
            try:
                tested = run_tests(builder, p.platform, target, p.record.image)
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
        engines.close()
    finished = ImageTestsFinished(ran, failed)
    report(finished)
    return finished
