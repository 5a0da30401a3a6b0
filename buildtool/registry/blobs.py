"""Copying one blob between registries without holding it in memory (a layer may be gigabytes):
the source's GET streamed into the destination's upload (the OCI distribution spec's monolithic
PUT), its digest checked as the bytes pass, by the destination on receipt, and once more on
arrival. Signing in is the client's: a HEAD on each side first obtains the token it reuses.
"""

from __future__ import annotations

import http.client
import threading
from typing import TYPE_CHECKING
from urllib.parse import quote, urljoin, urlsplit

from buildtool.errors import BtError, RegistryUnavailable
from buildtool.registry.reference import Reference

if TYPE_CHECKING:
    import hashlib

    from buildtool.registry.client import RegistryClient

CHUNK = 1 << 20
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _Hashing:
    """A response body read through sha256, for http.client to send on as a request body."""

    def __init__(self, response: http.client.HTTPResponse, cancel: threading.Event | None):
        import hashlib

        self.response = response
        self.sha256: hashlib._Hash = hashlib.sha256()
        self.count = 0
        self.cancel = cancel

    def read(self, size: int = -1) -> bytes:
        if self.cancel is not None and self.cancel.is_set():
            raise OSError("cancelled")
        data = self.response.read(size if size > 0 else CHUNK)
        self.sha256.update(data)
        self.count += len(data)
        return data

    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


def copy_blob(
    client: RegistryClient,
    source: Reference,
    dest: Reference,
    digest: str,
    size: int,
    upload_url: str,
    cancel: threading.Event | None = None,
) -> None:
    """Stream blob ``digest`` of ``size`` bytes from the repository of ``source`` to the upload
    ``upload_url`` opened in the repository of ``dest`` (``RegistryClient.start_upload``)."""
    if client.head_blob(source, digest) is None:
        raise BtError(f"blob {digest} is missing from {source.name}")
    where = f"blob {digest} from {source.name} to {dest.name}"
    try:
        get_conn, response = _open_get(client, source, digest)
        try:
            body = _Hashing(response, cancel)
            _put(client, dest, upload_url, digest, size, body)
        finally:
            get_conn.close()
    except (OSError, http.client.HTTPException) as err:
        message = f"copying {where} failed: {err or type(err).__name__}"
        raise RegistryUnavailable(message, source=f"registry {dest.registry}") from None
    if body.count != size or (digest.startswith("sha256:") and body.digest() != digest):
        raise BtError(f"{source.name} sent {body.count} bytes ({body.digest()}) for {where}")
    arrived = client.head_blob(dest, digest)
    if arrived is None or (arrived and arrived != size):
        raise BtError(f"{where}: the destination does not serve it after the upload")


def _open_get(
    client: RegistryClient, ref: Reference, digest: str
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """The connection and response of the blob's GET, redirects followed (storage often lives
    elsewhere; credentials never follow to another host)."""
    scheme, host = client.origin(ref.registry)
    origin = (scheme, host)
    target = f"/v2/{ref.repository}/blobs/{digest}"
    authorization = client.authorization(ref, push=False)
    for _ in range(5):
        headers = (
            {"Authorization": authorization} if authorization and (scheme, host) == origin else {}
        )
        conn = client.connection(scheme, host)
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        location = response.getheader("Location")
        if response.status in _REDIRECTS and location:
            response.read()
            conn.close()
            parts = urlsplit(urljoin(f"{scheme}://{host}{target}", location))
            scheme, host = parts.scheme, parts.netloc
            target = f"{parts.path or '/'}{'?' + parts.query if parts.query else ''}"
            continue
        if response.status != 200:
            response.read()
            conn.close()
            raise BtError(
                f"GET blob {digest} of {ref.name}: registry answered "
                f"{response.status} {response.reason}"
            )
        return conn, response
    raise BtError(f"too many redirects for blob {digest} of {ref.name}")


def _put(
    client: RegistryClient,
    dest: Reference,
    upload_url: str,
    digest: str,
    size: int,
    body: _Hashing,
) -> None:
    parts = urlsplit(upload_url)
    query = f"{parts.query}&" if parts.query else ""
    target = f"{parts.path}?{query}digest={quote(digest, safe='')}"
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    authorization = client.authorization(dest, push=True)
    if authorization and (parts.scheme, parts.netloc) == client.origin(dest.registry):
        headers["Authorization"] = authorization
    conn = client.connection(parts.scheme, parts.netloc)
    conn.blocksize = CHUNK
    try:
        conn.request("PUT", target, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    if response.status != 201:
        raise BtError(
            f"PUT blob {digest} to {dest.name}: registry answered "
            f"{response.status} {response.reason}"
        )
