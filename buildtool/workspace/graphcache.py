"""The evaluated target graph of an earlier run, reused while what it was made from is unchanged.

Evaluating every BUILD.images, validating the graph and inferring parents from Dockerfiles is
most of what a large workspace's no-op costs. The graph is kept in the cache directory with
what it was made from, and reused only while all of it is unchanged:

- the configuration it depends on (root, platforms, registry, cache directory) and bt's version;
- the set of BUILD files: every directory searched for them has the stat it had, unless one
  was racy (changed within ``RACY_WINDOW_NS`` of being listed, git's rule): then the search is
  run again and its result compared;
- each BUILD file's content, each ``glob()`` call's result, and each Dockerfile's content
  (its presence and digest): read again, not trusted by stat, as they are few and small.

msgpack, not pickle: a cache directory inside a cloned repository must never run code.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildtool import __version__
from buildtool.errors import BtError
from buildtool.secrets import SecretSource
from buildtool.state.cachedir import CacheDir, update_file
from buildtool.state.hashing import RACY_WINDOW_NS, digest_bytes
from buildtool.state.packing import pack, unpack
from buildtool.workspace.analysis import Analyses
from buildtool.workspace.config import Config
from buildtool.workspace.graph import TargetGraph
from buildtool.workspace.labels import Label
from buildtool.workspace.parents import Parent
from buildtool.workspace.target import ImageTarget, Location, NamedContext

if TYPE_CHECKING:
    from buildtool.workspace.loader import LoadedWorkspace

VERSION = 6  # 3: the identity; 4: annotations; 5: named contexts; 6: where `inputs =` is


def _setting(config: Config) -> list[Any]:
    """What of the configuration and of bt evaluation depends on: all of ``.cache-spec``, so
    that no setting added later can be missed here."""
    return [VERSION, __version__, str(config.root), str(config.cache_dir),
            _file_digest(config.root / config.spec_path)]  # fmt: skip


def load_kept_graph(config: Config, analyses: Analyses) -> tuple[TargetGraph, str] | None:
    """The kept graph and its identity (``graph_identity``) if nothing it was made from
    changed, else None."""
    path = CacheDir(config.cache_dir).graph
    try:
        raw = path.read_bytes()
        top = unpack(raw, use_list=False, strict_map_key=False)
        if top["setting"] != tuple(_to_tuples(_setting(config))):
            return None
        search: list[list[Any] | None] = []
        if not _unchanged(config, analyses, top, search):
            return None
        graph = _decode_graph(top["graph"])
        identity = top["identity"]
    except (OSError, ValueError, TypeError, KeyError, BtError):
        return None  # missing, corrupt or stale: evaluate
    if search and search[0] is not None:
        # Saved with a racy search, found unchanged by searching again: keep that search's
        # stats (no longer racy) so that the next run need not search.
        data = pack({**top, "searched": search[0]})
        update_file(path, lambda current: data if current == raw else None, durable=False)
    return graph, identity


def describe_graph(
    config: Config, analyses: Analyses, loaded: LoadedWorkspace, graph: TargetGraph, taken_ns: int
) -> dict[str, Any] | None:
    """What ``write_graph`` keeps of ``graph``, its identity included; None when it must not
    be kept: a build arg whose name looks secret would put its value in the cache directory."""
    from buildtool.secrets import looks_secret

    if any(looks_secret(name) for t in graph.targets.values() for name, _ in t.args):
        return None
    root = config.root
    dockerfiles = sorted({t.dockerfile for t in graph.targets.values()})
    top: dict[str, Any] = {
        "setting": _setting(config),
        "searched": _search_rows(loaded.searched, taken_ns),
        "build_files": [[f, _file_digest(root / f)] for f in loaded.build_files],
        "globs": [[d, list(inc), list(exc), list(res)] for d, inc, exc, res in loaded.globs],
        "dockerfiles": [[d, _dockerfile_digest(analyses, d)] for d in dockerfiles],
        "graph": _encode_graph(graph),
    }
    top["identity"] = graph_identity(top)
    return top


def write_graph(config: Config, top: dict[str, Any]) -> None:
    data = pack(top)
    update_file(CacheDir(config.cache_dir).graph, lambda _: data, durable=False)


def graph_identity(top: dict[str, Any]) -> str:
    """A digest of everything a kept graph was made from and holds, but not the stats that
    vouch for it: the configuration, BUILD files, glob results, Dockerfiles (by content) and
    the graph. Whatever is a function of these alone (a build's Dockerfile analysis, its
    target, its parents) is the same while the identity is (``keymemo.py``)."""
    parts = [top[name] for name in ("setting", "build_files", "globs", "dockerfiles", "graph")]
    return digest_bytes(pack(parts))


def _search_rows(searched: Any, taken_ns: int) -> list[list[Any]] | None:
    """The directories' stats, or None when one was racy (changed within the racy window
    of ``taken_ns``, the clock read before the search began): then it is run again."""
    limit = taken_ns - RACY_WINDOW_NS
    if any(max(st.st_mtime_ns, st.st_ctime_ns) >= limit for _, st in searched):
        return None
    return [[d, *_dir_signature(st)] for d, st in searched]


def _unchanged(
    config: Config, analyses: Analyses, top: dict[str, Any], search: list[list[Any] | None]
) -> bool:
    """Whether nothing the kept graph was made from changed; a search for BUILD files run
    again appends its rows to ``search`` (None if racy)."""
    # The loader (and the evaluator it brings) is imported only when something is run again.
    root = config.root
    build_files = tuple(f for f, _ in top["build_files"])
    if not _same_search(root, top["searched"]):
        from buildtool.workspace.loader import find_build_files

        taken_ns = time.time_ns()
        searched: dict[str, os.stat_result] = {}
        if tuple(find_build_files(root, [config.cache_dir], searched)) != build_files:
            return False
        search.append(_search_rows(sorted(searched.items()), taken_ns))
    for relpath, digest in top["build_files"]:
        if _file_digest(root / relpath) != digest:
            return False
    if top["globs"]:
        from buildtool.workspace.loader import run_glob
    for file_dir, include, exclude, result in top["globs"]:
        if tuple(sorted(run_glob(root / file_dir, include, exclude))) != result:
            return False
    return all(_dockerfile_digest(analyses, d) == digest for d, digest in top["dockerfiles"])


def _same_search(root: Path, searched: Any) -> bool:
    if searched is None:
        return False  # a directory was racy when searched: search again
    for reldir, *signature in searched:
        try:
            if _dir_signature(os.stat(root / reldir)) != tuple(signature):
                return False
        except OSError:
            return False
    return True


def _dir_signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _file_digest(path: Path) -> str | None:
    try:
        return digest_bytes(path.read_bytes())
    except OSError:
        return None


def _dockerfile_digest(analyses: Analyses, relpath: str) -> str | None:
    """Its digest through ``analyses`` (which then need not read it again), None if absent."""
    if not analyses.exists(relpath):
        return None
    try:
        return analyses.dockerfile(relpath)[0]
    except BtError:
        return None


def _to_tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuples(v) for v in value)
    return value


def _encode_graph(graph: TargetGraph) -> list[Any]:
    targets = [
        [*t.label, t.context, t.dockerfile, t.stage, [list(a) for a in t.args],
         [[arg, *label] for arg, label in t.parents], list(t.platforms), list(t.tags),
         t.repository, None if t.inputs is None else list(t.inputs), list(t.tests),
         t.location.path, t.location.line, list(t.aliases), [list(x) for x in t.secrets],
         [list(a) for a in t.annotations], [list(c) for c in t.contexts],
         None if t.inputs_location is None else t.inputs_location.line]
        for t in graph.targets.values()
    ]  # fmt: skip
    groups = [[*label, [list(m) for m in members]] for label, members in graph.groups.items()]
    inferred = [
        [*label, platform, [[*p.label, p.name, p.declared, [list(s) for s in p.sites]]
                            for p in parents]]
        for (label, platform), parents in graph.inferred.items()
    ]  # fmt: skip
    return [targets, groups, inferred]


def _decode_graph(raw: Any) -> TargetGraph:
    targets_raw, groups_raw, inferred_raw = raw
    targets: dict[Label, ImageTarget] = {}
    # Positional, and no generator for what is empty: a no-op decodes every target.
    for (package, name, context, dockerfile, stage, args, parents, platforms, tags, repository,
         inputs, tests, path, line, aliases, secrets, notes, contexts,
         inputs_line) in targets_raw:  # fmt: skip
        label = Label(package, name)
        targets[label] = ImageTarget(
            label,
            context,
            dockerfile,
            stage,
            args,
            tuple([(arg, Label(pkg, nm)) for arg, pkg, nm in parents]) if parents else (),
            platforms,
            tags,
            repository,
            inputs,
            tests,
            Location(path, line),
            aliases,
            tuple([SecretSource(*x) for x in secrets]) if secrets else (),
            notes,
            tuple([NamedContext(*c) for c in contexts]) if contexts else (),
            None if inputs_line is None else Location(path, inputs_line),
        )
    groups = {
        Label(package, name): tuple(Label(*m) for m in members)
        for package, name, members in groups_raw
    }
    inferred = {
        (Label(package, name), platform): tuple(
            Parent(Label(pkg, nm), pname, declared, sites)
            for pkg, nm, pname, declared, sites in parents
        )
        for package, name, platform, parents in inferred_raw
    }
    return TargetGraph(targets, groups, inferred)
