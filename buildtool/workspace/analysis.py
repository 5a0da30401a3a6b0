"""Dockerfile analyses: each Dockerfile read once, parsed at most once, and what one build of it
reaches (``Reads``), kept on disk between runs.

The graph (to infer parents from the images builds use) and the file sets (to decide inputs)
both ask for analyses; the session owns one ``Analyses`` so they share the reads and the cache,
and a warm run neither parses a Dockerfile nor imports the parser.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack

from buildtool import __version__
from buildtool.errors import BtError
from buildtool.state.cachedir import CacheDir, save_table
from buildtool.state.hashing import digest_bytes
from buildtool.state.packing import pack, unpack
from buildtool.workspace.config import Config
from buildtool.workspace.target import BuildId, ImageTarget

if TYPE_CHECKING:
    from buildtool.dockerfile import Dockerfile, StageReads

# Bump when what an analysis records changes: older entries are then never read.
ANALYSIS_SCHEMA = 7  # 6: named contexts; 7: reached stages' lines

# BuildKit's automatic platform args. Builds are native, so BUILDPLATFORM is the platform.
_PLATFORM_ARGS = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
                  "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT")  # fmt: skip

# (stage name or index, line, keyword, canonical text) of one reached instruction
InstructionText = tuple[str | int, int, str, str]
# (reference, line, kind "from"/"copy"/"mount", the ARG it is written as, unresolved, the named
# context it is written as)
ImageUse = tuple[str, int, str, str | None, bool, str | None]
# (named context, source, line, instruction, excludes): a path read from a directory context
NamedSource = tuple[str, str, int, str, tuple[str, ...]]
# (secret id, or None when bt cannot tell; line; required) of a RUN --mount=type=secret
SecretUse = tuple[str | None, int, bool]


def context_placeholder(name: str) -> str:
    """The image a named context that is a workspace target stands for in analyses: the
    parent's key covers the real one (its exact reference is handed over at build time)."""
    return f"bt-context-{name}"


def analysis_contexts(target: ImageTarget) -> dict[str, str | None]:
    """The target's named contexts as the Dockerfile evaluation takes them."""
    found: dict[str, str | None] = {}
    for name, kind, value in target.contexts:
        found[name] = {"target": context_placeholder(name), "image": value}.get(kind)
    return found


def parent_placeholder(arg: str) -> str:
    """The value a declared parent's build arg takes in analyses: the parent's key covers the
    real one, and a reference that holds it only in part shows it."""
    return f"bt-parent-{arg}"


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
    secrets: tuple[SecretUse, ...] = ()  # secrets the reached stages mount
    named_sources: tuple[NamedSource, ...] = ()  # what they read from directory contexts
    stage_lines: tuple[tuple[int, int], ...] = ()  # (first, last line) of each reached stage

    @classmethod
    def of(cls, reads: StageReads) -> Reads:
        packed = pack(reads.meaning)
        return cls(
            tuple((r.source, r.line, r.instruction, tuple(r.excludes)) for r in reads.sources),
            reads.whole_context,
            tuple(reads.remote_sources),
            reads.has_run,
            digest_bytes(packed),
            tuple(reads.instructions),
            tuple(
                (i.reference, i.line, i.kind, i.arg, i.unresolved, i.context) for i in reads.images
            ),
            tuple((m.id, m.line, m.required) for m in reads.secrets),
            tuple(
                (r.context or "", r.source, r.line, r.instruction, tuple(r.excludes))
                for r in reads.named_sources
            ),
            tuple(reads.stage_lines),
        )

    def to_msgpack(self) -> list[Any]:
        return [[[*s[:3], list(s[3])] for s in self.sources], self.whole_context,
                list(self.remote_sources), self.has_run, self.meaning,
                [list(i) for i in self.instructions], [list(i) for i in self.images],
                [list(m) for m in self.secrets],
                [[*s[:4], list(s[4])] for s in self.named_sources],
                [list(lines) for lines in self.stage_lines]]  # fmt: skip

    @classmethod
    def from_msgpack(cls, raw: list[Any]) -> Reads:
        sources, whole, remote, has_run, meaning, instructions, images, secrets, named, lines = raw
        return cls(
            tuple((s, n, ins, tuple(ex)) for s, n, ins, ex in sources),
            whole,
            tuple(remote),
            has_run,
            meaning,
            tuple((st, n, kw, text) for st, n, kw, text in instructions),
            tuple((ref, n, kind, arg, bad, via) for ref, n, kind, arg, bad, via in images),
            tuple((sid, n, required) for sid, n, required in secrets),
            tuple((c, s, n, ins, tuple(ex)) for c, s, n, ins, ex in named),
            tuple((first, last) for first, last in lines),
        )


class AnalysisCache:
    """Dockerfile analyses by (Dockerfile digest, stage, args, platform), kept between runs:
    a warm run neither parses Dockerfiles nor imports the parser."""

    # 2: ARG values in ``instructions`` by digest (dockerfile/meaning.py); 3: FROM and COPY
    # --from images by their normalised reference, and the frontend a ``# syntax=`` names
    VERSION = 3

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, Any] = self._decode(self._read())
        self.added: dict[str, Any] = {}
        self.used: set[str] = set()  # keys asked for or added by this process

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    def _decode(self, data: bytes | None) -> dict[str, Any]:
        if data is None:
            return {}
        try:
            top = unpack(data)
        except (ValueError, msgpack.UnpackException):
            return {}
        if isinstance(top, dict) and top.get("version") == self.VERSION:
            return dict(top.get("entries", {}))
        return {}

    def get(self, key: str) -> Reads | None:
        self.used.add(key)
        raw = self.entries.get(key)
        return None if raw is None else Reads.from_msgpack(raw)

    def put(self, key: str, reads: Reads) -> None:
        self.used.add(key)
        self.entries[key] = entry = reads.to_msgpack()
        secrets = sys.modules.get("buildtool.secrets")  # imported once a value is concealed
        if secrets is not None and secrets.holds_concealed(pack(entry)):
            return  # an analysis holding a secret-looking arg's value is not kept on disk
        self.added[key] = entry

    def save(self, complete: bool = False) -> None:
        """Write what was added. ``complete`` says this process asked for the analysis of every
        build the workspace has (the graph's parent inference does): the entries it did not
        ask for are then of targets, Dockerfiles or bt versions that are gone, and are dropped
        (written even when nothing was added), so the cache holds the workspace as it is."""
        prune = complete and bool(self.used) and not set(self.entries) <= self.used
        if not self.added and not prune:
            return
        added, self.added = self.added, {}
        used = set(self.used) if prune else None
        save_table(
            self.path,
            added,
            self._decode,
            lambda merged: {"version": self.VERSION, "entries": merged},
            None if used is None else used.__contains__,
        )
        if used is not None:
            self.entries = {key: value for key, value in self.entries.items() if key in used}


class Analyses:
    """The Dockerfiles of one workspace and the analyses of its builds, shared by the graph
    (inferred parents) and the file sets (inputs)."""

    def __init__(self, config: Config):
        self.root = str(config.root)
        self.cache = AnalysisCache(CacheDir(config.cache_dir).analyses)
        self._dockerfiles: dict[str, tuple[str, str]] = {}
        self._parsed: dict[str, Dockerfile] = {}
        self._reads: dict[tuple[Any, ...], Reads] = {}
        self._by_build: dict[BuildId, Reads] = {}
        self._mentions_platform: dict[str, bool] = {}

    def save(self, complete: bool = False) -> None:
        """``complete``: every build of the workspace was analysed (``AnalysisCache.save``)."""
        self.cache.save(complete)

    def exists(self, relpath: str) -> bool:
        return relpath in self._dockerfiles or os.path.isfile(os.path.join(self.root, relpath))

    def dockerfile(self, relpath: str) -> tuple[str, str]:
        """(blake3 of its bytes, its text) of the Dockerfile at workspace path ``relpath``."""
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

    def parse(self, relpath: str) -> Dockerfile:
        """The parsed Dockerfile at workspace path ``relpath`` (imports the parser)."""
        parsed = self._parsed.get(relpath)
        if parsed is None:
            from buildtool.dockerfile import parse_dockerfile

            parsed = parse_dockerfile(self.dockerfile(relpath)[1], relpath)
            self._parsed[relpath] = parsed
        return parsed

    def reads(self, target: ImageTarget, platform: str) -> Reads:
        """What the build of ``target`` for ``platform`` reaches in its Dockerfile (asked by the
        graph's parent inference, then by the build's file set: answered once)."""
        build = (target.label, platform)
        found = self._by_build.get(build)
        if found is None:
            try:
                found = self._by_build[build] = self._reads_of(target, platform)
            except BtError as err:
                if err.line is not None:
                    raise  # a line of the Dockerfile is the place to fix
                # A missing Dockerfile or stage: the place to fix is the target's declaration.
                loc = target.location
                where = f" ({err.path})" if err.path else ""
                raise BtError(f"{target.label}: {err.message}{where}", loc.path, loc.line) from None
        return found

    def _reads_of(self, target: ImageTarget, platform: str) -> Reads:
        digest, text = self.dockerfile(target.dockerfile)
        # Only Dockerfiles that mention the platform args read differently per platform.
        dependent = platform if self._platform_dependent(target.dockerfile, text) else None
        args = dict(target.args)
        for arg, _ in target.parents:
            args[arg] = parent_placeholder(arg)
        contexts = analysis_contexts(target)
        memo = (digest, target.stage, tuple(sorted(args.items())), dependent,
                tuple(sorted(contexts.items())))  # fmt: skip
        reads = self._reads.get(memo)
        if reads is None:
            # bt's version is part of the entry's key: a newer analysis never reads an old one.
            material = [__version__, ANALYSIS_SCHEMA, *memo]
            cache_key = digest_bytes(pack(material))
            reads = self.cache.get(cache_key)
            if reads is None:
                from buildtool.dockerfile import context_reads

                analysis = context_reads(
                    self.parse(target.dockerfile),
                    target.stage,
                    args,
                    platform=dependent,
                    build_platform=dependent,
                    contexts=contexts,
                )
                reads = Reads.of(analysis)
                self.cache.put(cache_key, reads)
            self._reads[memo] = reads
        if dependent is None:  # its builds for the other platforms read the same
            self._by_build.update(((target.label, p), reads) for p in target.platforms)
        return reads

    def _platform_dependent(self, dockerfile: str, text: str) -> bool:
        found = self._mentions_platform.get(dockerfile)
        if found is None:
            found = any(name in text for name in _PLATFORM_ARGS)
            self._mentions_platform[dockerfile] = found
        return found
