"""The BuildKit backend: the engine's BuildKit driven through the docker CLI.

``docker buildx build --load`` where buildx works, else ``DOCKER_BUILDKIT=1 docker build`` on a
CLI that still carries BuildKit (Debian's 20.10).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from buildtool.build.builders import (
    LOG_TAIL_LINES,
    BuildRequest,
    BuiltImage,
    build_failure,
    checked_image_id,
    checked_local_image,
    dockerfile_to_send,
    is_transient,
    platform_mismatch,
    split_tag,
    write_lines,
)
from buildtool.errors import BtError, Cancelled, JobFailed, TransientError
from buildtool.plan.pins import LocalImage
from buildtool.platforms import Platform
from buildtool.secrets import REDACTED, buildkit_flag, scrub
from buildtool.state.jsonvalue import load_json

PROBE_TIMEOUT = 30.0  # `docker version`, `docker buildx version`, `docker image inspect`
PUSH_TIMEOUT = 3 * 3600.0  # a 10 GB image over a slow uplink
_STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL for a cancelled CLI
_CLI_DIGEST = r"digest: (sha256:[0-9a-f]{64}) size: \d+"


def _error_line(lines: Sequence[str]) -> str:
    """The line of a failed CLI's output that says why: the last one that is not blank."""
    return next((line.strip() for line in reversed(lines) if line.strip()), "no output")


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
        self,
        host: str | None,
        network: str | None = None,
        env: Mapping[str, str] | None = None,
        *,
        answer_within: float | None = None,
    ):
        self.env = dict(os.environ if env is None else env)
        self.probe_timeout = min(PROBE_TIMEOUT, answer_within or PROBE_TIMEOUT)
        self.cli, self.mode = find_docker_cli(self.env)
        if host:
            self.env["DOCKER_HOST"] = host
            self.env.pop("DOCKER_CONTEXT", None)  # a context would override DOCKER_HOST
        if self.mode == "buildkit-env":
            self.env["DOCKER_BUILDKIT"] = "1"
        self.host = host or self.env.get("DOCKER_HOST") or "the default engine"
        self.network = network
        self.name = f"buildkit@{self.host}"
        # buildx takes named contexts; Docker 20.10's `docker build` has none.
        self.named_contexts = self.mode == "buildx"
        self._architecture: str | None = None

    def _docker(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return _run_captured([self.cli, *args], self.env, timeout or self.probe_timeout)
        except subprocess.TimeoutExpired:
            raise TransientError(f"docker {args[0]} on {self.host} timed out") from None

    def _fault(self, what: str, done: subprocess.CompletedProcess[str]) -> Exception:
        message = f"{what} on {self.host} failed: {_error_line(done.stderr.splitlines())}"
        return TransientError(message) if is_transient(message) else BtError(message)

    def architecture(self) -> str:
        if self._architecture is None:
            done = self._docker("version", "--format", "{{.Server.Os}} {{.Server.Arch}}")
            fields = done.stdout.split()
            if done.returncode != 0 or len(fields) != 2:
                detail = _error_line(done.stderr.splitlines())
                raise BtError(f"cannot reach the Docker engine at {self.host}: {detail}")
            self._architecture = str(Platform.of_engine(*fields))
        return self._architecture

    def build(self, request: BuildRequest, cancel: threading.Event) -> BuiltImage:
        from buildtool.build.builders.context import tar_chunks

        sent = request.sent_context()
        with tempfile.TemporaryDirectory(prefix="bt-build-") as tmp:
            iidfile = Path(tmp, "iid")
            # A tar on stdin is the whole context (`docker build -f <path in tar> -`); BuildKit
            # applies no .dockerignore to it.
            if sent is None:
                Path(tmp, "dockerfile").mkdir()
                dockerfile = dockerfile_to_send(request, Path(tmp, "dockerfile"))
                command = self._build_command(
                    request, iidfile, str(dockerfile), str(request.context)
                )
            else:
                command = self._build_command(request, iidfile, sent.dockerfile, "-")
            code, tail = _stream_to_log(
                command,
                self.env,
                request.log_path,
                cancel,
                feed=None if sent is None else tar_chunks(sent),
            )
            if code != 0:
                message = f"docker build on {self.host} failed: {_error_line(tail)}"
                raise build_failure(message, tail, request.log_path)
            image_id = checked_image_id(self.host, iidfile.read_text().strip())
        actual = self._platform_of(image_id)
        mismatch = None if actual is None else platform_mismatch(self.name, request, actual)
        if mismatch is not None:
            self._docker("rmi", "--no-prune", request.tag)  # the tag is the local action cache
            raise mismatch
        return BuiltImage(image_id, request.tag)

    def _build_command(
        self, request: BuildRequest, iidfile: Path, dockerfile: str, context: str
    ) -> list[str]:
        verb = ["buildx", "build", "--load"] if self.mode == "buildx" else ["build"]
        command = [
            self.cli,
            *verb,
            "--progress=plain",
            "--platform",
            request.platform,
            "-f",
            dockerfile,
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
        for name, value in request.named_contexts:
            command += ["--build-context", f"{name}={value}"]
        for source in request.secrets:
            command += ["--secret", buildkit_flag(source)]
        for name, value in request.labels:
            command += ["--label", f"{name}={value}"]
        # Every image carries inline cache metadata, so a pushed record can warm a later build
        # on another engine (``build.layer_cache``); whether it is offered does not change it.
        if self.mode == "buildx":
            command += ["--cache-to", "type=inline"]
        else:
            command += ["--build-arg", "BUILDKIT_INLINE_CACHE=1"]
        for image in request.cache_from:
            command += ["--cache-from", image]
        return [*command, context]

    def _platform_of(self, ref: str) -> Platform | None:
        done = self._docker("image", "inspect", "--format", "{{.Os}} {{.Architecture}}", ref)
        fields = done.stdout.split()
        return Platform.of_engine(*fields) if done.returncode == 0 and len(fields) == 2 else None

    def image_id(self, ref: str) -> str | None:
        done = self._docker("image", "inspect", "--format", "{{.Id}}", ref)
        if done.returncode == 0:
            return checked_image_id(self.host, done.stdout.strip())
        if "no such image" in done.stderr.lower() or "no such object" in done.stderr.lower():
            return None
        raise self._fault(f"docker image inspect {ref}", done)

    def local_image(self, ref: str) -> LocalImage | None:
        done = self._docker("image", "inspect", "--format", "{{.Id}} {{json .RepoDigests}}", ref)
        if done.returncode == 0:
            image_id, _, digests = done.stdout.strip().partition(" ")
            try:
                repo_digests = json.loads(digests)
            except (ValueError, RecursionError):
                repo_digests = digests
            return checked_local_image(self.host, image_id, repo_digests)
        if "no such image" in done.stderr.lower() or "no such object" in done.stderr.lower():
            return None
        raise self._fault(f"docker image inspect {ref}", done)

    def image_labels(self, ref: str) -> dict[str, str] | None:
        done = self._docker("image", "inspect", "--format", "{{json .Config.Labels}}", ref)
        if done.returncode == 0:
            labels = load_json(done.stdout or "null", None, f"docker image inspect {ref}")
            return {str(k): str(v) for k, v in (labels or {}).items()}
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
            if is_transient(message):
                raise TransientError(message)
            raise JobFailed(message, log_tail="\n".join(lines[-LOG_TAIL_LINES:]))
        # The CLI's last word on a push: "<tag>: digest: sha256:... size: N".
        match = re.search(rf"^{re.escape(split_tag(ref)[1])}: {_CLI_DIGEST}$", done.stdout, re.M)
        if match is None:
            raise JobFailed(
                f"docker push {ref} printed no digest", log_tail="\n".join(lines[-LOG_TAIL_LINES:])
            )
        return match.group(1)

    def run(
        self, image: str, command: Sequence[str], timeout: float, entrypoint: str | None = None
    ) -> tuple[int, str]:
        name = f"bt-run-{secrets.token_hex(6)}"
        args = [self.cli, "run", "--rm", "--network=none", "--name", name]
        platform = self._platform_of(image)
        if platform:
            args += ["--platform", str(platform)]  # else the engine would look for its own platform
        if entrypoint is not None:
            args += ["--entrypoint", entrypoint]
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
    command: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    cancel: threading.Event,
    feed: Iterator[bytes] | None = None,
) -> tuple[int, list[str]]:
    """Run ``command`` with its output copied line by line into ``log_path``; return its exit
    code and last lines. When ``cancel`` is set, stop its whole process group and raise.
    ``feed`` is written to its stdin; an error it raises kills the command and is raised."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    with log_path.open("w", encoding="utf-8") as log:
        write_lines(log, tail, ["$ " + " ".join(_shown(command))])
        process = subprocess.Popen(
            command,
            env=dict(env),
            stdin=subprocess.DEVNULL if feed is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stopper = threading.Thread(target=_stop_on_cancel, args=(process, cancel), daemon=True)
        stopper.start()
        feed_errors: list[Exception] = []
        feeder = None
        if feed is not None:
            feeder = threading.Thread(target=_feed, args=(process, feed, feed_errors), daemon=True)
            feeder.start()
        assert process.stdout is not None
        for raw in process.stdout:
            line = scrub(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
            log.write(line + "\n")
            log.flush()
            tail.append(line)
        code = process.wait()
        stopper.join()
        if feeder is not None:
            feeder.join()
        if cancel.is_set():
            log.write("cancelled\n")
            raise Cancelled(f"cancelled: {' '.join(command[:3])}")
        if feed_errors:
            log.write(scrub(f"ERROR: {feed_errors[0]}") + "\n")
            raise feed_errors[0]
    return code, list(tail)


def _shown(command: Sequence[str]) -> list[str]:
    """``command`` as the build log shows it: build-arg values left out (invariant 7)."""
    shown = list(command)
    for index in range(1, len(shown)):
        if shown[index - 1] == "--build-arg":
            shown[index] = shown[index].split("=", 1)[0] + "=" + REDACTED
    return shown


def _feed(
    process: subprocess.Popen[bytes], chunks: Iterator[bytes], errors: list[Exception]
) -> None:
    """Write ``chunks`` to the command's stdin, then close it. If ``chunks`` raises (a file
    changed since its key), kill the command and wait for it before closing stdin: an end of
    input could make the engine take the cut stream for a whole context and build it."""
    assert process.stdin is not None
    try:
        for chunk in chunks:
            process.stdin.write(chunk)
    except BrokenPipeError:
        pass  # the command stopped reading: its exit code and output say why
    except Exception as err:
        errors.append(err)
        _signal_group(process, signal.SIGKILL)
        process.wait()
    finally:
        with contextlib.suppress(OSError):
            process.stdin.close()


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
