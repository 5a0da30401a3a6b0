"""`bt import-bake`: a BUILD.images equivalent to what `docker buildx bake --print` prints.

The print is bake's resolved form: ``inherits`` are merged in and each ``matrix`` is expanded
into one target per combination (``app-v1``, ``app-v2``). Targets that differ only in build
args along some axes, and whose names, tags and parents follow those args, are folded back into
a ``for`` loop (nested loops when they cover every combination, a loop over rows otherwise).
``contexts`` map one to one onto bt's named contexts: ``"target:T"`` becomes the label
``"//:T"`` (a parent), ``docker-image://REF`` and directories stay as they are; the Dockerfiles
are used unedited. Other kinds (``oci-layout://``, URLs, git) are named in a comment.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from buildtool.errors import BtError
from buildtool.state.jsonvalue import load_json

# Fields bt has an equivalent for; others are listed in a comment above the target.
_IMPORTED = {"context", "dockerfile", "args", "platforms", "tags", "target", "contexts"}
# Fields that never change the image or that bt decides itself (cache, output, pull).
_SILENT = {"cache-from", "cache-to", "output", "pull", "no-cache", "inherits", "matrix", "name"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = {"image", "group", "glob", "fail", "len", "range", "str", "int", "list", "dict"}
_PLACEHOLDER = "\x00{}\x00"
# Named contexts bt does not take: other URL schemes (oci-layout://, https://) and git.
_FOREIGN_CONTEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|git@|.*\.git$")


@dataclass(frozen=True)
class BakeTarget:
    name: str
    context: str
    dockerfile: str
    stage: str | None
    args: tuple[tuple[str, str], ...]
    platforms: tuple[str, ...]
    repository: str | None
    tags: tuple[str, ...]
    parents: tuple[tuple[str, str], ...]  # (context name, parent target name)
    notes: tuple[str, ...] = ()  # what was not imported, as comment lines
    # Named contexts that are directories or docker-image:// references, as bake prints them.
    contexts: tuple[tuple[str, str], ...] = ()

    def shape(self) -> tuple[object, ...]:
        """What targets of one expanded matrix share."""
        return (
            self.context,
            self.dockerfile,
            self.stage is None,
            tuple(name for name, _ in self.args),
            self.platforms,
            len(self.tags),
            tuple(arg for arg, _ in self.parents),
            self.repository is None,
            self.notes,
            self.contexts,
        )


@dataclass
class BakeFile:
    targets: dict[str, BakeTarget] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    registries: set[str] = field(default_factory=set)  # hosts the tags named


def read_prints(texts: Iterable[tuple[str, str]]) -> BakeFile:
    """Parse (source name, JSON text) pairs of `docker buildx bake --print` output."""
    bake = BakeFile()
    for where, text in texts:
        data = load_json(text, where, "not the JSON `docker buildx bake --print` writes")
        if not isinstance(data, dict) or not isinstance(data.get("target"), dict):
            raise BtError('no "target" object: not `docker buildx bake --print` output', where)
        for name, raw in data["target"].items():
            bake.targets[name] = _target(name, raw, where, bake.registries)
        groups = data.get("group") or {}
        if not isinstance(groups, dict):
            raise BtError(f'"group" must be an object, not {_kind(groups)}', where)
        for name, raw in groups.items():
            if not isinstance(raw, dict):
                raise BtError(f"group {name!r} must be an object, not {_kind(raw)}", where)
            bake.groups[name] = _strings(raw, "targets", f"group {name!r}", where)
    return bake


# -- the types bake prints: a field of another type is refused, naming target and field ------

_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}


def _kind(value: object) -> str:
    return _KINDS.get(type(value), "a number")


def _string(raw: dict[str, object], key: str, owner: str, where: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise BtError(f"{owner}: {key} must be a string, not {_kind(value)}", where)
    return value


def _strings(raw: dict[str, object], key: str, owner: str, where: str) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BtError(f"{owner}: {key} must be a list of strings, not {_kind(value)}", where)
    for item in value:
        if not isinstance(item, str):
            raise BtError(f"{owner}: {key} must hold strings, not {_kind(item)}", where)
    return tuple(value)


def _string_map(raw: dict[str, object], key: str, owner: str, where: str) -> dict[str, str]:
    """An object of strings; null values are left out (bake prints an unset arg as null)."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BtError(f"{owner}: {key} must be an object, not {_kind(value)}", where)
    for name, item in value.items():
        if item is not None and not isinstance(item, str):
            raise BtError(f"{owner}: {key}.{name} must be a string, not {_kind(item)}", where)
    return {name: item for name, item in value.items() if item is not None}


def _target(name: str, raw: object, where: str, registries: set[str]) -> BakeTarget:
    if not isinstance(raw, dict):
        raise BtError(f"target {name!r} is not an object", where)
    notes = [f"{key}: not imported" for key in sorted(raw) if key not in _IMPORTED | _SILENT]
    caches = [key for key in ("cache-from", "cache-to") if key in raw]
    if caches:
        notes.append(f"{', '.join(caches)}: dropped (a build whose key is recorded never runs)")
    if "dockerfile-inline" in raw:
        raise BtError(f"target {name!r} has dockerfile-inline: write it to a file first", where)
    owner = f"target {name!r}"
    context = _string(raw, "context", owner, where)
    dockerfile = _string(raw, "dockerfile", owner, where)
    stage = _string(raw, "target", owner, where)
    platforms = _strings(raw, "platforms", owner, where)
    args = _string_map(raw, "args", owner, where)
    parents: list[tuple[str, str]] = []
    contexts: list[tuple[str, str]] = []
    for context_name, text in sorted(_string_map(raw, "contexts", owner, where).items()):
        if text.startswith("target:"):
            parents.append((context_name, text.removeprefix("target:")))
        elif text.startswith("docker-image://") or not _FOREIGN_CONTEXT.match(text):
            contexts.append((context_name, text))
        else:
            notes.append(f"context {context_name} = {text}: not imported")
    repository, tags = _tags(name, _strings(raw, "tags", owner, where), registries, notes)
    return BakeTarget(
        name=name,
        context=context or ".",
        dockerfile=dockerfile or "Dockerfile",
        stage=stage or None,
        args=tuple(sorted(args.items())),
        platforms=platforms,
        repository=repository,
        tags=tags,
        parents=tuple(parents),
        notes=tuple(notes),
        contexts=tuple(contexts),
    )


def _tags(
    name: str, refs: Sequence[object], registries: set[str], notes: list[str]
) -> tuple[str | None, tuple[str, ...]]:
    """bt's repository and tags for bake's full references; the registry host goes to
    .cache-spec, and tags in other repositories than the first are noted, not imported."""
    repository: str | None = None
    tags: list[str] = []
    for ref in map(str, refs):
        path, tag = ref, "latest"
        if ":" in ref.rsplit("/", 1)[-1]:
            path, tag = ref.rsplit(":", 1)
        first, _, rest = path.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registries.add(first)
            path = rest
        if repository is None:
            repository = path
        if path == repository:
            tags.append(tag)
        else:
            notes.append(f"tag {ref}: another repository than {repository}, not imported")
    return repository, tuple(tags)


# -- folding expanded matrices back into loops -------------------------------------------------


@dataclass(frozen=True)
class Loop:
    """Targets of one expanded matrix: a template target and the values of its axes."""

    axes: tuple[str, ...]  # build args that vary
    rows: tuple[tuple[str, ...], ...]  # one per target, in axes order
    template: BakeTarget  # the first target: what every target of the loop shares
    # name, repository, tags and parents as templates: "\0<axis>\0" where an axis value sits
    name: str
    repository: str | None
    tags: tuple[str, ...]
    parents: tuple[tuple[str, str], ...]
    product: tuple[tuple[str, ...], ...] | None  # values per axis, when rows are all combinations


def fold(targets: Sequence[BakeTarget]) -> list[BakeTarget | Loop]:
    """The targets, with every expanded matrix replaced by a Loop, in first-seen order."""
    by_shape: dict[tuple[object, ...], list[BakeTarget]] = {}
    for target in targets:
        by_shape.setdefault(target.shape(), []).append(target)
    out: list[BakeTarget | Loop] = []
    done: set[str] = set()
    for target in targets:
        if target.name in done:
            continue
        family = by_shape[target.shape()]
        loop = _loop(family) if len(family) > 1 else None
        if loop is None:
            out.append(target)
            done.add(target.name)
        else:
            out.append(loop)
            done.update(t.name for t in family)
    return out


STAGE = ""  # the axis of a matrix over bake's `target` (the stage), beside those over args


def _axis_values(target: BakeTarget) -> dict[str, str]:
    values = dict(target.args)
    if target.stage is not None:
        values[STAGE] = target.stage
    return values


def _loop(family: Sequence[BakeTarget]) -> Loop | None:
    first = family[0]
    table = [_axis_values(t) for t in family]
    axes = tuple(axis for axis in table[0] if len({values[axis] for values in table}) > 1)
    if not axes:
        return None
    rows = tuple(tuple(values[a] for a in axes) for values in table)
    # Outer loops for the axes the name spells first: `{model}-{lang}` loops over models.
    spelled = _template([t.name for t in family], rows) or ""
    order = sorted(range(len(axes)), key=lambda i: (spelled.find(f"\x00{i}") % 10**6, i))
    axes = tuple(axes[i] for i in order)
    rows = tuple(tuple(row[i] for i in order) for row in rows)
    name = _template([t.name for t in family], rows)
    tags = [_template([t.tags[i] for t in family], rows) for i in range(len(first.tags))]
    parents = [
        _template([t.parents[i][1] for t in family], rows) for i in range(len(first.parents))
    ]
    repository = None
    if first.repository is not None:
        repository = _template([t.repository or "" for t in family], rows)
        if repository is None:
            return None
    if name is None or None in tags or None in parents or len(set(rows)) != len(rows):
        return None
    values = [list(dict.fromkeys(row[i] for row in rows)) for i in range(len(axes))]
    product = None
    if math.prod(map(len, values)) == len(rows):
        product = tuple(tuple(v) for v in values)
    return Loop(
        axes=axes,
        rows=rows,
        template=first,
        name=name,
        repository=repository,
        tags=tuple(t for t in tags if t is not None),
        parents=tuple(
            (arg, p) for (arg, _), p in zip(first.parents, parents, strict=True) if p is not None
        ),
        product=product,
    )


def _template(texts: Sequence[str], rows: Sequence[tuple[str, ...]]) -> str | None:
    """A template with ``\\0<axis>\\0`` where each row's axis values sit, that gives every text
    back; None when the texts do not follow the axes. Longer values are placed first; a value
    that also occurs in the fixed text (``a`` in ``app-a``) is tried at each single place too."""
    axes = sorted(range(len(rows[0])), key=lambda i: -len(rows[0][i]))
    # "none": the text does not follow that axis (a fixed repository holding the letter "a").
    choices = ("all", "last", "first", "none") if len(axes) <= 4 else ("all", "none")
    for places in itertools.product(choices, repeat=len(axes)):
        template = texts[0]
        for axis, where in zip(axes, places, strict=True):
            template = _mark(template, axis, rows[0][axis], where)
        if all(_fill(template, v) == text for text, v in zip(texts, rows, strict=True)):
            return template
    return None


def _mark(template: str, axis: int, raw: str, where: str) -> str:
    """``template`` with the (first, last, every or no) occurrence of an axis value marked."""
    for mark, spell in _SPELLINGS.items():
        value = spell(raw)
        if where == "none":
            return template
        if not value or value not in template:
            continue
        placeholder = f"\x00{axis}{mark}\x00"
        if where == "all":
            return template.replace(value, placeholder)
        at = template.rindex(value) if where == "last" else template.index(value)
        return template[:at] + placeholder + template[at + len(value) :]
    return template


# How a matrix value may be spelled in a name or tag: as is, or with dots as dashes (bake's
# documented `name = "app-${replace(version, ".", "-")}"`); the mark follows the axis number.
_SPELLINGS: dict[str, Callable[[str], str]] = {
    "": lambda value: value,
    "r": lambda value: value.replace(".", "-"),
}
_EXPRESSIONS = {"": "{}", "r": '{}.replace(".", "-")'}


def _fill(template: str, values: Sequence[str]) -> str:
    parts = template.split("\x00")
    return "".join(_placed(p, values) if i % 2 else p for i, p in enumerate(parts))


def _placed(placeholder: str, values: Sequence[str]) -> str:
    axis, mark = int(placeholder.rstrip("r")), placeholder.lstrip("0123456789")
    return _SPELLINGS[mark](values[axis])


def _expression(placeholder: str, variables: Sequence[str]) -> str:
    axis, mark = int(placeholder.rstrip("r")), placeholder.lstrip("0123456789")
    return _EXPRESSIONS[mark].format(variables[axis])


# -- writing BUILD.images ----------------------------------------------------------------------


def build_file(bake: BakeFile, source: str) -> str:
    """The text of a BUILD.images declaring what ``bake`` declares."""
    lines = [f"# Generated by `bt import-bake` from {source}."]
    if bake.registries:
        hosts = ", ".join(sorted(bake.registries))
        lines.append(f"# Tags were pushed to {hosts}: set [registry] url in .cache-spec to it.")
    names = _Names()
    for item in fold(_ordered(bake)):
        lines.append("")
        lines += _loop_lines(item, names) if isinstance(item, Loop) else _image_lines(item)
    for name, members in bake.groups.items():
        if name in bake.targets:
            lines += ["", f"# group {name}: a target has that name too, not imported"]
            continue
        listed = [_quote(f"//:{m}") for m in members]
        one_line = f"group(name = {_quote(name)}, targets = [{', '.join(listed)}])"
        if len(one_line) <= 100:
            lines += ["", one_line]
            continue
        lines += ["", "group(", f"    name = {_quote(name)},", "    targets = ["]
        lines += [f"        {member}," for member in listed]
        lines += ["    ],", ")"]
    return "\n".join(lines) + "\n"


def _ordered(bake: BakeFile) -> list[BakeTarget]:
    """Parents before children, and otherwise in the order bake's groups list the targets
    (a matrix's order: the print itself sorts targets by name)."""
    listed = [m for members in bake.groups.values() for m in members if m in bake.targets]
    order = {name: i for i, name in enumerate(dict.fromkeys([*listed, *bake.targets]))}
    depth: dict[str, int] = {}

    def depth_of(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in depth:
            target = bake.targets.get(name)
            if target is None or name in seen:  # an outside parent, or a cycle bt will report
                return 0
            parents = [depth_of(p, seen | {name}) + 1 for _, p in target.parents]
            depth[name] = max(parents, default=0)
        return depth[name]

    return sorted(bake.targets.values(), key=lambda t: (depth_of(t.name), order[t.name]))


def _image_lines(target: BakeTarget) -> list[str]:
    fields = _fields(
        target,
        _quote(target.name),
        None if target.repository is None else _quote(target.repository),
        [_quote(t) for t in target.tags],
        {arg: _quote(f"//:{parent}") for arg, parent in target.parents},
        {},
    )
    return _call(target.notes, fields, "")


def _loop_lines(loop: Loop, names: _Names) -> list[str]:
    variables = [_variable(axis) for axis in loop.axes]
    declared: list[str] = []
    lines: list[str] = []
    indent = ""
    if loop.product is not None:
        for axis, variable, values in zip(loop.axes, variables, loop.product, strict=True):
            constant, new = names.constant(axis, values)
            if new:
                declared.append(f"{constant} = {_list(values)}")
            lines.append(f"{indent}for {variable} in {constant}:")
            indent += "    "
    else:
        rows = ", ".join("(" + ", ".join(map(_quote, row)) + ")" for row in loop.rows)
        lines.append(f"for {', '.join(variables)} in [{rows}]:")
        indent = "    "
    fields = _fields(
        loop.template,
        _format(loop.name, variables),
        None if loop.repository is None else _format(loop.repository, variables),
        [_format(t, variables) for t in loop.tags],
        {arg: _format(f"//:{p}", variables) for arg, p in loop.parents},
        dict(zip(loop.axes, variables, strict=True)),
    )
    return declared + lines + _call(loop.template.notes, fields, indent)


def _fields(
    target: BakeTarget,
    name: str,
    repository: str | None,
    tags: list[str],
    parents: dict[str, str],
    variables: dict[str, str],
) -> list[tuple[str, str]]:
    fields = [("name", name), ("context", _quote(target.context))]
    if target.dockerfile != "Dockerfile":
        fields.append(("dockerfile", _quote(target.dockerfile)))
    if target.stage:
        fields.append(("stage", variables.get(STAGE) or _quote(target.stage)))
    if target.args:
        args = (f"{_quote(k)}: {variables.get(k) or _quote(v)}" for k, v in target.args)
        fields.append(("args", "{" + ", ".join(args) + "}"))
    named = {**parents, **{name: _quote(value) for name, value in target.contexts}}
    if named:
        items = (f"{_quote(k)}: {v}" for k, v in sorted(named.items()))
        fields.append(("contexts", "{" + ", ".join(items) + "}"))
    if target.platforms:
        fields.append(("platforms", _list(target.platforms)))
    if repository is not None:
        fields.append(("repository", repository))
        fields.append(("tags", "[" + ", ".join(tags) + "]"))
    return fields


def _call(notes: Sequence[str], fields: Sequence[tuple[str, str]], indent: str) -> list[str]:
    lines = [f"{indent}# bake {note}" for note in notes]
    lines.append(f"{indent}image(")
    lines += [f"{indent}    {key} = {value}," for key, value in fields]
    lines.append(f"{indent})")
    return lines


def _format(template: str, variables: Sequence[str]) -> str:
    """A template as a Starlark expression: a string, or ``"...".format(...)``."""
    parts = template.split("\x00")
    if len(parts) == 1:
        return _quote(template)
    if parts == ["", parts[1], ""]:
        return _expression(parts[1], variables)
    text = "".join(
        ("{}" if i % 2 else p.replace("{", "{{").replace("}", "}}")) for i, p in enumerate(parts)
    )
    used = [_expression(p, variables) for p in parts[1::2]]
    return f"{_quote(text)}.format({', '.join(used)})"


def _quote(text: str) -> str:
    return json.dumps(text)


def _list(values: Iterable[str]) -> str:
    return "[" + ", ".join(map(_quote, values)) + "]"


def _variable(axis: str) -> str:
    """A loop variable: the build arg in lower case (``stage`` for the stage axis)."""
    name = axis.lower() or "stage"
    name = name if _IDENTIFIER.fullmatch(name) else "v_" + re.sub(r"\W", "_", name)
    return name + "_" if name in _RESERVED else name


class _Names:
    """The constants holding the loops' values: the build arg in upper case and plural, one
    constant per list of values."""

    def __init__(self) -> None:
        self.lists: dict[tuple[str, ...], str] = {}
        self.taken: set[str] = set()

    def constant(self, axis: str, values: tuple[str, ...]) -> tuple[str, bool]:
        """The constant's name, and whether it is new (to be declared)."""
        if values in self.lists:
            return self.lists[values], False
        base = _variable(axis).upper() + "S"
        name, n = base, 2
        while name in self.taken:
            name, n = f"{base}_{n}", n + 1
        self.taken.add(name)
        self.lists[values] = name
        return name, True
