"""`bt build` on a bad day, against real engines and a real registry: a registry that is down,
a platform whose engine is down, a RUN that fails, a recorded digest deleted from the registry."""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from btrun import bt, write_tree
from registries import delete_manifest, free_port

pytestmark = pytest.mark.engine
DOCKER = "/usr/bin/docker"


def events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def by_event(stdout: str, name: str) -> list[tuple[object, object]]:
    return sorted((e["label"], e["platform"]) for e in events(stdout) if e["event"] == name)


def recorded(root: Path) -> list[tuple[str, str]]:
    builds = json.loads((root / "images.lock").read_text())["builds"]
    return sorted(
        (label, platform) for label, platforms in builds.items() for platform in platforms
    )


def nonce() -> str:
    return uuid.uuid4().hex


TWO = {
    "BUILD.images": 'image(name = "a")\nimage(name = "b", dockerfile = "b.Dockerfile")\n',
    "Dockerfile": "FROM scratch\nCOPY n.txt /a\n",
    "b.Dockerfile": "FROM scratch\nCOPY n.txt /b\n",
}


def test_a_registry_that_is_down_fails_each_push_within_the_retry_bound_naming_it(
    tmp_path: Path, engine: str
) -> None:
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    spec = (
        'platforms = ["linux/amd64", "linux/arm64"]\n[builders."*"]\nnetwork = "none"\n'
        f'[registry]\nurl = "{down}/faults"\n[retry]\nmax_seconds = 3\n'
    )
    root = write_tree(tmp_path / "ws", {**TWO, ".cache-spec": spec, "n.txt": nonce()})
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    started = time.monotonic()
    result = bt("build", "//...", "--push", "--retries", "50", "--json", cwd=root, env=env)
    seconds = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    failed = [e for e in events(result.stdout) if e["event"] == "failed"]
    assert len(failed) == 4
    for event in failed:
        assert f"registry {down} is unavailable" in str(event["message"])
        assert "\n" not in str(event["message"])
    # The bound is on the whole run: the four builds share the registry's clock.
    assert seconds < 3 + 5, seconds  # the bound, plus interpreter and planning
    assert not (root / "images.lock").exists() or recorded(root) == []

    # Not pushing, the registry is only a cache: every build finishes without it.
    offline = bt("build", "//...", "--no-push", "--json", cwd=root, env=env)
    assert offline.returncode == 0, offline.stderr
    assert len(by_event(offline.stdout, "finished")) == 4


def test_a_platform_whose_engine_is_down_fails_alone_and_the_other_platform_is_recorded(
    tmp_path: Path, engine: str
) -> None:
    dead = f"unix://{tmp_path}/no-engine.sock"
    spec = (
        'platforms = ["linux/amd64", "linux/arm64"]\n'
        f'[builders."linux/amd64"]\nhost = "{engine}"\nnetwork = "none"\n'
        f'[builders."linux/arm64"]\nhost = "{dead}"\nnetwork = "none"\n'
    )
    root = write_tree(tmp_path / "ws", {**TWO, ".cache-spec": spec, "n.txt": nonce()})
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    started = time.monotonic()
    result = bt("build", "//...", "--json", cwd=root, env=env)
    assert time.monotonic() - started < 30  # fails fast: no retrying a socket nobody serves
    assert result.returncode == 1, result.stderr
    assert by_event(result.stdout, "finished") == [
        ("//:a", "linux/amd64"),
        ("//:b", "linux/amd64"),
    ]
    failed = [e for e in events(result.stdout) if e["event"] == "failed"]
    assert sorted((e["label"], e["platform"]) for e in failed) == [
        ("//:a", "linux/arm64"),
        ("//:b", "linux/arm64"),
    ]
    for event in failed:
        assert str(event["message"]).startswith(f"the linux/arm64 engine {dead} is down: ")
    assert recorded(root) == [("//:a", "linux/amd64"), ("//:b", "linux/amd64")]


@contextlib.contextmanager
def silent_engine(path: Path) -> Iterator[str]:
    """A socket that accepts every connection and never answers: an engine that hangs. (A
    real engine cannot be made to hang on demand.)"""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        stop.set()
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        for connection in held:
            connection.close()


@pytest.mark.parametrize("backend", ["engine", "buildkit"])
def test_an_engine_that_accepts_and_never_answers_ends_the_run_within_the_retry_budget(
    tmp_path: Path, backend: str
) -> None:
    with silent_engine(tmp_path / "silent.sock") as host:
        spec = (
            f'platforms = ["linux/amd64"]\n[retry]\nmax_seconds = 3\n[builders."*"]\n'
            f'host = "{host}"\nbackend = "{backend}"\n'
        )
        root = write_tree(tmp_path / "ws", {**TWO, ".cache-spec": spec, "n.txt": nonce()})
        started = time.monotonic()
        result = bt("build", "//...", cwd=root, env={"XDG_CACHE_HOME": str(tmp_path / "c")})
        took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert took < 3 + 10, took
    output = result.stdout + result.stderr
    summary = next(line for line in output.splitlines() if line.startswith("built 0"))
    reported = float(summary.rsplit(" in ", 1)[1].removesuffix("s"))
    assert summary == f"built 0, cached 0, failed 2, skipped 0 in {reported:.1f}s"
    assert 3.0 <= reported <= took, (reported, took)  # the wait for the engine included
    assert f"the linux/amd64 engine {host} is down: " in output


FAILING_RUN = {
    ".cache-spec": 'platforms = ["linux/amd64"]\n[builders."*"]\nnetwork = "none"\n',
    "BUILD.images": """
image(name = "base", dockerfile = "base.Dockerfile")
image(name = "bad", dockerfile = "bad.Dockerfile", parents = {"BASE": ":base"})
image(name = "child", dockerfile = "child.Dockerfile", parents = {"BASE": ":bad"})
image(name = "grandchild", dockerfile = "child.Dockerfile", parents = {"BASE": ":child"})
image(name = "sibling", dockerfile = "child.Dockerfile", parents = {"BASE": ":base"})
image(name = "alone", dockerfile = "base.Dockerfile")
""",
    "base.Dockerfile": "FROM bt-test/busybox:latest\nCOPY n.txt /n.txt\n",
    "bad.Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY fail.sh /fail.sh\nRUN sh /fail.sh\n",
    "child.Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY n.txt /child.txt\n",
    "fail.sh": "echo failing on purpose; exit 3\n",
}


def test_a_failing_run_skips_exactly_its_dependents_and_the_rerun_builds_exactly_those(
    tmp_path: Path, engine: str
) -> None:
    root = write_tree(tmp_path / "ws", {**FAILING_RUN, "n.txt": nonce()})
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    first = bt("build", "//...", "--json", cwd=root, env=env)
    assert first.returncode == 1, first.stderr
    amd = "linux/amd64"
    assert by_event(first.stdout, "failed") == [("//:bad", amd)]
    skipped = {
        (e["label"], e["platform"]): e["reason"]
        for e in events(first.stdout)
        if e["event"] == "skipped"
    }
    assert skipped == {
        ("//:child", amd): "dependency //:bad linux/amd64 failed",
        ("//:grandchild", amd): "dependency //:bad linux/amd64 failed",
    }
    independents = [("//:alone", amd), ("//:base", amd), ("//:sibling", amd)]
    assert by_event(first.stdout, "finished") == independents
    assert recorded(root) == independents  # the failure is not recorded

    (root / "fail.sh").write_text("echo fixed\n")
    rerun = bt("build", "//...", "--json", cwd=root, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert by_event(rerun.stdout, "finished") == [
        ("//:bad", amd),
        ("//:child", amd),
        ("//:grandchild", amd),
    ]
    assert by_event(rerun.stdout, "cached") == []


# -- healing ----------------------------------------------------------------------------------


def serves(image: str) -> bool:
    host, _, rest = image.partition("/")
    repository, _, digest = rest.partition("@")
    conn = http.client.HTTPConnection(host, timeout=10)
    accept = (
        "application/vnd.docker.distribution.manifest.v2+json, "
        "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
    )
    conn.request("HEAD", f"/v2/{repository}/manifests/{digest}", headers={"Accept": accept})
    status = conn.getresponse().status
    conn.close()
    return status == 200


def test_a_recorded_digest_deleted_from_the_registry_is_pushed_again_or_rebuilt(
    tmp_path: Path, engine: str, registry: str
) -> None:
    url = f"{registry}/bt-heal-{nonce()[:12]}"
    spec = (
        'platforms = ["linux/amd64", "linux/arm64"]\n[builders."*"]\nnetwork = "none"\n'
        f'[registry]\nurl = "{url}"\n'
    )
    files = {
        ".cache-spec": spec,
        "BUILD.images": 'image(name = "app", tags = ["latest"])\n',
        "Dockerfile": "FROM scratch\nCOPY n.txt /n.txt\n",
        "n.txt": nonce(),
    }
    root = write_tree(tmp_path / "ws", files)
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    bt("build", "//...", "--push", cwd=root, env=env, check=True)
    builds = json.loads((root / "images.lock").read_text())["builds"]["//:app"]
    lost = builds["linux/amd64"]
    delete_manifest(lost["image"])
    assert not serves(lost["image"])

    # bt plan asks the registry only when told to, and then says why.
    assert "0 of 2 platform builds stale" in bt("plan", "//...", cwd=root, env=env).stderr
    checked = bt("plan", "//...", "--check-registry", "--format", "json", cwd=root, env=env)
    assert checked.returncode == 0, checked.stderr
    assert [(p["platform"], p["reason"]) for p in json.loads(checked.stdout)] == [
        ("linux/amd64", "recorded digest missing from registry")
    ]

    # The image is still on the engine under its key-derived tag: pushed again, not rebuilt.
    healed = bt("build", "//...", "--push", "--json", cwd=root, env=env)
    assert healed.returncode == 0, healed.stderr
    assert by_event(healed.stdout, "finished") == []
    assert by_event(healed.stdout, "cached") == [("//:app", "linux/amd64")]
    again = json.loads((root / "images.lock").read_text())["builds"]["//:app"]["linux/amd64"]
    assert again["key"] == lost["key"]
    assert serves(again["image"])

    # Deleted again, and gone from the engine too: rebuilt, then pushed.
    delete_manifest(again["image"])
    local = f"bt/app:app-{lost['key'][:24]}"
    subprocess.run([DOCKER, "-H", engine, "rmi", "-f", local], capture_output=True, check=True)
    rebuilt = bt("build", "//...", "--push", "--json", cwd=root, env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert by_event(rebuilt.stdout, "finished") == [("//:app", "linux/amd64")]
    final = json.loads((root / "images.lock").read_text())["builds"]["//:app"]["linux/amd64"]
    assert final["key"] == lost["key"]
    assert serves(final["image"])
    assert (
        "0 of 2 platform builds stale"
        in bt("plan", "//...", "--check-registry", cwd=root, env=env).stderr
    )


# -- disk full --------------------------------------------------------------------------------


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 512 KiB tmpfs (needs root to mount)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)


def leftovers(*tops: Path) -> list[Path]:
    """Temporary files, and logs left empty, under ``tops``."""
    return [
        p
        for top in tops
        for p in top.rglob("*")
        if p.name.endswith(".tmp") or (p.suffix == ".log" and p.stat().st_size == 0)
    ]


@pytest.mark.parametrize("full", ["cache directory", "workspace"])
def test_a_full_disk_stops_the_run_with_one_line_and_leaves_the_old_state_intact(
    tmp_path: Path, engine: str, small_disk: Path, full: str
) -> None:
    on_disk = full == "workspace"
    root = (small_disk if on_disk else tmp_path) / "ws"
    cache = tmp_path / "cache" if on_disk else small_disk / "cache"
    spec = 'platforms = ["linux/amd64"]\n[builders."*"]\nnetwork = "none"\n'
    write_tree(root, {**TWO, ".cache-spec": spec, "n.txt": nonce()})
    env = {
        "DOCKER_HOST": engine,
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        "BT_CACHE_DIR": str(cache),
    }
    bt("build", "//...", cwd=root, env=env, check=True)
    before = (root / "images.lock").read_bytes()

    (root / "n.txt").write_text(nonce())
    fill(small_disk)
    result = bt("build", "//...", cwd=root, env=env)

    assert result.returncode == 2, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.endswith(": cannot write: No space left on device"), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert (root / "images.lock").read_bytes() == before
    assert leftovers(root, cache) == []
