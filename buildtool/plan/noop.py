"""The answer of the last ``bt plan PATTERN...``, given again while nothing it read changed.

A warm no-op plan costs little beyond starting Python and importing bt, so the import is what is
left to save: ``bt plan`` with nothing but patterns is answered before click or the planner is
imported, from an answer the last such run kept (its output), vouched for by the stat of every
path that run read. While recording, every path the run opens, lists (``sys.addaudithook``'s
``open``, ``os.listdir``, ``os.scandir`` events) or stats (``os.stat``, ``os.lstat``) is noted;
the run's output is a function of those and of its command line, working directory and
environment, which key the answer (by digest: the environment may hold secrets).

Each path's signature is taken after the run: mode, size, mtime, ctime and inode (a listed
directory's entries each get one too, as their stats may have come from the listing). A path
whose mtime or ctime is later than the run's start less the racy window (git's rule, see
``hashing.py``) may have changed while it was read: then nothing is kept. Paths outside the
workspace that are directories reached only by stat (the ancestors a path resolves through) keep
only their type and inode: their listings were not read, and /tmp's mtime moves all day. The
cache directory is bt's own derived state, not an input: not a witness.
"""

from __future__ import annotations

import os
import sys

# Not typing's: a kept answer is given before typing, pathlib or msgpack would be imported (the
# answer file is marshal's: it is only ever in the user's own cache, never in a workspace).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from array import array
    from typing import Any

    from buildtool.workspace.config import Config

VERSION = 1
FILE = "plan-answers.marshal"  # CacheDir.plan_answers, named here to spare importing cachedir
KEPT = 8  # answers kept, by command line and environment
RACY_WINDOW_NS = 3_000_000_000  # hashing.RACY_WINDOW_NS, without importing hashing
SPEC_NAME = ".cache-spec"
_ABSENT = (0, 0, 0, 0, 0)
_FOLLOW, _NOFOLLOW, _TYPE_ONLY = 0, 1, 2


def eligible(argv: list[str]) -> bool:
    """``bt plan`` with patterns and no option: the command an answer can be kept for."""
    return len(argv) >= 2 and argv[0] == "plan" and not any(a.startswith("-") for a in argv[1:])


def answer(argv: list[str]) -> bool:
    """Print the kept answer of ``argv`` if every path it read is as it was; False (having
    printed nothing) otherwise."""
    try:
        kept = _kept_answer(argv)
    except (OSError, ValueError, TypeError, KeyError):
        return False
    if kept is None:
        return False
    stdout, stderr = kept
    try:
        sys.stdout.write(stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # piped into `head`: not an error of ours (as cli.main)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (what is left unflushed goes)
    sys.stderr.write(stderr)
    return True


def _kept_answer(argv: list[str]) -> tuple[str, str] | None:
    cwd = os.getcwd()
    root = _root(cwd)
    if root is None:
        return None
    answers = _read(os.path.join(default_cache_dir(root), FILE))
    kept = answers.get(answer_key(argv, cwd))
    if kept is None:
        return None
    stdout, stderr, paths, kinds, signatures = kept
    if not _unchanged(paths, kinds, signatures):
        return None
    return str(stdout), str(stderr)


def _read(path: str) -> dict[str, Any]:
    """The kept answers by key; none when the file is missing, of another version or not
    what ``keep`` writes."""
    import marshal

    try:
        with open(path, "rb") as f:
            top = marshal.loads(f.read())
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    if not isinstance(top, tuple) or len(top) != 2 or top[0] != VERSION:
        return {}
    answers = top[1]
    if not isinstance(answers, dict):
        return {}
    return {key: kept for key, kept in answers.items() if _well_formed(kept)}


def _well_formed(kept: Any) -> bool:
    types = (str, str, bytes, bytes, bytes)
    return (isinstance(kept, tuple) and len(kept) == len(types)
            and all(isinstance(x, t) for x, t in zip(kept, types, strict=True)))  # fmt: skip


def _unchanged(paths: bytes, kinds: bytes, signatures: bytes) -> bool:
    """Whether every path (``\0``-separated, stat as bytes: no string is made of each) has its
    signature."""
    if len(signatures) != 40 * len(kinds) or paths.count(b"\0") + 1 != len(kinds):
        return False
    expected = memoryview(signatures).cast("q")  # native int64s, as array("q") wrote them
    stat, lstat, find = os.stat, os.lstat, paths.find
    start = i = 0
    for kind in kinds:
        end = find(b"\0", start)
        path = paths[start:] if end < 0 else paths[start:end]
        start = end + 1
        try:
            st = lstat(path) if kind == _NOFOLLOW else stat(path)
        except (FileNotFoundError, NotADirectoryError):
            if expected[i] != 0:
                return False
        else:
            if kind == _TYPE_ONLY:
                if st.st_mode != expected[i] or st.st_ino != expected[i + 4]:
                    return False
            elif (st.st_mtime_ns != expected[i + 2] or st.st_ctime_ns != expected[i + 3]
                  or st.st_size != expected[i + 1] or st.st_ino != expected[i + 4]
                  or st.st_mode != expected[i]):  # fmt: skip
                return False
        i += 5
    return True


def _root(cwd: str) -> str | None:
    """``config.find_root``: the nearest directory from ``cwd`` up holding ``.cache-spec``."""
    directory = cwd
    while True:
        if os.path.isfile(os.path.join(directory, SPEC_NAME)):
            return directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def default_cache_dir(root: str) -> str:
    """The cache directory of a ``.cache-spec`` that names none (``Config._cache_dir``)."""
    import blake3

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = blake3.blake3(root.encode()).hexdigest()[:12]
    return os.path.join(base, "bt", f"{os.path.basename(root)}-{digest}")


def answer_key(argv: list[str], cwd: str) -> str:
    """What the answer is a function of besides the paths read: bt's code and interpreter,
    the command line, the working directory and the environment (a digest: it may hold
    secrets)."""
    import blake3

    from buildtool import __version__

    parts = [VERSION, __version__, sys.executable, cwd, *argv, "\0env"]
    parts += sorted(f"{k}={v}" for k, v in os.environ.items())
    text = "\0".join(map(str, parts))
    return blake3.blake3(text.encode("utf-8", "surrogateescape")).hexdigest()


class _Recorder:
    """The paths a run reads, how each was reached, and the clock before it began."""

    def __init__(self, argv: list[str]):
        import time

        self.argv = argv
        self.cwd = os.getcwd()
        # A file whose mtime or ctime is past this may have changed while it was read.
        self.limit = time.time_ns() - RACY_WINDOW_NS
        self.followed: set[Any] = set()
        self.not_followed: set[Any] = set()
        self.listed: set[Any] = set()
        self.on = True
        sys.addaudithook(self._event)
        self._stat, self._lstat = os.stat, os.lstat
        os.stat, os.lstat = self._stat_noted, self._lstat_noted

    def stop(self) -> None:
        self.on = False
        os.stat, os.lstat = self._stat, self._lstat

    def absolute(self, path: Any) -> str | None:
        """``path`` as noted (str, bytes, a path object), absolute; None for a descriptor."""
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return None  # a file descriptor: opened by a path noted already
        return os.path.join(self.cwd, path)

    # Paths are noted as given, made absolute when the answer is kept: the stat of every
    # input file passes here, so the noting is kept to a set insertion.

    def _event(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.on:
            return
        if event == "open":
            self.followed.add(args[0])
        elif event in ("os.listdir", "os.scandir"):
            self.listed.add(args[0] if args[0] is not None else ".")

    def _stat_noted(self, path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        st = self._stat(path, *args, **kwargs)
        if self.on and not self._racy(st):
            if kwargs.get("follow_symlinks", True):
                self.followed.add(path)
            else:
                self.not_followed.add(path)
        return st

    def _lstat_noted(self, path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        st = self._lstat(path, *args, **kwargs)
        if self.on and not self._racy(st):
            self.not_followed.add(path)
        return st

    def _racy(self, st: os.stat_result) -> bool:
        """A file changed within the racy window: no answer can be kept, so recording stops
        at once (after an edit, the plan that follows pays nothing for it). Directories are
        judged when the answer is kept: an ancestor's mtime (/tmp's) does not count."""
        if st.st_mode & 0o170000 == 0o040000:
            return False
        if st.st_mtime_ns < self.limit and st.st_ctime_ns < self.limit:
            return False
        self.stop()
        return True


_recorder: _Recorder | None = None


def record(argv: list[str]) -> None:
    """Note every path this run reads from now on, for ``keep`` (``argv`` is ``eligible``)."""
    global _recorder
    _recorder = _Recorder(argv)


def abandon() -> None:
    """Stop recording: this run evaluates the workspace afresh, reading far more than the
    no-op after it will; that run keeps the answer (for the one after it) instead."""
    if _recorder is not None:
        _recorder.stop()


def keep(config: Config, stdout: str, stderr: str) -> None:
    """Keep this run's output as the answer to its command line, if it was recorded, its
    configuration names the default cache directory (the one an answer is looked up in), and
    no path it read changed during the run."""
    recorder = _recorder
    if recorder is None or not recorder.on:
        return  # not recorded, or a file read was racy
    recorder.stop()
    cache_dir = str(config.cache_dir)
    if cache_dir != default_cache_dir(str(config.root)):
        return
    witnesses = _witnesses(recorder, str(config.root), cache_dir)
    if witnesses is None:
        return
    paths, kinds, signatures = witnesses
    kept = (stdout, stderr, "\0".join(paths).encode("utf-8", "surrogateescape"), bytes(kinds),
            signatures.tobytes())  # fmt: skip
    key = answer_key(recorder.argv, recorder.cwd)
    import marshal

    from buildtool.state.cachedir import CacheDir, update_file

    path = CacheDir(config.cache_dir).plan_answers

    def merge(current: bytes | None) -> bytes:
        answers = _read(str(path)) if current is not None else {}
        answers.pop(key, None)
        answers = dict(list(answers.items())[-(KEPT - 1) :])
        answers[key] = kept
        return marshal.dumps((VERSION, answers))

    update_file(path, merge, durable=False)


def _witnesses(
    recorder: _Recorder, root: str, cache_dir: str
) -> tuple[list[str], bytearray, array[int]] | None:
    """Every path read, how to stat it and its signature; None when one was racy."""
    limit = recorder.limit
    inside = root.rstrip(os.sep) + os.sep
    ours = cache_dir + os.sep
    absolute = recorder.absolute
    listed = {absolute(path) for path in recorder.listed} - {None}
    # A path both stat-ed and opened (or lstat-ed) is witnessed both ways: a symlink, and
    # what it points to. Paths are kept as reached, not normalised ("a/.." is not "." when a
    # is a symlink).
    # How each path was reached: followed (stat, open, a listing) and/or not (lstat, an entry
    # of a listed directory). Of a path that is no symlink, one lstat says all.
    wanted: dict[str, int] = {}
    for how, paths in ((_FOLLOW, listed), (_FOLLOW, map(absolute, recorder.followed)),
                       (_NOFOLLOW, map(absolute, recorder.not_followed))):  # fmt: skip
        for path in paths:
            if path is not None:
                wanted[path] = wanted.get(path, 0) | (1 << how)
    for path in listed:
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    wanted[entry.path] = wanted.get(entry.path, 0) | (1 << _NOFOLLOW)
        except OSError:
            pass
    from array import array

    found: list[str] = []
    kinds, signatures = bytearray(), array("q")
    for path, how in wanted.items():
        if path == cache_dir or path.startswith(ours):
            continue
        reached: list[tuple[int, os.stat_result | None]]
        try:
            lst = os.lstat(path)
            reached = [(_NOFOLLOW, lst)]
            if lst.st_mode & 0o170000 == 0o120000:  # a symlink: as it was reached
                reached = reached if how & (1 << _NOFOLLOW) else []
                if how & (1 << _FOLLOW):
                    reached.append((_FOLLOW, _stat_or_absent(path)))
        except (FileNotFoundError, NotADirectoryError):
            reached = [(_NOFOLLOW, None)]
        except OSError:
            return None
        for kind, st in reached:
            if st is None:
                found.append(path)
                kinds.append(kind)
                signatures.extend(_ABSENT)
                continue
            if (path + os.sep).startswith(inside) or path in listed or not _is_dir(st):
                if max(st.st_mtime_ns, st.st_ctime_ns) >= limit:
                    return None  # changed while (or just before) it was read
            else:
                kind = _TYPE_ONLY
            found.append(path)
            kinds.append(kind)
            signatures.extend((st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return found, kinds, signatures


def _stat_or_absent(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None  # a dangling symlink


def _is_dir(st: os.stat_result) -> bool:
    return st.st_mode & 0o170000 == 0o040000
