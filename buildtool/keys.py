"""Content-addressed keys of platform builds.

The key of a platform build is a blake3 of a canonical msgpack encoding of everything that can
change its image (invariant 1) and nothing else (invariant 2): the key schema version, the
platform, the meaning of the Dockerfile stages the build reaches on that platform (each
instruction as parsed, the parser directives, the value every ARG takes; see
``dockerfile/meaning.py``), the stage, the resolved build args, the sorted inputs (path, kind,
executable bit, content digest or symlink target), the global inputs of ``.cache-spec``, and the
keys of the parents' builds for the same platform. The file sets come from ``filesets.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import msgpack

from buildtool.cachedir import CacheDir, write_once
from buildtool.filesets import (
    AnalysisCache,
    FileSet,
    FileSets,
    InputRow,
    InstructionText,
    input_rows,
)
from buildtool.graph import TargetGraph
from buildtool.hashing import StatCache, digest_bytes
from buildtool.labels import Label
from buildtool.workspace import Config

KEY_SCHEMA = 3

BuildId = tuple[Label, str]


@dataclass(frozen=True)
class KeyManifest:
    """What went into one key, kept in the cache directory so ``bt why`` can diff it later."""

    schema: int
    label: str
    platform: str
    dockerfile: str  # workspace-relative path
    dockerfile_digest: str  # of its bytes: shown, not keyed
    meaning: str  # of the reached stages' meaning: keyed
    instructions: tuple[InstructionText, ...]  # the reached instructions, for `bt why`
    stage: str | None
    args: tuple[tuple[str, str], ...]
    inputs: tuple[tuple[str, str, bool, str], ...]  # (context path, kind, exec, digest/link)
    inputs_digest: str  # blake3 of the canonical encoding of ``inputs``
    global_inputs: tuple[tuple[str, str], ...]
    parents: tuple[tuple[str, str, str], ...]  # (arg, parent label, parent key)
    remote_sources: tuple[str, ...]
    fallback: str | None  # why the whole context counts as input, if it does
    has_run: bool
    context: str

    def key_material(self) -> list[Any]:
        return [
            self.schema,
            self.platform,
            self.meaning,
            self.stage or "",
            [list(a) for a in self.args],
            # A Merkle node: many builds share one input set, which is encoded once.
            self.inputs_digest,
            [list(g) for g in self.global_inputs],
            [[arg, key] for arg, _, key in self.parents],
            list(self.remote_sources),
        ]

    @cached_property
    def key(self) -> str:
        return digest_bytes(msgpack.packb(self.key_material(), use_bin_type=True))

    def to_msgpack(self) -> bytes:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return msgpack.packb(data, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def from_msgpack(cls, data: bytes) -> KeyManifest:
        raw = msgpack.unpackb(data, raw=False)
        for name in ("args", "inputs", "global_inputs", "parents", "instructions"):
            raw[name] = tuple(tuple(item) for item in raw[name])
        raw["remote_sources"] = tuple(raw["remote_sources"])
        return cls(**raw)


class KeyComputer:
    """Keys of the platform builds of one graph: file sets (``filesets.py``) plus parents' keys."""

    def __init__(self, config: Config, graph: TargetGraph, stat_cache: StatCache):
        self.config = config
        self.graph = graph
        self.filesets = FileSets(config, stat_cache)
        self._manifests: dict[BuildId, KeyManifest] = {}
        self._filesets: dict[BuildId, FileSet] = {}

    @property
    def analyses(self) -> AnalysisCache:
        return self.filesets.analyses

    def manifest(self, build: BuildId) -> KeyManifest:
        found = self._manifests.get(build)
        if found is None:
            found = self._compute(build)
            self._manifests[build] = found
        return found

    def key(self, build: BuildId) -> str:
        return self.manifest(build).key

    def fileset(self, build: BuildId) -> FileSet:
        """The file set the build's key was computed from (what its engine is sent)."""
        self.manifest(build)
        return self._filesets[build]

    def covered_inputs(self, build: BuildId) -> list[InputRow]:
        """Every file the build's key covers: its own file set's, then (through their keys)
        its parents', each once, with what brought it in."""
        label, platform = build
        target = self.graph.targets[label]
        fileset = self.filesets.of(target, platform)
        rows = input_rows(fileset, self.filesets.origins(target, fileset))
        seen = {(row.path, row.kind) for row in rows}
        for arg, parent in target.parents:
            for row in self.covered_inputs((parent, platform)):
                if (row.path, row.kind) not in seen:
                    seen.add((row.path, row.kind))
                    via = f"parent {parent} ({arg})"
                    rows.append(row._replace(origin=f"{via}: {row.origin}"))
        return rows

    def _compute(self, build: BuildId) -> KeyManifest:
        label, platform = build
        target = self.graph.targets[label]
        fileset = self.filesets.of(target, platform)
        self._filesets[build] = fileset
        parents = tuple(
            (arg, str(parent), self.key((parent, platform))) for arg, parent in target.parents
        )
        return KeyManifest(
            schema=KEY_SCHEMA,
            label=str(label),
            platform=platform,
            dockerfile=target.dockerfile,
            dockerfile_digest=fileset.dockerfile_digest,
            meaning=fileset.reads.meaning,
            instructions=fileset.reads.instructions,
            stage=target.stage,
            args=target.args,
            inputs=fileset.entries,
            inputs_digest=fileset.entries_digest,
            global_inputs=fileset.global_inputs,
            parents=parents,
            remote_sources=fileset.reads.remote_sources,
            fallback=fileset.fallback,
            has_run=fileset.reads.has_run,
            context=target.context,
        )


def save_manifest(cache_dir: Path, manifest: KeyManifest) -> None:
    """Keep what went into a key, for `bt why` (content-addressed: written once)."""
    write_once(CacheDir(cache_dir).manifest(manifest.key), manifest.to_msgpack())


def load_manifest(cache_dir: Path, key: str) -> KeyManifest | None:
    try:
        return KeyManifest.from_msgpack(CacheDir(cache_dir).manifest(key).read_bytes())
    except (OSError, ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None
