"""`bt watch`: the watched set, the round summary, and the loop against a real engine."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from btrun import copy_example, own_repository, write_tree

from buildtool.cli.watch import bare_watch_set, changed_paths, watch_set
from buildtool.plan.session import Session, Workbench

BOTH = ("linux/amd64", "linux/arm64")
Event = dict[str, object]


def fresh_example(dest: Path) -> Path:
    """A copy of the example whose keys no earlier run has built (see build_test)."""
    root = copy_example(dest)
    with (root / "docker/common/versions.txt").open("a") as f:
        f.write(f"# run {uuid.uuid4().hex}\n")
    return root


def test_watch_set_holds_the_inputs_of_the_selection_and_the_graph_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_example(tmp_path / "ws")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bench = Workbench(Session(root))
    watched = watch_set(bench.config, bench.plan(["//matrix:tiny-en"]))
    accepted = [
        "docker/align/en/alignment.bin",
        "docker/align/en/new-file.txt",  # added next to inputs: maybe a new input
        "docker/models/tiny/model.bin",
        "docker/Dockerfile",
        "docker/.dockerignore",
        "docker/Dockerfile.dockerignore",
        "docker/common/versions.txt",
        "BUILD.images",
        "docker/BUILD.images",
        ".cache-spec",
    ]
    rejected = [
        "docker/align/zh/vocab.json",  # another language's input
        "docker/models/small/model.bin",  # another model's input
        "images.lock",  # bt writes it: watching it would loop
        "README.md",
    ]
    assert [p for p in accepted if not watched.accepts(str(root / p))] == []
    assert [p for p in rejected if watched.accepts(str(root / p))] == []


def test_the_bare_watch_set_accepts_only_the_files_that_declare_the_graph(
    tmp_path: Path,
) -> None:
    watched = bare_watch_set(tmp_path)
    paths = ["BUILD.images", "pkg/BUILD.images", ".cache-spec", "images.lock", "a/b.txt"]
    assert [p for p in paths if watched.accepts(str(tmp_path / p))] == [
        "BUILD.images",
        "pkg/BUILD.images",
        ".cache-spec",
    ]


def test_changed_paths_are_relative_sorted_and_unique(tmp_path: Path) -> None:
    paths = [str(tmp_path / "b/x"), str(tmp_path / "a"), str(tmp_path / "b/x")]
    assert changed_paths(str(tmp_path), paths) == ["a", "b/x"]


REENTRY = {
    ".cache-spec": 'platforms = ["linux/amd64", "linux/arm64"]\nglobal_inputs = ["g.txt"]\n',
    "BUILD.images": (
        'image(name = "base", args = {"D": "a"}, platforms = ["linux/amd64"])\n'
        'image(name = "app", args = {"D": "b"}, parents = {"BASE": ":base"},'
        ' platforms = ["linux/amd64"])\n'
        'image(name = "other", dockerfile = "Other")\n'
    ),
    "Dockerfile": "ARG BASE=scratch\nFROM ${BASE}\nARG D\nCOPY data/${D}/ /data/\n",
    "Other": "FROM scratch\nCOPY other/ /other/\n",
    "data/a/1.txt": "a1\n",
    "data/b/1.txt": "b1\n",
    "other/1.txt": "o1\n",
    "g.txt": "g\n",
}


def planned_keys(bench: Workbench) -> dict[tuple[str, str], str]:
    return {(str(p.label), p.platform): p.key for p in bench.plan(["//..."])}


@pytest.fixture()
def reentry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Workbench]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = write_tree(tmp_path / "ws", REENTRY)
    bench = Workbench(Session(root))
    planned_keys(bench)
    return root, bench


@pytest.mark.parametrize(
    ("edit", "forgotten"),
    [
        ("data/a/1.txt", {("//:base", "linux/amd64"), ("//:app", "linux/amd64")}),
        ("data/b/1.txt", {("//:app", "linux/amd64")}),
        ("data/b/new.txt", {("//:app", "linux/amd64")}),  # a new file in an input directory
        ("other/1.txt", {("//:other", "linux/amd64"), ("//:other", "linux/arm64")}),
        ("unrelated.txt", set()),
    ],
)
def test_a_watch_round_forgets_exactly_the_builds_an_input_change_reaches(
    reentry: tuple[Path, Workbench], edit: str, forgotten: set[tuple[str, str]]
) -> None:
    root, bench = reentry
    before = planned_keys(bench)
    (root / edit).write_text("changed\n")
    dropped = bench.computer.forget([edit])  # what the round encodes again
    assert {(str(label), platform) for label, platform in dropped} == forgotten
    assert bench.forget([edit])  # the round goes on from "hash"
    after = planned_keys(bench)
    assert {b for b in before if before[b] != after[b]} == forgotten
    assert after == planned_keys(Workbench(Session(root)))  # what a new workbench computes


def test_a_same_second_same_size_edit_seen_by_watch_is_hashed_again(
    reentry: tuple[Path, Workbench],
) -> None:
    root, bench = reentry
    path = root / "data/b/1.txt"
    before = planned_keys(bench)
    stat = path.stat()
    path.write_text("B1\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert bench.forget(["data/b/1.txt"])
    after = planned_keys(bench)
    assert after[("//:app", "linux/amd64")] != before[("//:app", "linux/amd64")]
    assert after == planned_keys(Workbench(Session(root)))


@pytest.mark.parametrize(
    "path", ["BUILD.images", ".cache-spec", "Dockerfile", "Other.dockerignore", ".dockerignore",
             "g.txt", "sub/BUILD.images"],
)  # fmt: skip
def test_a_change_to_what_declares_the_graph_or_every_key_needs_a_new_workbench(
    reentry: tuple[Path, Workbench], path: str
) -> None:
    _, bench = reentry
    assert not bench.forget([path])


@pytest.mark.parametrize(
    ("edit", "forgotten"),
    [("a.txt", {"//:a"}), ("new.txt", {"//:a", "//:b"})],  # content; a name beside theirs
)
def test_a_content_edit_forgets_only_the_sets_holding_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: str, forgotten: set[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    files = {
        ".cache-spec": 'platforms = ["linux/amd64"]\n',
        "BUILD.images": 'image(name = "a", dockerfile = "A")\nimage(name = "b", dockerfile = "B")\n',
        "A": "FROM scratch\nCOPY a.txt /\n",
        "B": "FROM scratch\nCOPY b.txt /\n",
        "a.txt": "a\n",
        "b.txt": "b\n",
    }
    root = write_tree(tmp_path / "ws", files)
    bench = Workbench(Session(root))
    before = planned_keys(bench)
    (root / edit).write_text("edited\n")
    assert {str(label) for label, _ in bench.computer.forget([edit])} == forgotten
    assert planned_keys(bench) == planned_keys(Workbench(Session(root)))
    assert (planned_keys(bench) != before) == (edit == "a.txt")


def test_the_lockfiles_temporary_file_is_not_watched_beside_root_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    files = {
        ".cache-spec": 'platforms = ["linux/amd64"]\n',
        "BUILD.images": 'image(name = "app")\n',
        "Dockerfile": "FROM scratch\nCOPY top.txt /\n",
        "top.txt": "top\n",
    }
    root = write_tree(tmp_path / "ws", files)
    bench = Workbench(Session(root))
    watched = watch_set(bench.config, bench.plan(["//..."]))
    assert watched.accepts(str(root / "new.txt"))  # next to top.txt: maybe a new input
    assert not watched.accepts(str(root / ".images.lock.123.0a1b2c3d.tmp"))
    assert not watched.accepts(str(root / "images.lock"))


def test_a_new_file_a_double_star_global_input_matches_is_watched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fnmatch's "a/**/b.txt" misses "a/b.txt", which glob (the key's matcher) finds.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    files = {
        ".cache-spec": 'platforms = ["linux/amd64"]\nglobal_inputs = ["a/**/b.txt"]\n',
        "BUILD.images": 'image(name = "app")\n',
        "Dockerfile": "FROM scratch\nCOPY top.txt /\n",
        "top.txt": "top\n",
        "a/x/b.txt": "b\n",
    }
    root = write_tree(tmp_path / "ws", files)
    bench = Workbench(Session(root))
    watched = watch_set(bench.config, bench.plan(["//..."]))
    assert watched.accepts(str(root / "a" / "b.txt"))
    assert watched.accepts(str(root / "a" / "y" / "z" / "b.txt"))
    assert not watched.accepts(str(root / "a" / "c.txt"))


class WatchProcess:
    """`bt watch --json` as a child process, its stdout read line by line in the background."""

    def __init__(self, root: Path, env: dict[str, str], *patterns: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "buildtool", "watch", *patterns, "--json"],
            cwd=root,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def until(self, done: Callable[[Event], bool], timeout: float = 30.0) -> list[Event]:
        """Events up to and including the first for which ``done`` holds."""
        seen: list[Event] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out; events so far: {seen}") from None
            if line is None:
                raise AssertionError(f"bt watch exited; events: {seen}; {self.stderr()}")
            event: Event = json.loads(line)
            seen.append(event)
            if done(event):
                return seen

    def next_round(self, timeout: float = 30.0) -> tuple[list[Event], Event]:
        """The events of the next round and its summary (a round or an error)."""
        events = self.until(lambda e: e["event"] in ("watch_round", "watch_error"), timeout)
        self.until(lambda e: e["event"] == "watching", timeout)
        return events, events[-1]

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def finished(events: list[Event]) -> list[tuple[object, object]]:
    return sorted((e["label"], e["platform"]) for e in events if e["event"] == "finished")


def lock(root: Path) -> dict[str, dict[str, dict[str, str]]]:
    return json.loads((root / "images.lock").read_text())["builds"]  # type: ignore[no-any-return]


@pytest.fixture()
def watching(tmp_path: Path, engine: str) -> Iterator[tuple[Path, WatchProcess]]:
    """`bt watch //matrix:tiny-en` on a fresh example, past its initial build of six."""
    root = fresh_example(tmp_path / "ws")
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    process = WatchProcess(root, env, "//matrix:tiny-en")
    try:
        events, summary = process.next_round(timeout=120)
        assert summary["event"] == "watch_round", summary
        assert len(finished(events)) == 6
        yield root, process
    finally:
        process.kill()


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


@pytest.mark.engine
def test_editing_an_input_rebuilds_exactly_its_builds_and_touching_or_ignored_files_do_not(
    watching: tuple[Path, WatchProcess],
) -> None:
    root, process = watching
    before = lock(root)["//matrix:tiny-en"]
    alignment = root / "docker/align/en/alignment.bin"
    append(alignment, b"retrained")
    events, summary = process.next_round(timeout=10)
    assert finished(events) == [("//matrix:tiny-en", p) for p in BOTH]
    assert summary["changed"] == ["docker/align/en/alignment.bin"]
    after = lock(root)["//matrix:tiny-en"]
    assert {p: after[p]["digest"] != before[p]["digest"] for p in BOTH} == dict.fromkeys(BOTH, True)

    os.utime(alignment, (time.time() + 5, time.time() + 5))
    events, summary = process.next_round(timeout=10)
    assert (finished(events), summary["rebuilt"]) == ([], [])

    append(root / "docker/align/en/NOTES.md", b"*.md is ignored\n")
    events, summary = process.next_round(timeout=10)
    assert summary["changed"] == ["docker/align/en/NOTES.md"]
    assert (finished(events), summary["rebuilt"]) == ([], [])
    assert lock(root)["//matrix:tiny-en"] == after


@pytest.mark.engine
def test_editing_a_model_rebuilds_the_model_and_the_matrix_image_on_both_platforms(
    watching: tuple[Path, WatchProcess],
) -> None:
    root, process = watching
    append(root / "docker/models/tiny/model.bin", b"fine-tuned")
    events, summary = process.next_round(timeout=20)
    expected = sorted((label, p) for label in ("//matrix:tiny-en", "//model:tiny") for p in BOTH)
    assert finished(events) == expected
    assert summary["rebuilt"] == [list(build) for build in expected]


@pytest.mark.engine
def test_an_edit_saved_during_a_build_is_built_right_after_it(
    watching: tuple[Path, WatchProcess],
) -> None:
    root, process = watching
    append(root / "docker/models/tiny/model.bin", b"fine-tuned")
    process.until(lambda e: e["event"] == "started")
    append(root / "docker/align/en/alignment.bin", b"retrained")
    events, summary = process.next_round(timeout=20)
    assert summary["changed"] == ["docker/models/tiny/model.bin"]
    assert finished(events) == [("//model:tiny", p) for p in BOTH]
    # The child read its edited input after its key was computed: never recorded under that key.
    failed = {(e["label"], e["platform"]): e["message"] for e in events if e["event"] == "failed"}
    assert set(failed) == {("//matrix:tiny-en", p) for p in BOTH}
    assert all("changed since its key was computed" in str(m) for m in failed.values())
    events, summary = process.next_round(timeout=20)
    assert summary["changed"] == ["docker/align/en/alignment.bin"]
    assert finished(events) == [("//matrix:tiny-en", p) for p in BOTH]


@pytest.mark.engine
def test_a_syntax_error_in_build_images_is_reported_and_fixing_it_resumes_then_sigint_exits_130(
    watching: tuple[Path, WatchProcess],
) -> None:
    root, process = watching
    build_file = root / "BUILD.images"
    good = build_file.read_text()
    build_file.write_text(good + "oops(\n")
    _, summary = process.next_round(timeout=10)
    assert (summary["event"], summary["changed"]) == ("watch_error", ["BUILD.images"])
    assert str(summary["message"]).startswith("BUILD.images:")
    assert "syntax error" in str(summary["message"])

    build_file.write_text(good)
    _, summary = process.next_round(timeout=10)
    assert (summary["event"], summary["rebuilt"]) == ("watch_round", [])
    append(root / "docker/align/en/alignment.bin", b"again")
    events, _ = process.next_round(timeout=10)
    assert finished(events) == [("//matrix:tiny-en", p) for p in BOTH]

    lock_text = (root / "images.lock").read_text()
    process.proc.send_signal(signal.SIGINT)
    assert process.proc.wait(timeout=10) == 130
    assert (root / "images.lock").read_text() == lock_text
    assert "interrupted" in process.stderr()


@pytest.mark.engine
def test_watch_push_reports_the_merge_of_each_round_as_json_lines(
    tmp_path: Path, engine: str, registry: str
) -> None:
    url = own_repository(registry, "bt-watch")
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": f'platforms = ["linux/amd64"]\n[registry]\nurl = "{url}"\n'
            '[builders."*"]\nnetwork = "none"\n',
            "BUILD.images": 'image(name = "app", tags = ["latest"])\n',
            "Dockerfile": "FROM scratch\nCOPY a.txt /a.txt\n",
            "a.txt": uuid.uuid4().hex,
        },
    )
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    process = WatchProcess(root, env, "//...", "--push")
    try:
        events, summary = process.next_round(timeout=120)
        assert summary["event"] == "watch_round", summary
        merged = [e for e in events if e["event"] == "merged"]
        assert [(e["tag"], e["status"]) for e in merged] == [(f"{url}/app:latest", "created")]
        append(root / "a.txt", b"edited")
        events, _ = process.next_round(timeout=30)
        merged = [e for e in events if e["event"] == "merged"]
        assert [(e["tag"], e["status"]) for e in merged] == [(f"{url}/app:latest", "updated")]
    finally:
        process.kill()


@pytest.mark.engine
def test_a_build_in_another_terminal_during_a_watch_round_runs_nothing_twice(
    watching: tuple[Path, WatchProcess], tmp_path: Path, engine: str
) -> None:
    root, process = watching
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    append(root / "docker/align/en/alignment.bin", b"retrained")
    process.until(lambda e: e["event"] == "started")
    # The same target built from another terminal while the watch round builds it.
    build = subprocess.run(
        [sys.executable, "-m", "buildtool", "build", "//matrix:tiny-en", "--json"],
        cwd=root,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    events, summary = process.next_round(timeout=60)
    assert summary["event"] == "watch_round", summary
    assert summary["changed"] == ["docker/align/en/alignment.bin"]
    build_events = [json.loads(line) for line in build.stdout.splitlines() if line]
    # Each platform build ran once, in one of the two processes; the other used its result.
    assert sorted(finished(events) + finished(build_events)) == [
        ("//matrix:tiny-en", p) for p in BOTH
    ]
    recorded = lock(root)["//matrix:tiny-en"]  # images.lock parses, and holds those builds
    digests = {
        e["platform"]: e["digest"]
        for e in events + build_events
        if e["event"] in ("finished", "cached") and e["label"] == "//matrix:tiny-en"
    }
    assert {p: recorded[p]["digest"] for p in BOTH} == digests
    # Both settled: nothing is left stale, and the watch answers the next edit.
    plan = subprocess.run(
        [sys.executable, "-m", "buildtool", "plan", "//matrix:tiny-en", "--format", "json"],
        cwd=root,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (plan.returncode, json.loads(plan.stdout)) == (0, []), plan.stderr
    append(root / "docker/align/en/NOTES.md", b"*.md is ignored\n")
    _, summary = process.next_round(timeout=30)
    assert (summary["event"], summary["rebuilt"]) == ("watch_round", [])
    assert process.proc.poll() is None
