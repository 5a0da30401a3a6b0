"""What changed between two key manifests: the recorded build's and the build as it is now."""

from __future__ import annotations

import difflib
import posixpath
from dataclasses import dataclass

from buildtool.inputs.pathnames import shown_path
from buildtool.plan.keys import KeyManifest
from buildtool.plan.pins import short_digest
from buildtool.workspace.analysis import InstructionText


@dataclass(frozen=True)
class Change:
    # dockerfile | stage | args | secret | input | context | global | parent | platform | schema
    # | remote | external
    kind: str
    subject: str
    old: str | None
    new: str | None
    detail: str = ""

    def describe(self) -> str:
        if self.kind == "input" or self.kind == "global":
            if self.old is None:
                return f"added {self.subject} ({self.new})"
            if self.new is None:
                return f"removed {self.subject} ({self.old})"
            return f"changed {self.subject}: {self.old} -> {self.new}"
        if self.kind == "context":  # a file read from a directory context
            verb = "added" if self.old is None else "removed" if self.new is None else "changed"
            return f"context {self.subject} {verb}"
        if self.kind == "dockerfile":
            return f"Dockerfile {self.subject} changed: {self.detail}"
        if self.kind == "parent":
            via = f"{self.detail}: " if self.detail else ""  # a named context
            return f"{via}parent {self.subject} changed: key {self.old} -> {self.new}"
        if self.kind == "args":
            # Values are kept by digest only (keys.KeyManifest.args).
            if self.old is None or self.new is None:
                verb = "added" if self.old is None else "removed"
                return f"build arg {self.subject} {verb}"
            return f"build arg {self.subject} changed (value {self.old} -> {self.new})"
        if self.kind == "secret":
            if self.old is None or self.new is None:
                verb = "added" if self.old is None else "removed"
                return f"secret {self.subject} {verb} ({self.new or self.old})"
            return f"secret {self.subject}: {self.old} -> {self.new}"
        if self.kind == "external":
            if self.old is None or self.new is None:
                verb = "added" if self.old is None else "no longer used"
                return f"external {self.subject} {verb} ({self.new or self.old})"
            return f"external {self.subject} moved {self.old} -> {self.new}"
        return f"{self.kind} {self.subject}: {self.old} -> {self.new}"


def _short(digest: str | None) -> str | None:
    return digest[:16] if digest else digest


def _short_value(digest: str) -> str:
    """``blake3:<64 hex>`` -> ``blake3:<12 hex>``."""
    kind, _, hexdigest = digest.partition(":")
    return f"{kind}:{hexdigest[:12]}" if hexdigest else digest[:16]


def _entry_value(kind: str, executable: bool, value: str) -> str:
    if kind == "file":
        return f"blake3:{value}" + (" (executable)" if executable else "")
    if kind == "symlink":
        return f"symlink -> {value}"
    return "directory"


def diff_manifests(old: KeyManifest, new: KeyManifest) -> list[Change]:
    """Every difference that moved the key, most telling first."""
    changes: list[Change] = []
    if old.schema != new.schema:
        changes.append(Change("schema", "key schema", str(old.schema), str(new.schema)))
    if old.platform != new.platform:
        changes.append(Change("platform", "platform", old.platform, new.platform))
    if old.meaning != new.meaning:
        changes.append(
            Change(
                "dockerfile",
                new.dockerfile,
                _short(old.meaning),
                _short(new.meaning),
                _changed_instructions(old.instructions, new.instructions),
            )
        )
    if old.stage != new.stage:
        changes.append(Change("stage", "stage", old.stage, new.stage))
    old_args, new_args = dict(old.args), dict(new.args)
    for name in sorted(old_args.keys() | new_args.keys()):
        if old_args.get(name) != new_args.get(name):
            a, b = old_args.get(name), new_args.get(name)
            changes.append(Change("args", name, a and _short_value(a), b and _short_value(b)))
    old_secrets = {sid: f"{kind} {name}" for sid, kind, name in old.secrets}
    new_secrets = {sid: f"{kind} {name}" for sid, kind, name in new.secrets}
    for sid in sorted(old_secrets.keys() | new_secrets.keys()):
        if old_secrets.get(sid) != new_secrets.get(sid):
            changes.append(Change("secret", sid, old_secrets.get(sid), new_secrets.get(sid)))
    changes += _diff_entries("input", old, new)
    changes += _diff_named(old, new)
    old_globals, new_globals = dict(old.global_inputs), dict(new.global_inputs)
    for path in sorted(old_globals.keys() | new_globals.keys()):
        a, b = old_globals.get(path), new_globals.get(path)
        if a != b:
            changes.append(
                Change(
                    "global",
                    shown_path(path),
                    a and f"blake3:{a}",
                    b and f"blake3:{b}",
                    "global input",
                )
            )
    old_parents = {arg: (label, key) for arg, label, key in old.parents}
    for arg, label, key in new.parents:
        before = old_parents.get(arg)
        if before is None or before[1] != key:
            old_key = _short(before[1]) if before else None
            if arg.startswith("context "):  # handed over as a named context
                changes.append(Change("parent", label, old_key, key[:16], arg))
            else:
                changes.append(Change("parent", f"{label} ({arg})", old_key, key[:16]))
    changes += _diff_pins(old, new)
    if old.remote_sources != new.remote_sources:
        changes.append(
            Change("remote", "remote sources", ", ".join(old.remote_sources),
                   ", ".join(new.remote_sources))
        )  # fmt: skip
    return changes


def _diff_pins(old: KeyManifest, new: KeyManifest) -> list[Change]:
    """External images whose pin moved (``bt lock update``), or that came or went."""
    old_pins = {name: (value, written) for name, value, written in old.pins}
    new_pins = {name: (value, written) for name, value, written in new.pins}
    changes = []
    for name in sorted(old_pins.keys() | new_pins.keys()):
        a, b = old_pins.get(name), new_pins.get(name)
        if a is not None and b is not None and a[0] == b[0]:
            continue
        written = (b or a or ("", name))[1]
        changes.append(
            Change(
                "external",
                written,
                a and _pin_value(a[0]),
                b and _pin_value(b[0]),
            )
        )
    return changes


def _pin_value(value: str) -> str:
    return "(not pinned)" if value.startswith("unpinned:") else short_digest(value)


def _diff_entries(kind: str, old: KeyManifest, new: KeyManifest) -> list[Change]:
    old_entries = {path: (k, x, v) for path, k, x, v in old.inputs}
    new_entries = {path: (k, x, v) for path, k, x, v in new.inputs}
    changes = []
    for path in sorted(old_entries.keys() | new_entries.keys()):
        a, b = old_entries.get(path), new_entries.get(path)
        if a == b:
            continue
        shown = shown_path(
            posixpath.join(new.context or old.context, path)
            if (new.context or old.context)
            else path
        )
        changes.append(Change(kind, shown, a and _entry_value(*a), b and _entry_value(*b)))
    return changes


def _diff_named(old: KeyManifest, new: KeyManifest) -> list[Change]:
    """Files read from directory contexts that changed, came or went, by context."""
    old_entries = {(name, path): (k, x, v) for name, path, k, x, v in old.named_inputs}
    new_entries = {(name, path): (k, x, v) for name, path, k, x, v in new.named_inputs}
    changes = []
    for name, path in sorted(old_entries.keys() | new_entries.keys()):
        a, b = old_entries.get((name, path)), new_entries.get((name, path))
        if a != b:
            changes.append(
                Change("context", f"{name}: {path}", a and _entry_value(*a), b and _entry_value(*b))
            )
    return changes


def _changed_instructions(
    old: tuple[InstructionText, ...], new: tuple[InstructionText, ...]
) -> str:
    """ "stage final: LABEL at line 58 changed", one phrase per changed instruction."""
    a = [(stage, keyword, text) for stage, _, keyword, text in old]
    b = [(stage, keyword, text) for stage, _, keyword, text in new]
    phrases = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for stage, line, keyword, _ in new[j1:j2]:
            verb = "changed" if tag == "replace" else "added"
            phrases.append(f"stage {stage}: {keyword} at line {line} {verb}")
        if tag == "delete" or (tag == "replace" and i2 - i1 > j2 - j1):
            for stage, line, keyword, _ in old[i1 + (j2 - j1) if tag == "replace" else i1 : i2]:
                phrases.append(f"stage {stage}: {keyword} (line {line} before) removed")
    # Equal instructions with a new meaning: directives or the global ARGs their FROMs use.
    return ", ".join(phrases) or "parser directives or global ARGs"


def short_reason(changes: list[Change]) -> str:
    """One short phrase for ``bt plan``."""
    if not changes:
        return "key changed"
    kinds = {c.kind for c in changes}
    for kind in ("schema", "platform", "stage"):
        if kind in kinds:
            return "key schema changed" if kind == "schema" else f"{kind} changed"
    if "dockerfile" in kinds:
        return "Dockerfile changed"
    if "args" in kinds:
        names = sorted({c.subject for c in changes if c.kind == "args"})
        return "args changed: " + ", ".join(names)
    if "secret" in kinds:
        ids = sorted({c.subject for c in changes if c.kind == "secret"})
        return "secrets changed: " + ", ".join(ids)
    moved = [c for c in changes if c.kind == "external"]
    if moved:
        more = f" (+{len(moved) - 1} more)" if len(moved) > 1 else ""
        return moved[0].describe() + more
    named = [c for c in changes if c.kind == "context"]
    if named:
        more = f" (+{len(named) - 1} more)" if len(named) > 1 else ""
        return named[0].describe() + more
    for kind, phrase in (("input", "inputs changed"), ("global", "global inputs changed")):
        subjects = [c.subject for c in changes if c.kind == kind]
        if subjects:
            more = f" (+{len(subjects) - 1} more)" if len(subjects) > 1 else ""
            return f"{phrase}: {subjects[0]}{more}"
    if "remote" in kinds:
        return "remote sources changed"
    parents = [c.subject.split(" ")[0] for c in changes if c.kind == "parent"]
    return f"parent {parents[0]} changed"
