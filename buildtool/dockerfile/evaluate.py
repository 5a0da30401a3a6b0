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

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TypeVar

from buildtool.dockerfile.environment import (
    CURRENT_FRONTEND,
    DEFAULT_PATH,
    DOCKERFILE_FRONTEND,
    MOUNT_TYPES,
    NON_ENV_ARGS,
    Base,
    Env,
    Named,
    Unknown,
    Use,
    Value,
    context_path,
    frontend_of,
    is_remote,
    one_arg,
    platform_args,
    quote,
    resolve_target,
    value_meaning,
)
from buildtool.dockerfile.flags import bool_flag, flag_value, flag_values, mount_fields, secret_of
from buildtool.dockerfile.meaning import arg_meaning, described, instruction_meaning
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

_T = TypeVar("_T")


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
        contexts: Mapping[str, str | None],
    ):
        self.df = df
        # Named contexts: name -> the image it stands for, or None for a directory. BuildKit
        # looks them up before stages: a stage of the same name is then never built.
        self.contexts = contexts
        self.named_sources: list[SourceRef] = []
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
        self.globals = Env({}, None)
        # What an in-stage ARG without a value inherits (v0.8: None hides a platform arg).
        self.meta: dict[str, Value | None] = {}
        self.set_global_args(platform, build_platform)
        self.bases = [self.resolve_base(stage) for stage in df.stages]

    def whole(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    def expand(self, word: str, env: Env, what: str, seen: set[str] | None = None) -> Value:
        try:
            return self.lexer.word(word, env.lookup(seen))
        except Unresolved as err:
            return Unknown(str(err))
        except ExpandError as err:
            where = f"{what}: " if what else ""
            return Unknown(f"{where}{err} (Docker fails this build)", fails=True)

    def set_global_args(self, platform: str | None, build_platform: str | None) -> None:
        """Values FROM lines see: automatic platform args, then ARGs before the first FROM."""
        values = self.globals.values
        values.update(platform_args("BUILD", build_platform, "the build platform"))
        values.update(platform_args("TARGET", platform, "the target platform"))
        if self.legacy:
            del values["BUILDOSVERSION"], values["TARGETOSVERSION"]
        else:
            values["TARGETSTAGE"] = self.df.stages[self.target].name or "default"
        for name in values:
            if name in self.build_args:
                values[name] = self.build_args[name]
        self.meta.update(values)
        for name, default in self.df.meta_args:
            value: Value | None = None
            if name in self.build_args:
                value = self.build_args[name]
            elif default is not None:
                value = self.expand(default, self.globals, f"ARG {name}")
                if self.legacy and isinstance(value, Unknown) and value.fails:
                    value = ""  # v0.8 ignored errors in these defaults
            if self.legacy:
                self.meta[name] = value
                values[name] = "" if value is None else value
            elif value is not None:
                values[name] = self.meta[name] = value

    def resolve_base(self, stage: Stage) -> Base:
        where = f"line {stage.line}: FROM {stage.base}"
        uses: set[str] = set()
        platform: Value | None = None
        # Docker expands every stage's FROM, reached or not, so a failure anywhere fails it.
        if stage.platform_flag is not None:
            platform = self.expand(stage.platform_flag, self.globals, where, uses)
            if platform == "":
                self.whole(f"{where}: empty platform value (Docker fails this build)")
            elif isinstance(platform, Unknown) and platform.fails:
                self.whole(platform.reason)
        base = self.base_ref(stage, where, uses)
        return replace(base, uses=frozenset(uses), platform=value_meaning(platform))

    def base_ref(self, stage: Stage, where: str, uses: set[str]) -> Base:
        ref = self.expand(stage.base, self.globals, where, uses)
        if isinstance(ref, Unknown):
            if ref.fails:
                self.whole(ref.reason)
                return Base("unknown", reason=ref.reason)
            return Base("unknown", reason=f"{where}: the base is unknown: {ref.reason}")
        if not ref:
            reason = f"{where}: base name should not be blank (Docker fails this build)"
            self.whole(reason)
            return Base("unknown", reason=reason)
        if ref in self.contexts:
            image = self.contexts[ref]
            if image is None:
                return Base("dircontext", reason=ref)
            return Base("image", ref=image, context=ref)
        # A FROM names a stage only if that stage is declared above it.
        earlier = [s.index for s in self.df.stages[: stage.index] if s.name == ref]
        if earlier:
            return Base("stage", stage=earlier[-1])
        return Base("scratch") if ref == "scratch" else Base("image", ref=ref)

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

    def dependencies(self, index: int) -> Iterable[tuple[Instruction, Use, int | str | Named]]:
        """Stages (indexes), named contexts and images a stage copies or mounts from."""
        for ins in [*self.triggers(index), *self.df.stages[index].instructions]:
            if ins.keyword == "COPY":
                source = flag_value(ins, "from")
                if source is not None:
                    yield ins, "copy", self.from_ref(source, True, ins.line)
            elif ins.keyword == "RUN":
                for spec in flag_values(ins, "mount"):
                    # A mount without from= takes "scratch" (or a stage of that name).
                    source = mount_fields(spec).get("from", "") or "scratch"
                    yield ins, "mount", self.from_ref(source, False, ins.line)

    def from_ref(self, source: str, by_index: bool, line: int) -> int | str | Named:
        if source in self.contexts:
            return Named(source)
        found = self.stage_ref(source, by_index)
        replaced = None if found is None else self.df.stages[found].name
        if replaced in self.contexts:
            # BuildKit gives the context here too; bt hands contexts over where they are named.
            raise BtError(
                f"--from={source} is stage {replaced}, which named context {replaced!r} "
                f"replaces: write --from={replaced}",
                self.df.path,
                line,
            )
        return source if found is None else found

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
        frontend = frontend_of(self.df, self.build_args)
        if frontend and not DOCKERFILE_FRONTEND.fullmatch(frontend):
            self.whole(f"the build runs frontend {frontend!r}, whose semantics bt does not know")
        if frontend and frontend == self.df.syntax and self.df.syntax_line is not None:
            # The frontend is an image BuildKit pulls and runs: pinned like any external one.
            self.images.append(ImageRef(frontend, self.df.syntax_line, "syntax"))
        reached = self.reached()
        final_envs: dict[int, Env] = {}
        external: list[str] = []
        stages: list[Meaning] = []
        for index in reached:
            base = self.bases[index]
            if base.kind == "stage":
                env = final_envs[base.stage].copy()
            elif base.kind == "scratch":
                env = Env({"PATH": DEFAULT_PATH}, None)
            elif base.kind == "image":
                external.append(base.ref)
                env = Env({}, f"is not set in the Dockerfile and may be set by image {base.ref}")
            elif base.kind == "dircontext":
                raise BtError(
                    f"FROM {base.reason}: named context {base.reason!r} is a directory, which bt "
                    "reads only with COPY --from= and RUN --mount=from=",
                    self.df.path,
                    self.df.stages[index].line,
                )
            else:
                self.whole(base.reason)
                env = Env({}, f"is unknown: {base.reason}")
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
            named_sources=tuple(dict.fromkeys(self.named_sources)),
        )

    def note_images(self, index: int) -> None:
        """The images a reached stage uses, and the stages it uses before they are built."""
        stage, base = self.df.stages[index], self.bases[index]
        arg = one_arg(stage.base)
        if base.kind == "image":
            self.images.append(ImageRef(base.ref, stage.line, "from", arg, context=base.context))
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
            elif isinstance(dep, Named) and self.contexts[dep.name] is not None:
                image = self.contexts[dep.name]
                assert image is not None
                self.from_images.append(image)
                self.images.append(ImageRef(image, ins.line, use, context=dep.name))

    def stage_id(self, index: int) -> str | int:
        return self.df.stages[index].name or index

    def stage_meaning(self, index: int, env: Env) -> Meaning:
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
        global_args = {name: value_meaning(self.meta.get(name)) for name, _ in df.meta_args}
        used = tuple((name, value) for name, value in global_args.items() if name in seen)
        return (("directives", df.syntax, df.escape, df.check), ("global-args", *used))

    def _whole_context(self) -> str | None:
        if not self.reasons:
            return None
        more = len(self.reasons) - 1
        return self.reasons[0] + (f" (and {more} more)" if more else "")

    def apply(self, ins: Instruction, env: Env) -> list[tuple[str, Meaning]] | None:
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
                if isinstance(key, Unknown):
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

    def apply_arg(self, ins: Instruction, env: Env) -> list[tuple[str, Meaning]]:
        # A build arg wins; else the ARG's default; else the value of the ARG of that name
        # before the first FROM; else the variable stays unset.
        before = env.copy() if self.legacy else env
        values: list[tuple[str, Meaning]] = []
        for word in ins.args:
            name, default = arg_pair(word)
            value: Value | None
            if name in self.build_args:
                value = self.build_args[name]
            elif default is not None:
                value = self.expand(default, before, f"ARG {name} at line {ins.line}")
            else:
                value = self.meta.get(name)
            if value is not None and name not in NON_ENV_ARGS:
                env.values[name] = value
            self.arg_names.add(name)
            values.append((name, value_meaning(value)))
        return values

    def resolve_source(self, ins: Instruction, label: str, word: str, env: Env) -> str | None:
        value = self.expand(word, env, "")
        if isinstance(value, Unknown):
            self.whole(
                f"line {ins.line}: cannot resolve {label} source {quote(word)}: {value.reason}"
            )
            return None
        return value

    def directory_context(self, name: str | None) -> str | None:
        """``name`` when it names a named context that is a directory."""
        if name is None or name not in self.contexts or self.contexts[name] is not None:
            return None
        return name

    def named_source(self, word: str, env: Env) -> str:
        """A path read from a directory context; its whole directory when not known."""
        value = self.expand(word, env, "")
        return "." if isinstance(value, Unknown) else context_path(value)

    def apply_copy(self, ins: Instruction, env: Env) -> None:
        kw = ins.keyword
        origin = flag_value(ins, "from") if kw == "COPY" else None
        context = self.directory_context(origin)
        if origin is not None and context is None:
            return  # reads another stage or an image, not the context
        parents = bool_flag(ins, "parents")
        excludes = flag_values(ins, "exclude")
        for word in ins.args[:-1]:
            if is_inline_source(word):
                continue  # a heredoc: inline content
            if context is not None:
                path = self.named_source(word, env)
                self.named_sources.append(
                    SourceRef(path, ins.line, kw, parents, excludes, context=context)
                )
                continue
            source = self.resolve_source(ins, kw, word, env)
            if source is None:
                continue
            if kw == "ADD" and is_remote(source, self.legacy):
                self.remote.append(source)
                continue
            if kw == "COPY" and source.startswith(("http://", "https://")):
                self.whole(
                    f"line {ins.line}: COPY source {quote(source)} is a URL, which COPY does not "
                    "accept (Docker fails this build)"
                )
                continue
            self.sources.append(SourceRef(context_path(source), ins.line, kw, parents, excludes))

    def apply_mounts(self, ins: Instruction, env: Env) -> None:
        label = "RUN --mount"
        for spec in flag_values(ins, "mount"):
            fields = mount_fields(spec)
            context = self.directory_context(fields.get("from"))
            if context is not None:
                word = fields.get("source", "")
                path = context_path(word) if self.legacy else self.named_source(word, env)
                self.named_sources.append(SourceRef(path, ins.line, label, False, context=context))
                continue
            if fields.get("from"):
                continue  # a stage or an image, not the context
            raw_type = fields.get("type", "bind")
            # BuildKit v0.8 took mount values literally.
            mount_type = raw_type if self.legacy else self.expand(raw_type, env, "")
            if isinstance(mount_type, Unknown):
                self.whole(f"line {ins.line}: cannot resolve {label} type: {mount_type.reason}")
                continue
            if mount_type.lower() not in MOUNT_TYPES:
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
                self.sources.append(SourceRef(context_path(source), ins.line, label, False))

    def secret_mount(self, line: int, fields: dict[str, str], env: Env) -> SecretMount:
        """The secret a ``type=secret`` mount asks for (values expanded, but not by v0.8)."""
        values = {k: v for k, v in fields.items() if k in ("id", "source", "target", "required")}
        if not self.legacy:
            expanded = {k: self.expand(v, env, "") for k, v in values.items()}
            if any(isinstance(v, Unknown) for v in expanded.values()):
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
    contexts: Mapping[str, str | None] | None = None,
) -> StageReads:
    """What a build of ``stage`` (None: the last stage, Docker's default) reads.

    ``platform`` / ``build_platform`` (``os/arch[/variant]``) give TARGETPLATFORM and
    BUILDPLATFORM and their parts; when omitted those args are unknown unless ``build_args``
    sets them, so a context path that depends on them makes the whole context the input.
    ``contexts`` are the build's named contexts: name -> the image it stands for, or None for
    a directory (whose reads are ``named_sources``).
    Raises BtError only for an unknown stage or platform, or a directory context used as a
    FROM; whatever Docker would reject at build time, or bt cannot resolve, sets
    ``whole_context`` instead.
    """
    if df.opaque is not None:
        return _opaque_reads(df)
    target = resolve_target(df, stage)
    named = contexts or {}
    current = _Evaluation(df, target, build_args, platform, build_platform, False, named).run()
    if CURRENT_FRONTEND.fullmatch(frontend_of(df, build_args) or ""):
        return current
    # Docker 20.10's built-in frontend and current ones are both in use: a build reads what
    # either would read.
    legacy = _Evaluation(df, target, build_args, platform, build_platform, True, named).run()
    return _union(current, legacy)


def _opaque_reads(df: Dockerfile) -> StageReads:
    """A file another frontend reads (``Dockerfile.opaque``): bt cannot know what it reads or
    runs, so the whole context is the input, the file's whole text is keyed, and the frontend
    image is pinned like any external image."""
    assert df.syntax is not None and df.syntax_line is not None
    reason = f"the build runs frontend {df.syntax!r}, whose semantics bt does not know"
    return StageReads(
        sources=(),
        whole_context=reason,
        remote_sources=(),
        has_run=True,  # it may run anything: never under emulation unless allowed
        external_bases=(),
        stage_lines=(),
        meaning=(("directives", df.syntax, None, None), ("opaque", df.opaque)),
        images=(ImageRef(df.syntax, df.syntax_line, "syntax"),),
    )


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
        named_sources=merged(first.named_sources, second.named_sources),
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
