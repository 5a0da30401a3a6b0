"""The evaluation of one build of a Dockerfile: the stages it reaches and what they read from
the build context, as BuildKit's ``frontend/dockerfile/dockerfile2llb`` converts them.

Where a value cannot be known statically (an unset variable that the base image's environment
may define, a platform that was not given, a substitution Docker rejects), the analysis never
guesses: it reports ``whole_context`` with the reason, and the whole context counts as input.

Two rule sets are in use: current BuildKit, and v0.8, built into Docker 20.10, which differs
for some builds that succeed (checked against a real engine). Unless the Dockerfile pins a
current frontend, a build's reads are the union of both.

The same walk gives the build's meaning (see meaning.py): per reached stage, in order, its name,
its base as resolved, its platform and its instructions; before them the parser directives and
the ARGs before the first FROM that reached FROM lines use or reached stages redeclare.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from buildtool.dockerfile.flags import bool_flag, flag_value, flag_values, mount_fields, secret_of
from buildtool.dockerfile.meaning import UNKNOWN, arg_meaning, described, instruction_meaning
from buildtool.dockerfile.records import (
    Dockerfile,
    ImageRef,
    Instruction,
    InstructionMeaning,
    Meaning,
    SecretMount,
    SourceRef,
    Stage,
    StageReads,
)
from buildtool.dockerfile.shell import ExpandError, Lexer, Unresolved
from buildtool.dockerfile.syntax import STAGE_INDEX, arg_pair, is_inline_source
from buildtool.errors import BtError
from buildtool.platforms import Platform

_T = TypeVar("_T")

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})
_MOUNT_TYPES = frozenset({"bind", "cache", "tmpfs", "secret", "ssh"})
_DOCKERFILE_FRONTEND = re.compile(r"(docker\.io/)?docker/dockerfile(-upstream)?([:@].*)?")
# Tags that always resolve to the newest frontend, so BuildKit v0.8's rules never apply.
_CURRENT_FRONTEND = re.compile(
    r"(docker\.io/)?docker/dockerfile(-upstream)?:(1|1-labs|labs|latest|master|master-labs)"
)
_PROTOCOL = re.compile(r"([a-zA-Z0-9]+)://")
_SCP_URL = re.compile(r"[a-zA-Z0-9_-]+@[a-zA-Z0-9.-]+:")
_ONE_ARG = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class _Unknown:
    """A value that cannot be known statically, and why; ``fails`` when Docker rejects it."""

    reason: str
    fails: bool = False


_Value = str | _Unknown
_Use = Literal["copy", "mount"]
_MISSING = _Unknown("")


class _Env:
    """A stage's environment as BuildKit expands words with it (ENV and ARG values)."""

    def __init__(self, values: dict[str, _Value], fallback: str | None):
        self.values = values
        # Why a name the Dockerfile never set is unknown (it may come from the base image).
        self.fallback = fallback

    def copy(self) -> _Env:
        return _Env(dict(self.values), self.fallback)

    def lookup(self, seen: set[str] | None) -> Callable[[str], str | None]:
        """``get``, noting the names looked up in ``seen`` when given."""
        if seen is None:
            return self.get

        def get(name: str) -> str | None:
            seen.add(name)
            return self.get(name)

        return get

    def get(self, name: str) -> str | None:
        value = self.values.get(name, _MISSING)
        if value is _MISSING:
            if self.fallback is not None:
                raise Unresolved(f"variable {name} {self.fallback}")
            return None
        if isinstance(value, _Unknown):
            raise Unresolved(value.reason)
        return value


@dataclass(frozen=True)
class _Base:
    kind: str  # "stage", "scratch", "image" or "unknown"
    stage: int = -1
    ref: str = ""
    reason: str = ""
    uses: frozenset[str] = frozenset()  # the variables its FROM line looks up
    platform: Meaning = None  # its --platform value (None without the flag)


def _value_meaning(value: _Value | None) -> Meaning:
    return UNKNOWN if isinstance(value, _Unknown) else value


def _one_arg(word: str) -> str | None:
    """The ARG a word names when it is exactly ``$NAME`` or ``${NAME}``."""
    match = _ONE_ARG.fullmatch(word)
    return (match.group(1) or match.group(2)) if match else None


def _platform_args(prefix: str, platform: str | None, flag: str) -> dict[str, _Value]:
    names = ("PLATFORM", "OS", "OSVERSION", "ARCH", "VARIANT")
    if platform is None:
        unknown = _Unknown(f"{prefix}PLATFORM is not known ({flag} was not given)")
        return {prefix + name: unknown for name in names}
    parsed = Platform.parse(platform)
    values = (str(parsed), parsed.os, "", parsed.arch, parsed.variant)
    return {prefix + name: value for name, value in zip(names, values, strict=True)}


def _context_path(source: str) -> str:
    """Go's ``path.Join("/", source)`` relative to the context root ("." for the root)."""
    parts: list[str] = []
    for segment in source.split("/"):
        if segment == "..":
            if parts:
                parts.pop()
        elif segment not in ("", "."):
            parts.append(segment)
    return "/".join(parts) or "."


def _is_remote(source: str, legacy: bool) -> bool:
    """Whether ADD fetches ``source`` (HTTP or git) instead of reading the context."""
    if source.startswith(("http://", "https://")):
        return True
    if legacy:
        return False  # BuildKit v0.8 fetched only http(s) URLs; git@... was a context path
    if source.startswith(("./", "../", "github.com/")):
        return False  # BuildKit takes the bare github.com/ form as a local path
    match = _PROTOCOL.match(source)
    if match:
        scheme = match.group(1).lower()
        if scheme in ("http", "https"):
            return urlsplit(source).path.endswith(".git")
        return scheme in ("git", "ssh")  # other schemes are (odd) local paths to BuildKit
    return _SCP_URL.match(source) is not None


def _quote(word: str) -> str:
    return repr(word if len(word) <= 80 else word[:77] + "...")


def _frontend(df: Dockerfile, build_args: Mapping[str, str]) -> str | None:
    return build_args.get("BUILDKIT_SYNTAX") or df.syntax


def _resolve_target(df: Dockerfile, stage: str | None) -> int:
    if stage is None:
        return len(df.stages) - 1
    found = [s.index for s in df.stages if s.name == stage.lower()]
    if found:
        return found[-1]
    names = [s.name for s in df.stages if s.name]
    close = difflib.get_close_matches(stage.lower(), names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    available = ", ".join(names) if names else "none are named"
    raise BtError(
        f"target stage {stage!r} could not be found{hint}; available stages: {available}",
        path=df.path,
    )


class _Evaluation:
    """What one build (target stage + build args + platform) of a Dockerfile reads.

    ``legacy`` applies the rules of BuildKit v0.8 (the frontend built into Docker 20.10) where
    they differ for builds that succeed: ARG defaults see the environment from before their
    instruction, an ARG before FROM without a value hides the automatic platform args, mount
    values are not substituted, and ADD fetches only http(s) URLs.
    """

    def __init__(
        self,
        df: Dockerfile,
        target: int,
        build_args: Mapping[str, str],
        platform: str | None,
        build_platform: str | None,
        legacy: bool,
    ):
        self.df = df
        self.target = target
        self.build_args = build_args
        self.legacy = legacy
        self.lexer = Lexer(df.escape)
        self.reasons: list[str] = []
        self.sources: list[SourceRef] = []
        self.remote: list[str] = []
        self.from_images: list[str] = []
        self.images: list[ImageRef] = []
        self.secrets: list[SecretMount] = []
        self.described: list[InstructionMeaning] = []
        self.arg_names: set[str] = set()  # the names ARG instructions of reached stages declare
        self.has_run = False
        self.by_name = {s.name: s.index for s in df.stages if s.name}
        self.globals = _Env({}, None)
        # What an in-stage ARG without a value inherits (v0.8: None hides a platform arg).
        self.meta: dict[str, _Value | None] = {}
        self.set_global_args(platform, build_platform)
        self.bases = [self.resolve_base(stage) for stage in df.stages]

    def whole(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    def expand(self, word: str, env: _Env, what: str, seen: set[str] | None = None) -> _Value:
        try:
            return self.lexer.word(word, env.lookup(seen))
        except Unresolved as err:
            return _Unknown(str(err))
        except ExpandError as err:
            where = f"{what}: " if what else ""
            return _Unknown(f"{where}{err} (Docker fails this build)", fails=True)

    def set_global_args(self, platform: str | None, build_platform: str | None) -> None:
        """Values FROM lines see: automatic platform args, then ARGs before the first FROM."""
        values = self.globals.values
        values.update(_platform_args("BUILD", build_platform, "the build platform"))
        values.update(_platform_args("TARGET", platform, "the target platform"))
        if self.legacy:
            del values["BUILDOSVERSION"], values["TARGETOSVERSION"]
        else:
            values["TARGETSTAGE"] = self.df.stages[self.target].name or "default"
        for name in values:
            if name in self.build_args:
                values[name] = self.build_args[name]
        self.meta.update(values)
        for name, default in self.df.meta_args:
            value: _Value | None = None
            if name in self.build_args:
                value = self.build_args[name]
            elif default is not None:
                value = self.expand(default, self.globals, f"ARG {name}")
                if self.legacy and isinstance(value, _Unknown) and value.fails:
                    value = ""  # v0.8 ignored errors in these defaults
            if self.legacy:
                self.meta[name] = value
                values[name] = "" if value is None else value
            elif value is not None:
                values[name] = self.meta[name] = value

    def resolve_base(self, stage: Stage) -> _Base:
        where = f"line {stage.line}: FROM {stage.base}"
        uses: set[str] = set()
        platform: _Value | None = None
        # Docker expands every stage's FROM, reached or not, so a failure anywhere fails it.
        if stage.platform_flag is not None:
            platform = self.expand(stage.platform_flag, self.globals, where, uses)
            if platform == "":
                self.whole(f"{where}: empty platform value (Docker fails this build)")
            elif isinstance(platform, _Unknown) and platform.fails:
                self.whole(platform.reason)
        base = self.base_ref(stage, where, uses)
        return replace(base, uses=frozenset(uses), platform=_value_meaning(platform))

    def base_ref(self, stage: Stage, where: str, uses: set[str]) -> _Base:
        ref = self.expand(stage.base, self.globals, where, uses)
        if isinstance(ref, _Unknown):
            if ref.fails:
                self.whole(ref.reason)
                return _Base("unknown", reason=ref.reason)
            return _Base("unknown", reason=f"{where}: the base is unknown: {ref.reason}")
        if not ref:
            reason = f"{where}: base name should not be blank (Docker fails this build)"
            self.whole(reason)
            return _Base("unknown", reason=reason)
        # A FROM names a stage only if that stage is declared above it.
        earlier = [s.index for s in self.df.stages[: stage.index] if s.name == ref]
        if earlier:
            return _Base("stage", stage=earlier[-1])
        return _Base("scratch") if ref == "scratch" else _Base("image", ref=ref)

    def stage_ref(self, name: str, by_index: bool) -> int | None:
        if by_index and STAGE_INDEX.fullmatch(name):
            return int(name)  # the parser checked the range
        return self.by_name.get(name.lower())

    def triggers(self, index: int) -> list[Instruction]:
        """ONBUILD triggers of a stage's base stage: BuildKit runs them first in the stage."""
        base = self.bases[index]
        if base.kind != "stage":
            return []
        instructions = self.df.stages[base.stage].instructions
        return [ins.trigger for ins in instructions if ins.trigger is not None]

    def dependencies(self, index: int) -> Iterable[tuple[Instruction, _Use, int | str]]:
        """Stages (indexes) and images a stage copies or mounts from, by instruction."""
        for ins in [*self.triggers(index), *self.df.stages[index].instructions]:
            if ins.keyword == "COPY":
                source = flag_value(ins, "from")
                if source is not None:
                    found = self.stage_ref(source, by_index=True)
                    yield ins, "copy", source if found is None else found
            elif ins.keyword == "RUN":
                for spec in flag_values(ins, "mount"):
                    # A mount without from= takes "scratch" (or a stage of that name).
                    source = mount_fields(spec).get("from", "") or "scratch"
                    found = self.stage_ref(source, by_index=False)
                    yield ins, "mount", source if found is None else found

    def reached(self) -> list[int]:
        seen: set[int] = set()
        todo = [self.target]
        while todo:
            index = todo.pop()
            if index in seen:
                continue
            seen.add(index)
            base = self.bases[index]
            if base.kind == "stage":
                todo.append(base.stage)
            todo += [dep for _, _, dep in self.dependencies(index) if isinstance(dep, int)]
        return sorted(seen)

    def run(self) -> StageReads:
        frontend = _frontend(self.df, self.build_args)
        if frontend and not _DOCKERFILE_FRONTEND.fullmatch(frontend):
            self.whole(f"the build runs frontend {frontend!r}, whose semantics bt does not know")
        if frontend and frontend == self.df.syntax and self.df.syntax_line is not None:
            # The frontend is an image BuildKit pulls and runs: pinned like any external one.
            self.images.append(ImageRef(frontend, self.df.syntax_line, "syntax"))
        reached = self.reached()
        final_envs: dict[int, _Env] = {}
        external: list[str] = []
        stages: list[Meaning] = []
        for index in reached:
            base = self.bases[index]
            if base.kind == "stage":
                env = final_envs[base.stage].copy()
            elif base.kind == "scratch":
                env = _Env({"PATH": _DEFAULT_PATH}, None)
            elif base.kind == "image":
                external.append(base.ref)
                env = _Env({}, f"is not set in the Dockerfile and may be set by image {base.ref}")
            else:
                self.whole(base.reason)
                env = _Env({}, f"is unknown: {base.reason}")
            self.note_images(index)
            for ins in self.triggers(index):
                self.apply(ins, env)
            stages.append(self.stage_meaning(index, env))
            final_envs[index] = env
        unique_sources = list(dict.fromkeys(self.sources))
        unique_sources.sort(key=lambda ref: ref.line)
        return StageReads(
            sources=tuple(unique_sources),
            whole_context=self._whole_context(),
            remote_sources=tuple(dict.fromkeys(self.remote)),
            has_run=self.has_run,
            external_bases=tuple(dict.fromkeys(external)),
            stage_lines=tuple(
                (self.df.stages[i].line, self.df.stages[i].end_line) for i in reached
            ),
            from_images=tuple(dict.fromkeys(self.from_images)),
            meaning=(*self.header(reached), *stages),
            instructions=tuple(self.described),
            images=tuple(dict.fromkeys(self.images)),
            secrets=tuple(dict.fromkeys(self.secrets)),
        )

    def note_images(self, index: int) -> None:
        """The images a reached stage uses, and the stages it uses before they are built."""
        stage, base = self.df.stages[index], self.bases[index]
        arg = _one_arg(stage.base)
        if base.kind == "image":
            self.images.append(ImageRef(base.ref, stage.line, "from", arg))
        elif base.kind == "unknown":
            self.images.append(ImageRef(stage.base, stage.line, "from", arg, unresolved=True))
        for ins, use, dep in self.dependencies(index):
            if isinstance(dep, int) and dep >= index:
                self.whole(
                    f"stage at line {stage.line} copies or mounts from stage "
                    f"{self.df.stages[dep].name or dep}, which is not defined before it "
                    "(Docker fails this build)"
                )
            elif isinstance(dep, str) and dep != "scratch":
                self.from_images.append(dep)
                self.images.append(ImageRef(dep, ins.line, use))

    def stage_id(self, index: int) -> str | int:
        return self.df.stages[index].name or index

    def stage_meaning(self, index: int, env: _Env) -> Meaning:
        """Applies the stage's own instructions to ``env`` and describes them."""
        stage, base = self.df.stages[index], self.bases[index]
        stage_id = self.stage_id(index)
        resolved: Meaning
        if base.kind == "stage":
            resolved = ("stage", self.stage_id(base.stage))
        elif base.kind == "image":
            resolved = ("image", keyed_reference(base.ref))
        else:
            resolved = (base.kind,) if base.kind == "scratch" else ("unknown", stage.base)
        head: Meaning = ("FROM", resolved, base.platform)
        self.described.append(described(stage_id, stage.line, "FROM", head))
        items: list[Meaning] = [head]
        for ins in stage.instructions:
            arg_values = self.apply(ins, env)
            if arg_values is not None:
                item: Meaning = arg_meaning(arg_values)
            elif ins.keyword == "COPY":
                item = self.copy_meaning(ins)
            else:
                item = instruction_meaning(ins)
            self.described.append(described(stage_id, ins.line, ins.keyword, item))
            items.append(item)
        return ("stage", stage_id, *items)

    def copy_meaning(self, ins: Instruction) -> Meaning:
        """``COPY --from=<image>`` keyed by the image as Docker resolves it (``python`` is
        ``docker.io/library/python:latest``), like a FROM: spelling it either way is one key."""
        item = instruction_meaning(ins)
        source = flag_value(ins, "from")
        if source is None or self.stage_ref(source, by_index=True) is not None:
            return item
        flags = tuple(
            (name, keyed_reference(source) if name == "from" and value == source else value)
            for name, value in ins.flags
        )
        return (item[0], item[1], flags, *item[3:])

    def header(self, reached: list[int]) -> tuple[Meaning, Meaning]:
        """The directives, and the ARGs before the first FROM that the reached stages see."""
        df = self.df
        seen = self.arg_names.union(*(self.bases[i].uses for i in reached))
        # By the value the build gives them (a str, None when unset, or UNKNOWN).
        global_args = {name: _value_meaning(self.meta.get(name)) for name, _ in df.meta_args}
        used = tuple((name, value) for name, value in global_args.items() if name in seen)
        return (("directives", df.syntax, df.escape, df.check), ("global-args", *used))

    def _whole_context(self) -> str | None:
        if not self.reasons:
            return None
        more = len(self.reasons) - 1
        return self.reasons[0] + (f" (and {more} more)" if more else "")

    def apply(self, ins: Instruction, env: _Env) -> list[tuple[str, Meaning]] | None:
        """Applies one instruction; for ARG, returns each name with the value it gets."""
        kw = ins.keyword
        if kw == "ARG":
            return self.apply_arg(ins, env)
        if kw == "ENV":
            # Every word of one ENV sees the environment from before that instruction.
            what = f"ENV at line {ins.line}"
            pairs = [
                (self.expand(ins.args[i], env, what), self.expand(ins.args[i + 1], env, what))
                for i in range(0, len(ins.args), 2)
            ]
            for key, value in pairs:
                if isinstance(key, _Unknown):
                    env.values.clear()
                    env.fallback = f"is unknown: the name set by {what} is unknown: {key.reason}"
                else:
                    env.values[key] = value
        elif kw in ("COPY", "ADD"):
            self.apply_copy(ins, env)
        elif kw == "RUN":
            self.has_run = True
            self.apply_mounts(ins, env)
        return None

    def apply_arg(self, ins: Instruction, env: _Env) -> list[tuple[str, Meaning]]:
        # A build arg wins; else the ARG's default; else the value of the ARG of that name
        # before the first FROM; else the variable stays unset.
        before = env.copy() if self.legacy else env
        values: list[tuple[str, Meaning]] = []
        for word in ins.args:
            name, default = arg_pair(word)
            value: _Value | None
            if name in self.build_args:
                value = self.build_args[name]
            elif default is not None:
                value = self.expand(default, before, f"ARG {name} at line {ins.line}")
            else:
                value = self.meta.get(name)
            if value is not None and name not in _NON_ENV_ARGS:
                env.values[name] = value
            self.arg_names.add(name)
            values.append((name, _value_meaning(value)))
        return values

    def resolve_source(self, ins: Instruction, label: str, word: str, env: _Env) -> str | None:
        value = self.expand(word, env, "")
        if isinstance(value, _Unknown):
            self.whole(
                f"line {ins.line}: cannot resolve {label} source {_quote(word)}: {value.reason}"
            )
            return None
        return value

    def apply_copy(self, ins: Instruction, env: _Env) -> None:
        kw = ins.keyword
        if kw == "COPY" and flag_value(ins, "from") is not None:
            return  # reads another stage or an image, not the context
        parents = bool_flag(ins, "parents")
        excludes = flag_values(ins, "exclude")
        for word in ins.args[:-1]:
            if is_inline_source(word):
                continue  # a heredoc: inline content
            source = self.resolve_source(ins, kw, word, env)
            if source is None:
                continue
            if kw == "ADD" and _is_remote(source, self.legacy):
                self.remote.append(source)
                continue
            if kw == "COPY" and source.startswith(("http://", "https://")):
                self.whole(
                    f"line {ins.line}: COPY source {_quote(source)} is a URL, which COPY does not "
                    "accept (Docker fails this build)"
                )
                continue
            self.sources.append(SourceRef(_context_path(source), ins.line, kw, parents, excludes))

    def apply_mounts(self, ins: Instruction, env: _Env) -> None:
        label = "RUN --mount"
        for spec in flag_values(ins, "mount"):
            fields = mount_fields(spec)
            if fields.get("from"):
                continue  # a stage or an image, not the context
            raw_type = fields.get("type", "bind")
            # BuildKit v0.8 took mount values literally.
            mount_type = raw_type if self.legacy else self.expand(raw_type, env, "")
            if isinstance(mount_type, _Unknown):
                self.whole(f"line {ins.line}: cannot resolve {label} type: {mount_type.reason}")
                continue
            if mount_type.lower() not in _MOUNT_TYPES:
                if not self.legacy:  # v0.8 rejects `type=$T`; current BuildKit may accept it
                    self.whole(
                        f"line {ins.line}: unsupported mount type {mount_type!r} "
                        "(Docker fails this build)"
                    )
                continue
            if mount_type.lower() == "secret":
                self.secrets.append(self.secret_mount(ins.line, fields, env))
            if mount_type.lower() != "bind":
                continue  # cache and tmpfs start empty; secret and ssh come from the client
            source: str | None = fields.get("source", "")
            if not self.legacy:
                source = self.resolve_source(ins, label, source or "", env)
            if source is not None:
                self.sources.append(SourceRef(_context_path(source), ins.line, label, False))

    def secret_mount(self, line: int, fields: dict[str, str], env: _Env) -> SecretMount:
        """The secret a ``type=secret`` mount asks for (values expanded, but not by v0.8)."""
        values = {k: v for k, v in fields.items() if k in ("id", "source", "target", "required")}
        if not self.legacy:
            expanded = {k: self.expand(v, env, "") for k, v in values.items()}
            if any(isinstance(v, _Unknown) for v in expanded.values()):
                return SecretMount(None, line, False)
            values = {k: v for k, v in expanded.items() if isinstance(v, str)}
        sid, required = secret_of(values)
        return SecretMount(sid, line, required)


def context_reads(
    df: Dockerfile,
    stage: str | None,
    build_args: Mapping[str, str],
    *,
    platform: str | None = None,
    build_platform: str | None = None,
) -> StageReads:
    """What a build of ``stage`` (None: the last stage, Docker's default) reads.

    ``platform`` / ``build_platform`` (``os/arch[/variant]``) give TARGETPLATFORM and
    BUILDPLATFORM and their parts; when omitted those args are unknown unless ``build_args``
    sets them, so a context path that depends on them makes the whole context the input.
    Raises BtError only for an unknown stage or platform; whatever Docker would reject at build
    time, or bt cannot resolve, sets ``whole_context`` instead.
    """
    target = _resolve_target(df, stage)
    current = _Evaluation(df, target, build_args, platform, build_platform, False).run()
    if _CURRENT_FRONTEND.fullmatch(_frontend(df, build_args) or ""):
        return current
    # Docker 20.10's built-in frontend and current ones are both in use: a build reads what
    # either would read.
    legacy = _Evaluation(df, target, build_args, platform, build_platform, True).run()
    return _union(current, legacy)


def _union(first: StageReads, second: StageReads) -> StageReads:
    def merged(a: tuple[_T, ...], b: tuple[_T, ...]) -> tuple[_T, ...]:
        return tuple(dict.fromkeys(a + b))

    return StageReads(
        sources=tuple(sorted(merged(first.sources, second.sources), key=lambda ref: ref.line)),
        whole_context=first.whole_context or second.whole_context,
        remote_sources=merged(first.remote_sources, second.remote_sources),
        has_run=first.has_run or second.has_run,
        external_bases=merged(first.external_bases, second.external_bases),
        stage_lines=tuple(sorted(merged(first.stage_lines, second.stage_lines))),
        from_images=merged(first.from_images, second.from_images),
        # Both meanings when the rule sets differ on it (e.g. ARG defaults that see earlier ARGs).
        meaning=first.meaning
        if first.meaning == second.meaning
        else (first.meaning, second.meaning),
        instructions=merged(first.instructions, second.instructions),
        images=merged(first.images, second.images),
        secrets=merged(first.secrets, second.secrets),
    )


def keyed_reference(ref: str) -> str:
    """An image reference as a key holds it: normalised as Docker resolves it, so ``python``,
    ``python:latest`` and ``docker.io/library/python:latest`` are one image and one key (a
    reference Docker would refuse is kept as written: the build fails on it anyway)."""
    from buildtool.registry.reference import normalise_reference

    try:
        return normalise_reference(ref)
    except BtError:
        return ref
