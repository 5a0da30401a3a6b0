"""The one error family bt shows its users.

Deep code raises; only the CLI prints. Every user-facing error renders as one line,
``path:line: message`` when a location is known.
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


class BuildFailed(BtError):
    """One or more platform builds failed; the run itself was well-formed."""

    exit_code = 1


class Interrupted(BtError):
    """The user cancelled the run (Ctrl-C)."""

    exit_code = 130
