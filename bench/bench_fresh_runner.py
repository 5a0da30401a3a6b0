"""A fresh CI runner: a clone of the example with no images.lock, an empty cache directory, and
every build already in the registry (pushed by another runner). `bt build //... --push` must
learn from the registry that all 390 builds are cached, record them and put the indexes.

Timed from a fresh venv holding only bt (`bench/cleanvenv.py`; `--before REV` adds one of that
revision, the runs interleaved): wall and CPU time, medians of --runs. Then one more run of each
through a counting proxy in front of the registry: connections opened, requests, bytes sent and
received. The registry repository is `<registry>/<--repo>` (default bench-fresh-runner: keep
it apart from other people's); the first run seeds it (builds and pushes what is missing).

Usage: python bench/bench_fresh_runner.py [--runs N] [--before REV] [--repo NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_plan import Sample, copy_example, median_ms, run_env, timed
from cleanvenv import Interpreter, interpreters

ENGINE = "unix:///run/bt-test/engine1.sock"  # .ci/setup's engine 1, when DOCKER_HOST is unset


class CountingProxy:
    """TCP proxy to ``upstream`` counting connections, requests (request lines) and bytes."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = self.requests = self.sent = self.received = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.server.accept()
            with self.lock:
                self.connections += 1
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        tail = b""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                with self.lock:
                    if outbound:
                        self.sent += len(data)
                        seen = tail + data
                        self.requests += seen.count(b" HTTP/1.1\r\n") - tail.count(b" HTTP/1.1\r\n")
                        tail = seen[-16:]
                    else:
                        self.received += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def snapshot(self) -> tuple[int, int, int, int]:
        with self.lock:
            return self.connections, self.requests, self.sent, self.received


def point_at(ws: Path, url: str) -> None:
    """Set [registry] url of the workspace's .cache-spec."""
    spec = ws / ".cache-spec"
    spec.write_text(re.sub(r'(?m)^url = ".*"$', f'url = "{url}"', spec.read_text()))


def fresh_clone(seed: Path, dest: Path) -> Path:
    shutil.copytree(seed, dest, symlinks=True)
    (dest / "images.lock").unlink(missing_ok=True)
    return dest


def build(interp: Interpreter, ws: Path, cache: Path) -> Sample:
    env = {**run_env(interp, cache), "DOCKER_HOST": os.environ.get("DOCKER_HOST", ENGINE)}
    cmd = [*interp.bt, "build", "//...", "--push", "--progress=quiet"]
    return timed(cmd, ws, env)


def check_all_cached(interp: Interpreter, ws: Path, cache: Path) -> None:
    out = subprocess.run([*interp.bt, "plan", "//..."], cwd=ws, env=run_env(interp, cache),
                         capture_output=True, text=True, check=True)  # fmt: skip
    if not out.stderr.startswith("0 of 390"):
        raise SystemExit(f"not every build was recorded: {out.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", metavar="REV")
    parser.add_argument("--registry", default="127.0.0.1:5000")
    parser.add_argument("--repo", default="bench-fresh-runner")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        found = [i for i in interpreters(base, os.environ.copy(), args.before) if "venv" in i.label]
        seed = base / "seed"
        seed.mkdir()
        copy_example(seed)
        point_at(seed, f"{args.registry}/{args.repo}")
        build(found[0], fresh_clone(seed, base / "seeding"), base / "cache-seeding")
        samples: list[list[Sample]] = [[] for _ in found]
        n = 0
        for _ in range(args.runs):
            for interp, got in zip(found, samples, strict=True):
                n += 1
                ws = fresh_clone(seed, base / f"clone-{n}")
                got.append(build(interp, ws, base / f"cache-{n}"))
                check_all_cached(interp, ws, base / f"cache-{n}")
        host, port = args.registry.rsplit(":", 1)
        counted = []
        for interp in found:
            proxy = CountingProxy((host, int(port)))
            n += 1
            ws = fresh_clone(seed, base / f"clone-{n}")
            point_at(ws, f"127.0.0.1:{proxy.port}/{args.repo}")
            build(interp, ws, base / f"cache-{n}")
            counted.append(proxy.snapshot())
        print(f"fresh runner: `bt build //... --push`, 390 builds all in the registry, "
              f"{args.runs} runs each, interleaved")  # fmt: skip
        for interp, got, (conns, requests, sent, received) in zip(
            found, samples, counted, strict=True
        ):
            print(f"{interp.label}")
            print(f"  time                        {median_ms(got)}")
            print(f"  registry (one counted run)  {requests} requests over {conns} connections, "
                  f"{sent / 1e6:.2f} MB sent, {received / 1e6:.2f} MB received")  # fmt: skip


if __name__ == "__main__":
    main()
