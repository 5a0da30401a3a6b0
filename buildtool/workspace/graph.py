"""The target graph: validation, build order, pattern matching, deps and rdeps."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from buildtool.errors import BtError
from buildtool.workspace.analysis import Analyses
from buildtool.workspace.labels import Label, Pattern, parse_pattern
from buildtool.workspace.parents import Parent, declared_parents, infer_parents
from buildtool.workspace.target import BuildId, ImageTarget

if TYPE_CHECKING:  # evaluation runs only when no kept graph serves (graphcache.py)
    from buildtool.workspace.loader import LoadedWorkspace


@dataclass(frozen=True)
class TargetGraph:
    """A validated graph; every parent exists, there are no cycles, platforms line up.

    A target's parents are those it declares plus those inferred from the images its builds
    use (``parents.py``), per platform; the graph's edges are their union over platforms."""

    targets: dict[Label, ImageTarget]
    groups: dict[Label, tuple[Label, ...]]
    inferred: Mapping[BuildId, tuple[Parent, ...]] = field(default_factory=dict)

    def parents_of(self, label: Label, platform: str) -> tuple[Parent, ...]:
        """The parents of one platform build: declared, then inferred."""
        found = self._parents.get((label, platform))
        if found is None:
            declared = self._declared.get(label)
            if declared is None:
                declared = self._declared[label] = declared_parents(self.targets[label])
            inferred = self.inferred.get((label, platform))
            found = (*declared, *inferred) if inferred else declared
            self._parents[(label, platform)] = found
        return found

    @cached_property
    def _parents(self) -> dict[BuildId, tuple[Parent, ...]]:
        return {}

    @cached_property
    def _declared(self) -> dict[Label, tuple[Parent, ...]]:
        return {}

    @cached_property
    def _parent_labels(self) -> dict[Label, tuple[Label, ...]]:
        result: dict[Label, tuple[Label, ...]] = {}
        inferred = self.inferred
        for label, target in self.targets.items():
            found = {parent for _, parent in target.parents}
            for platform in target.platforms:
                parents = inferred.get((label, platform))
                if parents:
                    found.update(p.label for p in parents)
            result[label] = tuple(sorted(found)) if len(found) > 1 else tuple(found)
        return result

    def parent_labels(self, label: Label) -> tuple[Label, ...]:
        """Every target ``label`` builds on directly, on any platform, sorted."""
        return self._parent_labels[label]

    @cached_property
    def children(self) -> dict[Label, tuple[Label, ...]]:
        result: dict[Label, list[Label]] = {label: [] for label in self.targets}
        for label in self.targets:
            for parent in self.parent_labels(label):
                result[parent].append(label)
        return {label: tuple(sorted(kids)) for label, kids in result.items()}

    @cached_property
    def order(self) -> tuple[Label, ...]:
        """Every target after its parents; ties broken by label for determinism."""
        done: set[Label] = set()
        ordered: list[Label] = []

        def visit(label: Label) -> None:
            if label in done:
                return
            done.add(label)
            for parent in self.parent_labels(label):
                visit(parent)
            ordered.append(label)

        for label in sorted(self.targets):
            visit(label)
        return tuple(ordered)

    def match(self, patterns: Iterable[str], current_package: str = "") -> set[Label]:
        """Targets matched by label patterns; groups expand to their members."""
        result: set[Label] = set()
        for text in patterns:
            pattern = parse_pattern(text, current_package)
            result |= self._match_one(pattern, text)
        return result

    def _match_one(self, pattern: Pattern, text: str) -> set[Label]:
        if pattern.name is not None and not pattern.recursive:
            label = Label(pattern.package, pattern.name)
            if label in self.targets:
                return {label}
            if label in self.groups:
                return self._expand_group(label)
            raise BtError(f"no target {label}{self._suggest(label)}")
        matched = {label for label in self.targets if pattern.matches(label)}
        if not matched:
            raise BtError(f"pattern {text!r} matches no targets")
        return matched

    def _expand_group(self, label: Label, seen: frozenset[Label] = frozenset()) -> set[Label]:
        if label in seen:
            raise BtError(f"group {label} contains itself")
        result: set[Label] = set()
        for member in self.groups[label]:
            if member in self.groups:
                result |= self._expand_group(member, seen | {label})
            else:
                result.add(member)
        return result

    def _suggest(self, label: Label) -> str:
        names = [str(known) for known in (*self.targets, *self.groups)]
        import difflib

        close = difflib.get_close_matches(str(label), names, n=1, cutoff=0.75)
        return f" (did you mean {close[0]}?)" if close else ""

    def deps(self, labels: Iterable[Label], depth: int | None = None) -> set[Label]:
        """The labels and everything they build on (Bazel's deps: the targets included)."""
        start = set(labels)
        if start >= self.targets.keys():
            return start  # every target (`//...`): nothing more to find
        return self._closure(start, self.parent_labels, depth)

    def rdeps(
        self, universe: set[Label], labels: Iterable[Label], depth: int | None = None
    ) -> set[Label]:
        """Targets of ``universe`` building on ``labels`` (Bazel's rdeps: targets included)."""
        found = self._closure(labels, lambda lb: self.children[lb], depth)
        return found & universe

    def _closure(self, start: Iterable[Label], step, depth: int | None) -> set[Label]:  # type: ignore[no-untyped-def]
        seen = set(start)
        frontier = list(seen)
        level = 0
        while frontier and (depth is None or level < depth):
            level += 1
            following = []
            for label in frontier:
                for nxt in step(label):
                    if nxt not in seen:
                        seen.add(nxt)
                        following.append(nxt)
            frontier = following
        return seen


def build_graph(loaded: LoadedWorkspace, analyses: Analyses, registry: str | None) -> TargetGraph:
    """The validated graph of ``loaded``, with the parents its builds' image references infer
    (``registry`` is the workspace's ``[registry] url``, which names its images)."""
    targets = loaded.targets
    known = [str(label) for label in (*targets, *loaded.groups)]
    for target in targets.values():
        loc = target.location
        for arg, parent in [*target.parents, *target.context_parents]:
            if parent in targets:
                continue
            import difflib

            close = difflib.get_close_matches(str(parent), known, n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]}?)" if close else ""
            what = "a group, not an image" if parent in loaded.groups else "not found"
            raise BtError(
                f"parent {parent} of {target.label} ({arg}) {what}{hint}", loc.path, loc.line
            )
    for group in loaded.groups.values():
        for member in group.members:
            if member not in targets and member not in loaded.groups:
                raise BtError(
                    f"group {group.label}: no target {member}",
                    group.location.path,
                    group.location.line,
                )
    groups = {label: group.members for label, group in loaded.groups.items()}
    _check_group_cycles(loaded)
    # What BUILD.images alone says is checked before any Dockerfile is read.
    _check_image_names(targets)
    _check_cycles(TargetGraph(targets, groups))
    _check_platforms(targets)
    inferred = infer_parents(targets, registry, analyses)
    _check_inferred_platforms(targets, inferred)
    graph = TargetGraph(targets, groups, inferred)
    if inferred:
        _check_cycles(graph)
    return graph


def _check_group_cycles(loaded: LoadedWorkspace) -> None:
    """A group that contains itself, directly or through other groups, is an error with its
    path, wherever it is used."""
    groups = loaded.groups
    done: set[Label] = set()
    for start in sorted(groups):
        path: list[Label] = []
        stack: list[tuple[Label, int]] = [(start, 0)]
        while stack:
            label, index = stack.pop()
            del path[index:]
            if label in done:
                continue
            if label in path:
                cycle = " -> ".join(str(lb) for lb in [*path[path.index(label) :], label])
                loc = groups[label].location
                raise BtError(f"group cycle: {cycle}", loc.path, loc.line)
            path.append(label)
            members = [m for m in groups[label].members if m in groups]
            if not members:
                done.add(label)
            stack.extend((member, len(path)) for member in reversed(members))
        done.add(start)


def _check_image_names(targets: dict[Label, ImageTarget]) -> None:
    """One image per repository:tag (and alias): two targets pushing one tag would take turns
    overwriting it."""
    owner: dict[str, ImageTarget] = {}
    for label in sorted(targets):
        target = targets[label]
        names = [f"{target.repository}:{tag}" for tag in target.tags] + list(target.aliases)
        for name in names:
            first = owner.setdefault(name, target)
            if first is not target:
                loc = target.location
                raise BtError(
                    f"{target.label} and {first.label} (declared at {first.location}) are both "
                    f"image {name}: give one of them other tags, repository or aliases",
                    loc.path,
                    loc.line,
                )


def _check_cycles(graph: TargetGraph) -> None:
    targets = graph.targets
    state: dict[Label, int] = {}  # 1 visiting, 2 done
    for start in sorted(targets):
        if state.get(start):
            continue
        path: list[Label] = []
        stack: list[tuple[Label, Sequence[Label]]] = [(start, graph.parent_labels(start))]
        state[start] = 1
        path.append(start)
        while stack:
            label, pending = stack[-1]
            if not pending:
                stack.pop()
                path.pop()
                state[label] = 2
                continue
            stack[-1] = (label, pending[1:])
            parent = pending[0]
            if state.get(parent) == 1:
                cycle = [*path[path.index(parent) :], parent]
                loc = targets[parent].location
                text = str(cycle[0]) + "".join(
                    f" -> {_edge(graph, child, lb)}" for child, lb in itertools.pairwise(cycle)
                )
                raise BtError(f"dependency cycle: {text}", loc.path, loc.line)
            if not state.get(parent):
                state[parent] = 1
                path.append(parent)
                stack.append((parent, graph.parent_labels(parent)))


def _edge(graph: TargetGraph, child: Label, parent: Label) -> str:
    """``parent`` as a cycle's path shows it: with the reference an inferred edge comes from."""
    target = graph.targets[child]
    if parent in target.parent_labels:
        return str(parent)
    for platform in target.platforms:
        for found in graph.inferred.get((child, platform), ()):
            if found.label == parent:
                return f"{parent} ({found.name}, {target.dockerfile}:{found.sites[0][0]})"
    return str(parent)


def _check_platforms(targets: dict[Label, ImageTarget]) -> None:
    for target in targets.values():
        for arg, parent_label in [*target.parents, *target.context_parents]:
            parent = targets[parent_label]
            missing = [p for p in target.platforms if p not in parent.platforms]
            if missing:
                loc = target.location
                raise BtError(
                    f"{target.label} builds for {', '.join(missing)} but its parent "
                    f"{parent_label} ({arg}) has only {', '.join(parent.platforms)}",
                    loc.path,
                    loc.line,
                )


def _check_inferred_platforms(
    targets: dict[Label, ImageTarget], inferred: Mapping[BuildId, tuple[Parent, ...]]
) -> None:
    for (label, platform), parents in sorted(inferred.items()):
        target = targets[label]
        for parent in parents:
            builds = targets[parent.label].platforms
            if platform not in builds:
                line = parent.sites[0][0]
                raise BtError(
                    f"{label} builds for {platform} on {parent.name}, but {parent.label}, which "
                    f"builds that image, has only {', '.join(builds)}",
                    target.dockerfile,
                    line,
                )
