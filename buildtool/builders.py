"""Backends that build one platform image on one Docker engine, push it, and run its tests.

- ``BuildKitCliBuilder`` drives the engine's BuildKit through the docker CLI: ``docker buildx
  build --load`` where buildx works, else ``DOCKER_BUILDKIT=1 docker build`` on a CLI that still
  carries BuildKit (Debian's 20.10). Real Dockerfiles use ``RUN --mount``, so this is the default.
- ``EngineApiBuilder`` talks to the Engine API through docker-py (classic builder), for engines
  reached without a CLI. docker-py is imported only here, only when used.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from buildtool.errors import BtError
from buildtool.scheduler import Cancelled, JobFailed, TransientError

LOG_TAIL_LINES = 25
# Messages of faults that are worth another attempt: the engine or registry hiccuped.
_TRANSIENT = re.compile(
    r"connection reset|connection refused|broken pipe|i/o timeout|TLS handshake timeout|"
    r"unexpected EOF|503 Service Unavailable|502 Bad Gateway|500 Internal Server Error|"
    r"received unexpected HTTP status: 5\d\d|timeout exceeded|Client.Timeout",
    re.IGNORECASE,
)
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


@dataclass(frozen=True)
class BuildRequest:
    context: Path
    dockerfile: Path
    stage: str | None
    platform: str
    build_args: tuple[tuple[str, str], ...]
    tag: str
    log_path: Path
    labels: tuple[tuple[str, str], ...] = ()
    network: str | None = None


@dataclass(frozen=True)
class BuiltImage:
    image_id: str
    tag: str


class Builder(Protocol):
    name: str

    def architecture(self) -> str: ...
    def build(self, request: BuildRequest, cancel: threading.Event) -> BuiltImage: ...
    def image_id(self, ref: str) -> str | None: ...
    def tag(self, image: str, new_tag: str) -> None: ...
    def push(self, ref: str) -> str: ...
    def run(self, image: str, command: Sequence[str], timeout: float) -> tuple[int, str]: ...
    def close(self) -> None: ...


def normalise_platform(os_name: str, arch: str) -> str:
    return f"{os_name}/{_ARCH.get(arch, arch)}"


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _failure(message: str, log: Path) -> Exception:
    tail = _tail(log)
    if _TRANSIENT.search(tail):
        return TransientError(f"{message}: {tail.splitlines()[-1] if tail else ''}")
    return JobFailed(message, log_tail=tail, log_path=str(log))


@cache
def find_docker_cli() -> tuple[str, str]:
    """(path, mode) of a docker CLI that can build with BuildKit, chosen by capability.

    mode "buildx": `docker buildx build` works; "buildkit-env": a classic CLI (< 23) that builds
    with BuildKit when DOCKER_BUILDKIT=1. A newer CLI without buildx can do neither."""
    candidates: list[str] = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = os.path.join(directory, "docker")
        if os.access(path, os.X_OK) and os.path.realpath(path) not in map(
            os.path.realpath, candidates
        ):
            candidates.append(path)
    if os.access("/usr/bin/docker", os.X_OK) and "/usr/bin/docker" not in candidates:
        candidates.append("/usr/bin/docker")
    fallback: tuple[str, str] | None = None
    for path in candidates:
        probe = subprocess.run([path, "buildx", "version"], capture_output=True, text=True,
                               check=False, timeout=30)  # fmt: skip
        if probe.returncode == 0:
            return path, "buildx"
        version = subprocess.run([path, "--version"], capture_output=True, text=True,
                                 check=False, timeout=30).stdout  # fmt: skip
        match = re.search(r"version (\d+)\.", version)
        if match and int(match.group(1)) < 23 and fallback is None:
            fallback = (path, "buildkit-env")
    if fallback:
        return fallback
    raise BtError(
        "no docker CLI that can build with BuildKit: install buildx, or a docker CLI older than "
        f"23 (checked: {', '.join(candidates) or 'none on PATH'})"
    )


class BuildKitCliBuilder:
    def __init__(self, host: str | None, network: str | None = None):
        self.host = host
        self.network = network
        self.cli, self.mode = find_docker_cli()
        self.name = f"buildkit@{host or os.environ.get('DOCKER_HOST', 'local engine')}"
        self.env = dict(os.environ)
        if host:
            self.env["DOCKER_HOST"] = host
        if self.mode == "buildkit-env":
            self.env["DOCKER_BUILDKIT"] = "1"
        self._arch: str | None = None

    def _cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([self.cli, *args], env=self.env, capture_output=True,
                                  text=True, check=False, timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise TransientError(f"docker {args[0]} timed out on {self.name}") from None

    def architecture(self) -> str:
        if self._arch is None:
            out = self._cli("version", "--format", "{{.Server.Os}}/{{.Server.Arch}}", timeout=30)
            if out.returncode != 0 or "/" not in out.stdout:
                detail = (out.stderr.strip().splitlines() or ["no answer"])[-1]
                raise BtError(f"cannot reach Docker engine {self.name}: {detail}")
            os_name, arch = out.stdout.strip().split("/", 1)
            self._arch = normalise_platform(os_name, arch)
        return self._arch

    def build(self, request: BuildRequest, cancel: threading.Event) -> BuiltImage:
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bt-build-") as tmp:
            iidfile = Path(tmp, "iid")
            command = [self.cli, *(["buildx", "build", "--load"] if self.mode == "buildx"
                                   else ["build"])]  # fmt: skip
            command += ["--progress=plain", "--platform", request.platform,
                        "-f", str(request.dockerfile), "-t", request.tag,
                        "--iidfile", str(iidfile)]  # fmt: skip
            network = request.network or self.network
            if network:
                command.append(f"--network={network}")
            if request.stage:
                command += ["--target", request.stage]
            for name, value in request.build_args:
                command += ["--build-arg", f"{name}={value}"]
            for name, value in request.labels:
                command += ["--label", f"{name}={value}"]
            command.append(str(request.context))
            with request.log_path.open("w") as log:
                log.write("$ " + " ".join(command) + "\n")
                log.flush()
                code = _run_cancellable(command, self.env, log, cancel)
            if code != 0:
                raise _failure(f"docker build failed (exit {code})", request.log_path)
            image_id = iidfile.read_text().strip()
        return BuiltImage(image_id, request.tag)

    def image_id(self, ref: str) -> str | None:
        out = self._cli("image", "inspect", "--format", "{{.Id}}", ref, timeout=60)
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None

    def tag(self, image: str, new_tag: str) -> None:
        out = self._cli("tag", image, new_tag, timeout=60)
        if out.returncode != 0:
            raise BtError(f"docker tag {image} {new_tag} failed: {out.stderr.strip()}")

    def push(self, ref: str) -> str:
        out = self._cli("push", ref, timeout=3600)
        text = out.stdout + out.stderr
        if out.returncode != 0:
            if _TRANSIENT.search(text):
                raise TransientError(f"push of {ref} failed: {text.strip().splitlines()[-1]}")
            raise JobFailed(f"push of {ref} failed", log_tail=text.strip()[-2000:])
        match = re.search(r"digest: (sha256:[0-9a-f]{64})", text)
        if not match:
            raise JobFailed(f"push of {ref} printed no digest", log_tail=text.strip()[-2000:])
        return match.group(1)

    def run(self, image: str, command: Sequence[str], timeout: float) -> tuple[int, str]:
        args = ["run", "--rm", "--network=none", image, *command]
        try:
            out = subprocess.run([self.cli, *args], env=self.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, check=False,
                                 timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            return 124, f"timed out after {timeout:.0f}s"
        return out.returncode, out.stdout

    def close(self) -> None:
        pass


def _run_cancellable(
    command: Sequence[str], env: Mapping[str, str], log: Any, cancel: threading.Event
) -> int:
    """Run with output to ``log``; on cancel, stop the whole process group and raise."""
    process = subprocess.Popen(command, env=dict(env), stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    while True:
        try:
            return process.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            if cancel.is_set():
                break
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    raise Cancelled("cancelled")


class EngineApiBuilder:
    """The Engine API through docker-py: the classic builder, no CLI needed."""

    def __init__(self, host: str | None, network: str | None = None):
        import docker

        kwargs: dict[str, Any] = docker.utils.kwargs_from_env()
        if host:
            kwargs["base_url"] = host
        self.client = docker.APIClient(version="auto", timeout=600, **kwargs)
        self.network = network
        self.name = f"engine@{kwargs.get('base_url', 'local engine')}"
        self._arch: str | None = None

    def architecture(self) -> str:
        if self._arch is None:
            try:
                version = self.client.version()
            except Exception as err:  # docker-py raises requests errors of many kinds
                raise BtError(f"cannot reach Docker engine {self.name}: {err}") from None
            self._arch = normalise_platform(version["Os"], version["Arch"])
        return self._arch

    def build(self, request: BuildRequest, cancel: threading.Event) -> BuiltImage:
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        image_id = None
        stream = self.client.build(
            path=str(request.context),
            dockerfile=os.path.relpath(request.dockerfile, request.context),
            tag=request.tag,
            target=request.stage,
            buildargs=dict(request.build_args),
            platform=request.platform,
            labels=dict(request.labels),
            network_mode=request.network or self.network,
            decode=True,
            rm=True,
            forcerm=True,
        )
        with request.log_path.open("w") as log:
            try:
                for chunk in _chunks(stream, cancel):
                    if "stream" in chunk:
                        log.write(chunk["stream"])
                    # docker-py does not raise for errors reported inside the stream
                    if "error" in chunk or "errorDetail" in chunk:
                        detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error")
                        log.write(f"ERROR: {detail}\n")
                        log.flush()
                        raise _failure(f"build failed: {detail}", request.log_path)
                    aux = chunk.get("aux")
                    if isinstance(aux, dict) and "ID" in aux:
                        image_id = aux["ID"]
            except (JobFailed, TransientError, Cancelled):
                raise
            except Exception as err:  # connection errors from requests/urllib3
                log.write(f"ERROR: {err}\n")
                raise TransientError(f"build on {self.name} interrupted: {err}") from None
        if image_id is None:
            image_id = self.image_id(request.tag)
        if image_id is None:
            raise JobFailed("build finished without an image", log_tail=_tail(request.log_path),
                            log_path=str(request.log_path))  # fmt: skip
        return BuiltImage(image_id, request.tag)

    def image_id(self, ref: str) -> str | None:
        import docker

        try:
            return str(self.client.inspect_image(ref)["Id"])
        except docker.errors.ImageNotFound:
            return None

    def tag(self, image: str, new_tag: str) -> None:
        repository, _, tag = new_tag.rpartition(":")
        if not self.client.tag(image, repository, tag):
            raise BtError(f"cannot tag {image} as {new_tag}")

    def push(self, ref: str) -> str:
        repository, _, tag = ref.rpartition(":")
        digest = None
        try:
            for chunk in self.client.push(repository, tag, stream=True, decode=True):
                # Errors arrive inside the stream; docker-py returns normally.
                if "error" in chunk or "errorDetail" in chunk:
                    detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error")
                    if _TRANSIENT.search(str(detail)):
                        raise TransientError(f"push of {ref} failed: {detail}")
                    raise JobFailed(f"push of {ref} failed: {detail}")
                aux = chunk.get("aux")
                if isinstance(aux, dict) and "Digest" in aux:
                    digest = aux["Digest"]
        except (JobFailed, TransientError):
            raise
        except Exception as err:
            raise TransientError(f"push of {ref} interrupted: {err}") from None
        if not digest:
            raise JobFailed(f"push of {ref} reported no digest")
        return str(digest)

    def run(self, image: str, command: Sequence[str], timeout: float) -> tuple[int, str]:
        container = self.client.create_container(
            image, command=list(command),
            host_config=self.client.create_host_config(network_mode="none"),
        )  # fmt: skip
        try:
            self.client.start(container)
            try:
                result = self.client.wait(container, timeout=timeout)
            except Exception:
                self.client.kill(container)
                return 124, f"timed out after {timeout:.0f}s"
            output = self.client.logs(container, stdout=True, stderr=True).decode(errors="replace")
            return int(result["StatusCode"]), output
        finally:
            self.client.remove_container(container, force=True)

    def close(self) -> None:
        self.client.close()


def _chunks(stream: Iterator[dict[str, Any]], cancel: threading.Event) -> Iterator[dict[str, Any]]:
    for chunk in stream:
        if cancel.is_set():
            close = getattr(stream, "close", None)
            if close:
                close()  # dropping the connection makes the engine abandon the build
            raise Cancelled("cancelled")
        yield chunk


def open_builder(host: str | None, backend: str, network: str | None = None) -> Builder:
    if backend == "engine":
        return EngineApiBuilder(host, network)
    if backend == "buildkit":
        return BuildKitCliBuilder(host, network)
    raise BtError(f"unknown builder backend {backend!r}")
