"""Persistent registry connections (registry/connections.py), against a local HTTP/1.1 server
that counts the connections it accepts."""

from __future__ import annotations

import http.client
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from buildtool.registry import connections


class _Counting(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, delay: float = 0.0, close_after_each: bool = False):
        self.accepted = 0
        self.busy = self.most_busy = 0
        self.delay = delay
        self.close_after_each = close_after_each
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[socket.socket, object]:
        conn, addr = super().get_request()
        with self.lock:
            self.accepted += 1
        return conn, addr


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: _Counting

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.busy += 1
            self.server.most_busy = max(self.server.most_busy, self.server.busy)
        time.sleep(self.server.delay)
        with self.server.lock:
            self.server.busy -= 1
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.server.close_after_each:
            self.close_connection = True  # closes without saying so: as an idle timeout does

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def server(**kwargs: object) -> Iterator[_Counting]:
    srv = _Counting(**kwargs)  # type: ignore[arg-type]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def get(pool: connections.Pool, srv: _Counting) -> bytes:
    origin = ("http", f"127.0.0.1:{srv.server_address[1]}", True)

    def send(conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
        conn.request("GET", "/v2/")
        return conn.getresponse()

    response, body = connections.request(pool, origin, 10.0, send)
    assert response.status == 200
    return body


def test_requests_to_one_registry_reuse_one_connection() -> None:
    pool = connections.Pool()
    with server() as srv:
        assert [get(pool, srv) for _ in range(5)] == [b"ok"] * 5
        pool.close()
    assert (srv.accepted, pool.opened) == (1, 1)


def test_a_kept_connection_the_registry_closed_is_replaced_and_the_request_sent_again() -> None:
    pool = connections.Pool()
    with server(close_after_each=True) as srv:
        assert [get(pool, srv) for _ in range(3)] == [b"ok"] * 3
        pool.close()
    assert (srv.accepted, pool.opened) == (3, 3)


def test_at_most_size_connections_are_open_to_one_registry_at_once() -> None:
    pool = connections.Pool(size=2)
    with server(delay=0.05) as srv, ThreadPoolExecutor(max_workers=6) as workers:
        assert list(workers.map(lambda _: get(pool, srv), range(12))) == [b"ok"] * 12
        pool.close()
    assert srv.most_busy == 2
    assert srv.accepted == pool.opened == 2
