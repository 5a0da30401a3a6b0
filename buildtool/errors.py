"""Every exception type bt raises on purpose, and what each means for the user.

Deep code raises; only the CLI prints. Every user-facing error renders as one line,
``path:line: message`` when a location is known. The job exceptions (TransientError, JobFailed,
Cancelled) are how a runner tells the scheduler how one platform build ended; they never reach
the CLI.
"""

from __future__ import annotations

from pathlib import Path


class BtError(Exception):
    """An error the user can act on: bad input, bad configuration, a refused request.

    The CLI prints ``str(error)`` on one line and exits with ``exit_code``.
    """

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line

    def __str__(self) -> str:
        where = self.path or ""
        if where and self.line is not None:
            where = f"{where}:{self.line}"
        text = " ".join(self.message.split("\n"))
        return f"{where}: {text}" if where else text


class StarlarkError(BtError):
    """An error in a BUILD file, with its location."""


class BuildFailed(BtError):
    """One or more platform builds failed; the run itself was well-formed."""

    exit_code = 1


class Interrupted(BtError):
    """The user cancelled the run (Ctrl-C)."""

    exit_code = 130


class TransientError(Exception):
    """A fault worth retrying: engine connection reset, registry 5xx or timeout."""


class JobFailed(Exception):
    """A build that failed for real; carries the end of its log."""

    def __init__(self, message: str, log_tail: str = "", log_path: str | None = None):
        super().__init__(message)
        self.message = message
        self.log_tail = log_tail
        self.log_path = log_path


class Cancelled(Exception):
    """The runner stopped because its cancel event was set."""


class RegistryUnavailable(BtError, TransientError):
    """The registry could not be reached or kept failing: a user-facing error the scheduler
    may still retry. During a build it fails the build (exit 1), like any failed push."""


class ManifestNotFound(BtError):
    """The registry has no manifest behind the reference asked for."""
