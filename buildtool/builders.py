"""Backends that build one platform image on one Docker engine, push it, and run its tests.

- ``BuildKitCliBuilder`` drives the engine's BuildKit through the docker CLI: ``docker buildx
  build --load`` where buildx works, else ``DOCKER_BUILDKIT=1 docker build`` on a CLI that still
  carries BuildKit (Debian's 20.10). Real Dockerfiles use ``RUN --mount``, so this is the default.
- ``EngineApiBuilder`` talks to the Engine API through docker-py (the classic builder), for
  engines reached without a CLI. docker-py is imported only inside its methods, so importing this
  module stays cheap.

Failed builds raise ``JobFailed`` with the end of their log, faults worth another attempt raise
``TransientError``, and an engine that cannot be reached at all raises ``BtError``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import secrets
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from buildtool.errors import BtError, Cancelled, JobFailed, TransientError

LOG_TAIL_LINES = 25
PROBE_TIMEOUT = 30.0  # `docker version`, `docker buildx version`, `docker image inspect`
PUSH_TIMEOUT = 3 * 3600.0  # a 10 GB image over a slow uplink
_STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL for a cancelled CLI
_API_TIMEOUT = 120  # docker-py read timeout for calls that answer promptly or stream progress

# Faults of the engine or registry worth another attempt, matched against the error message
# only: a RUN step's own output may say "connection refused" and still fail for good.
_TRANSIENT = re.compile(
    r"connection reset|connection refused|broken pipe|i/o timeout|TLS handshake timeout|"
    r"unexpected EOF|Cannot connect to the Docker daemon|error during connect|"
    r"received unexpected HTTP status: 5\d\d|\b5\d\d (Internal Server Error|Bad Gateway|"
    r"Service Unavailable|Gateway Timeout)|Client\.Timeout exceeded|request canceled|"
    # The classic builder's cache lookup lists images, then reads each: an image deleted in
    # between (by anyone) fails the build with this, and the next attempt passes.
    r'unable to find image "sha256:',
    re.IGNORECASE,
)
# The engine reports machines as uname does; images and --platform use Go's names.
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
_CLI_DIGEST = r"digest: (sha256:[0-9a-f]{64}) size: \d+"


@dataclass(frozen=True)
class BuildRequest:
    context: Path
    dockerfile: Path
    stage: str | None
    platform: str  # e.g. "linux/arm64"
    build_args: tuple[tuple[str, str], ...]
    tag: str  # local, content-derived tag, e.g. "bt/matrix:tiny-en-<key[:24]>"
    log_path: Path  # the full build log goes here (created or overwritten)
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BuiltImage:
    image_id: str  # sha256:... config digest on the engine
    tag: str


class Builder(Protocol):
    name: str

    def architecture(self) -> str: ...
    def build(self, request: BuildRequest, cancel: threading.Event) -> BuiltImage: ...
    def image_id(self, ref: str) -> str | None: ...
    def tag(self, image_id_or_ref: str, new_tag: str) -> None: ...
    def push(self, ref: str) -> str: ...
    def run(self, image: str, command: Sequence[str], timeout: float) -> tuple[int, str]: ...
    def close(self) -> None: ...


def normalise_platform(os_name: str, arch: str) -> str:
    """``("linux", "x86_64")`` -> ``"linux/amd64"``."""
    return f"{os_name.lower()}/{_ARCH.get(arch, arch)}"


def split_tag(ref: str) -> tuple[str, str]:
    """``"127.0.0.1:5000/x/y:k-1"`` -> ``("127.0.0.1:5000/x/y", "k-1")``; no tag means latest.

    A colon is a tag separator only after the last slash: before it, it marks a registry port."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return ref, "latest"
    return name, tag


def _same_platform(actual: str, wanted: str) -> bool:
    """Compare os/arch only: engines drop the variant of arm64 ("v8") when they store images."""
    return actual.split("/")[:2] == wanted.split("/")[:2]


def _is_transient(message: str) -> bool:
    return bool(_TRANSIENT.search(message))


def _error_line(lines: Sequence[str]) -> str:
    """The line of a failed CLI's output that says why: the last one that is not blank."""
    return next((line.strip() for line in reversed(lines) if line.strip()), "no output")


def _build_failure(message: str, tail: Sequence[str], log_path: Path) -> Exception:
    if _is_transient(message):
        return TransientError(message)
    return JobFailed(message, log_tail="\n".join(tail), log_path=str(log_path))


def _wrong_platform(name: str, request: BuildRequest, actual: str) -> BtError:
    return BtError(
        f"{name} built {request.tag} for {actual}, not {request.platform}: a base image on that "
        f"engine exists only for {actual} and its builder used it anyway. Build "
        f"{request.platform} on a native engine or with the buildkit backend"
    )


# -- the docker CLI ---------------------------------------------------------------------------

_cli_cache: dict[tuple[str | None, ...], tuple[str, str]] = {}
_cli_cache_lock = threading.Lock()


def find_docker_cli(
    env: Mapping[str, str] | None = None, *, extra: Sequence[str] = ("/usr/bin/docker",)
) -> tuple[str, str]:
    """``(path, mode)`` of a docker CLI that builds with BuildKit, chosen by capability.

    Candidates are every ``docker`` on PATH, then ``extra``. The first with a working ``buildx``
    wins (mode "buildx"); else the first classic CLI (< 23) that still builds with BuildKit
    when DOCKER_BUILDKIT=1 (mode "buildkit-env"). Docker 23 dropped that builder from the CLI:
    there ``DOCKER_BUILDKIT=1 docker build`` needs buildx. The answer is cached per process."""
    env = os.environ if env is None else env
    key = (env.get("PATH"), env.get("HOME"), env.get("DOCKER_CONFIG"), *extra)
    with _cli_cache_lock:
        if key not in _cli_cache:
            _cli_cache[key] = _probe_docker_clis(_cli_candidates(env.get("PATH", ""), extra), env)
        return _cli_cache[key]


def _cli_candidates(search_path: str, extra: Sequence[str]) -> list[str]:
    found: dict[str, str] = {}  # realpath -> path: /bin is /usr/bin on merged-usr systems
    paths = [os.path.join(d, "docker") for d in search_path.split(os.pathsep) if d]
    for path in [*paths, *extra]:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            found.setdefault(os.path.realpath(path), path)
    return list(found.values())


def _probe_docker_clis(candidates: Sequence[str], env: Mapping[str, str]) -> tuple[str, str]:
    classic = None
    for path in candidates:
        if _cli_answers(path, ["buildx", "version"], env) is not None:
            return path, "buildx"
        version = _cli_answers(path, ["--version"], env) or ""
        match = re.search(r"version (\d+)\.", version)
        if classic is None and match and int(match.group(1)) < 23:
            classic = (path, "buildkit-env")
    if classic:
        return classic
    raise BtError(
        "no docker CLI here can build with BuildKit: install the buildx plugin, or a docker CLI "
        f"older than 23 (checked: {', '.join(candidates) or 'no docker on PATH'})"
    )


def _cli_answers(path: str, args: list[str], env: Mapping[str, str]) -> str | None:
    """stdout of a quick CLI call that exits 0, else None."""
    try:
        done = _run_captured([path, *args], env, PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _run_captured(
    command: Sequence[str], env: Mapping[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """A short-lived command's exit code and output (raises TimeoutExpired)."""
    return subprocess.run(
        command,
        env=dict(env),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


class BuildKitCliBuilder:
    """The engine's BuildKit, through the docker CLI."""

    def __init__(
        self, host: str | None, network: str | None = None, env: Mapping[str, str] | None = None
    ):
        self.env = dict(os.environ if env is None else env)
        self.cli, self.mode = find_docker_cli(self.env)
        if host:
            self.env["DOCKER_HOST"] = host
            self.env.pop("DOCKER_CONTEXT", None)  # a context would override DOCKER_HOST
        if self.mode == "buildkit-env":
            self.env["DOCKER_BUILDKIT"] = "1"
        self.host = host or self.env.get("DOCKER_HOST") or "the default engine"
        self.network = network
        self.name = f"buildkit@{self.host}"
        self._architecture: str | None = None

    def _docker(
        self, *args: str, timeout: float = PROBE_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        try:
            return _run_captured([self.cli, *args], self.env, timeout)
        except subprocess.TimeoutExpired:
            raise TransientError(f"docker {args[0]} on {self.host} timed out") from None

    def _fault(self, what: str, done: subprocess.CompletedProcess[str]) -> Exception:
        message = f"{what} on {self.host} failed: {_error_line(done.stderr.splitlines())}"
        return TransientError(message) if _is_transient(message) else BtError(message)

    def architecture(self) -> str:
        if self._architecture is None:
            done = self._docker("version", "--format", "{{.Server.Os}} {{.Server.Arch}}")
            fields = done.stdout.split()
            if done.returncode != 0 or len(fields) != 2:
                detail = _error_line(done.stderr.splitlines())
                raise BtError(f"cannot reach the Docker engine at {self.host}: {detail}")
            self._architecture = normalise_platform(*fields)
        return self._architecture

    def build(self, request: BuildRequest, cancel: threading.Event) -> BuiltImage:
        with tempfile.TemporaryDirectory(prefix="bt-build-") as tmp:
            iidfile = Path(tmp, "iid")
            code, tail = _stream_to_log(
                self._build_command(request, iidfile), self.env, request.log_path, cancel
            )
            if code != 0:
                message = f"docker build on {self.host} failed: {_error_line(tail)}"
                raise _build_failure(message, tail, request.log_path)
            image_id = iidfile.read_text().strip()
        actual = self._platform_of(image_id)
        if actual is not None and not _same_platform(actual, request.platform):
            self._docker("rmi", "--no-prune", request.tag)  # the tag is the local action cache
            raise _wrong_platform(self.name, request, actual)
        return BuiltImage(image_id, request.tag)

    def _build_command(self, request: BuildRequest, iidfile: Path) -> list[str]:
        verb = ["buildx", "build", "--load"] if self.mode == "buildx" else ["build"]
        command = [
            self.cli,
            *verb,
            "--progress=plain",
            "--platform",
            request.platform,
            "-f",
            str(request.dockerfile),
            "-t",
            request.tag,
            "--iidfile",
            str(iidfile),
        ]
        if self.network:
            command.append(f"--network={self.network}")
        if request.stage:
            command += ["--target", request.stage]
        for name, value in request.build_args:
            command += ["--build-arg", f"{name}={value}"]
        for name, value in request.labels:
            command += ["--label", f"{name}={value}"]
        return [*command, str(request.context)]

    def _platform_of(self, ref: str) -> str | None:
        done = self._docker("image", "inspect", "--format", "{{.Os}} {{.Architecture}}", ref)
        fields = done.stdout.split()
        return normalise_platform(*fields) if done.returncode == 0 and len(fields) == 2 else None

    def image_id(self, ref: str) -> str | None:
        done = self._docker("image", "inspect", "--format", "{{.Id}}", ref)
        if done.returncode == 0:
            return done.stdout.strip()
        if "no such image" in done.stderr.lower() or "no such object" in done.stderr.lower():
            return None
        raise self._fault(f"docker image inspect {ref}", done)

    def tag(self, image_id_or_ref: str, new_tag: str) -> None:
        done = self._docker("tag", image_id_or_ref, new_tag)
        if done.returncode != 0:
            raise self._fault(f"docker tag {image_id_or_ref} {new_tag}", done)

    def push(self, ref: str) -> str:
        done = self._docker("push", ref, timeout=PUSH_TIMEOUT)
        lines = (done.stdout + done.stderr).splitlines()
        if done.returncode != 0:
            message = f"docker push {ref} failed: {_error_line(lines)}"
            if _is_transient(message):
                raise TransientError(message)
            raise JobFailed(message, log_tail="\n".join(lines[-LOG_TAIL_LINES:]))
        # The CLI's last word on a push: "<tag>: digest: sha256:... size: N".
        match = re.search(rf"^{re.escape(split_tag(ref)[1])}: {_CLI_DIGEST}$", done.stdout, re.M)
        if match is None:
            raise JobFailed(
                f"docker push {ref} printed no digest", log_tail="\n".join(lines[-LOG_TAIL_LINES:])
            )
        return match.group(1)

    def run(self, image: str, command: Sequence[str], timeout: float) -> tuple[int, str]:
        name = f"bt-run-{secrets.token_hex(6)}"
        args = [self.cli, "run", "--rm", "--network=none", "--name", name]
        platform = self._platform_of(image)
        if platform:
            args += ["--platform", platform]  # else the engine would look for its own platform
        try:
            done = subprocess.run(
                [*args, image, *command],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as expired:
            # Killing the CLI leaves the container running: remove it by name.
            self._docker("rm", "--force", name)
            # TimeoutExpired carries bytes whatever text= said.
            output = (expired.output or b"").decode("utf-8", errors="replace")
            return 124, f"{output}timed out after {timeout:g}s\n"
        return done.returncode, done.stdout

    def close(self) -> None:
        pass


def _stream_to_log(
    command: Sequence[str], env: Mapping[str, str], log_path: Path, cancel: threading.Event
) -> tuple[int, list[str]]:
    """Run ``command`` with its output copied line by line into ``log_path``; return its exit
    code and last lines. When ``cancel`` is set, stop its whole process group and raise."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    with log_path.open("w", encoding="utf-8") as log:
        _write_lines(log, tail, ["$ " + " ".join(command)])
        process = subprocess.Popen(
            command,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stopper = threading.Thread(target=_stop_on_cancel, args=(process, cancel), daemon=True)
        stopper.start()
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            log.write(line + "\n")
            log.flush()
            tail.append(line)
        code = process.wait()
        stopper.join()
        if cancel.is_set():
            log.write("cancelled\n")
            raise Cancelled(f"cancelled: {' '.join(command[:3])}")
    return code, list(tail)


def _stop_on_cancel(process: subprocess.Popen[bytes], cancel: threading.Event) -> None:
    while process.poll() is None:
        if not cancel.wait(0.1):
            continue
        # The CLI ends its BuildKit session on SIGTERM, which makes the engine abandon the build.
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
        return


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
        os.killpg(process.pid, signum)


# -- the Engine API (docker-py) ------------------------------------------------------------------


class EngineApiBuilder:
    """The Engine API through docker-py: the classic builder, no CLI needed."""

    def __init__(self, host: str | None, network: str | None = None):
        import docker

        kwargs: dict[str, Any] = {"base_url": host} if host else docker.utils.kwargs_from_env()
        self.host = str(kwargs.get("base_url") or "the default engine")
        self.name = f"engine@{self.host}"
        self.network = network
        try:
            # ssh:// through the system's ssh client, as the docker CLI does (no paramiko).
            self.client: Any = docker.APIClient(
                version="auto", timeout=_API_TIMEOUT, use_ssh_client=True, **kwargs
            )
            version = self.client.version()
        except docker.errors.DockerException as err:
            raise BtError(f"cannot reach the Docker engine at {self.host}: {err}") from None
        self._architecture = normalise_platform(version["Os"], version["Arch"])
        self._responses = threading.local()
        # docker-py hands out only a generator over a build's response. Its socket must be shut
        # down to stop a build from another thread: the engine abandons a classic build (and kills
        # its RUN container) when the client disconnects. Keep each thread's response to do so.
        stream_helper = self.client._stream_helper

        def keep_response(response: Any, decode: bool = False) -> Any:
            self._responses.current = response
            return stream_helper(response, decode=decode)

        self.client._stream_helper = keep_response

    def architecture(self) -> str:
        return self._architecture

    def build(self, request: BuildRequest, cancel: threading.Event) -> BuiltImage:
        import requests
        import urllib3

        import docker

        if not request.context.is_dir():
            raise BtError(f"build context {request.context} is not a directory")
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        with request.log_path.open("w", encoding="utf-8") as log:
            try:
                stream = self._start_build(request)
            except docker.errors.APIError as err:
                message = f"build on {self.host} refused: {err.explanation or err}"
                _write_lines(log, tail, message.splitlines())
                raise _build_failure(message, list(tail), request.log_path) from None
            except requests.exceptions.RequestException as err:
                raise TransientError(f"build on {self.host} interrupted: {err}") from None
            image_id = None
            try:
                with _shut_on_cancel(self._responses.current, cancel):
                    image_id = self._consume(request, stream, log, tail)
            except (
                requests.exceptions.RequestException,
                urllib3.exceptions.HTTPError,
                OSError,
            ) as err:
                if not cancel.is_set():
                    raise TransientError(f"build on {self.host} interrupted: {err}") from None
            if cancel.is_set():
                log.write("cancelled\n")
                raise Cancelled(f"cancelled: build of {request.tag}")
        image_id = image_id or self.image_id(request.tag)
        if image_id is None:
            message = f"build on {self.host} ended without an image"
            raise JobFailed(message, log_tail="\n".join(tail), log_path=str(request.log_path))
        self._check_platform(request, image_id)
        return BuiltImage(image_id, request.tag)

    def _start_build(self, request: BuildRequest) -> Iterator[dict[str, Any]]:
        stream: Iterator[dict[str, Any]] = self.client.build(
            path=str(request.context),
            dockerfile=str(request.dockerfile),  # docker-py ships one outside the context itself
            tag=request.tag,
            target=request.stage,
            buildargs=dict(request.build_args),
            platform=request.platform,
            labels=dict(request.labels),
            network_mode=self.network,
            decode=True,
            rm=True,
            forcerm=True,
            timeout=None,  # a RUN step may print nothing for a long time
        )
        return stream

    def _consume(
        self,
        request: BuildRequest,
        stream: Iterable[dict[str, Any]],
        log: IO[str],
        tail: collections.deque[str],
    ) -> str | None:
        image_id = None
        for chunk in stream:
            text = chunk.get("stream") or chunk.get("status")
            if isinstance(text, str):
                _write_lines(log, tail, text.splitlines())
            # docker-py returns normally when the build fails: the error arrives as a chunk.
            error = _stream_error(chunk)
            if error is not None:
                _write_lines(log, tail, [f"ERROR: {error}"])
                message = f"build on {self.host} failed: {error}"
                raise _build_failure(message, list(tail), request.log_path)
            aux = chunk.get("aux")
            if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
                image_id = aux["ID"]
        return image_id

    def _check_platform(self, request: BuildRequest, image_id: str) -> None:
        # The classic builder takes a local base image of another platform without a word, and
        # does not pull per platform: a linux/arm64 build FROM an amd64 base comes out amd64.
        attrs = self.client.inspect_image(image_id)
        actual = normalise_platform(attrs.get("Os", ""), attrs.get("Architecture", ""))
        if not _same_platform(actual, request.platform):
            self.client.remove_image(request.tag, noprune=True)  # the tag is the local cache
            raise _wrong_platform(self.name, request, actual)

    def image_id(self, ref: str) -> str | None:
        import requests

        import docker

        try:
            return str(self.client.inspect_image(ref)["Id"])
        except docker.errors.ImageNotFound:
            return None
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise self._fault(f"inspecting {ref}", err) from None

    def tag(self, image_id_or_ref: str, new_tag: str) -> None:
        import requests

        import docker

        repository, tag = split_tag(new_tag)
        try:
            self.client.tag(image_id_or_ref, repository, tag)
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise self._fault(f"tagging {image_id_or_ref} as {new_tag}", err) from None

    def push(self, ref: str) -> str:
        import requests

        import docker

        repository, tag = split_tag(ref)
        digest = None
        try:
            for chunk in self.client.push(repository, tag, stream=True, decode=True):
                # Errors arrive inside the stream; docker-py returns normally.
                error = _stream_error(chunk)
                if error is not None:
                    message = f"push of {ref} failed: {error}"
                    raise TransientError(message) if _is_transient(message) else JobFailed(message)
                aux = chunk.get("aux")
                if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
                    digest = aux["Digest"]
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            message = f"push of {ref} failed: {err}"
            if _transient_api_error(err):
                raise TransientError(message) from None
            raise JobFailed(message) from None
        if digest is None:
            raise JobFailed(f"push of {ref} reported no digest")
        return str(digest)

    def run(self, image: str, command: Sequence[str], timeout: float) -> tuple[int, str]:
        import requests

        import docker

        try:
            attrs = self.client.inspect_image(image)
            container = self.client.create_container(
                image,
                command=list(command),
                host_config=self.client.create_host_config(network_mode="none"),
                platform=normalise_platform(attrs["Os"], attrs["Architecture"]),
            )
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise self._fault(f"running {image}", err) from None
        try:
            self.client.start(container)
            try:
                status = int(self.client.wait(container, timeout=timeout)["StatusCode"])
            except requests.exceptions.RequestException:
                self.client.kill(container)
                status = 124
            output = self.client.logs(container, stdout=True, stderr=True)
            text = output.decode("utf-8", errors="replace")
            return status, text + (f"timed out after {timeout:g}s\n" if status == 124 else "")
        finally:
            self.client.remove_container(container, force=True)

    def close(self) -> None:
        self.client.close()

    def _fault(self, what: str, err: Exception) -> Exception:
        message = f"{what} on {self.host} failed: {err}"
        return TransientError(message) if _transient_api_error(err) else BtError(message)


def _transient_api_error(err: Exception) -> bool:
    """Connection faults and 5xx answers that name a transient cause."""
    import docker

    if isinstance(err, docker.errors.APIError):
        return bool(err.is_server_error()) and _is_transient(str(err))
    return True  # requests' connection errors and timeouts


def _stream_error(chunk: Mapping[str, Any]) -> str | None:
    if "errorDetail" not in chunk and "error" not in chunk:
        return None
    detail = chunk.get("errorDetail")
    message = detail.get("message") if isinstance(detail, dict) else None
    return str(message or chunk.get("error") or "unknown error")


def _write_lines(log: IO[str], tail: collections.deque[str], lines: Iterable[str]) -> None:
    for line in lines:
        log.write(line + "\n")
        tail.append(line)
    log.flush()


@contextlib.contextmanager
def _shut_on_cancel(response: Any, cancel: threading.Event) -> Iterator[None]:
    """While the body reads ``response``, shut its socket down as soon as ``cancel`` is set."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if cancel.wait(0.1):
                # Shutting down wakes the reading thread; closing then drops the connection.
                with contextlib.suppress(AttributeError, ValueError, RuntimeError, OSError):
                    response.raw.shutdown()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        response.close()


def open_builder(host: str | None, backend: str, network: str | None = None) -> Builder:
    """The builder for one engine: ``backend`` is "buildkit" (docker CLI) or "engine" (API)."""
    if backend == "buildkit":
        return BuildKitCliBuilder(host, network)
    if backend == "engine":
        return EngineApiBuilder(host, network)
    raise BtError(f'unknown builder backend "{backend}" (known: buildkit, engine)')
