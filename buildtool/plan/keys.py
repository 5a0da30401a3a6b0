"""Content-addressed keys of platform builds.

The key of a platform build is a blake3 of a canonical msgpack encoding of everything that can
change its image (invariant 1) and nothing else (invariant 2): the key schema version, the
platform, the meaning of the Dockerfile stages the build reaches on that platform (each
instruction as parsed, the parser directives, the value every ARG takes; see
``dockerfile/meaning.py``), the stage, the resolved build args (values by digest), the ids and
sources of the build secrets its reached stages mount (never their values: ``secrets.py``),
the sorted inputs (path, kind, executable bit, content digest or symlink target), the global
inputs of ``.cache-spec``, the keys of the parents' builds for the same platform (declared, or
inferred from the images the reached stages name: ``parents.py``), and the digest every
external image the reached stages use is pinned to in ``images.lock`` (``pins.py``). The file
sets come from ``filesets.py``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import msgpack

from buildtool.inputs.filesets import (
    DOCKERFILE_IN_TAR,
    FileSet,
    FileSets,
    ImageUse,
    InputRow,
    input_rows,
    inputs_identity,
)
from buildtool.plan.keymemo import KeyMemo, run_identity
from buildtool.plan.pins import (
    UNPINNED,
    ExternalImage,
    PinEntry,
    Pins,
    external_images,
    pin_entries,
)
from buildtool.state.cachedir import CacheDir, write_once
from buildtool.state.hashing import StatCache, digest_bytes
from buildtool.state.packing import pack, unpack
from buildtool.workspace.analysis import Analyses, InstructionText
from buildtool.workspace.config import Config
from buildtool.workspace.graph import TargetGraph
from buildtool.workspace.target import BuildId, ImageTarget

# 4: pins of external images; 6: build-arg values by digest, build secrets' ids and sources;
# 7: FROM and COPY --from images by their normalised reference, the ``# syntax=`` frontend pinned
KEY_SCHEMA = 7


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
    # (name, value_digest(value)): a value is never stored (invariant 7), its digest keys it.
    args: tuple[tuple[str, str], ...]
    inputs: tuple[tuple[str, str, bool, str], ...]  # (context path, kind, exec, digest/link)
    inputs_digest: str  # blake3 of the canonical encoding of ``inputs``
    global_inputs: tuple[tuple[str, str], ...]
    # (arg of a declared parent or normalised reference of an inferred one, label, key)
    parents: tuple[tuple[str, str, str], ...]
    remote_sources: tuple[str, ...]
    fallback: str | None  # why the whole context counts as input, if it does
    has_run: bool
    context: str
    # (normalised reference, pinned digest or "unpinned:<ref>", as written), sorted: keyed
    pins: tuple[PinEntry, ...] = ()
    images: tuple[ImageUse, ...] = ()  # the reached stages' image uses, by line: not keyed
    # The Dockerfile's bytes, keyed when the build may copy bt's own copy of it into the image
    # (see ``sends_dockerfile_copy``); None otherwise.
    dockerfile_bytes: str | None = None
    # (id, "env" or "src", variable or path as written) of the declared secrets the reached
    # stages mount (``secrets.build_secrets``), sorted: keyed and passed, never the value.
    secrets: tuple[tuple[str, str, str], ...] = ()
    # (named context, path in its directory, kind, exec, digest or link) of what the build
    # reads from its directory contexts, sorted; keyed by each context's digest of them.
    named_inputs: tuple[tuple[str, str, str, bool, str], ...] = ()
    named_digests: tuple[tuple[str, str], ...] = ()  # (named context, entries digest): keyed

    @property
    def unpinned(self) -> tuple[str, ...]:
        """External images (as written) that have no pin yet: the build cannot run as is."""
        return tuple(written for _, value, written in self.pins if value.startswith(UNPINNED))

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
            # Under a new reference, one pinned digest is one image: the name is keyed too,
            # since it is what an unpinned entry and `bt why` know the image by.
            [[name, value] for name, value, _ in self.pins],
            self.dockerfile_bytes or "",
            [list(s) for s in self.secrets],
            # Only builds that read directory contexts have it: other keys stay as they were.
            *([[list(n) for n in self.named_digests]] if self.named_digests else []),
        ]

    @property
    def inputs_identity(self) -> str:
        """``FileSet.inputs_identity`` of the file set the key was computed from."""
        return inputs_identity(self.inputs_digest, self.named_digests)

    @cached_property
    def key(self) -> str:
        return digest_bytes(pack(self.key_material()))

    def to_msgpack(self) -> bytes:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return pack(data)

    @classmethod
    def from_msgpack(cls, data: bytes) -> KeyManifest:
        raw = unpack(data)
        for name in ("args", "inputs", "global_inputs", "parents", "instructions"):
            raw[name] = tuple(tuple(item) for item in raw[name])
        raw["remote_sources"] = tuple(raw["remote_sources"])
        for name in ("pins", "images", "secrets", "named_inputs", "named_digests"):
            raw[name] = tuple(tuple(item) for item in raw.get(name, ()))
        return cls(**raw)


class KeyComputer:
    """Keys of the platform builds of one graph: file sets (``filesets.py``) plus parents' keys."""

    def __init__(
        self,
        config: Config,
        graph: TargetGraph,
        stat_cache: StatCache,
        analyses: Analyses | None = None,
        pins: Pins | None = None,
        graph_identity: str | None = None,
    ):
        """``graph_identity`` (``graphcache.graph_identity``) lets keys of an earlier run be
        reused (``keymemo.py``); without it every key is encoded."""
        self.config = config
        self.graph = graph
        self.filesets = FileSets(config, stat_cache, analyses)
        self.pins: Pins = pins or {}
        # Normalised references of images the workspace builds: parents, never external.
        self.workspace_references = frozenset(
            parent.name for parents in graph.inferred.values() for parent in parents
        )
        self._manifests: dict[BuildId, KeyManifest] = {}
        self._filesets: dict[BuildId, FileSet] = {}
        self._external_memo: dict[Any, tuple[ExternalImage, ...]] = {}
        self._sends_copy: dict[int, tuple[FileSet, bool]] = {}
        self._keys: dict[BuildId, str] = {}
        self._unpinned: dict[BuildId, tuple[str, ...]] = {}  # of keys from the memo
        self.graph_identity = graph_identity
        self._memo: KeyMemo | None = None

    def use_pins(self, pins: Pins) -> None:
        """Compute keys against ``pins`` (the lockfile's) from now on."""
        if pins != self.pins:
            self.pins = pins
            self._manifests.clear()
            self._keys.clear()
            self._unpinned.clear()
            self._memo = None  # the pins are part of its identity

    def forget(self, paths: Iterable[str]) -> set[BuildId]:
        """Drop what was computed from the workspace-relative ``paths`` (changed on disk):
        the file sets holding them (``FileSets.forget``), the keys of the builds reading those
        sets and of every build on top of them. Returns those builds."""
        dropped = self.filesets.forget(paths)
        if not dropped:
            return set()
        builds = {b for b, fileset in self._filesets.items() if id(fileset) in dropped}
        for build in builds:
            del self._filesets[build]
        children = self.graph.children
        pending = list(builds)
        while pending:
            label, platform = pending.pop()
            for child in children[label]:
                if (child, platform) not in builds:
                    builds.add((child, platform))
                    pending.append((child, platform))
        for build in builds:
            self._manifests.pop(build, None)
            self._keys.pop(build, None)
            self._unpinned.pop(build, None)
        return builds

    def save(self) -> None:
        """Keep what was learnt for the next run: file sets (``FileSets.save``) and keys."""
        self.filesets.save()
        if self._memo is not None:
            self._memo.save()

    def external_images(self, build: BuildId) -> tuple[ExternalImage, ...]:
        """The images the build's reached stages use that the workspace does not build."""
        label, platform = build
        target = self.graph.targets[label]
        return self._externals(target, self.filesets.of(target, platform))

    def _externals(self, target: ImageTarget, fileset: FileSet) -> tuple[ExternalImage, ...]:
        parent_args = frozenset(arg for arg, _ in target.parents)
        memo = (fileset.reads.images, parent_args)  # shared by builds that read alike
        found = self._external_memo.get(memo)
        if found is None:
            found = external_images(fileset.reads.images, parent_args, self.workspace_references)
            self._external_memo[memo] = found
        return found

    def unpinned(self, build: BuildId) -> tuple[str, ...]:
        """External images (as written) the build uses that have no pin yet
        (``KeyManifest.unpinned``), without computing its manifest."""
        found = self._manifests.get(build)
        if found is not None:
            return found.unpinned
        remembered = self._unpinned.get(build)
        if remembered is not None:
            return remembered
        label, platform = build
        images = self._externals(self.graph.targets[label], self.fileset(build))
        if not images:
            return ()
        entries = pin_entries(images, self.pins, platform)
        return tuple(written for _, value, written in entries if value.startswith(UNPINNED))

    @property
    def analyses(self) -> Analyses:
        return self.filesets.analyses

    def manifest(self, build: BuildId) -> KeyManifest:
        found = self._manifests.get(build)
        if found is None:
            found = self._compute(build)
            self._manifests[build] = found
            memo = self._memo_of_run()
            if memo is not None:
                parent_keys = tuple(key for _, _, key in found.parents)
                name = f"{build[0]} {build[1]}"
                memo.put(name, found.inputs_identity, parent_keys, found.key, found.unpinned)
        return found

    def key(self, build: BuildId) -> str:
        found = self._keys.get(build)
        if found is None:
            remembered = self._remembered(build)
            if remembered is None:
                found = self.manifest(build).key
            else:
                found, self._unpinned[build] = remembered
            self._keys[build] = found
        return found

    def fileset(self, build: BuildId) -> FileSet:
        """The file set the build's key was computed from (what its engine is sent)."""
        found = self._filesets.get(build)
        if found is None:
            label, platform = build
            found = self.filesets.of(self.graph.targets[label], platform)
            self._filesets[build] = found
        return found

    def _memo_of_run(self) -> KeyMemo | None:
        """The memo of this run's identity: every input of ``_compute`` that is not a function
        of the kept graph (which ``graph_identity`` covers: the target, the analysis of its
        Dockerfile, its parents, the configuration) nor kept per build (the input set's
        digest, the parents' keys): the key schema, the pins and the global inputs."""
        if self._memo is None and self.graph_identity is not None:
            pins = [[ref, platform, record.digest, record.source]
                    for ref, platforms in sorted(self.pins.items())
                    for platform, record in sorted(platforms.items())]  # fmt: skip
            global_inputs = [list(g) for g in self.filesets.global_inputs()]
            material = [KEY_SCHEMA, self.graph_identity, pins, global_inputs]
            self._memo = KeyMemo(CacheDir(self.config.cache_dir).keys, run_identity(material))
        return self._memo

    def _remembered(self, build: BuildId) -> tuple[str, tuple[str, ...]] | None:
        """The key and unpinned images of ``build`` from the memo, if it holds them."""
        memo = self._memo_of_run()
        if memo is None:
            return None
        label, platform = build
        fileset = self.fileset(build)
        # A no-op plan asks this of every build: the parents' keys are known by then.
        keys = self._keys
        parent_keys = tuple(
            [
                keys.get((p.label, platform)) or self.key((p.label, platform))
                for p in self.graph.parents_of(label, platform)
            ]
        )
        return memo.get(f"{label} {platform}", fileset.inputs_identity, parent_keys)

    def covered_inputs(self, build: BuildId) -> list[InputRow]:
        """Every file the build's key covers: its own file set's, then (through their keys)
        its parents', each once, with what brought it in."""
        label, platform = build
        target = self.graph.targets[label]
        fileset = self.filesets.of(target, platform)
        named = self.filesets.named_origins(target, fileset) if fileset.named else None
        rows = input_rows(fileset, self.filesets.origins(target, fileset), named)
        seen = {(row.path, row.kind) for row in rows}
        for parent in self.graph.parents_of(label, platform):
            for row in self.covered_inputs((parent.label, platform)):
                if (row.path, row.kind) not in seen:
                    seen.add((row.path, row.kind))
                    via = f"parent {parent.label} ({parent.name})"
                    rows.append(row._replace(origin=f"{via}: {row.origin}"))
        return rows

    def _compute(self, build: BuildId) -> KeyManifest:
        from buildtool.secrets import build_secrets  # a memo hit needs neither
        from buildtool.state.hashing import value_digest

        label, platform = build
        target = self.graph.targets[label]
        fileset = self.fileset(build)
        # A declared parent counts by its arg, an inferred one by the normalised reference
        # the Dockerfile names (never by a line: moving a FROM moves no key).
        parents = tuple(
            (p.name, str(p.label), self.key((p.label, platform)))
            for p in self.graph.parents_of(label, platform)
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
            args=tuple((name, value_digest(value)) for name, value in target.args),
            inputs=fileset.entries,
            inputs_digest=fileset.entries_digest,
            global_inputs=fileset.global_inputs,
            parents=parents,
            remote_sources=fileset.reads.remote_sources,
            fallback=fileset.fallback,
            has_run=fileset.reads.has_run,
            context=target.context,
            pins=pin_entries(self._externals(target, fileset), self.pins, platform),
            images=fileset.reads.images,
            dockerfile_bytes=fileset.dockerfile_digest if self._sends_copy_of(fileset) else None,
            secrets=tuple(
                (s.id, s.kind, s.name) for s in build_secrets(target.secrets, fileset.reads.secrets)
            ),
            named_inputs=tuple((n.name, *entry) for n in fileset.named for entry in n.entries),
            named_digests=tuple((n.name, n.entries_digest) for n in fileset.named),
        )

    def _sends_copy_of(self, fileset: FileSet) -> bool:
        found = self._sends_copy.get(id(fileset))
        if found is None or found[0] is not fileset:
            found = self._sends_copy[id(fileset)] = (fileset, sends_dockerfile_copy(fileset))
        return found[1]


def sends_dockerfile_copy(fileset: FileSet) -> bool:
    """Whether the build may copy into its image the copy of the Dockerfile that bt adds to the
    context it sends (``builders/context.py``), whose bytes (comments and all) its meaning does
    not cover: a whole-context build, or a source that takes the context's root or a wildcard
    there. Then the Dockerfile's bytes are keyed too (invariant 8: the key is what the engine
    saw)."""
    if fileset.fallback is not None:
        return True
    for source in fileset.sources:
        first = source[0].lstrip("/").split("/", 1)[0]
        if first in ("", ".") or fnmatch.fnmatchcase(DOCKERFILE_IN_TAR, first):
            return True
    return False


def save_manifest(cache_dir: Path, manifest: KeyManifest) -> None:
    """Keep what went into a key, for `bt why` (content-addressed: written once)."""
    write_once(CacheDir(cache_dir).manifest(manifest.key), manifest.to_msgpack())


def load_manifest(cache_dir: Path, key: str) -> KeyManifest | None:
    try:
        return KeyManifest.from_msgpack(CacheDir(cache_dir).manifest(key).read_bytes())
    except (OSError, ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None
