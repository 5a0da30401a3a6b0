"""Both builder backends against a real engine and registry: what they build, where the log
goes, how failures, cancellation and pushes surface, and which docker CLI the BuildKit backend
picks on this machine."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildtool.build.builders import Builder, BuildRequest, BuiltImage, split_tag
from buildtool.build.builders.buildkit import BuildKitCliBuilder, find_docker_cli
from buildtool.build.builders.engine import EngineApiBuilder
from buildtool.build.routing import open_builder
from buildtool.errors import BtError, Cancelled, JobFailed, TransientError
from buildtool.platforms import Platform

BASE_IMAGE = "bt-test/busybox:latest"  # amd64, imported into both engines by .ci/setup
BACKENDS = ["buildkit", "engine"]
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    )
)


# -- helpers ----------------------------------------------------------------------------------


def docker(cli: str, host: str, *args: str) -> str:
    env = {**os.environ, "DOCKER_HOST": host}
    done = subprocess.run([cli, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout


def write_context(root: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    (root / "Dockerfile").write_text(dockerfile)
    return root


def request_for(
    context: Path,
    tag: str,
    platform: str = "linux/amd64",
    stage: str | None = None,
    build_args: tuple[tuple[str, str], ...] = (),
    labels: tuple[tuple[str, str], ...] = (),
) -> BuildRequest:
    return BuildRequest(
        context=context,
        dockerfile=context / "Dockerfile",
        stage=stage,
        platform=platform,
        build_args=build_args,
        tag=tag,
        log_path=context.parent / "logs" / "build.log",
        labels=labels,
    )


def image_files(cli: str, host: str, image: str) -> set[str]:
    """Regular files in an image's layers, read from `docker save`."""
    env = {**os.environ, "DOCKER_HOST": host}
    saved = subprocess.run([cli, "save", image], env=env, capture_output=True, check=True)
    files: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(saved.stdout)) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=archive.extractfile(layer)) as layer_tar:
                files |= {m.name for m in layer_tar.getmembers() if m.isfile()}
    return files


def build(
    builder: Builder, request: BuildRequest, cancel: threading.Event | None = None
) -> BuiltImage:
    """Build as the scheduler does, with retries: other test sessions deleting their images on
    the shared engine race the classic builder's cache lookup (a TransientError)."""
    cancel = cancel or threading.Event()
    for _ in range(2):
        try:
            return builder.build(request, cancel)
        except TransientError:
            continue
    return builder.build(request, cancel)


def processes_mentioning(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def tags(engine: str, docker_cli: str) -> Iterator[list[str]]:
    """Unique tags for one test, removed from engine 1 afterwards."""
    made: list[str] = []
    yield made
    env = {**os.environ, "DOCKER_HOST": engine}
    for tag in made:
        subprocess.run([docker_cli, "rmi", "--force", tag], env=env, capture_output=True)


def new_tag(tags: list[str], repository: str = "bt-builders-test/img") -> str:
    tag = f"{repository}:{uuid.uuid4().hex[:12]}"
    tags.append(tag)
    return tag


@pytest.fixture(params=BACKENDS)
def builder(request: pytest.FixtureRequest, engine: str) -> Iterator[Builder]:
    found = open_builder(engine, request.param, network="none")
    yield found
    found.close()


# -- pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("os_name", "machine", "platform"),
    [
        ("linux", "x86_64", "linux/amd64"),
        ("linux", "aarch64", "linux/arm64"),
        ("linux", "amd64", "linux/amd64"),
        ("Linux", "arm64", "linux/arm64"),
    ],
)
def test_engine_platforms_use_go_architecture_names(
    os_name: str, machine: str, platform: str
) -> None:
    assert str(Platform.of_engine(os_name, machine)) == platform


@pytest.mark.parametrize(
    ("ref", "parts"),
    [
        ("127.0.0.1:5000/x/y:k-1", ("127.0.0.1:5000/x/y", "k-1")),
        ("127.0.0.1:5000/x/y", ("127.0.0.1:5000/x/y", "latest")),
        ("bt/matrix:tiny-en-abc", ("bt/matrix", "tiny-en-abc")),
        ("busybox", ("busybox", "latest")),
    ],
)
def test_split_tag_tells_a_tag_from_a_registry_port(ref: str, parts: tuple[str, str]) -> None:
    assert split_tag(ref) == parts


def test_open_builder_refuses_an_unknown_backend() -> None:
    with pytest.raises(BtError, match='unknown builder backend "qemu"'):
        open_builder(None, "qemu")


# -- choosing a docker CLI --------------------------------------------------------------------


def fake_cli(directory: Path, version: str, buildx: bool) -> Path:
    """A stand-in docker CLI that answers only `--version` and `buildx version`."""
    directory.mkdir(parents=True)
    path = directory / "docker"
    buildx_exit = 0 if buildx else 1
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then echo "Docker version {version}, build x"; exit 0; fi\n'
        f'if [ "$1" = buildx ]; then exit {buildx_exit}; fi\n'
        "exit 2\n"
    )
    path.chmod(0o755)
    return path


def test_find_docker_cli_picks_debians_classic_cli_over_the_newer_one_first_on_path(
    docker_cli: str,
) -> None:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    assert find_docker_cli(env) == ("/usr/bin/docker", "buildkit-env")


def test_find_docker_cli_prefers_a_working_buildx_wherever_it_is_on_path(tmp_path: Path) -> None:
    fake_cli(tmp_path / "new", "28.2.2", buildx=False)
    classic = fake_cli(tmp_path / "classic", "20.10.24", buildx=False)
    modern = fake_cli(tmp_path / "modern", "27.1.0", buildx=True)
    path = os.pathsep.join(str(tmp_path / d) for d in ("new", "classic", "modern"))
    assert find_docker_cli({"PATH": path}, extra=()) == (str(modern), "buildx")
    assert find_docker_cli({"PATH": str(tmp_path / "classic")}, extra=()) == (
        str(classic),
        "buildkit-env",
    )


def test_find_docker_cli_refuses_when_no_cli_can_build_with_buildkit(tmp_path: Path) -> None:
    new = fake_cli(tmp_path / "new", "28.2.2", buildx=False)
    with pytest.raises(BtError) as caught:
        find_docker_cli({"PATH": str(tmp_path / "new")}, extra=())
    assert str(caught.value) == (
        "no docker CLI here can build with BuildKit: install the buildx plugin, or a docker CLI "
        f"older than 23 (checked: {new})"
    )


def test_find_docker_cli_probes_once_per_process(tmp_path: Path) -> None:
    cli = fake_cli(tmp_path / "modern", "27.1.0", buildx=True)
    env = {"PATH": str(tmp_path / "modern")}
    assert find_docker_cli(env, extra=()) == (str(cli), "buildx")
    cli.write_text("#!/bin/sh\nexit 1\n")
    assert find_docker_cli(env, extra=()) == (str(cli), "buildx")


# -- building ---------------------------------------------------------------------------------


@pytest.mark.engine
def test_architecture_is_the_engines_platform_in_go_names(builder: Builder) -> None:
    assert builder.architecture() == str(Platform.of_engine("linux", os.uname().machine))


@pytest.mark.engine
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_unreachable_engine_is_a_user_error_naming_the_host(backend: str) -> None:
    host = "unix:///nonexistent/bt-engine.sock"
    with pytest.raises(BtError) as caught:
        open_builder(host, backend).architecture()
    assert str(caught.value).startswith(f"cannot reach the Docker engine at {host}: ")


@pytest.mark.engine
@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_build_from_scratch_returns_the_engines_image_id_for_each_platform(
    builder: Builder,
    platform: str,
    engine: str,
    docker_cli: str,
    tags: list[str],
    tmp_path: Path,
) -> None:
    context = write_context(
        tmp_path / "ctx", "FROM scratch\nCOPY hello.txt /hello.txt\n", {"hello.txt": "hello\n"}
    )
    tag = new_tag(tags)
    request = request_for(context, tag, platform, labels=(("dev.bt.key", "k1"),))
    built = build(builder, request)
    inspected = docker(
        docker_cli,
        engine,
        "image",
        "inspect",
        "--format",
        '{{.Id}} {{.Os}}/{{.Architecture}} {{index .Config.Labels "dev.bt.key"}}',
        tag,
    )
    assert inspected.split() == [built.image_id, platform, "k1"]
    assert built.tag == tag
    assert builder.image_id(tag) == built.image_id
    assert "hello.txt" in request.log_path.read_text()


@pytest.mark.engine
@pytest.mark.parametrize(
    ("stage", "expected"),
    [("first", {"chosen.txt"}), ("second", {"chosen.txt", "extra.txt"})],
)
def test_build_honours_the_target_stage_and_build_args(
    builder: Builder,
    stage: str,
    expected: set[str],
    engine: str,
    docker_cli: str,
    tags: list[str],
    tmp_path: Path,
) -> None:
    dockerfile = (
        "FROM scratch AS first\n"
        "ARG NAME=default\n"
        "COPY ${NAME}.txt /\n"
        "FROM first AS second\n"
        "COPY extra.txt /\n"
    )
    files = {"default.txt": "d\n", "chosen.txt": "c\n", "extra.txt": "e\n"}
    context = write_context(tmp_path / "ctx", dockerfile, files)
    tag = new_tag(tags)
    request = request_for(context, tag, stage=stage, build_args=(("NAME", "chosen"),))
    build(builder, request)
    assert image_files(docker_cli, engine, tag) == expected


@pytest.mark.engine
def test_a_failing_build_raises_job_failed_with_the_log_tail_and_path(
    builder: Builder, tags: list[str], tmp_path: Path
) -> None:
    context = write_context(tmp_path / "ctx", "FROM scratch\nCOPY missing.txt /\n")
    tag = new_tag(tags)
    request = request_for(context, tag)
    with pytest.raises(JobFailed) as caught:
        build(builder, request)
    log_lines = request.log_path.read_text().splitlines()
    assert caught.value.log_path == str(request.log_path)
    assert caught.value.log_tail == "\n".join(log_lines[-25:])
    assert "missing.txt" in caught.value.message
    assert "missing.txt" in log_lines[-1]
    assert builder.image_id(tag) is None


@pytest.mark.engine
def test_setting_cancel_stops_a_running_build_within_seconds(
    builder: Builder, tags: list[str], tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    dockerfile = f"FROM {BASE_IMAGE}\nRUN echo started-{marker} && sleep 30 && echo {marker}\n"
    context = write_context(tmp_path / "ctx", dockerfile)
    request = request_for(context, new_tag(tags))
    cancel = threading.Event()
    outcome: list[BaseException | None] = []
    ended = threading.Event()

    def build_until_cancelled() -> None:
        try:
            build(builder, request, cancel)
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)
        ended.set()

    threading.Thread(target=build_until_cancelled, daemon=True).start()
    deadline = time.monotonic() + 60
    while not processes_mentioning(f"sleep 30 && echo {marker}"):
        assert time.monotonic() < deadline, request.log_path.read_text()
        time.sleep(0.1)
    cancel.set()
    cancelled_at = time.monotonic()
    assert ended.wait(10)
    assert time.monotonic() - cancelled_at < 8
    assert isinstance(outcome[0], Cancelled)
    while processes_mentioning(f"sleep 30 && echo {marker}"):
        assert time.monotonic() - cancelled_at < 10, "the engine kept running the cancelled step"
        time.sleep(0.1)


@pytest.mark.engine
def test_the_engine_backend_refuses_an_arm64_build_from_an_amd64_base(
    engine: str, tags: list[str], tmp_path: Path
) -> None:
    context = write_context(
        tmp_path / "ctx", f"FROM {BASE_IMAGE}\nCOPY a.txt /\n", {"a.txt": "a\n"}
    )
    tag = new_tag(tags)
    builder = EngineApiBuilder(engine, network="none")
    with pytest.raises(BtError) as caught:
        build(builder, request_for(context, tag, "linux/arm64"))
    assert str(caught.value) == (
        f"engine@{engine} built {tag} for linux/amd64, not linux/arm64: a base image on that "
        "engine exists only for linux/amd64 and its builder used it anyway. Build linux/arm64 "
        "on a native engine or with the buildkit backend"
    )
    assert builder.image_id(tag) is None  # the local tag is an action cache: never a wrong image


@pytest.mark.engine
def test_images_stay_on_the_engine_that_built_them(
    engine: str, engine2: str, tags: list[str], tmp_path: Path
) -> None:
    context = write_context(tmp_path / "ctx", "FROM scratch\nCOPY a.txt /\n", {"a.txt": "1\n"})
    tag = new_tag(tags)
    BuildKitCliBuilder(engine, network="none").build(request_for(context, tag), threading.Event())
    assert BuildKitCliBuilder(engine2).image_id(tag) is None
    assert BuildKitCliBuilder(engine).image_id(tag) is not None


# -- tagging, pushing, running ----------------------------------------------------------------


@pytest.mark.engine
@pytest.mark.registry
def test_push_returns_the_digest_the_registry_serves(
    builder: Builder, registry: str, tags: list[str], tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    context = write_context(tmp_path / "ctx", "FROM scratch\nCOPY a.txt /\n", {"a.txt": marker})
    built = build(builder, request_for(context, new_tag(tags)))
    repository = f"bt-builders-test/{builder.name.split('@')[0]}"
    ref = new_tag(tags, f"{registry}/{repository}")
    builder.tag(built.image_id, ref)
    assert builder.image_id(ref) == built.image_id
    digest = builder.push(ref)
    get = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{digest}",
        headers={"Accept": MANIFEST_TYPES},
    )
    with urllib.request.urlopen(get, timeout=30) as answer:
        body = answer.read()
    assert digest == "sha256:" + hashlib.sha256(body).hexdigest()


@pytest.mark.engine
def test_push_to_a_registry_that_is_not_running_raises(builder: Builder, tags: list[str]) -> None:
    ref = new_tag(tags, "127.0.0.1:5999/bt-builders-test/nowhere")
    builder.tag(BASE_IMAGE, ref)
    with pytest.raises(TransientError, match="connection refused"):
        builder.push(ref)


@pytest.mark.engine
def test_tag_of_an_unknown_image_is_a_user_error(builder: Builder) -> None:
    with pytest.raises(BtError, match="bt-builders-test/absent:x"):
        builder.tag("bt-builders-test/absent:x", "bt-builders-test/absent:y")


@pytest.mark.engine
def test_run_returns_the_exit_code_and_output(
    builder: Builder, tags: list[str], tmp_path: Path
) -> None:
    context = write_context(
        tmp_path / "ctx", f"FROM {BASE_IMAGE}\nCOPY file.txt /file\n", {"file.txt": "content\n"}
    )
    tag = new_tag(tags)
    build(builder, request_for(context, tag))
    assert builder.run(tag, ["cat", "/file"], timeout=60) == (0, "content\n")
    assert builder.run(tag, ["sh", "-c", "echo failing; exit 3"], timeout=60) == (3, "failing\n")


@pytest.mark.engine
def test_run_stops_a_command_that_outlives_its_timeout(builder: Builder) -> None:
    started = time.monotonic()
    code, output = builder.run(BASE_IMAGE, ["sh", "-c", "echo begun; sleep 60"], timeout=2)
    assert time.monotonic() - started < 20
    assert (code, output) == (124, "begun\ntimed out after 2s\n")
