"""Evaluate every BUILD.images file of a workspace into image targets and groups.

A BUILD.images file declares targets of its own package (its directory) by default; any call
may pass ``package="sub/dir"`` to declare them in a package below the file's one, so the
workspace's top-level file can describe the whole matrix (``//matrix:large-v3-zh``).
Paths given to ``image()`` are relative to the declaring file's directory (``context``) and to
the context (``dockerfile``, ``inputs``), as in docker buildx bake.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildtool.errors import BtError, StarlarkError
from buildtool.platforms import normalise
from buildtool.registry.reference import is_repository, is_tag, parse_reference
from buildtool.secrets import (
    SecretSource,
    conceal,
    inside,
    looks_secret,
    merged,
    parse_table,
    source_path,
)
from buildtool.workspace import starlark
from buildtool.workspace.config import BUILD_FILE_NAME, Config
from buildtool.workspace.labels import Label, check_name, check_package, parse_label
from buildtool.workspace.target import Group, ImageTarget, Location, NamedContext

_ARG_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# An OCI annotation key: reverse-domain notation by convention (org.opencontainers.image.title).
_ANNOTATION_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,254}")


# One call of glob() in a BUILD file: (the file's directory, include, exclude, what it found).
GlobCall = tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True)
class LoadedWorkspace:
    targets: dict[Label, ImageTarget]
    groups: dict[Label, Group]
    build_files: tuple[str, ...]  # workspace-relative paths, sorted
    globs: tuple[GlobCall, ...] = ()  # what evaluation read of the file system besides them
    # The stat of every directory the search for BUILD files listed, by workspace path.
    searched: tuple[tuple[str, os.stat_result], ...] = ()


def find_build_files(
    root: Path, skip: Sequence[Path] = (), searched: dict[str, os.stat_result] | None = None
) -> list[str]:
    """Workspace-relative paths of every BUILD.images, skipping hidden directories and nested
    workspaces (a directory below the root that holds its own .cache-spec). ``searched``
    receives the stat of each directory listed, taken before listing it."""
    skipped = {str(p) for p in skip}
    found: list[str] = []
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        try:
            if searched is not None:
                searched[os.path.relpath(directory, root)] = os.stat(directory)
            entries = list(os.scandir(directory))
        except OSError as err:
            raise BtError(f"cannot list directory: {err.strerror}", directory) from None
        if directory != str(root) and any(e.name == ".cache-spec" for e in entries):
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                if entry.path not in skipped:
                    stack.append(entry.path)
            elif entry.name == BUILD_FILE_NAME:
                found.append(os.path.relpath(entry.path, root).replace(os.sep, "/"))
    return sorted(found)


def load_workspace(config: Config) -> LoadedWorkspace:
    root = config.root
    searched: dict[str, os.stat_result] = {}
    build_files = find_build_files(root, skip=[config.cache_dir], searched=searched)
    if not build_files:
        raise BtError(f"no {BUILD_FILE_NAME} file in the workspace", root)
    targets: dict[Label, ImageTarget] = {}
    groups: dict[Label, Group] = {}
    globs: list[GlobCall] = []
    for relpath in build_files:
        for decl in _evaluate(config, relpath, globs):
            first = targets.get(decl.label) or groups.get(decl.label)
            if first is not None:
                raise BtError(
                    f"duplicate target {decl.label} (first declared at {first.location})",
                    decl.location.path,
                    decl.location.line,
                )
            if isinstance(decl, ImageTarget):
                targets[decl.label] = decl
            else:
                groups[decl.label] = decl
    return LoadedWorkspace(
        targets, groups, tuple(build_files), tuple(globs), tuple(sorted(searched.items()))
    )


def _evaluate(config: Config, relpath: str, globs: list[GlobCall]) -> list[ImageTarget | Group]:
    path = config.root / relpath
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BtError(f"cannot read: {err}", relpath) from None
    code = starlark.compile_file(source, relpath, config.evaluation)
    file_package = posixpath.dirname(relpath)
    builtins = _Builtins(config, relpath, file_package, globs, source)
    starlark.execute(code, relpath, builtins.functions(), config.evaluation)
    return builtins.declared


class _Builtins:
    """The functions a BUILD file can call; each records what it declares."""

    def __init__(
        self,
        config: Config,
        relpath: str,
        file_package: str,
        globs: list[GlobCall],
        source: str = "",
    ):
        self.config = config
        self.source = source
        self._keyword_lines: dict[tuple[int, str], int] | None = None
        self.globs = globs
        self.path = relpath
        self.file_dir = file_package  # the directory of the BUILD file, workspace-relative
        self.declared: list[ImageTarget | Group] = []

    def functions(self) -> dict[str, Any]:
        found: dict[str, Callable[..., Any]] = {
            "image": self.image, "group": self.group, "glob": self.glob, "fail": self.fail,
        }  # fmt: skip
        return {name: self._checked(name, func) for name, func in found.items()}

    def _checked(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` whose wrong arguments are reported in the BUILD file's own words."""

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except TypeError as err:
                # Binding is checked only on failure: it costs more than the call itself.
                import inspect

                signature = inspect.signature(func)
                try:
                    signature.bind(*args, **kwargs)
                except TypeError as wrong:
                    message = _argument_error(name, signature, args, kwargs, wrong)
                    raise self.error(message) from None
                raise err

        return call

    def error(self, message: str) -> BtError:
        return StarlarkError(message, self.path, starlark.caller_line(self.path))

    def location(self) -> Location:
        return Location(self.path, starlark.caller_line(self.path) or 0)

    def keyword_location(self, call: Location, keyword: str) -> Location:
        """Where the call at ``call`` writes ``keyword =`` (its own line in a call spread over
        several); the call's line when it does not (``**common``). Parsed only when asked."""
        if self._keyword_lines is None:
            import ast

            self._keyword_lines = {}
            for node in ast.walk(ast.parse(self.source)):
                if isinstance(node, ast.Call):
                    for kw in node.keywords:
                        if kw.arg is not None:
                            self._keyword_lines.setdefault((node.lineno, kw.arg), kw.lineno)
        return Location(call.path, self._keyword_lines.get((call.line, keyword), call.line))

    def fail(self, message: object) -> None:
        raise self.error(f"fail: {message}")

    def _package(self, package: object) -> str:
        if package is None:
            return self.file_dir
        if not isinstance(package, str):
            raise self.error("package must be a string")
        joined = posixpath.normpath(posixpath.join(self.file_dir, package.strip("/")))
        joined = "" if joined == "." else joined
        try:
            return check_package(joined)
        except BtError as err:
            raise self.error(err.message) from None

    def _name(self, name: object, package: str) -> Label:
        if not isinstance(name, str):
            raise self.error("name must be a string")
        try:
            return Label(package, check_name(name))
        except BtError as err:
            raise self.error(err.message) from None

    def _relative(self, what: str, value: object, base: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(f"{what} must be a non-empty string")
        if os.path.isabs(value):
            raise self.error(f"{what} {value!r} must be a relative path")
        joined = posixpath.normpath(posixpath.join(base, value))
        if joined == ".." or joined.startswith("../"):
            raise self.error(f"{what} {value!r} points outside the workspace")
        return "" if joined == "." else joined

    def _strings(self, what: str, value: object) -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise self.error(f"{what} must be a list of strings")
        if not all(isinstance(v, str) for v in value):
            raise self.error(f"{what} must be a list of strings")
        return tuple(value)

    def _tests(self, value: object) -> tuple[str | tuple[str, ...], ...]:
        """Each test as Dockerfile's RUN/CMD forms: a string runs through the image's shell,
        a list of strings is exec form (after the image's ENTRYPOINT)."""
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise self.error("tests must be a list of commands (strings, or lists of strings)")
        tests: list[str | tuple[str, ...]] = []
        for test in value:
            if isinstance(test, str) and test.strip():
                tests.append(test)
            elif (
                isinstance(test, (list, tuple))
                and test
                and all(isinstance(word, str) for word in test)
            ):
                tests.append(tuple(test))
            else:
                raise self.error(
                    f"tests: {test!r} is not a command: write a non-empty string (run by the "
                    "image's shell) or a non-empty list of strings (exec form)"
                )
        return tuple(tests)

    def _mapping(self, what: str, value: object) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise self.error(f"{what} must be a dict of strings")
        result: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not _ARG_RE.fullmatch(key):
                raise self.error(f"{what}: invalid build-arg name {key!r}")
            if not isinstance(item, str):
                # No coercion: 1 and "1" are one value to Docker but two to a reader.
                raise self.error(f"{what}[{key!r}] must be a string, not {type(item).__name__}")
            result[key] = item
        return result

    def image(
        self,
        *,
        name: str,
        dockerfile: str = "Dockerfile",
        context: str = ".",
        stage: str | None = None,
        args: Mapping[str, str] | None = None,
        parents: Mapping[str, str] | None = None,
        platforms: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        repository: str | None = None,
        inputs: Sequence[str] | None = None,
        tests: Sequence[str | Sequence[str]] | None = None,
        package: str | None = None,
        aliases: Sequence[str] | None = None,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
        annotations: Mapping[str, str] | None = None,
        contexts: Mapping[str, str] | None = None,
    ) -> str:
        location = self.location()
        pkg = self._package(package)
        label = self._name(name, pkg)
        context_path = self._relative("context", context, self.file_dir)
        dockerfile_path = self._relative("dockerfile", dockerfile, context_path)
        if stage is not None and (not isinstance(stage, str) or not stage):
            raise self.error("stage must be a non-empty string")
        build_args = self._mapping("args", args or {})
        # An early error (a bad reference built from an arg, say) must not print such a value.
        conceal(*(value for name, value in build_args.items() if looks_secret(name)))
        parent_refs = self._mapping("parents", parents or {})
        parent_labels: list[tuple[str, Label]] = []
        for arg, text in sorted(parent_refs.items()):
            if arg in build_args:
                raise self.error(f"build arg {arg!r} is given both in args and in parents")
            try:
                parent_labels.append((arg, parse_label(text, pkg)))
            except BtError as err:
                raise self.error(f"parents[{arg!r}]: {err.message}") from None
        platform_list = (
            self.config.platforms if platforms is None else self._strings("platforms", platforms)
        )
        try:
            # One spelling per platform (``linux/arm64/v8`` is ``linux/arm64``).
            platform_list = tuple(normalise(platform) for platform in platform_list)
        except BtError as err:
            raise self.error(err.message) from None
        if not platform_list or len(set(platform_list)) != len(platform_list):
            raise self.error("platforms must be a non-empty list without repeats")
        tag_list = (label.name,) if tags is None else self._strings("tags", tags)
        for tag in tag_list:
            if not is_tag(tag):
                repo_part, colon, tag_part = str(tag).rpartition(":")
                if colon and repo_part and is_tag(tag_part):
                    raise self.error(
                        f"invalid tag {tag!r}: a tag has no repository; write "
                        f"repository = {repo_part!r}, tags = [{tag_part!r}]"
                    )
                raise self.error(f"invalid tag {tag!r}")
        repo = repository if repository is not None else (pkg or label.name)
        if not isinstance(repo, str) or not is_repository(repo):
            raise self.error(f"invalid repository {repo!r} (lower-case path components)")
        input_list = None
        inputs_at = None
        if inputs is not None:
            inputs_at = self.keyword_location(location, "inputs")
            input_list = tuple(
                self._relative("inputs", item, "") for item in self._strings("inputs", inputs)
            )
        test_list = () if tests is None else self._tests(tests)
        alias_list = () if aliases is None else self._aliases(aliases)
        secret_list = self._secrets(secrets, context_path)
        annotation_list = () if annotations is None else self._annotations(annotations)
        named = () if contexts is None else self._contexts(contexts, pkg, parent_refs)
        target = ImageTarget(
            label=label,
            context=context_path,
            dockerfile=dockerfile_path,
            stage=stage,
            args=tuple(sorted(build_args.items())),
            parents=tuple(parent_labels),
            platforms=tuple(sorted(platform_list)),
            tags=tag_list,
            repository=repo,
            inputs=input_list,
            tests=test_list,
            location=location,
            aliases=alias_list,
            inputs_location=inputs_at,
            secrets=secret_list,
            annotations=annotation_list,
            contexts=named,
        )
        self.declared.append(target)
        return str(label)

    def _contexts(
        self, value: object, package: str, parents: Mapping[str, str]
    ) -> tuple[NamedContext, ...]:
        """Named contexts; a directory is relative to the BUILD file, like ``context``."""
        from buildtool.workspace.contexts import parse_contexts

        return parse_contexts(
            value,
            package=package,
            relative=lambda what, path: self._relative(what, path, self.file_dir),
            root=self.config.root,
            taken=parents,
            error=self.error,
        )

    def _aliases(self, value: object) -> tuple[str, ...]:
        """Full references the image is also known by; Dockerfiles naming one build on it."""
        found = self._strings("aliases", value)
        for alias in found:
            try:
                ref = parse_reference(alias)
            except BtError as err:
                raise self.error(f"aliases: {err.message}") from None
            if ref.digest:
                raise self.error(f"aliases: {alias!r} has a digest; an alias names a tag")
        return found

    def _annotations(self, value: object) -> tuple[tuple[str, str], ...]:
        """Annotations of the image's index (not of its platform images), keys checked."""
        if not isinstance(value, Mapping):
            raise self.error("annotations must be a dict of strings")
        for key, item in value.items():
            if not isinstance(key, str) or not _ANNOTATION_KEY_RE.fullmatch(key):
                raise self.error(
                    f"annotations: invalid key {key!r} (letters, digits and . _ / -, e.g. "
                    "'org.opencontainers.image.title')"
                )
            if not isinstance(item, str):
                kind = type(item).__name__
                raise self.error(f"annotations[{key!r}] must be a string, not {kind}")
        return tuple(sorted(value.items()))

    def _secrets(self, value: object, context: str) -> tuple[SecretSource, ...]:
        """The target's own secrets over .cache-spec's; a secret file must stay out of the
        build context, which may be sent whole to the engine (and copied into the image)."""
        own = () if value is None else parse_table(value, "secrets", lambda m, _: self.error(m))
        found = merged(self.config.secrets, own)
        root = self.config.root
        for source in found:
            if source.kind == "src" and inside(source_path(root, source), root / context):
                raise self.error(
                    f"secret {source.id!r}: file {source.name!r} is inside the build context "
                    f"{context or '.'!r}, which bt may send to the engine; keep it outside"
                )
        return found

    def group(self, *, name: str, targets: Sequence[str], package: str | None = None) -> str:
        location = self.location()
        pkg = self._package(package)
        label = self._name(name, pkg)
        members = []
        for text in self._strings("targets", targets):
            try:
                members.append(parse_label(text, pkg))
            except BtError as err:
                raise self.error(f"targets: {err.message}") from None
        self.declared.append(Group(label, tuple(members), location))
        return str(label)

    def glob(self, include: Sequence[str], *, exclude: Sequence[str] = ()) -> list[str]:
        base = self.config.root / self.file_dir
        patterns = self._strings("glob include", include)
        excluded = self._strings("glob exclude", exclude)
        for pattern in (*patterns, *excluded):
            if os.path.isabs(pattern) or ".." in pattern.split("/"):
                raise self.error(f"glob pattern {pattern!r} must stay below the BUILD file")
        result = sorted(run_glob(base, patterns, excluded))
        self.globs.append((self.file_dir, patterns, excluded, tuple(result)))
        return result


# Words users bring from `docker buildx bake` (and the CLI) for what image() calls otherwise.
_FOREIGN_WORDS = {
    "target": "stage", "build_args": "args", "buildargs": "args",
    "tag": "tags", "platform": "platforms", "file": "dockerfile", "repo": "repository",
}  # fmt: skip


def _argument_error(
    name: str, signature: Any, args: tuple[Any, ...], kwargs: dict[str, Any], err: TypeError
) -> str:
    import difflib

    known = [p for p in signature.parameters if not p.startswith("_")]
    for word in kwargs:
        if word in known:
            continue
        hint = _FOREIGN_WORDS.get(word) if name == "image" else None
        if hint is None:
            close = difflib.get_close_matches(word, known, n=1)
            hint = close[0] if close else None
        suggestion = f" (did you mean {hint}=?)" if hint else ""
        return f"{name}() has no argument {word!r}{suggestion}"
    keyword_only = all(p.kind == p.KEYWORD_ONLY for p in signature.parameters.values())
    if args and keyword_only:
        return f"{name}() takes keyword arguments only, e.g. {name}({known[0]} = ...)"
    missing = [p for p in known if p not in kwargs
               and signature.parameters[p].default is signature.empty]  # fmt: skip
    if missing and not args:
        return f"{name}() needs argument {missing[0]!r}"
    return f"{name}(): {str(err).removeprefix('missing a required argument: ')}"


def run_glob(base: Path, patterns: Sequence[str], excluded: Sequence[str]) -> set[str]:
    """The files below ``base`` that glob(patterns, exclude = excluded) finds."""
    return set(_glob(base, patterns)) - set(_glob(base, excluded))


def _glob(base: Path, patterns: Sequence[str]) -> Iterator[str]:
    import glob as globlib

    for pattern in patterns:
        for match in globlib.glob(pattern, root_dir=base, recursive=True):
            if (base / match).is_file():
                yield match.replace(os.sep, "/")
