"""The workspaces under examples/: what each edit stales, and real builds on the test engines.

examples/variants: a CPU and a CUDA variant from one Dockerfile, the CUDA one amd64-only.
examples/registry-parents: parents inferred from `FROM ${REGISTRY}/...` references (no
`parents =`), CPU fallbacks of GPU stages, and one external image pinned by digest.
"""

from __future__ import annotations

import http.client
import io
import json
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from btrun import REPO, bt, record_all_as_built

DOCKER = "/usr/bin/docker"
AMD, ARM = "linux/amd64", "linux/arm64"
Build = tuple[str, str]


def copy_workspace(name: str, dest: Path, global_input: str) -> Path:
    """A private copy of ``examples/<name>`` whose keys no earlier run has built (a nonce in its
    global input): the engines keep every image by a key-derived tag."""
    shutil.copytree(REPO / "examples" / name, dest, symlinks=True)
    with (dest / global_input).open("a") as f:
        f.write(f"# run {uuid.uuid4().hex}\n")
    return dest


def docker(host: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [DOCKER, "-H", host, *args], input=stdin, capture_output=True, check=False
    )


def inspect(host: str, ref: str, template: str) -> object:
    out = docker(host, "image", "inspect", "--format", "{{json " + template + "}}", ref)
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)


def events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def finished(stdout: str) -> set[Build]:
    return {
        (str(e["label"]), str(e["platform"])) for e in events(stdout) if e["event"] == "finished"
    }


def lock(root: Path) -> dict[str, dict[str, dict[str, str]]]:
    return json.loads((root / "images.lock").read_text())["builds"]  # type: ignore[no-any-return]


def stale(root: Path, env: dict[str, str] | None = None) -> set[Build]:
    out = bt("plan", "//...", "--format", "json", cwd=root, env=env, check=True).stdout
    return {(str(p["label"]), str(p["platform"])) for p in json.loads(out)}


def append(rel: str, text: str = "changed\n") -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        with (root / rel).open("a") as f:
            f.write(text)

    return apply


def after(rel: str, line: str, added: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / rel
        text = path.read_text()
        assert f"{line}\n" in text
        path.write_text(text.replace(f"{line}\n", f"{line}\n{added}\n"))

    return apply


# ---------------------------------------------------------------------------------------------
# examples/variants

CPU = {("//backend:cpu", AMD), ("//backend:cpu", ARM)}
CUDA = {("//backend:cuda", AMD)}
WEB = {("//frontend:web", AMD), ("//frontend:web", ARM)}


@pytest.fixture()
def variants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return copy_workspace("variants", tmp_path / "ws", "versions.txt")


def test_variants_has_five_platform_builds_the_cuda_one_amd64_only(variants: Path) -> None:
    out = bt("query", "--platforms", "//...", cwd=variants, check=True).stdout
    assert {tuple(line.split()) for line in out.splitlines()} == CPU | CUDA | WEB
    (cuda,) = json.loads(
        bt("query", "--output", "json", "//backend:cuda", cwd=variants, check=True).stdout
    )
    assert (cuda["platforms"], cuda["args"], cuda["tags"]) == (
        [AMD],
        {"TORCH_VARIANT": "cuda"},
        ["latest-cuda"],
    )


VARIANT_EDITS: list[tuple[str, Callable[[Path], None], set[Build]]] = [
    ("the CUDA wheels", append("backend/torch/cuda/VERSION"), CUDA),
    ("the CUDA libraries", append("backend/cuda/lib64/libcudart.so.12"), CUDA),
    ("the CPU wheels", append("backend/torch/cpu/VERSION"), CPU),
    ("the backend's code", append("backend/app/main.py"), CPU | CUDA),
    ("the backend's requirements", append("backend/requirements.txt"), CPU | CUDA),
    ("the frontend's site", append("frontend/dist/index.html"), WEB),
    ("the global input", append("versions.txt"), CPU | CUDA | WEB),
    # Stage-precise keys: the CPU builds never reach torch-cuda, the CUDA build never torch-cpu.
    ("the torch-cuda stage", after("backend/Dockerfile", "COPY cuda/ /usr/local/cuda/",
     "ENV CUDA_HOME=/usr/local/cuda"), CUDA),
    ("the torch-cpu stage", after("backend/Dockerfile", "COPY torch/cpu/ /opt/torch/",
     "ENV OMP_NUM_THREADS=4"), CPU),
    ("the runtime stage", after("backend/Dockerfile", "COPY app/ /app/", "WORKDIR /app"),
     CPU | CUDA),
    ("a comment", after("backend/Dockerfile", "FROM scratch AS torch-cpu", "# CPU wheels"),
     set()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "mutate", "expected"), VARIANT_EDITS, ids=[e[0] for e in VARIANT_EDITS]
)
def test_variants_edit_stales_exactly_the_builds_that_read_it(
    variants: Path, what: str, mutate: Callable[[Path], None], expected: set[Build]
) -> None:
    record_all_as_built(variants)
    assert stale(variants) == set()
    mutate(variants)
    assert stale(variants) == expected


@pytest.mark.engine
def test_variants_build_for_real_on_both_platforms(
    variants: Path, tmp_path: Path, engine: str, engine2: str
) -> None:
    spec = variants / ".cache-spec"
    spec.write_text(
        spec.read_text() + f'\n[builders."linux/arm64"]\nhost = "{engine2}"\nnetwork = "none"\n'
    )
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = bt("build", "//...", "--json", cwd=variants, env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert finished(result.stdout) == CPU | CUDA | WEB
    records = lock(variants)
    for label, platforms in records.items():
        for platform, record in platforms.items():
            host = engine2 if platform == ARM else engine
            assert inspect(host, record["image"], ".Id") == record["digest"]
            assert inspect(host, record["image"], ".Architecture") == platform.split("/")[1]
            if label.startswith("//backend:"):
                variant = label.split(":")[1]
                assert f"TORCH_VARIANT={variant}" in inspect(host, record["image"], ".Config.Env")  # type: ignore[operator]
    assert set(records["//backend:cuda"]) == {AMD}

    again = bt("build", "//...", "--json", cwd=variants, env=env)
    assert again.returncode == 0, again.stderr
    assert finished(again.stdout) == set()
    append("backend/torch/cuda/VERSION")(variants)
    third = bt("build", "//...", "--json", cwd=variants, env=env)
    assert third.returncode == 0, third.stderr
    assert finished(third.stdout) == CUDA


# ---------------------------------------------------------------------------------------------
# examples/registry-parents

UPSTREAM = "127.0.0.1:5000/upstream/python:3.13-slim"
MANIFESTS = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    )
)
BASE_CPU = {"//base:cpu", "//demux:cpu", "//asr:cpu", "//diarization:cpu"}
BASE_CUDA = {"//base:cuda", "//base-ml:cuda", "//asr:cuda", "//diarization:cuda"}


def manifest_digest(registry: str, repository: str, reference: str) -> str | None:
    conn = http.client.HTTPConnection(registry, timeout=10)
    try:
        conn.request(
            "HEAD", f"/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFESTS}
        )
        response = conn.getresponse()
        response.read()
        return response.getheader("Docker-Content-Digest") if response.status == 200 else None
    finally:
        conn.close()


def tiny_rootfs() -> bytes:
    """A stand-in for python:3.13-slim's root file system: one script, fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"#!/bin/sh\necho Python 3.13.0\n"
        info = tarfile.TarInfo("usr/local/bin/python3")
        info.size, info.mode, info.mtime = len(data), 0o755, 1_700_000_000
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="session")
def upstream(engine: str, registry: str) -> str:
    """Push the external image the example's base starts from, unless the registry has it;
    returns its digest there. Nothing can be pulled from Docker Hub on the test machines."""
    found = manifest_digest(registry, "upstream/python", "3.13-slim")
    if found is None:
        imported = docker(engine, "import", "-", UPSTREAM, stdin=tiny_rootfs())
        assert imported.returncode == 0, imported.stderr.decode()
        pushed = docker(engine, "push", UPSTREAM)
        assert pushed.returncode == 0, pushed.stderr.decode()
        found = manifest_digest(registry, "upstream/python", "3.13-slim")
    assert found is not None
    return found


@pytest.fixture()
def parents_ws(tmp_path: Path, engine: str, upstream: str) -> tuple[Path, dict[str, str], str]:
    """A copy of examples/registry-parents under a registry prefix of its own, so nothing any
    other run pushed can stand in for an image this one builds."""
    root = copy_workspace("registry-parents", tmp_path / "ws", "docker/versions.txt")
    prefix = f"127.0.0.1:5000/t{uuid.uuid4().hex[:12]}"
    for name in (".cache-spec", "BUILD.images"):
        path = root / name
        text = path.read_text()
        assert "127.0.0.1:5000/rajiup" in text
        path.write_text(text.replace("127.0.0.1:5000/rajiup", prefix))
    # Content of this run only: a child holds this layer only if built on this run's base.
    (root / "docker/base/cuda/build-id").write_text(uuid.uuid4().hex + "\n")
    (root / "docker/base/cpu/build-id").write_text(uuid.uuid4().hex + "\n")
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return root, env, prefix


def test_registry_parents_are_inferred_from_image_references(tmp_path: Path) -> None:
    root = REPO / "examples/registry-parents"
    assert "parents" not in (root / "BUILD.images").read_text()
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}  # the checkout stays as it is

    def query(expression: str) -> list[str]:
        return bt("query", expression, cwd=root, env=env, check=True).stdout.splitlines()

    # bt query sorts labels by package, then name: //base before //base-ml.
    assert query("deps(//asr:cuda)") == ["//asr:cuda", "//base:cuda", "//base-ml:cuda"]
    assert query("deps(//asr:cpu)") == ["//asr:cpu", "//base:cpu"]
    assert query("deps(//demux:cpu, 1)") == ["//base:cpu", "//demux:cpu"]
    assert set(query("rdeps(//..., //base:cuda)")) == set(BASE_CUDA)
    assert set(query("rdeps(//..., //base:cpu)")) == set(BASE_CPU)
    out = bt("query", "--output", "dot", "deps(//diarization:cuda)", cwd=root, check=True).stdout
    assert '"//diarization:cuda" -> "//base-ml:cuda"' in out
    assert '"//base-ml:cuda" -> "//base:cuda"' in out


PARENT_EDITS: list[tuple[str, str, set[str]]] = [
    ("the CUDA base's input", "docker/base/cuda/device.conf", BASE_CUDA),
    ("the CPU base's input", "docker/base/cpu/device.conf", BASE_CPU),
    ("the ML base's input", "docker/base-ml/torch/VERSION",
     {"//base-ml:cuda", "//asr:cuda", "//diarization:cuda"}),
    ("an input of both bases", "docker/requirements-common.txt", BASE_CPU | BASE_CUDA),
    ("one stage's code, read by its GPU image and its CPU fallback", "docker/asr/whisperx_asr.py",
     {"//asr:cuda", "//asr:cpu"}),
]  # fmt: skip


@pytest.mark.engine
def test_registry_parents_edit_stales_exactly_the_base_and_its_children(
    parents_ws: tuple[Path, dict[str, str], str],
) -> None:
    root, env, _ = parents_ws
    result = bt("build", "//...", "--json", cwd=root, env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert {label for label, _ in finished(result.stdout)} == BASE_CPU | BASE_CUDA
    assert stale(root, env) == set()
    for what, rel, expected in PARENT_EDITS:
        original = (root / rel).read_bytes()
        append(rel)(root)
        assert stale(root, env) == {(label, AMD) for label in expected}, what
        (root / rel).write_bytes(original)
        assert stale(root, env) == set(), what


@pytest.mark.engine
def test_a_child_builds_on_the_image_just_built_for_its_inferred_parent(
    parents_ws: tuple[Path, dict[str, str], str], engine: str, registry: str, upstream: str
) -> None:
    root, env, prefix = parents_ws
    result = bt("build", "//asr:cuda", "--json", cwd=root, env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert finished(result.stdout) == {
        ("//base:cuda", AMD),
        ("//base-ml:cuda", AMD),
        ("//asr:cuda", AMD),
    }
    records = lock(root)

    def layers(label: str) -> list[str]:
        found = inspect(engine, records[label][AMD]["image"], ".RootFS.Layers")
        assert isinstance(found, list)
        return [str(layer) for layer in found]

    base, ml, asr = layers("//base:cuda"), layers("//base-ml:cuda"), layers("//asr:cuda")
    assert len(base) < len(ml) < len(asr)
    assert ml[: len(base)] == base  # base-ml on this run's base:cuda ...
    assert asr[: len(ml)] == ml  # ... and asr on this run's base-ml:cuda
    namespace = prefix.split("/", 1)[1]
    for repository in ("cp-whisperx-app-base", "cp-whisperx-app-base-ml"):
        assert manifest_digest(registry, f"{namespace}/{repository}", "cuda") is None  # unpushed

    # The external image is pinned by the digest the registry serves for its tag.
    text = (root / "images.lock").read_text()
    assert UPSTREAM in text
    assert upstream in text
