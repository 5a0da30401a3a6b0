"""The context bt sends an engine: exactly the files a build's key covers, as a tar bt writes.

Like Bazel's sandbox, a build sees only what its key covers (DESIGN invariant 8): the entries
of its ``FileSet`` (for a whole-context fallback, the whole ignore-filtered context) plus the
Dockerfile, and nothing else. Each file is hashed with blake3 while it is streamed and compared
with the digest its key was made from, so the bytes sent are the bytes hashed. Headers are
deterministic: mode from the executable bit (0755/0644, directories 0755), uid/gid 0, no user
or group names, a fixed mtime; two sends of one key are the same bytes.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import blake3

from buildtool.errors import JobFailed
from buildtool.inputs.filesets import DOCKERFILE_IN_TAR, NAMED_IN_TAR
from buildtool.state.hashing import LARGE_FILE, digest_bytes

if TYPE_CHECKING:
    from buildtool.inputs.filesets import FileEntry, FileSet

CHUNK = 1 << 20
FIXED_MTIME = 0  # as reproducible builds' SOURCE_DATE_EPOCH=0: a file's mtime is not in its key
# Where bt puts the Dockerfile when no entry already holds its bytes. The classic builder drops
# it (and the .dockerignore naming it) after reading; BuildKit reads a tar context unfiltered,
# so a source taking the whole context root sees this file too.
_BLOCK = tarfile.BLOCKSIZE


class ContextChanged(JobFailed):
    """A file differs from the content its key was computed from; the build must not finish.

    Failing, not re-planning: a new key mid-run would re-key every dependent whose parents may
    already be built or running, and a tree being edited may change again before the next
    check. The build fails unrecorded and untagged; the next `bt build` keys the new content."""

    def __init__(self, path: str):
        super().__init__(f"{path} changed since its key was computed; run bt build again")
        self.path = path


@dataclass(frozen=True)
class SentContext:
    """What one build's engine receives, before it is read from disk."""

    directory: Path  # the context directory the entries are relative to
    entries: tuple[FileEntry, ...]  # sorted by path
    dockerfile: str  # the Dockerfile's path inside the tar
    # Written at ``dockerfile`` (with a .dockerignore naming it, when ``hide_dockerfile``),
    # unless None: then an entry already holds these exact bytes at that path.
    dockerfile_bytes: bytes | None
    hide_dockerfile: bool = False
    # Directory contexts, sent below ``NAMED_IN_TAR/<name>/``: (name, directory, entries).
    named: tuple[tuple[str, Path, tuple[FileEntry, ...]], ...] = ()


def sent_context(
    fileset: FileSet,
    directory: Path,
    dockerfile: Path,
    dockerfile_text: str | None = None,
    *,
    hide_dockerfile: bool = False,
) -> SentContext:
    """The context for a build of ``fileset``: ``dockerfile_text`` replaces the Dockerfile bytes
    read at key time (a rewritten Dockerfile, e.g. with pinned references). ``hide_dockerfile``
    adds a .dockerignore naming bt's copy of the Dockerfile, which the classic builder honours
    by dropping both after reading (when the context has no .dockerignore of its own)."""
    data = (fileset.dockerfile_text if dockerfile_text is None else dockerfile_text).encode()
    entries = fileset.entries
    if fileset.named:  # sent with the rewritten Dockerfile that reads them (build/run.py)
        root = Path(directory, *[".."] * _depth(fileset.context))
        named = tuple(
            (n.name, Path(os.path.normpath(root / n.directory)), n.entries) for n in fileset.named
        )
        paths = {e[0] for e in entries}
        hide = hide_dockerfile and ".dockerignore" not in paths
        return SentContext(directory, entries, DOCKERFILE_IN_TAR, data, hide, named)
    inside = os.path.relpath(dockerfile, directory).replace(os.sep, "/")
    if not inside.startswith("../"):
        # The Dockerfile is in the context and its key covers it with these bytes: send it
        # once, where Docker would, so `COPY .` copies what `docker build` would copy.
        digest = digest_bytes(data)
        if any(e[0] == inside and e[1] == "file" and e[3] == digest for e in entries):
            return SentContext(directory, entries, inside, None)
    paths = {e[0] for e in entries}
    hide = hide_dockerfile and ".dockerignore" not in paths
    return SentContext(directory, entries, DOCKERFILE_IN_TAR, data, hide)


def _depth(context: str) -> int:
    """How many directories the workspace-relative ``context`` is below the root."""
    return 0 if not context else len(context.split("/"))


def tar_chunks(context: SentContext) -> Iterator[bytes]:
    """The context as a tar stream, in chunks of about ``CHUNK`` bytes. Raises
    ``ContextChanged`` mid-stream when a file's bytes differ from its key's: the consumer must
    then abort the upload, never end it (a tar cut at a member boundary reads as complete)."""
    pending: list[bytes] = []
    size = 0
    for piece in _tar_pieces(context):
        pending.append(piece)
        size += len(piece)
        if size >= CHUNK:
            yield b"".join(pending)
            pending, size = [], 0
    yield b"".join(pending)


def _tar_pieces(context: SentContext) -> Iterator[bytes]:
    dirs: set[str] = set()
    for path, kind, executable, value, directory, source in _with_dockerfile(context):
        for parent in _parents(path):
            if parent not in dirs:
                dirs.add(parent)
                yield _header(parent, tarfile.DIRTYPE, 0o755)
        if kind == "dockerfile":
            assert context.dockerfile_bytes is not None
            chunks = _member(path, context.dockerfile_bytes)
        elif kind == "ignore":
            chunks = _member(path, value.encode())
        elif kind == "file":
            chunks = _file(directory, source, executable, value, path)
        elif kind == "symlink":
            chunks = _symlink(directory, source, value, path)
        elif path in dirs:
            continue
        else:
            dirs.add(path)
            chunks = iter([_header(path, tarfile.DIRTYPE, 0o755)])
        yield from chunks
    yield bytes(2 * _BLOCK)  # the end of the archive; no record padding: readers need none


# (path in the tar, kind, executable, digest or link or text, directory read, path there)
_Member = tuple[str, str, bool, str, Path, str]


def _with_dockerfile(context: SentContext) -> list[_Member]:
    base = context.directory
    entries: list[_Member] = [(*e, base, e[0]) for e in context.entries]
    if context.dockerfile_bytes is not None:
        entries.append((context.dockerfile, "dockerfile", False, "", base, ""))
        if context.hide_dockerfile:
            ignore = f".dockerignore\n{context.dockerfile}\n"
            entries.append((".dockerignore", "ignore", False, ignore, base, ""))
    for name, directory, named in context.named:
        prefix = f"{NAMED_IN_TAR}/{name}"
        for path, kind, executable, value in named:
            inside = prefix if path == "." else f"{prefix}/{path}"
            entries.append((inside, kind, executable, value, directory, path))
    return sorted(entries, key=lambda member: member[0])


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _header(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = link
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return bytes(-size % _BLOCK)


def _member(name: str, data: bytes) -> Iterator[bytes]:
    yield _header(name, tarfile.REGTYPE, 0o644, len(data))
    yield data
    yield _padding(len(data))


def _file(directory: Path, path: str, executable: bool, digest: str, name: str) -> Iterator[bytes]:
    """``path`` of ``directory``, sent as ``name``."""
    try:
        fd = os.open(os.path.join(directory, path), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        raise ContextChanged(path) from None  # gone, or replaced by a symlink
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ContextChanged(path)
        size = st.st_size
        yield _header(name, tarfile.REGTYPE, 0o755 if executable else 0o644, size)
        # The header promised ``size`` bytes: exactly those are hashed and sent.
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO if size >= LARGE_FILE else 1)
        left = size
        while left:
            data = os.read(fd, min(CHUNK, left))
            if not data:
                raise ContextChanged(path)  # it shrank while being sent
            hasher.update(data)
            left -= len(data)
            yield data
        if hasher.hexdigest() != digest:
            raise ContextChanged(path)
        yield _padding(size)
    finally:
        os.close(fd)


def _symlink(directory: Path, path: str, target: str, name: str) -> Iterator[bytes]:
    try:
        current = os.readlink(os.path.join(directory, path))
    except OSError:
        current = None
    if current != target:
        raise ContextChanged(path)
    yield _header(name, tarfile.SYMTYPE, 0o777, link=target)
