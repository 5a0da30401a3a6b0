"""File sets: what one platform build reads, as a typed, immutable value.

A ``FileSet`` says which files of its context a (target, platform) build reads and why: the
Dockerfile analysis it used (reached stages' reads, a whole-context fallback and its reason),
the ignore file that filtered the context, explicit inputs of ``BUILD.images`` or inferred ones,
the global inputs of ``.cache-spec``, and each file's digest from the stat cache. Keys are made
from file sets (``keys.py``); this module is where input inference is decided.

The data path reads one way: keys -> filesets -> (dockerfile, dockerignore, inputs, hashing).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack

from buildtool import __version__
from buildtool.cachedir import CacheDir, update_file
from buildtool.dockerignore import load_ignore_rules
from buildtool.errors import BtError
from buildtool.hashing import StatCache, digest_bytes
from buildtool.inputs import ContextTree, InputEntry, Source, resolve_inputs
from buildtool.target import ImageTarget
from buildtool.workspace import Config

if TYPE_CHECKING:
    from buildtool.dockerfile import Dockerfile, StageReads

# Bump when what an analysis records changes: older entries are then never read.
ANALYSIS_SCHEMA = 4

# BuildKit's automatic platform args. Builds are native, so BUILDPLATFORM is the platform.
_PLATFORM_ARGS = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
                  "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT")  # fmt: skip

# (context path, kind, executable bit, content digest or symlink target)
FileEntry = tuple[str, str, bool, str]


# (stage name or index, line, keyword, canonical text) of one reached instruction
InstructionText = tuple[str | int, int, str, str]
# (reference, line, kind "from"/"copy"/"mount", the ARG it is written as, unresolved)
ImageUse = tuple[str, int, str, str | None, bool]


class Reads(NamedTuple):
    """What a file set needs of a Dockerfile analysis; small enough to keep on disk."""

    sources: tuple[tuple[str, int, str, tuple[str, ...]], ...]  # (source, line, instr, excludes)
    whole_context: str | None
    remote_sources: tuple[str, ...]
    has_run: bool
    # blake3 of the canonical meaning of the reached stages: what the key holds of the
    # Dockerfile (comments, layout and unreached stages are not in it).
    meaning: str
    instructions: tuple[InstructionText, ...]  # to explain a changed meaning
    images: tuple[ImageUse, ...]  # images the reached stages use

    @classmethod
    def of(cls, reads: StageReads) -> Reads:
        packed = msgpack.packb(reads.meaning, use_bin_type=True)
        return cls(
            tuple((r.source, r.line, r.instruction, tuple(r.excludes)) for r in reads.sources),
            reads.whole_context,
            tuple(reads.remote_sources),
            reads.has_run,
            digest_bytes(packed),
            tuple(reads.instructions),
            tuple((i.reference, i.line, i.kind, i.arg, i.unresolved) for i in reads.images),
        )

    def to_msgpack(self) -> list[Any]:
        return [[[*s[:3], list(s[3])] for s in self.sources], self.whole_context,
                list(self.remote_sources), self.has_run, self.meaning,
                [list(i) for i in self.instructions], [list(i) for i in self.images]]  # fmt: skip

    @classmethod
    def from_msgpack(cls, raw: list[Any]) -> Reads:
        sources, whole, remote, has_run, meaning, instructions, images = raw
        return cls(
            tuple((s, n, ins, tuple(ex)) for s, n, ins, ex in sources),
            whole,
            tuple(remote),
            has_run,
            meaning,
            tuple((st, n, kw, text) for st, n, kw, text in instructions),
            tuple((ref, n, kind, arg, bad) for ref, n, kind, arg, bad in images),
        )


@dataclass(frozen=True)
class FileSet:
    """Everything one platform build reads from disk, and why."""

    context: str  # workspace-relative context directory ("" for the root)
    dockerfile: str  # workspace-relative path
    dockerfile_digest: str
    dockerfile_text: str
    reads: Reads  # the analysis of the stages the build reaches
    ignore_file: str | None  # the ignore file that filtered the context, if any
    explicit: bool  # `inputs` of BUILD.images replaced inference
    sources: tuple[Source, ...]  # what brought the entries in
    fallback: str | None  # why the whole context counts as input, if it does
    entries: tuple[FileEntry, ...]  # sorted by path
    entries_digest: str  # blake3 of the canonical encoding of ``entries`` (a Merkle node)
    global_inputs: tuple[tuple[str, str], ...]  # (workspace path, digest)


class InputRow(NamedTuple):
    """One thing a build's key covers, as ``bt inputs`` lists it."""

    path: str  # workspace-relative
    kind: str  # "file", "symlink", "dir", "dockerfile" or "global"
    executable: bool
    digest: str  # blake3 of the content, or a symlink's target
    origin: str  # what brought it in: "docker/Dockerfile:12", "BUILD.images:30 (inputs)", ...

    def to_json(self) -> dict[str, object]:
        return self._asdict()


def input_rows(fileset: FileSet, origins: dict[str, Source]) -> list[InputRow]:
    """The files a key covers, each with what brought it in (``FileSets.origins``)."""
    rows = [InputRow(fileset.dockerfile, "dockerfile", False, fileset.dockerfile_digest,
                     "the Dockerfile (the stages the build reaches)")]  # fmt: skip
    prefix = f"{fileset.context}/" if fileset.context else ""
    for path, kind, executable, value in fileset.entries:
        source = origins.get(path)
        if fileset.fallback is not None:
            origin = f"whole context ({fileset.fallback})"
        elif source is None:
            origin = "unknown"
        elif fileset.explicit:
            origin = f"{source[1]}:{source[2]} (inputs = {source[0]!r})"
        else:
            origin = f"{source[1]}:{source[2]} ({source[0]!r})"
        rows.append(InputRow(prefix + path, kind, executable, value, origin))
    rows += [
        InputRow(path, "global", False, digest, ".cache-spec (global_inputs)")
        for path, digest in fileset.global_inputs
    ]
    return rows


class AnalysisCache:
    """Dockerfile analyses by (Dockerfile digest, stage, args, platform), kept between runs:
    a warm run neither parses Dockerfiles nor imports the parser."""

    VERSION = 1

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, Any] = self._decode(self._read())
        self.added: dict[str, Any] = {}

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    def _decode(self, data: bytes | None) -> dict[str, Any]:
        if data is None:
            return {}
        try:
            top = msgpack.unpackb(data, raw=False)
        except (ValueError, msgpack.UnpackException):
            return {}
        if isinstance(top, dict) and top.get("version") == self.VERSION:
            return dict(top.get("entries", {}))
        return {}

    def get(self, key: str) -> Reads | None:
        raw = self.entries.get(key)
        return None if raw is None else Reads.from_msgpack(raw)

    def put(self, key: str, reads: Reads) -> None:
        self.entries[key] = self.added[key] = reads.to_msgpack()

    def save(self) -> None:
        if not self.added:
            return
        added, self.added = self.added, {}

        def merge(current: bytes | None) -> bytes:
            merged = {**self._decode(current), **added}
            return msgpack.packb({"version": self.VERSION, "entries": merged}, use_bin_type=True)  # type: ignore[no-any-return]

        update_file(self.path, merge, durable=False)


class FileSets:
    """Computes file sets for the builds of one workspace, sharing parses, trees and digests."""

    def __init__(self, config: Config, stat_cache: StatCache):
        self.config = config
        self.stat_cache = stat_cache
        self.root = str(config.root)
        self.analyses = AnalysisCache(CacheDir(config.cache_dir).analyses)
        self._dockerfiles: dict[str, tuple[str, str]] = {}
        self._parsed: dict[str, Dockerfile] = {}
        self._trees: dict[tuple[str, str], ContextTree] = {}
        self._reads: dict[tuple[Any, ...], Reads] = {}
        self._entries: dict[tuple[Any, ...], tuple[tuple[FileEntry, ...], str]] = {}
        self._globals: tuple[tuple[str, str], ...] | None = None
        self._mentions_platform: dict[str, bool] = {}
        self._tool_paths = self._own_paths()

    def save(self) -> None:
        """Keep what was learnt for the next run (analyses and file digests)."""
        self.analyses.save()
        self.stat_cache.save()

    def of(self, target: ImageTarget, platform: str) -> FileSet:
        digest, text = self._dockerfile(target.dockerfile)
        reads = self._stage_reads(target, platform, digest, text)
        tree = self.tree(target)
        fallback = reads.whole_context
        sources: tuple[Source, ...]
        if target.inputs is not None:
            fallback = None
            loc = target.location
            sources = tuple((p, loc.path, loc.line, "inputs", ()) for p in target.inputs)
        elif fallback is not None:
            sources = ((".", target.dockerfile, 0, "whole context", ()),)
        else:
            df = target.dockerfile
            sources = tuple((src, df, line, ins, ex) for src, line, ins, ex in reads.sources)
        entries, entries_digest = self._described(target, tree, sources)
        return FileSet(
            context=target.context,
            dockerfile=target.dockerfile,
            dockerfile_digest=digest,
            dockerfile_text=text,
            reads=reads,
            ignore_file=self._relative(tree.rules.source),
            explicit=target.inputs is not None,
            sources=sources,
            fallback=fallback,
            entries=entries,
            entries_digest=entries_digest,
            global_inputs=self.global_inputs(),
        )

    def origins(self, target: ImageTarget, fileset: FileSet) -> dict[str, Source]:
        """For each entry of ``fileset``, the first source that brought it in."""
        tree = self.tree(target)
        found: dict[str, Source] = {}
        for source in fileset.sources:
            for entry in resolve_inputs(tree, [source]):
                found.setdefault(entry.path, source)
        return found

    def global_inputs(self) -> tuple[tuple[str, str], ...]:
        if self._globals is None:
            import glob as globlib

            paths: list[str] = []
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

    def parse(self, relpath: str) -> Dockerfile:
        """The parsed Dockerfile at workspace path ``relpath`` (imports the parser)."""
        parsed = self._parsed.get(relpath)
        if parsed is None:
            from buildtool.dockerfile import parse_dockerfile

            parsed = parse_dockerfile(self._dockerfile(relpath)[1], relpath)
            self._parsed[relpath] = parsed
        return parsed

    def tree(self, target: ImageTarget) -> ContextTree:
        """The target's context as Docker sends it (ignore rules applied, bt's state left out)."""
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
                for p in self._tool_paths
            ]
            tree = ContextTree(context_dir, rules, [p for p in exclude if not p.startswith("..")])
            self._trees[tree_key] = tree
        return tree

    def _own_paths(self) -> tuple[str, ...]:
        """Workspace paths bt itself writes; never inputs, or every build would stale itself."""
        paths = [self.config.lockfile, self.config.cache_dir]
        return tuple(
            os.path.relpath(p, self.root).replace(os.sep, "/")
            for p in paths
            if str(p).startswith(self.root + os.sep)
        )

    def _relative(self, path: str | None) -> str | None:
        if path is None:
            return None
        return os.path.relpath(path, self.root).replace(os.sep, "/")

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
            material = [__version__, ANALYSIS_SCHEMA, *memo]
            cache_key = digest_bytes(msgpack.packb(material, use_bin_type=True))
            reads = self.analyses.get(cache_key)
            if reads is None:
                from buildtool.dockerfile import context_reads

                analysis = context_reads(
                    self.parse(target.dockerfile),
                    target.stage,
                    args,
                    platform=dependent,
                    build_platform=dependent,
                )
                reads = Reads.of(analysis)
                self.analyses.put(cache_key, reads)
            self._reads[memo] = reads
        return reads

    def _described(
        self, target: ImageTarget, tree: ContextTree, sources: tuple[Source, ...]
    ) -> tuple[tuple[FileEntry, ...], str]:
        memo = (target.context, target.dockerfile, sources)
        described = self._entries.get(memo)
        if described is None:
            entries = self._describe(tree, resolve_inputs(tree, sources))
            packed = msgpack.packb([list(e) for e in entries], use_bin_type=True)
            described = (entries, digest_bytes(packed))
            self._entries[memo] = described
        return described

    def _describe(self, tree: ContextTree, found: Iterable[InputEntry]) -> tuple[FileEntry, ...]:
        entries = list(found)
        base = str(tree.context_dir)
        files = [e for e in entries if e.kind == "file"]
        digests = dict(
            zip(
                (e.path for e in files),
                self.stat_cache.digest_many([os.path.join(base, e.path) for e in files]),
                strict=True,
            )
        )
        described: list[FileEntry] = []
        for entry in entries:
            if entry.kind == "file":
                value = digests[entry.path]
            elif entry.kind == "symlink":
                value = entry.link_target or ""
            else:
                value = ""
            described.append((entry.path, entry.kind, entry.executable, value))
        return tuple(sorted(described))
