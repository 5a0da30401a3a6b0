"""Described file sets of earlier runs, reused while nothing they were made from changed.

Resolving a build's sources lists directories, filters them and looks every file up in the stat
cache; a warm run would redo all of it to find nothing changed. Instead each described set is
kept with the stat of every directory whose listing it consulted and of every file it holds: it
holds while all of them are unchanged, which costs one stat per file (a directory's mtime moves
when an entry is added, removed or renamed in it; a file's stat when its content or mode does).
Stats that were racy when taken (git's rule, see ``hashing.py``) are never trusted: a set that
holds one is not kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from buildtool.state.cachedir import save_table
from buildtool.state.hashing import RACY_WINDOW_NS, digest_bytes
from buildtool.state.packing import pack, unpack

VERSION = 1

# (context path, kind, executable bit, content digest or symlink target)
Entry = tuple[str, str, bool, str]
Described = tuple[tuple[Entry, ...], str]  # entries and their digest


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class SetCache:
    """Described file sets by what they were resolved from (``set_key``), each with the stats
    that vouch for it. One file of msgpack, each set a blob decoded only when asked for."""

    def __init__(self, path: Path):
        self.path = path
        self.sets: dict[str, bytes] = self._decode(self._read())
        self.added: dict[str, bytes] = {}
        self.reused = 0  # sets answered from disk
        self._dirs: dict[str, tuple[int, int, int, int] | None] = {}

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    @staticmethod
    def _decode(data: bytes | None) -> dict[str, bytes]:
        if data is None:
            return {}
        try:
            top = unpack(data)
        except Exception:  # a cache never fails a build: truncated, garbage -> empty
            return {}
        if not isinstance(top, dict) or top.get("version") != VERSION:
            return {}
        sets = top.get("sets")
        return sets if isinstance(sets, dict) else {}

    def get(self, key: str) -> Described | None:
        """The set kept under ``key`` if every directory and file it was made from is
        unchanged; None otherwise."""
        blob = self.sets.get(key)
        if blob is None:
            return None
        try:
            base, dirs, files, entries, digest = unpack(blob, use_list=False)
            for reldir, *signature in dirs:
                if self._dir(os.path.join(base, reldir) if reldir else base) != tuple(signature):
                    return None
            # Inline and unmemoised: sets rarely share files, and this loop is the no-op's
            # one lstat per input file.
            prefix = base + os.sep
            lstat = os.lstat
            for relpath, size, mtime_ns, ctime_ns, ino in files:
                st = lstat(prefix + relpath)
                if (st.st_mtime_ns != mtime_ns or st.st_size != size or st.st_ctime_ns != ctime_ns
                        or st.st_ino != ino):  # fmt: skip
                    return None
        except (OSError, ValueError, TypeError):
            return None
        self.reused += 1
        return entries, digest

    def _dir(self, path: str) -> tuple[int, int, int, int] | None:
        found = self._dirs.get(path, False)
        if found is False:
            try:
                found = _signature(os.stat(path))
            except OSError:
                found = None
            self._dirs[path] = found
        return found  # type: ignore[return-value]

    def put(
        self,
        key: str,
        base: str,
        described: Described,
        dirs: Iterable[tuple[str, os.stat_result]],
        files: Sequence[tuple[str, os.stat_result]],
        taken_ns: int,
    ) -> None:
        """Keep ``described`` unless a stat vouching for it was racy: taken less than the racy
        window after its file changed (``taken_ns``: the clock read before the stats were)."""
        limit = taken_ns - RACY_WINDOW_NS
        dir_rows = []
        for reldir, st in dirs:
            if max(st.st_mtime_ns, st.st_ctime_ns) >= limit:
                return
            dir_rows.append((reldir, *_signature(st)))
        file_rows = []
        for relpath, st in files:
            if max(st.st_mtime_ns, st.st_ctime_ns) >= limit:
                return
            file_rows.append((relpath, *_signature(st)))
        entries, digest = described
        record = [base, sorted(dir_rows), file_rows, [list(e) for e in entries], digest]
        blob: bytes = pack(record)
        if self.sets.get(key) != blob:
            self.sets[key] = self.added[key] = blob

    def save(self) -> None:
        if not self.added:
            return
        added, self.added = self.added, {}
        save_table(
            self.path,
            added,
            self._decode,
            lambda merged: {"version": VERSION, "sets": merged},
        )


def set_key(material: Any) -> str:
    """The key a described set is kept under: what it was resolved from."""
    return digest_bytes(pack([VERSION, material]))
