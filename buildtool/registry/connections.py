"""Persistent HTTP connections to registries, shared by every client of the process.

A fresh runner asks the registry a few requests per build (the remote action cache, then the
merge): opened one connection each, they spent more time in TCP handshakes than in answers.
Connections are kept open between requests (HTTP/1.1 keep-alive) and reused, at most ``SIZE``
to one registry at once; a request beyond that waits for one to come back. A kept connection
the registry closed meanwhile is found out on reuse and the request sent again on a new one.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SIZE = 8  # connections to one registry at most (a registry serves many clients; be polite)

# (scheme, host, whether TLS is verified): a connection fits only requests of the same three.
Origin = tuple[str, str, bool]


class Pool:
    """Connections by origin: idle ones to reuse, and a bound on those in use."""

    def __init__(self, size: int = SIZE):
        self.size = size
        self._lock = threading.Lock()
        self._idle: dict[Origin, list[http.client.HTTPConnection]] = {}
        self._slots: dict[Origin, threading.BoundedSemaphore] = {}
        self.opened = 0  # connections made, for benchmarks and tests

    @contextmanager
    def slot(self, origin: Origin) -> Iterator[None]:
        with self._lock:
            slots = self._slots.setdefault(origin, threading.BoundedSemaphore(self.size))
        with slots:
            yield

    def take(self, origin: Origin, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection (and True), else a new one (and False)."""
        with self._lock:
            idle = self._idle.get(origin)
            if idle:
                conn = idle.pop()
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                return conn, True
            self.opened += 1
        return _connect(origin, timeout), False

    def give(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.setdefault(origin, []).append(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def request(
    pool: Pool,
    origin: Origin,
    timeout: float,
    send: Callable[[http.client.HTTPConnection], http.client.HTTPResponse],
) -> tuple[http.client.HTTPResponse, bytes]:
    """``send`` on a pooled connection; the response and its body read to the end. A reused
    connection that fails before an answer came (the registry closed it while idle) is
    dropped and the request sent once more on a new one."""
    with pool.slot(origin):
        for _ in range(2):
            conn, reused = pool.take(origin, timeout)
            try:
                response = send(conn)
                body = response.read()
            except (ConnectionError, http.client.BadStatusLine):  # RemoteDisconnected is both
                conn.close()
                if reused:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if response.will_close:
                conn.close()
            else:
                pool.give(origin, conn)
            return response, body
    raise AssertionError("unreachable: a new connection raises or answers")


def _connect(origin: Origin, timeout: float) -> http.client.HTTPConnection:
    scheme, host, verified = origin
    if scheme != "https":
        return http.client.HTTPConnection(host, timeout=timeout)
    context = ssl.create_default_context()
    if not verified:
        # An insecure registry with a self-signed certificate, as Docker allows.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return http.client.HTTPSConnection(host, timeout=timeout, context=context)


SHARED = Pool()  # every client of the process: one set of connections per registry
