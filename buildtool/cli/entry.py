"""The ``bt`` program's entry point: ``bt plan PATTERN...`` answered from the last such run's
kept answer when nothing it read changed (``plan.noop``), before click or the planner is
imported; everything else, and that command when the answer does not hold, in ``cli.main``."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing costs a kept answer a fifth
if TYPE_CHECKING:
    from typing import NoReturn


def run() -> NoReturn:
    argv = sys.argv[1:]
    if "_BT_COMPLETE" not in os.environ and not os.environ.get("BT_NO_KEPT_ANSWER"):
        from buildtool.plan import noop

        if noop.eligible(argv):
            if noop.answer(argv):
                _exit(0)
            noop.record(argv)
    from buildtool.cli.main import run as run_main

    run_main()


def _exit(status: int) -> NoReturn:
    """As ``cli.main.run`` ends: output flushed, exit handlers run, no teardown."""
    import atexit
    import contextlib

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    atexit._run_exitfuncs()
    os._exit(status)
