"""Content-addressed keys of platform builds.

The key of a platform build is a blake3 of a canonical msgpack encoding of everything that can
change its image (invariant 1) and nothing else (invariant 2): the key schema version, the
platform, the Dockerfile's bytes, the stage, the resolved build args, the sorted inputs (path,
kind, executable bit, content digest or symlink target), the global inputs of ``.cache-spec``,
and the keys of the parents' builds for the same platform.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack

from buildtool import __version__
from buildtool.dockerignore import load_ignore_rules
from buildtool.errors import BtError
from buildtool.graph import TargetGraph
from buildtool.hashing import StatCache, digest_bytes
from buildtool.inputs import ContextTree, InputEntry, resolve_inputs
from buildtool.labels import Label
from buildtool.statefile import exclusive_lock, write_atomic
from buildtool.target import ImageTarget
from buildtool.workspace import Config

if TYPE_CHECKING:
    from buildtool.dockerfile import Dockerfile, StageReads

KEY_SCHEMA = 2

# BuildKit's automatic platform args. Builds are native, so BUILDPLATFORM is the platform.
_PLATFORM_ARGS = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
                  "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT")  # fmt: skip

BuildId = tuple[Label, str]


@dataclass(frozen=True)
class KeyManifest:
    """What went into one key, kept in the cache directory so ``bt why`` can diff it later."""

    schema: int
    label: str
    platform: str
    dockerfile: str  # workspace-relative path
    dockerfile_digest: str
    dockerfile_text: str
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
            self.dockerfile_digest,
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
        for name in ("args", "inputs", "global_inputs", "parents"):
            raw[name] = tuple(tuple(item) for item in raw[name])
        raw["remote_sources"] = tuple(raw["remote_sources"])
        return cls(**raw)


class Reads(NamedTuple):
    """What key computation needs of a Dockerfile analysis; small enough to keep on disk."""

    sources: tuple[tuple[str, int], ...]  # (context source, line)
    whole_context: str | None
    remote_sources: tuple[str, ...]
    has_run: bool

    @classmethod
    def of(cls, reads: StageReads) -> Reads:
        return cls(
            tuple((ref.source, ref.line) for ref in reads.sources),
            reads.whole_context,
            tuple(reads.remote_sources),
            reads.has_run,
        )


class AnalysisCache:
    """Dockerfile analyses by (Dockerfile digest, stage, args, platform), kept between runs:
    a warm run neither parses Dockerfiles nor imports the parser."""

    VERSION = 1

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, Any] = self._read()
        self.added: dict[str, Any] = {}

    def _read(self) -> dict[str, Any]:
        try:
            data = msgpack.unpackb(self.path.read_bytes(), raw=False)
        except (OSError, ValueError, msgpack.UnpackException):
            return {}
        if isinstance(data, dict) and data.get("version") == self.VERSION:
            return dict(data.get("entries", {}))
        return {}

    def get(self, key: str) -> Reads | None:
        raw = self.entries.get(key)
        if raw is None:
            return None
        sources, whole, remote, has_run = raw
        return Reads(tuple((s, n) for s, n in sources), whole, tuple(remote), has_run)

    def put(self, key: str, reads: Reads) -> None:
        value = [[list(s) for s in reads.sources], reads.whole_context,
                 list(reads.remote_sources), reads.has_run]  # fmt: skip
        self.entries[key] = self.added[key] = value

    def save(self) -> None:
        if not self.added:
            return
        with exclusive_lock(self.path.with_name(self.path.name + ".lock")):
            merged = {**self._read(), **self.added}
            data = msgpack.packb({"version": self.VERSION, "entries": merged}, use_bin_type=True)
            write_atomic(self.path, data)
        self.added = {}


class KeyComputer:
    """Computes keys for platform builds of one graph, sharing parses, trees and digests."""

    def __init__(self, config: Config, graph: TargetGraph, stat_cache: StatCache):
        self.config = config
        self.graph = graph
        self.stat_cache = stat_cache
        self.root = str(config.root)
        self._dockerfiles: dict[str, tuple[str, str]] = {}
        self._parsed: dict[str, Dockerfile] = {}
        self.analyses = AnalysisCache(config.cache_dir / "analysis.msgpack")
        self._trees: dict[tuple[str, str], ContextTree] = {}
        self._reads: dict[tuple[Any, ...], Reads] = {}
        self._manifests: dict[BuildId, KeyManifest] = {}
        self._inputs: dict[tuple[Any, ...], tuple[tuple[tuple[str, str, bool, str], ...], str]] = {}
        self._globals: tuple[tuple[str, str], ...] | None = None
        self._mentions_platform: dict[str, bool] = {}
        self._exclude = self._tool_paths()

    def _tool_paths(self) -> tuple[str, ...]:
        """Workspace paths bt itself writes; never inputs, or every build would stale itself."""
        paths = [self.config.lockfile, self.config.cache_dir]
        return tuple(
            os.path.relpath(p, self.root).replace(os.sep, "/")
            for p in paths
            if str(p).startswith(self.root + os.sep)
        )

    def manifest(self, build: BuildId) -> KeyManifest:
        found = self._manifests.get(build)
        if found is None:
            found = self._compute(build)
            self._manifests[build] = found
        return found

    def key(self, build: BuildId) -> str:
        return self.manifest(build).key

    def global_inputs(self) -> tuple[tuple[str, str], ...]:
        if self._globals is None:
            paths: list[str] = []
            import glob as globlib

            for pattern in self.config.global_inputs:
                matches = sorted(globlib.glob(pattern, root_dir=self.root, recursive=True))
                files = [m for m in matches if os.path.isfile(os.path.join(self.root, m))]
                if not files:
                    raise BtError(f"global input {pattern!r} matches no file", ".cache-spec")
                paths.extend(files)
            unique = sorted(set(paths))
            # A global input that is a symlink counts by the content it points at.
            real = [os.path.realpath(os.path.join(self.root, p)) for p in unique]
            digests = self.stat_cache.digest_many(real)
            self._globals = tuple(zip(unique, digests, strict=True))
        return self._globals

    def _dockerfile(self, relpath: str) -> tuple[str, str]:
        found = self._dockerfiles.get(relpath)
        if found is None:
            path = os.path.join(self.root, relpath)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as err:
                raise BtError(f"cannot read Dockerfile: {err.strerror}", relpath) from None
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise BtError("Dockerfile is not valid UTF-8", relpath) from None
            found = (digest_bytes(data), text)
            self._dockerfiles[relpath] = found
        return found

    def _parse(self, relpath: str, text: str) -> Dockerfile:
        parsed = self._parsed.get(relpath)
        if parsed is None:
            from buildtool.dockerfile import parse_dockerfile

            parsed = parse_dockerfile(text, relpath)
            self._parsed[relpath] = parsed
        return parsed

    def _tree(self, target: ImageTarget) -> ContextTree:
        tree_key = (target.context, target.dockerfile)
        tree = self._trees.get(tree_key)
        if tree is None:
            context_dir = Path(self.root, target.context)
            if not context_dir.is_dir():
                loc = target.location
                raise BtError(
                    f"context {target.context or '.'!r} of {target.label} is not a directory",
                    loc.path,
                    loc.line,
                )
            rules = load_ignore_rules(context_dir, Path(self.root, target.dockerfile))
            exclude = [
                os.path.relpath(os.path.join(self.root, p), context_dir).replace(os.sep, "/")
                for p in self._exclude
            ]
            tree = ContextTree(context_dir, rules, [p for p in exclude if not p.startswith("..")])
            self._trees[tree_key] = tree
        return tree

    def _platform_dependent(self, dockerfile: str, text: str) -> bool:
        found = self._mentions_platform.get(dockerfile)
        if found is None:
            found = any(name in text for name in _PLATFORM_ARGS)
            self._mentions_platform[dockerfile] = found
        return found

    def _stage_reads(self, target: ImageTarget, platform: str, digest: str, text: str) -> Reads:
        args = dict(target.args)
        # Parent args carry an image reference; their value is covered by the parent's key.
        for arg, _ in target.parents:
            args[arg] = f"bt-parent-{arg}"
        # Only Dockerfiles that mention the platform args read differently per platform.
        dependent = platform if self._platform_dependent(target.dockerfile, text) else None
        memo = (digest, target.stage, tuple(sorted(args.items())), dependent)
        reads = self._reads.get(memo)
        if reads is None:
            # bt's version is part of the entry's key: a newer analysis never reads an old one.
            material = [__version__, KEY_SCHEMA, *memo]
            cache_key = digest_bytes(msgpack.packb(material, use_bin_type=True))
            reads = self.analyses.get(cache_key)
            if reads is None:
                from buildtool.dockerfile import context_reads

                df = self._parse(target.dockerfile, text)
                analysis = context_reads(
                    df, target.stage, args, platform=dependent, build_platform=dependent
                )
                reads = Reads.of(analysis)
                self.analyses.put(cache_key, reads)
            self._reads[memo] = reads
        return reads

    def _compute(self, build: BuildId) -> KeyManifest:
        label, platform = build
        target = self.graph.targets[label]
        df_digest, df_text = self._dockerfile(target.dockerfile)
        reads = self._stage_reads(target, platform, df_digest, df_text)
        tree = self._tree(target)
        fallback = reads.whole_context
        if target.inputs is not None:
            fallback = None
            sources = tuple((p, target.location.path, target.location.line) for p in target.inputs)
        elif fallback is not None:
            sources = ((".", target.dockerfile, 0),)
        else:
            sources = tuple((source, target.dockerfile, line) for source, line in reads.sources)
        memo = (target.context, target.dockerfile, sources)
        described = self._inputs.get(memo)
        if described is None:
            inputs = self._describe_inputs(tree, resolve_inputs(tree, sources))
            packed = msgpack.packb([list(i) for i in inputs], use_bin_type=True)
            described = (inputs, digest_bytes(packed))
            self._inputs[memo] = described
        inputs, inputs_digest = described
        parents = tuple(
            (arg, str(parent), self.key((parent, platform))) for arg, parent in target.parents
        )
        return KeyManifest(
            schema=KEY_SCHEMA,
            label=str(label),
            platform=platform,
            dockerfile=target.dockerfile,
            dockerfile_digest=df_digest,
            dockerfile_text=df_text,
            stage=target.stage,
            args=target.args,
            inputs=inputs,
            inputs_digest=inputs_digest,
            global_inputs=self.global_inputs(),
            parents=parents,
            remote_sources=tuple(reads.remote_sources),
            fallback=fallback,
            has_run=reads.has_run,
            context=target.context,
        )

    def _describe_inputs(
        self, tree: ContextTree, entries: Iterable[InputEntry]
    ) -> tuple[tuple[str, str, bool, str], ...]:
        entries = list(entries)
        base = str(tree.context_dir)
        files = [e for e in entries if e.kind == "file"]
        digests = dict(
            zip(
                (e.path for e in files),
                self.stat_cache.digest_many([os.path.join(base, e.path) for e in files]),
                strict=True,
            )
        )
        described = []
        for entry in entries:
            if entry.kind == "file":
                value = digests[entry.path]
            elif entry.kind == "symlink":
                value = entry.link_target or ""
            else:
                value = ""
            described.append((entry.path, entry.kind, entry.executable, value))
        return tuple(sorted(described))


def manifest_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / "manifests" / key[:2] / f"{key}.msgpack"


def save_manifest(cache_dir: Path, manifest: KeyManifest) -> None:
    """Keep what went into a key. Content-addressed, so an existing file is already right."""
    path = manifest_path(cache_dir, manifest.key)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # A cache, not state: rename for atomicity, no fsync (a lost file only costs `bt why` detail).
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(manifest.to_msgpack())
    os.replace(tmp, path)


def load_manifest(cache_dir: Path, key: str) -> KeyManifest | None:
    try:
        return KeyManifest.from_msgpack(manifest_path(cache_dir, key).read_bytes())
    except (OSError, ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None
