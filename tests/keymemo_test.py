"""Keys memoised between runs: an unchanged build is a lookup, and every input of its key,
edited, gives the key a cold run computes."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from btrun import keep_mtime, new_workspace

from buildtool.plan.keys import KeyManifest
from buildtool.plan.session import Session, Workbench

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64

FILES = {
    ".cache-spec": 'platforms = ["linux/amd64"]\nglobal_inputs = ["global.txt"]\n',
    "BUILD.images": (
        'image(name = "base", dockerfile = "Base", args = {"V": "1"})\n'
        'image(name = "app", parents = {"BASE": ":base"}, secrets = {"tok": {"env": "T1"}})\n'
        'image(name = "other", dockerfile = "Other")\n'
    ),
    "Base": "FROM upstream.invalid/base:1\nARG V\nCOPY base.txt /\n",
    "Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY app.txt /\nRUN --mount=type=secret,id=tok true\n",
    "Other": "FROM scratch\nCOPY other.txt /\n",
    "base.txt": "base\n",
    "app.txt": "app\n",
    "other.txt": "other\n",
    "global.txt": "global\n",
    "images.lock": json.dumps(
        {
            "version": 1,
            "builds": {},
            "images": {},
            "pins": {
                "upstream.invalid/base:1": {"linux/amd64": {"digest": D1, "source": "registry"}}
            },
        }
    ),
}


def keys(root: Path) -> tuple[dict[str, str], int]:
    """Keys of every build, and how many came from the memo."""
    bench = Workbench(Session(root))
    planned = bench.plan(["//..."])
    memo = bench.computer._memo_of_run()
    assert memo is not None
    return {str(p.label): p.key for p in planned}, memo.reused


def cold_keys(root: Path, cache: Path) -> dict[str, str]:
    shutil.rmtree(cache, ignore_errors=True)
    return keys(root)[0]


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return new_workspace(tmp_path, monkeypatch, FILES, cache="cache")


def test_an_unchanged_build_takes_its_key_from_the_memo(workspace: Path, tmp_path: Path) -> None:
    first, reused = keys(workspace)
    assert reused == 0
    again, reused = keys(workspace)
    assert again == first
    assert reused == 3
    assert cold_keys(workspace, tmp_path / "cache") == first


def _pin(root: Path) -> None:
    lock = json.loads((root / "images.lock").read_text())
    lock["pins"]["upstream.invalid/base:1"]["linux/amd64"]["digest"] = D2
    (root / "images.lock").write_text(json.dumps(lock))


def _edit(path: str, old: str, new: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        text = (root / path).read_text()
        assert old in text
        (root / path).write_text(text.replace(old, new))

    return edit


EDITS: dict[str, tuple[Callable[[Path], None], set[str]]] = {
    # what is edited: (the edit, the builds whose key it must change)
    "an input file": (_edit("app.txt", "app", "app2"), {"//:app"}),
    "a parent's input file": (_edit("base.txt", "base", "base2"), {"//:base", "//:app"}),
    "a Dockerfile": (_edit("Other", "other.txt /", "other.txt /x"), {"//:other"}),
    "a build arg": (_edit("BUILD.images", '"V": "1"', '"V": "2"'), {"//:base", "//:app"}),
    "a secret's id": (_edit("BUILD.images", '"tok"', '"tok2"'), {"//:app"}),
    "a pin": (_pin, {"//:base", "//:app"}),
    "a global input": (_edit("global.txt", "global", "global2"), {"//:base", "//:app", "//:other"}),
}


@pytest.mark.parametrize("what", sorted(EDITS))
def test_editing_an_input_of_a_key_gives_the_key_of_a_cold_run(
    workspace: Path, tmp_path: Path, what: str
) -> None:
    edit, changed = EDITS[what]
    before, _ = keys(workspace)
    keys(workspace)  # the memo now holds every key
    edit(workspace)
    after, _ = keys(workspace)
    assert {label for label in before if before[label] != after[label]} == changed
    assert cold_keys(workspace, tmp_path / "cache") == after


def test_a_same_second_edit_of_the_same_size_is_not_answered_from_the_memo(
    workspace: Path, tmp_path: Path
) -> None:
    before, _ = keys(workspace)  # the file is racy now: its stats vouch for nothing
    keep_mtime(workspace / "app.txt", "APP\n")
    after, _ = keys(workspace)
    assert after["//:app"] != before["//:app"]
    assert after == cold_keys(workspace, tmp_path / "cache")


def test_another_pins_memo_is_replaced_not_merged(workspace: Path) -> None:
    first, _ = keys(workspace)
    _pin(workspace)
    keys(workspace)
    _edit("images.lock", D2, D1)(workspace)
    again, reused = keys(workspace)
    assert again == first
    assert reused == 0  # the pins are part of the memo's identity: every key was encoded
    assert keys(workspace) == (first, 3)


def test_a_corrupt_memo_is_no_memo(workspace: Path, tmp_path: Path) -> None:
    first, _ = keys(workspace)
    memo = next((tmp_path / "cache").rglob("keys.msgpack"))
    memo.write_bytes(memo.read_bytes()[:40])
    assert keys(workspace) == (first, 0)


def test_every_keyed_field_of_a_manifest_is_covered_by_the_memo() -> None:
    """The memo's identity covers the graph, the key schema, the pins and the global inputs;
    each entry the input set's digest and the parents' keys (``keymemo.py``). A field added
    to the key must be added there too: this list is the reminder."""
    assert [f.name for f in dataclasses.fields(KeyManifest)] == [
        "schema", "label", "platform", "dockerfile", "dockerfile_digest", "meaning",
        "instructions", "stage", "args", "inputs", "inputs_digest", "global_inputs", "parents",
        "remote_sources", "fallback", "has_run", "context", "pins", "images",
        "dockerfile_bytes", "secrets", "named_inputs", "named_digests",
    ]  # fmt: skip


def test_a_missing_pin_is_answered_from_the_memo_as_the_manifest_gives_it(
    workspace: Path,
) -> None:
    (workspace / "Other").write_text("FROM upstream.invalid/other:2\nCOPY other.txt /\n")

    def reasons() -> tuple[dict[str, str], int]:
        bench = Workbench(Session(workspace))
        planned = bench.plan(["//..."])
        memo = bench.computer._memo_of_run()
        assert memo is not None
        return {str(p.label): p.reason for p in planned if p.stale}, memo.reused

    unpinned = "external upstream.invalid/other:2 not pinned yet"
    first = {"//:base": "new: never built", "//:app": "new: never built", "//:other": unpinned}
    assert reasons() == (first, 0)
    assert reasons() == (first, 3)  # the memo holds the missing pin, not only the key
