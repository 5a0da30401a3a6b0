"""Find the workspace root and read its ``.cache-spec`` (TOML)."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from buildtool.errors import BtError
from buildtool.platforms import normalise
from buildtool.registry.reference import is_repository, names_registry
from buildtool.secrets import SecretSource
from buildtool.state.cachedir import bt_cache_root
from buildtool.state.hashing import digest_bytes
from buildtool.workspace.ci_spec import CiSpec, read_ci
from buildtool.workspace.tagtemplate import DEFAULT_LATEST_RULE, LATEST_RULES, parse_template

if TYPE_CHECKING:
    from buildtool.retry import RetryPolicy

SPEC_NAME = ".cache-spec"
LOCKFILE_NAME = "images.lock"
BUILD_FILE_NAME = "BUILD.images"
DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")
DEFAULT_RUNNER = "ubuntu-latest"
DEFAULT_RETRY_SECONDS = 45.0  # ``[retry] max_seconds``: under a minute (see ``retry.py``)
BACKENDS = ("buildkit", "engine")
DEFAULT_MAX_STEPS = 1_000_000  # ~0.3 s of plain loop; bench's 10,000-target BUILD uses 90,700
DEFAULT_MAX_SIZE = 1_000_000  # elements or characters of one value
# The environment variable naming the cache directory, whatever .cache-spec says
CACHE_DIR_VARIABLE = "BT_CACHE_DIR"


class Budget(NamedTuple):
    """Limits of one BUILD file's evaluation (``[evaluation]``; enforced by ``budget.py``)."""

    max_steps: int = DEFAULT_MAX_STEPS
    max_size: int = DEFAULT_MAX_SIZE


class BuilderSpec(NamedTuple):
    """Where one platform's builds run."""

    platform: str
    host: str | None = None  # None: the local engine (DOCKER_HOST or the default socket)
    backend: str = "buildkit"
    jobs: int = 2
    allow_emulation: bool = False
    network: str | None = None  # --network for builds, e.g. "none" on engines without a bridge


class ReleaseSpec(NamedTuple):
    """``[release]``: the tags `bt merge` and `bt promote` add from the commit's git context."""

    tag_templates: tuple[str, ...] = ()
    latest: str = DEFAULT_LATEST_RULE  # when the template "latest" applies (tagtemplate.py)
    default_branch: str | None = None  # None: from the CI event or origin/HEAD


@dataclass(frozen=True)
class Config:
    root: Path
    spec_path: Path
    global_inputs: tuple[str, ...] = ()
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS
    cache_dir: Path = Path()
    registry: str | None = None
    push: bool = False
    insecure_registries: tuple[str, ...] = ()
    jobs: int = 4
    builders: dict[str, BuilderSpec] = field(default_factory=dict)
    ci: CiSpec = field(default_factory=CiSpec)  # [ci]: runners, event policies, logins
    evaluation: Budget = field(default_factory=Budget)  # BUILD.images evaluation limits
    # Build secrets every target gets unless it declares one of the same id ([secrets]).
    secrets: tuple[SecretSource, ...] = ()
    # How long transient faults of one source (a registry, an engine) are retried in total
    retry_max_seconds: float = DEFAULT_RETRY_SECONDS
    # Registries (host[:port][/prefix]) `bt promote` copies images to ([registry] mirrors)
    mirrors: tuple[str, ...] = ()
    release: ReleaseSpec = field(default_factory=ReleaseSpec)
    # ``[cache] layers``: a stale build offers its engine the last record's layers
    cache_layers: bool = True

    @property
    def retry(self) -> RetryPolicy:
        from buildtool.retry import RetryPolicy

        return RetryPolicy(max_seconds=self.retry_max_seconds)

    @property
    def lockfile(self) -> Path:
        return self.root / LOCKFILE_NAME

    def builder_for(self, platform: str) -> BuilderSpec:
        """The builder of ``platform`` (spelt as ``buildtool.platforms`` normalises it)."""
        return self.builders.get(platform) or self.builders.get("*") or BuilderSpec(platform)

    def runner_for(self, platform: str) -> str | tuple[str, ...]:
        runners = self.ci.runners
        return runners.get(platform) or runners.get("*") or DEFAULT_RUNNER


def registry_url_problem(url: object) -> str | None:
    """Why ``url`` is not a registry location ``host[:port][/prefix]`` images can be pushed
    below (``<url>/<repository>``), or None when it is one."""
    if not isinstance(url, str) or "://" in url or not url.strip("/"):
        return "must be host[:port][/prefix], without a scheme"
    # The part Docker reads as a path must be lower-case path components.
    first, _, rest = url.strip("/").partition("/")
    prefix = rest if names_registry(first) else url.strip("/")
    if prefix and not is_repository(prefix):
        return f"path {prefix!r} must be lower-case path components"
    return None


def find_root(start: Path) -> Path:
    """The nearest ancestor of ``start`` (inclusive) that holds ``.cache-spec``."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / SPEC_NAME).is_file():
            return directory
    raise BtError(f"no {SPEC_NAME} found in {start} or any parent directory (not a bt workspace)")


def load_config(root: Path) -> Config:
    path = root / SPEC_NAME
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise BtError(f"cannot read: {err.strerror}", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        where = raw[: err.start].count(b"\n") + 1
        raise BtError(f"not valid UTF-8 (byte {err.start})", SPEC_NAME, where) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        line_match = re.search(r"line (\d+)", str(err))
        line = int(line_match.group(1)) if line_match else None
        if line is None and "end of document" in str(err):
            line = text.count("\n") + 1
        message = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(err))
        raise BtError(f"invalid TOML: {message}", SPEC_NAME, line) from None
    return _SpecReader(Path(SPEC_NAME), text).config(root, data)


class _SpecReader:
    """Validates the parsed TOML, pointing errors at the line of the offending key."""

    _TOP_KEYS = {
        "global_inputs", "platforms", "cache_dir", "jobs", "registry", "builders", "ci", "secrets",
        "retry",
        "evaluation", "release",
        "cache",
    }  # fmt: skip
    _EVALUATION_KEYS = {"max_steps", "max_size"}
    _REGISTRY_KEYS = {"url", "push", "insecure", "mirrors"}
    _RELEASE_KEYS = {"tag_templates", "latest", "default_branch"}
    _BUILDER_KEYS = {"host", "backend", "jobs", "allow_emulation", "network"}

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = text.splitlines()

    def fail(self, message: str, key: str) -> BtError:
        return BtError(message, self.path, self._line_of(key))

    def _line_of(self, key: str) -> int | None:
        # tomllib gives no positions: find the key (or a quoted value) in the text.
        key_re = re.compile(rf'^\s*(\[+\s*)?[^#]*?\b"?{re.escape(key)}"?\s*(=|\])')
        value_re = re.compile(rf'["\']{re.escape(key)}["\']')
        for pattern in (key_re, value_re):
            for number, line in enumerate(self.lines, 1):
                if pattern.search(line):
                    return number
        return None

    def config(self, root: Path, data: dict[str, Any]) -> Config:
        for key in data:
            if key not in self._TOP_KEYS:
                known = ", ".join(sorted(self._TOP_KEYS))
                raise self.fail(f"unknown key {key!r} (known keys: {known})", key)
        global_inputs = self._strings(data, "global_inputs", ())
        for item in global_inputs:
            if os.path.isabs(item) or ".." in Path(item).parts:
                raise self.fail(f"global input {item!r} must be a path inside the workspace", item)
        platforms = tuple(
            self._platform(p, "platforms")
            for p in self._strings(data, "platforms", DEFAULT_PLATFORMS)
        )
        jobs = self._positive_int(data, "jobs", os.cpu_count() or 2)
        registry, push, insecure = self._registry(data.get("registry", {}))
        mirrors = self._mirrors(data.get("registry", {}))
        builders = self._builders(data.get("builders", {}))
        ci = read_ci(data.get("ci", {}), self.fail, self._platform)
        secrets: tuple[SecretSource, ...] = ()
        if "secrets" in data:
            from buildtool.secrets import parse_table

            secrets = parse_table(data["secrets"], "secrets", self.fail)
        return Config(
            root=root,
            spec_path=self.path,
            global_inputs=global_inputs,
            platforms=platforms,
            cache_dir=self._cache_dir(root, data.get("cache_dir")),
            registry=registry,
            push=push,
            insecure_registries=insecure,
            jobs=jobs,
            builders=builders,
            ci=ci,
            secrets=secrets,
            retry_max_seconds=self._retry(data.get("retry", {})),
            evaluation=self._evaluation(data.get("evaluation", {})),
            mirrors=mirrors,
            release=self._release(data.get("release", {})),
            cache_layers=self._cache(data.get("cache", {})),
        )

    def _cache(self, table: Any) -> bool:
        if not isinstance(table, dict):
            raise self.fail("cache must be a table", "cache")
        for key in table:
            if key != "layers":
                raise self.fail(f"unknown key cache.{key} (known: layers)", key)
        layers = table.get("layers", True)
        if not isinstance(layers, bool):
            raise self.fail("cache.layers must be true or false", "layers")
        return layers

    def _evaluation(self, table: Any) -> Budget:
        if not isinstance(table, dict):
            raise self.fail("evaluation must be a table", "evaluation")
        for key in table:
            if key not in self._EVALUATION_KEYS:
                known = ", ".join(sorted(self._EVALUATION_KEYS))
                raise self.fail(f"unknown key evaluation.{key} (known: {known})", key)
        default = Budget()
        return Budget(
            max_steps=self._positive_int(table, "max_steps", default.max_steps),
            max_size=self._positive_int(table, "max_size", default.max_size),
        )

    def _strings(
        self, table: dict[str, Any], key: str, default: tuple[str, ...]
    ) -> tuple[str, ...]:
        value = table.get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{key} must be a list of strings", key)
        return tuple(value)

    def _positive_int(self, table: dict[str, Any], key: str, default: int) -> int:
        value = table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self.fail(f"{key} must be a positive integer", key)
        return value

    def _platform(self, platform: str, key: str) -> str:
        """The platform in its one spelling (``buildtool.platforms``), or ``*``."""
        if platform == "*":
            return platform
        try:
            return normalise(platform)
        except BtError as err:
            raise self.fail(err.message, key) from None

    def _cache_dir(self, root: Path, value: Any) -> Path:
        """Where bt keeps its state for this workspace (invariant 10: a cloned workspace cannot
        send bt's writes, or its deletions, anywhere but into itself or bt's own cache root).
        ``BT_CACHE_DIR`` is the user's word and goes anywhere; ``cache_dir`` must resolve
        (symbolic links followed) below the workspace root or inside ``$XDG_CACHE_HOME/bt``."""
        override = os.environ.get(CACHE_DIR_VARIABLE)
        if override:
            return Path(os.path.expanduser(override)).resolve()
        own = bt_cache_root()
        if value is None:
            # One cache per workspace path: two checkouts never share stat caches or logs.
            digest = digest_bytes(str(root).encode())[:12]
            return own / f"{root.name}-{digest}"
        if not isinstance(value, str) or not value.strip():
            raise self.fail("cache_dir must be a non-empty string", "cache_dir")
        path = (root / os.path.expanduser(value)).resolve()
        base = root.resolve()
        inside = path != base and path.is_relative_to(base)
        if not inside and not path.is_relative_to(own.resolve()):
            raise self.fail(
                f"cache_dir {value!r} is {path}, outside the workspace and bt's cache root "
                f"({own}): a workspace cannot send bt's files there; to use that directory, "
                f"set {CACHE_DIR_VARIABLE}={path}",
                "cache_dir",
            )
        if path.exists() and not path.is_dir():
            raise self.fail(f"cache_dir {value!r} exists and is not a directory", value)
        return path

    def _registry(self, table: Any) -> tuple[str | None, bool, tuple[str, ...]]:
        if not isinstance(table, dict):
            raise self.fail("registry must be a table", "registry")
        for key in table:
            if key not in self._REGISTRY_KEYS:
                known = ", ".join(sorted(self._REGISTRY_KEYS))
                raise self.fail(f"unknown key registry.{key} (known: {known})", key)
        url = table.get("url")
        if url is not None:
            problem = registry_url_problem(url)
            if problem:
                raise self.fail(f"registry.url {problem}", "url")
        # Publishing is asked for, never implied by naming a registry (which is also the
        # shared action cache a run that does not push reads).
        push = table.get("push", False)
        if not isinstance(push, bool):
            raise self.fail("registry.push must be true or false", "push")
        insecure = table.get("insecure", False)
        if not isinstance(insecure, bool):
            raise self.fail("registry.insecure must be true or false", "insecure")
        host = url.split("/", 1)[0] if url else None
        return (url.rstrip("/") if url else None), push, ((host,) if insecure and host else ())

    def _mirrors(self, table: dict[str, Any]) -> tuple[str, ...]:
        mirrors = self._strings(table, "mirrors", ())
        for mirror in mirrors:
            problem = registry_url_problem(mirror)
            if problem:
                raise self.fail(f"registry.mirrors: {mirror!r} {problem}", "mirrors")
        if table.get("url") is not None and table["url"].rstrip("/") in (
            m.rstrip("/") for m in mirrors
        ):
            raise self.fail("registry.mirrors must not name registry.url itself", "mirrors")
        return tuple(m.rstrip("/") for m in mirrors)

    def _release(self, table: Any) -> ReleaseSpec:
        if not isinstance(table, dict):
            raise self.fail("release must be a table", "release")
        for key in table:
            if key not in self._RELEASE_KEYS:
                known = ", ".join(sorted(self._RELEASE_KEYS))
                raise self.fail(f"unknown key release.{key} (known: {known})", key)
        templates = self._strings(table, "tag_templates", ())
        for template in templates:
            try:
                parse_template(template)
            except BtError as err:
                raise self.fail(f"release.tag_templates: {err.message}", template) from None
        latest = table.get("latest", DEFAULT_LATEST_RULE)
        if latest not in LATEST_RULES:
            raise self.fail(f"release.latest must be one of {', '.join(LATEST_RULES)}", "latest")
        branch = table.get("default_branch")
        if branch is not None and (not isinstance(branch, str) or not branch.strip()):
            raise self.fail("release.default_branch must be a branch name", "default_branch")
        return ReleaseSpec(templates, latest, branch)

    def _retry(self, table: Any) -> float:
        if not isinstance(table, dict):
            raise self.fail("retry must be a table", "retry")
        for key in table:
            if key != "max_seconds":
                raise self.fail(f"unknown key retry.{key} (known: max_seconds)", key)
        value = table.get("max_seconds", DEFAULT_RETRY_SECONDS)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 3600:
            raise self.fail(
                "retry.max_seconds must be a number of seconds from 0 to 3600", "max_seconds"
            )
        return float(value)

    def _builders(self, table: Any) -> dict[str, BuilderSpec]:
        if not isinstance(table, dict):
            raise self.fail("builders must be a table of platform -> builder", "builders")
        builders = {}
        for written, spec in table.items():
            platform = self._platform(written, written)
            if not isinstance(spec, dict):
                raise self.fail(f'builders."{platform}" must be a table', platform)
            for key in spec:
                if key not in self._BUILDER_KEYS:
                    known = ", ".join(sorted(self._BUILDER_KEYS))
                    raise self.fail(
                        f'unknown key builders."{platform}".{key} (known: {known})', key
                    )
            host = spec.get("host")
            if host is not None and (
                not isinstance(host, str) or not host.startswith(("unix://", "tcp://", "ssh://"))
            ):
                raise self.fail("builder host must start with unix://, tcp:// or ssh://", "host")
            backend = spec.get("backend", "buildkit")
            if backend not in BACKENDS:
                raise self.fail(f"builder backend must be one of {', '.join(BACKENDS)}", "backend")
            emulation = spec.get("allow_emulation", False)
            if not isinstance(emulation, bool):
                raise self.fail("allow_emulation must be true or false", "allow_emulation")
            network = spec.get("network")
            if network is not None and not isinstance(network, str):
                raise self.fail("builder network must be a string", "network")
            builders[platform] = BuilderSpec(
                platform=platform,
                host=host,
                backend=backend,
                jobs=self._positive_int(spec, "jobs", 2),
                allow_emulation=emulation,
                network=network,
            )
        return builders
