"""`bt build` against real Docker engines and a real registry."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from btrun import bt, copy_example, own_repository, write_tree
from registries import MANIFEST, fake_registry, manifest_answer

from buildtool.build.events import ReportEvent, Retrying, Summary
from buildtool.build.run import BuildOptions, BuildRun
from buildtool.build.scheduler import Job, Outcome, run_jobs
from buildtool.registry import sha256_digest
from buildtool.workspace.config import Config

pytestmark = pytest.mark.engine
DOCKER = "/usr/bin/docker"


def docker(host: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, "-H", host, *args], capture_output=True, text=True, check=False)


def image_id(host: str, ref: str) -> str | None:
    out = docker(host, "image", "inspect", "--format", "{{.Id}}", ref)
    return out.stdout.strip() if out.returncode == 0 else None


def events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def built(stdout: str) -> list[tuple[object, object]]:
    return sorted((e["label"], e["platform"]) for e in events(stdout) if e["event"] == "finished")


def lock(root: Path) -> dict[str, dict[str, dict[str, str]]]:
    return json.loads((root / "images.lock").read_text())["builds"]  # type: ignore[no-any-return]


def fresh_example(dest: Path) -> Path:
    """A copy of the example whose keys no earlier run has built: the engines keep every image
    by a key-derived tag (the local action cache), so an old copy would only hit that cache."""
    root = copy_example(dest)
    with (root / "docker/common/versions.txt").open("a") as f:
        f.write(f"# run {uuid.uuid4().hex}\n")
    return root


@pytest.fixture()
def example(tmp_path: Path, engine: str) -> tuple[Path, dict[str, str]]:
    root = fresh_example(tmp_path / "ws")
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return root, env


BOTH = ("linux/amd64", "linux/arm64")


def unique(files: dict[str, str]) -> dict[str, str]:
    """The workspace ``files`` with a global input no earlier run had, so every key is new."""
    spec = 'global_inputs = ["nonce.txt"]\n' + files[".cache-spec"]
    return {**files, ".cache-spec": spec, "nonce.txt": uuid.uuid4().hex}


def test_build_one_matrix_image_builds_exactly_its_six_platform_builds(
    example: tuple[Path, dict[str, str]], engine: str
) -> None:
    root, env = example
    result = bt("build", "//matrix:tiny-en", "--json", cwd=root, env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert built(result.stdout) == sorted(
        (label, p)
        for label in ("//base:no_model", "//model:tiny", "//matrix:tiny-en")
        for p in BOTH
    )
    records = lock(root)
    assert sorted((lb, p) for lb, ps in records.items() for p in ps) == built(result.stdout)
    for platforms in records.values():
        for platform, record in platforms.items():
            assert image_id(engine, record["image"]) == record["digest"]
            arch = docker(engine, "image", "inspect", "-f", "{{.Architecture}}", record["image"])
            assert arch.stdout.strip() == platform.split("/")[1]

    again = bt("build", "//matrix:tiny-en", "--json", cwd=root, env=env)
    assert again.returncode == 0
    assert built(again.stdout) == []
    assert events(again.stdout) == [{"event": "up_to_date", "total": 6}]

    with (root / "docker/align/en/alignment.bin").open("ab") as f:
        f.write(b"retrained")
    third = bt("build", "//matrix:tiny-en", "--json", cwd=root, env=env)
    assert third.returncode == 0, third.stderr
    assert built(third.stdout) == [("//matrix:tiny-en", p) for p in BOTH]
    assert lock(root)["//matrix:tiny-en"] != records["//matrix:tiny-en"]


def test_a_reverted_edit_is_recorded_from_the_action_cache_not_rebuilt(
    example: tuple[Path, dict[str, str]],
) -> None:
    root, env = example
    assert bt("build", "//model:tiny", cwd=root, env=env).returncode == 0
    first = lock(root)["//model:tiny"]
    path = root / "docker/models/tiny/config.json"
    original = path.read_text()
    path.write_text(original + " ")
    assert bt("build", "//model:tiny", cwd=root, env=env).returncode == 0
    assert lock(root)["//model:tiny"] != first
    path.write_text(original)
    result = bt("build", "//model:tiny", "--json", cwd=root, env=env)
    assert result.returncode == 0
    assert built(result.stdout) == []
    cached = sorted(
        (e["label"], e["platform"]) for e in events(result.stdout) if e["event"] == "cached"
    )
    assert cached == [("//model:tiny", p) for p in BOTH]
    assert lock(root)["//model:tiny"] == first


def test_arm64_routed_to_a_second_engine_lands_only_there(
    tmp_path: Path, engine: str, engine2: str
) -> None:
    root = fresh_example(tmp_path / "ws")
    spec = root / ".cache-spec"
    spec.write_text(
        spec.read_text().replace(
            '[builders."linux/arm64"]\n', f'[builders."linux/arm64"]\nhost = "{engine2}"\n'
        )
    )
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = bt("build", "//matrix:base-zh", cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    records = lock(root)
    assert len(records) == 3
    for platforms in records.values():
        arm, amd = platforms["linux/arm64"], platforms["linux/amd64"]
        assert image_id(engine2, arm["image"]) == arm["digest"]
        assert image_id(engine, arm["image"]) is None
        assert image_id(engine, amd["image"]) == amd["digest"]
        assert image_id(engine2, amd["image"]) is None


FAILING = {
    ".cache-spec": 'platforms = ["linux/amd64"]\n[builders."*"]\nnetwork = "none"\n',
    "BUILD.images": """
image(name = "good", dockerfile = "good.Dockerfile")
image(name = "bad", dockerfile = "bad.Dockerfile")
image(name = "child", dockerfile = "child.Dockerfile", parents = {"BASE": ":bad"})
image(name = "grandchild", dockerfile = "child.Dockerfile", parents = {"BASE": ":child"})
""",
    "good.Dockerfile": "FROM scratch\nCOPY a.txt /a.txt\n",
    "bad.Dockerfile": "FROM scratch\nCOPY a.txt /a.txt\nCOPY --from=nonexistent-stage-image:none /x /x\n",
    "child.Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY a.txt /b.txt\n",
    "a.txt": "a\n",
}


def test_a_failing_build_skips_only_its_dependents_and_exits_1(tmp_path: Path, engine: str) -> None:
    root = write_tree(tmp_path / "ws", unique(FAILING))
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = bt("build", "//...", "--json", cwd=root, env=env)
    assert result.returncode == 1
    by_event: dict[object, list[object]] = {}
    for e in events(result.stdout):
        by_event.setdefault(e["event"], []).append(e.get("label"))
    assert by_event["finished"] == ["//:good"]
    assert by_event["failed"] == ["//:bad"]
    assert sorted(by_event["skipped"]) == ["//:child", "//:grandchild"]  # type: ignore[type-var]
    failed = next(e for e in events(result.stdout) if e["event"] == "failed")
    assert Path(str(failed["log_path"])).is_file()
    assert "nonexistent-stage-image" in str(failed["log_tail"])
    assert list(lock(root)) == ["//:good"]
    assert "1 platform builds failed, 2 skipped" in result.stderr


def test_a_run_target_routed_to_a_foreign_engine_is_refused(tmp_path: Path, engine: str) -> None:
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": 'platforms = ["linux/arm64"]\n',
            "BUILD.images": 'image(name = "runs")\n',
            "Dockerfile": "FROM bt-test/busybox:latest\nRUN echo hi > /hi\n",
        },
    )
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = bt("build", "//:runs", cwd=root, env=env)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "refusing to build //:runs for linux/arm64" in result.stderr
    assert "(linux/amd64): its Dockerfile has RUN instructions" in result.stderr
    assert not (root / "images.lock").exists()


TESTED = {
    ".cache-spec": 'platforms = ["linux/amd64"]\n[builders."*"]\nnetwork = "none"\n',
    "BUILD.images": """
image(name = "ok", tests = ["cat /hello.txt", "test -f /hello.txt"])
image(name = "broken", tests = ["test -f /missing.txt"])
image(name = "after", dockerfile = "child.Dockerfile", parents = {"BASE": ":broken"})
""",
    "Dockerfile": "FROM bt-test/busybox:latest\nCOPY hello.txt /hello.txt\n",
    "child.Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY hello.txt /again.txt\n",
    "hello.txt": "hello\n",
}


def test_image_tests_run_and_a_failing_test_fails_its_build(tmp_path: Path, engine: str) -> None:
    root = write_tree(tmp_path / "ws", unique(TESTED))
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = bt("build", "//...", "--json", cwd=root, env=env)
    assert result.returncode == 1
    kinds = {(e["event"], e.get("label")) for e in events(result.stdout)}
    assert ("finished", "//:ok") in kinds
    assert ("failed", "//:broken") in kinds
    assert ("skipped", "//:after") in kinds
    assert list(lock(root)) == ["//:ok"]
    rerun = bt("test", "//:ok", cwd=root, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert "ok    //:ok linux/amd64 (2 tests)" in rerun.stdout


def test_push_records_digests_the_registry_serves(
    example: tuple[Path, dict[str, str]], registry: str
) -> None:
    root, env = example
    result = bt("build", "//...", "--push", "--jobs", "6", cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    records = lock(root)
    assert sum(len(p) for p in records.values()) == 390
    accept = ", ".join(
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.oci.image.manifest.v1+json",
        )
    )
    conn = http.client.HTTPConnection(registry, timeout=10)
    for platforms in records.values():
        for record in platforms.values():
            name, digest = record["image"].split("@")
            assert digest == record["digest"]
            repository = name.split("/", 1)[1]
            conn.request("HEAD", f"/v2/{repository}/manifests/{digest}", headers={"Accept": accept})
            response = conn.getresponse()
            response.read()
            assert response.status == 200, record
            assert response.getheader("Docker-Content-Digest") == digest


def test_ctrl_c_cancels_running_builds_keeps_finished_ones_and_exits_130(
    tmp_path: Path, engine: str
) -> None:
    root = write_tree(
        tmp_path / "ws",
        unique(
            {
                ".cache-spec": 'platforms = ["linux/amd64"]\njobs = 2\n[builders."*"]\njobs = 2\nnetwork = "none"\n',
                "BUILD.images": 'image(name = "quick", dockerfile = "quick.Dockerfile")\n'
                'image(name = "slow", dockerfile = "slow.Dockerfile")\n',
                "quick.Dockerfile": "FROM scratch\nCOPY a.txt /a.txt\n",
                "slow.Dockerfile": f"FROM bt-test/busybox:latest\nRUN sleep 60 # {tmp_path}\n",
                "a.txt": "a\n",
            }
        ),
    )
    env = {**os.environ, "DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    process = subprocess.Popen(
        [sys.executable, "-m", "buildtool", "build", "//...", "--json"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (root / "images.lock").exists() and "//:quick" in (root / "images.lock").read_text():
            break
        time.sleep(0.2)
    time.sleep(1.0)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert time.monotonic() - started < 30
    assert process.returncode == 130, stderr
    assert list(lock(root)) == ["//:quick"]
    assert "interrupted" in stderr
    kinds = {(e["event"], e.get("label")) for e in events(stdout)}
    assert ("skipped", "//:slow") in kinds or ("failed", "//:slow") in kinds
    resumed = bt("plan", "//...", "--format", "json", cwd=root, env=env)
    assert [p["label"] for p in json.loads(resumed.stdout)] == ["//:slow"]


def test_engine_api_backend_builds_too(tmp_path: Path, engine: str) -> None:
    root = write_tree(
        tmp_path / "ws",
        unique(
            {
                ".cache-spec": 'platforms = ["linux/amd64"]\n[builders."*"]\nbackend = "engine"\nnetwork = "none"\n',
                "BUILD.images": 'image(name = "api", tests = ["cat /a.txt"])\n',
                "Dockerfile": "FROM bt-test/busybox:latest\nCOPY a.txt /a.txt\n",
                "a.txt": "via the engine API\n",
            }
        ),
    )
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = bt("build", "//...", "--json", cwd=root, env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    record = lock(root)["//:api"]["linux/amd64"]
    assert image_id(engine, record["image"]) == record["digest"]
    out = docker(engine, "run", "--rm", "--network=none", record["image"], "cat", "/a.txt")
    assert out.stdout == "via the engine API\n"


# -- one retry layer --------------------------------------------------------------------------


def verify_under_the_scheduler(
    tmp_path: Path, answers: list[int]
) -> tuple[Summary, list[str], list[Retrying]]:
    """Run one job that checks a pushed image as a build does (``BuildRun.verify_pushed``)
    against a fake registry answering HEADs with ``answers`` in turn (then 200), under the
    scheduler's retry layer; return its summary, the registry's requests and the retries."""
    digest = sha256_digest(MANIFEST)
    calls: list[str] = []

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        calls.append(method)
        status = answers[len(calls) - 1] if len(calls) <= len(answers) else 200
        return manifest_answer() if status == 200 else (status, {}, b"")

    seen: list[ReportEvent] = []
    with fake_registry(handle) as address:
        config = Config(root=tmp_path, spec_path=tmp_path / ".cache-spec", registry=address)
        run = BuildRun(config, {}, tmp_path / "lock", BuildOptions(), seen.append)

        def runner(job: Job, cancel: threading.Event) -> Outcome:
            run.verify_pushed(f"{address}/x@{digest}")
            return Outcome(digest=digest)

        job = Job(id=("//x:y", "linux/amd64"), deps=(), pool="linux/amd64")
        summary = run_jobs(
            [job], runner, max_parallel=1, pool_limits={}, retries=2, backoff=0.01,
            on_event=seen.append,
        )  # fmt: skip
    return summary, calls, [e for e in seen if isinstance(e, Retrying)]


@pytest.mark.registry
def test_registry_faults_during_a_build_are_retried_by_the_scheduler_alone(
    tmp_path: Path,
) -> None:
    summary, calls, retries = verify_under_the_scheduler(tmp_path, [503, 502])
    assert summary.ok
    assert calls == ["HEAD", "HEAD", "HEAD"]  # one request per scheduler attempt
    assert [r.attempt for r in retries] == [2, 3]
    assert retries[0].message.endswith("is unavailable: 503 Service Unavailable")


@pytest.mark.registry
def test_a_registry_that_keeps_failing_during_a_build_is_asked_three_times_not_nine(
    tmp_path: Path,
) -> None:
    summary, calls, retries = verify_under_the_scheduler(tmp_path, [503] * 9)
    assert summary.failed == (("//x:y", "linux/amd64"),)
    assert calls == ["HEAD"] * 3
    assert len(retries) == 2


PUSHED = {
    ".cache-spec": 'platforms = ["linux/amd64", "linux/arm64"]\n[builders."*"]\nnetwork = "none"\n',
    "BUILD.images": 'image(name = "app", tags = ["latest", "v1"])\n',
    "Dockerfile": "FROM scratch\nCOPY a.txt /a.txt\n",
    "a.txt": "a\n",
}


def pushed_workspace(root: Path, registry: str) -> tuple[Path, str]:
    """A one-image workspace pushing to a repository of its own; its url."""
    url = own_repository(registry, "bt-build")
    files = unique(PUSHED)
    files[".cache-spec"] += f'[registry]\nurl = "{url}"\n'
    return write_tree(root, files), url


def test_build_json_push_reports_the_merge_as_json_lines(
    tmp_path: Path, engine: str, registry: str
) -> None:
    root, url = pushed_workspace(tmp_path / "ws", registry)
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = bt("build", "//...", "--push", "--json", cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]  # every line is JSON
    index = json.loads((root / "images.lock").read_text())["images"]["//:app"]["digest"]
    merged = [r for r in records if r["event"] == "merged"]
    assert merged == [
        {
            "event": "merged",
            "label": "//:app",
            "tag": f"{url}/app:{tag}",
            "status": "created",
            "digest": index,
            "detail": f"{url}/app:{tag}: created",
        }
        for tag in ("latest", "v1")
    ]
    assert result.stderr == ""

    again = bt("build", "//...", "--push", "--json", cwd=root, env=env)
    assert again.returncode == 0, again.stderr
    assert [(r["event"], r.get("status")) for r in map(json.loads, again.stdout.splitlines())] == [
        ("up_to_date", None),
        ("merged", "unchanged"),
        ("merged", "unchanged"),
    ]


@contextmanager
def forwarding(target: str) -> Iterator[int]:
    """A loopback TCP port forwarded to ``target`` (host:port) until the block ends, when it
    stops listening: a registry that goes away between two runs."""
    host, port = target.rsplit(":", 1)
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the other side went away

    def connect(client: socket.socket) -> None:
        with client, socket.create_connection((host, int(port))) as upstream:
            back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
            back.start()
            pipe(client, upstream)
            back.join()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=connect, args=(client,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


def test_a_registry_gone_at_the_merge_after_the_push_fails_the_build_exit_1(
    tmp_path: Path, engine: str, registry: str
) -> None:
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with forwarding(registry) as port:
        root, _ = pushed_workspace(tmp_path / "ws", f"127.0.0.1:{port}")
        first = bt("build", "//...", "--push", cwd=root, env=env)
        assert first.returncode == 0, first.stderr
    # Nothing is left to push; the merge that follows cannot reach the registry.
    result = bt("build", "//...", "--push", cwd=root, env=env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[0] == "nothing to build: 2 platform builds up to date"
    assert result.stderr.splitlines()[-1].startswith(
        f"built, but the multi-platform merge failed: registry 127.0.0.1:{port} is unavailable"
    )


def test_bt_test_skips_a_platform_its_engine_does_not_run_as_bt_build_does(
    tmp_path: Path, engine: str
) -> None:
    files = unique(TESTED)
    files[".cache-spec"] = 'platforms = ["linux/arm64/v8"]\n[builders."*"]\nnetwork = "none"\n'
    files["BUILD.images"] = 'image(name = "ok", tests = ["false"])\n'
    files["Dockerfile"] = "FROM scratch\nCOPY hello.txt /hello.txt\n"
    root = write_tree(tmp_path / "ws", files)
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert bt("build", "//...", cwd=root, env=env).returncode == 0  # its test did not run
    result = bt("test", "//...", "--json", cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {
            "event": "tests_skipped",
            "label": "//:ok",
            "platform": "linux/arm64",  # written linux/arm64/v8: one spelling
            "reason": f"buildkit@{engine} runs linux/amd64",
        },
        {"event": "tests_finished", "ran": 0, "failed": 0},
    ]
