"""Keys of an earlier run, reused while everything they were encoded from is unchanged.

A key is a digest of its Merkle inputs (``keys.py``). Most of them are functions of the target
graph alone: the target's definition, the analysis of the Dockerfile stages it reaches (by the
Dockerfile's content), its parents. The kept graph's identity (``graphcache.graph_identity``)
covers all of those, so a memo is kept per *run identity* (``run_identity``: that graph
identity, the key schema, the lockfile's pins and the global inputs' digests) and holds, per
platform build, the rest of its key's inputs: its input set's digest and its parents' keys.
A build whose input set and parents' keys are those recorded has the recorded key, without
encoding it again, and the recorded external images it lacks a pin for (a function of the
same: its Dockerfile, its target and the pins).

msgpack, not pickle: a cache directory inside a cloned repository must never run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from buildtool.state.cachedir import save_table
from buildtool.state.hashing import digest_bytes
from buildtool.state.packing import pack, unpack

VERSION = 2  # 2: unpinned images

# (the input set's digest, the parents' keys in ``parents_of`` order, the key, the external
# images without a pin, as written)
Entry = tuple[str, tuple[str, ...], str, tuple[str, ...]]


def run_identity(material: list[Any]) -> str:
    """The digest a memo is kept under: what every key of one run shares (``material``)."""
    return digest_bytes(pack([VERSION, material]))


class KeyMemo:
    """The memo of one run identity: read on first use, written back merged by ``save``."""

    def __init__(self, path: Path, identity: str):
        self.path = path
        self.identity = identity
        self.entries: dict[str, Entry] = _entries(_read(path), identity)
        self.added: dict[str, Entry] = {}
        self.reused = 0  # keys answered from the memo

    def get(
        self, build: str, input_digest: str, parent_keys: tuple[str, ...]
    ) -> tuple[str, tuple[str, ...]] | None:
        """The key and unpinned images recorded for ``build`` if it had this input set and
        these parents' keys."""
        entry = self.entries.get(build)
        try:
            digest, parents, key, unpinned = entry  # type: ignore[misc]
        except (TypeError, ValueError):
            return None  # none, or not what this module writes
        if digest != input_digest or parents != parent_keys:
            return None
        if not isinstance(key, str) or type(unpinned) is not tuple:
            return None
        self.reused += 1
        return key, unpinned

    def put(
        self,
        build: str,
        input_digest: str,
        parent_keys: tuple[str, ...],
        key: str,
        unpinned: tuple[str, ...],
    ) -> None:
        entry = (input_digest, parent_keys, key, unpinned)
        if self.entries.get(build) != entry:
            self.entries[build] = self.added[build] = entry

    def save(self) -> None:
        if not self.added:
            return
        added, self.added = self.added, {}
        identity = self.identity
        # Another identity's memo (another revision, other pins) is replaced, not merged.
        save_table(
            self.path,
            added,
            lambda current: _entries(current, identity),
            lambda merged: {"version": VERSION, "identity": identity, "keys": merged},
        )


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _entries(data: bytes | None, identity: str) -> dict[str, Entry]:
    if data is None:
        return {}
    try:
        top = unpack(data, use_list=False)
        if top["version"] != VERSION or top["identity"] != identity:
            return {}
        keys = top["keys"]
        return keys if isinstance(keys, dict) else {}  # entries are checked when asked for
    except Exception:  # a cache never fails a build: truncated, garbage -> empty
        return {}
