"""A small workspace of chained images on two engines, pushed to the test registry: the world
the crash and concurrency tests run `bt build //... --push` in, and what they check after."""

from __future__ import annotations

import http.client
import json
import uuid
from pathlib import Path

from btrun import own_repository, write_tree

# Three chains of three (base -> mid -> leaf) and two loners: 11 images, 22 platform builds,
# FROM scratch so both platforms build without emulation in well under a second each.
CHAINS = ("a", "b", "c")
LONERS = ("x", "y")


def chained_files(
    engine: str,
    engine2: str,
    registry: str,
    chains: tuple[str, ...] = CHAINS,
    depth: int = 3,
    loners: tuple[str, ...] = LONERS,
) -> dict[str, str]:
    """Each chain ``depth`` images long (``a0`` <- ``a1`` <- ...), and the loners."""
    url = own_repository(registry, "bt-crash")
    images = []
    for chain in chains:
        images.append(f'image(name = "{chain}0", tags = ["t"])')
        for level in range(1, depth):
            images.append(
                f'image(name = "{chain}{level}", dockerfile = "child.Dockerfile", '
                f'tags = ["t"], '
                f'parents = {{"BASE": ":{chain}{level - 1}"}})'
            )
    for name in loners:
        images.append(f'image(name = "{name}", tags = ["t"])')
    return {
        ".cache-spec": (
            'global_inputs = ["nonce.txt"]\n'
            'platforms = ["linux/amd64", "linux/arm64"]\njobs = 4\n'
            f'[registry]\nurl = "{url}"\ninsecure = true\n'
            f'[builders."linux/amd64"]\nhost = "{engine}"\njobs = 2\nnetwork = "none"\n'
            f'[builders."linux/arm64"]\nhost = "{engine2}"\njobs = 2\nnetwork = "none"\n'
        ),
        "BUILD.images": "\n".join(images) + "\n",
        "Dockerfile": "FROM scratch\nCOPY a.txt /a.txt\n",
        "child.Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY a.txt /b.txt\n",
        "a.txt": "a\n",
        "nonce.txt": uuid.uuid4().hex,
    }


def chained_workspace(
    root: Path,
    engine: str,
    engine2: str,
    registry: str,
    chains: tuple[str, ...] = CHAINS,
    depth: int = 3,
    loners: tuple[str, ...] = LONERS,
) -> Path:
    return write_tree(root, chained_files(engine, engine2, registry, chains, depth, loners))


def renew(root: Path) -> None:
    """Change the global input: every key changes, so the next run builds everything."""
    (root / "nonce.txt").write_text(uuid.uuid4().hex)


def all_builds(
    chains: tuple[str, ...] = CHAINS, depth: int = 3, loners: tuple[str, ...] = LONERS
) -> set[tuple[str, str]]:
    names = [f"{c}{d}" for c in chains for d in range(depth)] + list(loners)
    return {(f"//:{n}", p) for n in names for p in ("linux/amd64", "linux/arm64")}


def json_events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def ran(stdout: str) -> list[tuple[str, str]]:
    """The builds a `--json` run built (finished) or took from a cache (cached)."""
    return sorted(
        (str(e["label"]), str(e["platform"]))
        for e in json_events(stdout)
        if e["event"] in ("finished", "cached")
    )


def built(stdout: str) -> list[tuple[str, str]]:
    """The builds a `--json` run built itself (an engine ran them)."""
    return sorted(
        (str(e["label"]), str(e["platform"]))
        for e in json_events(stdout)
        if e["event"] == "finished"
    )


def registry_get(registry: str, path: str, accept: str = "") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(registry, timeout=10)
    try:
        conn.request("GET", path, headers={"Accept": accept} if accept else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    )
)


def manifest(registry: str, image: str) -> dict[str, object] | None:
    """The manifest ``repo@digest`` (as images.lock names it) from the registry, or None."""
    name, digest = image.split("@")
    repository = name.split("/", 1)[1]
    status, body = registry_get(registry, f"/v2/{repository}/manifests/{digest}", MANIFEST_TYPES)
    if status != 200:
        return None
    found: dict[str, object] = json.loads(body)
    return found


def stamped_key(registry: str, image: str) -> str | None:
    """The ``dev.bt.key`` label of the image ``repo@digest``, read from its config blob."""
    found = manifest(registry, image)
    if found is None:
        return None
    config = found.get("config")
    assert isinstance(config, dict), found
    repository = image.split("@")[0].split("/", 1)[1]
    status, body = registry_get(registry, f"/v2/{repository}/blobs/{config['digest']}")
    assert status == 200
    labels = (json.loads(body).get("config") or {}).get("Labels") or {}
    key = labels.get("dev.bt.key")
    return str(key) if key is not None else None
