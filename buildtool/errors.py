"""Every exception type bt raises on purpose, and what each means for the user.

Deep code raises; only the CLI prints. Every user-facing error renders as one line,
``path:line: message`` when a location is known. The job exceptions (TransientError, JobFailed,
Cancelled) are how a runner tells the scheduler how one platform build ended; they never reach
the CLI.
"""

from __future__ import annotations

import re
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


class OutputClosed(KeyboardInterrupt):
    """The reader of bt's output went away (``bt build --json | head -1``): the run stops as
    an interrupt does (running builds cancelled, finished ones recorded), and exits 141, the
    status of a process killed by SIGPIPE."""


class TransientError(Exception):
    """A fault worth retrying (``retry.py``): a connection refused or reset, a timeout, an
    engine lost mid-stream, a registry 5xx or 429. ``source`` names what failed (``registry
    HOST``, ``engine HOST``): retries of one source share one time bound. ``retry_after`` is
    the wait the server asked for, in seconds."""

    def __init__(
        self, message: str = "", *, source: str | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.source = source
        self.retry_after = retry_after


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

    exit_code = 1

    def __init__(
        self, message: str, *, source: str | None = None, retry_after: float | None = None
    ):
        BtError.__init__(self, message)
        self.source = source
        self.retry_after = retry_after


class StateWriteError(BtError):
    """bt could not write its own state (disk full, read-only, no permission): the old version
    of the file is intact and no temporary file is left."""


# Faults of an engine or registry worth another attempt, matched against the error message
# only: a RUN step's own output may say "connection refused" and still fail for good.
_TRANSIENT = (
    r"connection reset|connection refused|broken pipe|i/o timeout|TLS handshake timeout|"
    r"unexpected EOF|Cannot connect to the Docker daemon|error during connect|"
    r"received unexpected HTTP status: (5\d\d|429)|\b5\d\d (Internal Server Error|Bad Gateway|"
    r"Service Unavailable|Gateway Timeout)|\b429 Too Many Requests|toomanyrequests|"
    r"Client\.Timeout exceeded|request canceled|context deadline exceeded|"
    r"timed out|code = (Unavailable|DeadlineExceeded)|error reading from server|"
    r"transport is closing|"
    # The classic builder's cache lookup lists images, then reads each: an image deleted in
    # between (by anyone) fails the build with this, and the next attempt passes.
    r'unable to find image "sha256:'
)


def is_transient_message(message: str) -> bool:
    """Whether an engine's or registry's error message names a fault worth retrying."""
    return re.search(_TRANSIENT, message, re.IGNORECASE) is not None  # compiled on first use


class WrongPlatform(BtError):
    """An external image exists, but not for the platform a build needs: an error naming both,
    never a pin of the other platform's image."""


class ManifestNotFound(BtError):
    """The registry has no manifest behind the reference asked for."""
