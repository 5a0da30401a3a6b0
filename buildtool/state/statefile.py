"""The one way bt writes state to disk: under an exclusive lock, atomically.

Invariant 4 of the design: a crash at any instant leaves the old or the new version of a
file, and concurrent bt processes on one workspace serialize instead of interleaving.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from buildtool.errors import BtError, Cancelled, StateWriteError

# How often a waiter tries a lock another process holds: flock cannot be woken by an event, so
# waiting polls, which keeps the wait cancellable (Ctrl-C, SIGTERM) and the other jobs running.
_LOCK_POLL_SECONDS = 0.1
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT}


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the block."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        # A cache_dir bt may not write in (say /proc/1) is the user's to fix; anything else (a
        # directory where the lock file belongs) is unexpected, a bug reported as one.
        if err.errno not in _NOT_WRITABLE:
            raise
        raise BtError(f"cannot create a lock file: {err.strerror}", path) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ``temporary_name``'s names: ``.<file>.<pid>.<nonce>.tmp``.
TEMPORARY = re.compile(r"\..+\.[0-9]+\.[0-9a-f]+\.tmp")


def temporary_name(path: Path, pid: int, nonce: str) -> Path:
    """The temporary file ``write_atomic`` writes ``path`` through: it names its writer's pid."""
    return path.with_name(f".{path.name}.{pid}.{nonce}.tmp")


def sweep_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` that a killed writer left (a SIGKILL between
    "temporary written" and "renamed" leaves one); the ones removed.

    Only a temporary whose writer (the pid in its name) is no running process is removed: a
    live writer's is never touched, whatever lock it holds or does not. Callers that write
    under a lock sweep under it, so a temporary is gone by the time the next writer of its
    file is done. (One whose pid was reused meanwhile stays until the pid is free again.)"""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.([0-9]+)\.[0-9a-f]+\.tmp")
    prefix = f".{path.name}."
    removed = []
    try:
        entries = [e.name for e in os.scandir(path.parent) if e.name.startswith(prefix)]
    except OSError:
        return []
    for name in entries:
        found = pattern.fullmatch(name)
        if found is None or _running(int(found.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.parent / name)
            removed.append(path.parent / name)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, as another user's process
    return True


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: temp file in the same directory, fsync, rename.

    ``durable=False`` skips the fsyncs, for caches whose loss after a power cut costs only
    work: the rename alone still means a reader sees the old or the new file, never a torn one."""
    try:
        _write_atomic(path, data, durable)
    except OSError as err:
        # Disk full, read-only, no permission: the old file is intact, the temporary one gone.
        raise StateWriteError(f"cannot write: {err.strerror or err}", path) from None


def _write_atomic(path: Path, data: bytes, durable: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, os.getpid(), os.urandom(4).hex())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if not durable:
        return
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class HolderLock:
    """An exclusive cross-process lock on ``path`` that names its holder (the pid written in
    the file), taken without blocking other threads, and removed by the holder on release.

    It is an flock, so the kernel releases it when its holder dies, however it dies: a lock
    left by a killed process is simply taken. The file is unlinked while still held; a waiter
    that then gets the lock of the unlinked file notices (the path no longer names its inode)
    and tries again, so two processes never both believe they hold it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free now; False when another holder has it."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StateWriteError(f"cannot write: {err.strerror or err}", self.path) from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise StateWriteError(f"cannot write: {err.strerror or err}", self.path) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            if _names(self.path, fd):
                break
            os.close(fd)  # the holder we waited for removed this file: lock the new one
        with contextlib.suppress(OSError):  # the pid only names the holder to waiters
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    def acquire(self, cancel: threading.Event) -> None:
        """Wait for the lock; raises Cancelled once ``cancel`` is set."""
        while not self.try_acquire():
            if cancel.wait(_LOCK_POLL_SECONDS):
                raise Cancelled()

    def holder(self) -> int | None:
        """The pid of the process holding the lock, as it wrote it (None when unknown)."""
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(fd)  # closing the last descriptor drops the flock


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` is still the file open as ``fd``."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)
