"""The Engine API backend: the classic builder through docker-py, for engines reached without a
CLI. docker-py costs ~250 ms to import, so it is imported only inside the methods that use it.
"""

from __future__ import annotations

import collections
import contextlib
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

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

_API_TIMEOUT = 120  # docker-py read timeout for calls that answer promptly or stream progress


class EngineApiBuilder:
    """The Engine API through docker-py: the classic builder, no CLI needed."""

    def __init__(
        self, host: str | None, network: str | None = None, *, answer_within: float | None = None
    ):
        import docker

        kwargs: dict[str, Any] = {"base_url": host} if host else docker.utils.kwargs_from_env()
        self.host = str(kwargs.get("base_url") or "the default engine")
        self.name = f"engine@{self.host}"
        self.named_contexts = False  # the classic builder has none: bt rewrites the Dockerfile
        self.network = network
        try:
            # ssh:// through the system's ssh client, as the docker CLI does (no paramiko).
            # Calls that answer promptly or stream progress wait no longer than the retry
            # budget; a build's own stream is not bounded (``_start_build``).
            timeout = min(_API_TIMEOUT, answer_within or _API_TIMEOUT)
            self.client: Any = docker.APIClient(
                version="auto", timeout=timeout, use_ssh_client=True, **kwargs
            )
            version = self.client.version()
        except docker.errors.DockerException as err:
            raise BtError(f"cannot reach the Docker engine at {self.host}: {err}") from None
        self._architecture = str(Platform.of_engine(version["Os"], version["Arch"]))
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
        if request.secrets:
            # The classic builder has no secret mounts; `bt build` refuses such a build before
            # anything starts (``secret_mounts.check_secrets``). Never build without them.
            raise BtError(f"{self.name} cannot pass build secrets (the classic builder has none)")
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        with (
            request.log_path.open("w", encoding="utf-8") as log,
            tempfile.TemporaryDirectory(prefix="bt-build-") as tmp,
        ):
            try:
                stream = self._start_build(request, dockerfile_to_send(request, Path(tmp)))
            except docker.errors.APIError as err:
                message = f"build on {self.host} refused: {err.explanation or err}"
                write_lines(log, tail, message.splitlines())
                raise build_failure(message, list(tail), request.log_path) from None
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

    def _start_build(self, request: BuildRequest, dockerfile: Path) -> Iterator[dict[str, Any]]:
        from buildtool.build.builders.context import tar_chunks

        # The classic builder drops bt's copy of the Dockerfile after reading it when a
        # .dockerignore in the tar names it.
        sent = request.sent_context(hide_dockerfile=True)
        if sent is None:
            where: dict[str, Any] = {
                "path": str(request.context),
                "dockerfile": str(dockerfile),  # docker-py ships one outside the context
            }
        else:
            # requests uploads a generator chunked. If it raises (a file changed since its key),
            # the connection drops before the last chunk, and the engine builds nothing.
            where = {"fileobj": tar_chunks(sent), "custom_context": True}
            where["dockerfile"] = sent.dockerfile
        stream: Iterator[dict[str, Any]] = self.client.build(
            **where,
            tag=request.tag,
            target=request.stage,
            buildargs=dict(request.build_args),
            platform=request.platform,
            labels=dict(request.labels),
            cache_from=self._pulled(request.cache_from) or None,
            network_mode=self.network,
            decode=True,
            rm=True,
            forcerm=True,
            timeout=None,  # a RUN step may print nothing for a long time
        )
        return stream

    def _pulled(self, images: Sequence[str]) -> list[str]:
        """The cache sources the classic builder can use: it reuses layers only of images in
        the engine's store, so each is pulled first. One that will not pull is left out."""
        import requests

        import docker

        pulled = []
        for image in images:
            repository, _, digest = image.partition("@")
            try:
                for chunk in self.client.pull(repository, digest, stream=True, decode=True):
                    if _stream_error(chunk) is not None:
                        raise docker.errors.APIError(_stream_error(chunk))
            except (docker.errors.APIError, requests.exceptions.RequestException):
                continue
            pulled.append(image)
        return pulled

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
                write_lines(log, tail, text.splitlines())
            # docker-py returns normally when the build fails: the error arrives as a chunk.
            error = _stream_error(chunk)
            if error is not None:
                write_lines(log, tail, [f"ERROR: {error}"])
                message = f"build on {self.host} failed: {error}"
                raise build_failure(message, list(tail), request.log_path)
            aux = chunk.get("aux")
            if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
                image_id = checked_image_id(self.host, aux["ID"])
        return image_id

    def _check_platform(self, request: BuildRequest, image_id: str) -> None:
        # The classic builder takes a local base image of another platform without a word, and
        # does not pull per platform: a linux/arm64 build FROM an amd64 base comes out amd64.
        attrs = self.client.inspect_image(image_id)
        actual = Platform.of_engine(attrs.get("Os", ""), attrs.get("Architecture", ""))
        mismatch = platform_mismatch(self.name, request, actual)
        if mismatch is not None:
            self.client.remove_image(request.tag, noprune=True)  # the tag is the local cache
            raise mismatch

    def image_id(self, ref: str) -> str | None:
        import requests

        import docker

        try:
            return checked_image_id(self.host, self.client.inspect_image(ref)["Id"])
        except docker.errors.ImageNotFound:
            return None
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise self._fault(f"inspecting {ref}", err) from None

    def local_image(self, ref: str) -> LocalImage | None:
        attrs = self._inspect(ref)
        if attrs is None:
            return None
        return checked_local_image(self.host, attrs.get("Id"), attrs.get("RepoDigests"))

    def image_labels(self, ref: str) -> dict[str, str] | None:
        attrs = self._inspect(ref)
        if attrs is None:
            return None
        config = attrs.get("Config") or {}
        return {str(k): str(v) for k, v in (config.get("Labels") or {}).items()}

    def _inspect(self, ref: str) -> dict[str, Any] | None:
        import requests

        import docker

        try:
            attrs: dict[str, Any] = self.client.inspect_image(ref)
        except docker.errors.ImageNotFound:
            return None
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise self._fault(f"inspecting {ref}", err) from None
        return attrs

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
                    raise TransientError(message) if is_transient(message) else JobFailed(message)
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
        return checked_image_id(self.host, digest)

    def run(
        self, image: str, command: Sequence[str], timeout: float, entrypoint: str | None = None
    ) -> tuple[int, str]:
        import requests

        import docker

        try:
            attrs = self.client.inspect_image(image)
            container = self.client.create_container(
                image,
                command=list(command),
                entrypoint=[entrypoint] if entrypoint is not None else None,
                host_config=self.client.create_host_config(network_mode="none"),
                platform=str(Platform.of_engine(attrs["Os"], attrs["Architecture"])),
            )
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise self._fault(f"running {image}", err) from None
        try:
            try:
                self.client.start(container)
            except docker.errors.APIError as err:
                # What `docker run` reports as 127 (126): the command could not be started.
                missing = "no such file" in str(err).lower() or "not found" in str(err).lower()
                return (127 if missing else 126), f"{err}\n"
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
        return bool(err.is_server_error()) and is_transient(str(err))
    return True  # requests' connection errors and timeouts


def _stream_error(chunk: Mapping[str, Any]) -> str | None:
    if "errorDetail" not in chunk and "error" not in chunk:
        return None
    detail = chunk.get("errorDetail")
    message = detail.get("message") if isinstance(detail, dict) else None
    return str(message or chunk.get("error") or "unknown error")


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
