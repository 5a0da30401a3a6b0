"""Invariant 11: no image reference, digest or tag read from images.lock, a fragment, a registry
or an engine reaches a Dockerfile, a command line or a tag unchecked. Each hostile value is
refused where it is read: exit 2, one line naming the file and the record, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from btrun import bt, write_tree
from registries import MANIFEST, fake_registry, manifest_answer

from buildtool.build.builders import checked_image_id, checked_local_image
from buildtool.dockerfile.rewrite import rewrite_images
from buildtool.errors import BtError
from buildtool.registry import RegistryClient, sha256_digest
from buildtool.registry.reference import is_reference

DIGEST = "sha256:" + "1" * 64
KEY = "a" * 64
HOSTILE = {
    "newline": "r/base:1\nRUN echo INJECTED > /injected",
    "space": "r/base:1 AS evil",
    "hash": "r/base:1#x",
    "continuation": "r/base:1 \\",
    "carriage return": "r/base:1\rRUN true",
    "leading dash": "--privileged",
    "quote": 'r/base:1"',
    "overlong": "r/" + "a" * 300 + ":1",
    "overlong tag": "r/base:" + "t" * 129,
    "bad registry": "reg istry.example/base:1",
}
WORKSPACE = {
    ".cache-spec": 'platforms = ["linux/amd64"]\n',
    "BUILD.images": 'image(name = "base", dockerfile = "base.Dockerfile")\nimage(name = "app")\n',
    "base.Dockerfile": "FROM scratch\nCOPY a.txt /\n",
    "Dockerfile": "FROM bt/base\nCOPY a.txt /b.txt\n",
    "a.txt": "a\n",
}


def lockfile(*, image: str = "bt/base:x", pin: str | None = None, tag: str | None = None) -> str:
    data: dict[str, object] = {
        "version": 1,
        "builds": {"//:base": {"linux/amd64": {"key": KEY, "digest": DIGEST, "image": image}}},
        "images": {},
    }
    if tag is not None:
        data["images"] = {"//:base": {"digest": DIGEST, "tags": [tag]}}
    if pin is not None:
        data["pins"] = {pin: {"linux/amd64": {"digest": DIGEST, "source": "registry"}}}
    return json.dumps(data, indent=2) + "\n"


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_the_grammar_refuses_each_hostile_value(kind: str) -> None:
    assert not is_reference(HOSTILE[kind])


@pytest.mark.parametrize(
    "good",
    [
        "bt/base:x",
        "python",
        "localhost:5000/a/b:c",
        "127.0.0.1:5000/bt/x@" + DIGEST,
        "[::1]:5000/x:1",
        "docker.io/library/python:3.13-slim@" + DIGEST,
    ],
)
def test_the_grammar_accepts_references_docker_accepts(good: str) -> None:
    assert is_reference(good)


@pytest.mark.parametrize("where", ["image", "pin", "tag"])
@pytest.mark.parametrize("kind", ["newline", "space", "hash", "continuation", "overlong"])
def test_a_hostile_value_in_images_lock_is_refused_by_every_command_that_reads_it(
    tmp_path: Path, where: str, kind: str
) -> None:
    root = write_tree(tmp_path / "ws", WORKSPACE)
    value = HOSTILE[kind]
    text = lockfile(**{where: value})
    (root / "images.lock").write_text(text)
    # the line of the record's field ("tags": [ for a tag), or of the pinned reference
    shows = '"tags"' if where == "tag" else json.dumps(value)[:20]
    line = next(n for n, t in enumerate(text.splitlines(), 1) if shows in t)
    what = {
        "image": f"//:base linux/amd64: image {value!r:.75}",
        "pin": f"pins: {value!r:.75}",
        "tag": f"index of //:base: tag {value!r:.75}",
    }[where]
    before = tree(tmp_path)
    commands = [["plan", "//..."], ["build", "//:app"], ["why", "//:app"], ["merge", "//..."]]
    for args in commands if kind == "newline" else commands[:1]:
        result = bt(*args, cwd=root)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith(f"images.lock:{line}: {what}"), result.stderr
        assert "not an image reference" in result.stderr
        assert tree(tmp_path) == before


@pytest.mark.parametrize("where", ["image", "pin", "tag"])
@pytest.mark.parametrize("kind", ["newline", "continuation", "hash"])
def test_a_fragment_with_a_hostile_value_is_refused_by_lock_merge_and_nothing_changes(
    tmp_path: Path, where: str, kind: str
) -> None:
    root = write_tree(tmp_path / "ws", WORKSPACE)
    (root / "images.lock").write_text(lockfile())
    (root / "frag.json").write_text(lockfile(**{where: HOSTILE[kind]}))
    before = tree(tmp_path)

    result = bt("lock", "merge", "frag.json", cwd=root)

    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("frag.json:"), result.stderr
    assert "not an image reference" in result.stderr
    assert tree(tmp_path) == before


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_dockerfile_rewrite_takes_only_checked_references(kind: str) -> None:
    text = "FROM bt/base\nCOPY a.txt /b.txt\n"
    with pytest.raises(BtError) as refused:
        rewrite_images(text, {(1, "from", "bt/base"): HOSTILE[kind]}, "Dockerfile")
    assert str(refused.value).startswith("Dockerfile:1: refused to hand over ")
    assert "\n" not in str(refused.value)
    good = "r/base@" + DIGEST
    assert rewrite_images(text, {(1, "from", "bt/base"): good}, "Dockerfile") == (
        f"FROM {good}\nCOPY a.txt /b.txt\n"
    )


# A real registry always states the digest it computed: a fake one (http.server) is the only
# way to be sent a malformed one, or a manifest that is not the one asked for.
@pytest.mark.parametrize(
    "header", ["sha256:" + "1" * 63 + "\nX-Evil: 1", "sha256:ABC", "md5:" + "1" * 32, "x y"]
)
def test_a_malformed_digest_a_registry_states_is_refused_where_it_is_read(header: str) -> None:
    def handle(method: str, path: str, headers: dict[str, str], body: bytes):  # type: ignore[no-untyped-def]
        if path == "/v2/":
            return 200, {}, b"{}"
        return 200, {"Content-Type": "application/json", "Docker-Content-Digest": header}, MANIFEST

    with fake_registry(handle) as address:
        client = RegistryClient((address,), attempts=1)
        for call in (client.head_manifest, client.get_manifest):
            with pytest.raises(BtError) as refused:
                call(f"{address}/x:1")
            assert f"registry {address} " in str(refused.value)


def test_a_registry_serving_another_manifest_than_asked_is_named_with_both_digests() -> None:
    asked = "sha256:" + "5" * 64

    def handle(method: str, path: str, headers: dict[str, str], body: bytes):  # type: ignore[no-untyped-def]
        if path == "/v2/":
            return 200, {}, b"{}"
        status, headers, _ = manifest_answer()
        headers["Docker-Content-Digest"] = asked  # it says so, too
        return status, headers, MANIFEST

    served = sha256_digest(MANIFEST)
    with fake_registry(handle) as address:
        client = RegistryClient((address,), attempts=1)
        with pytest.raises(BtError) as lied:
            client.get_manifest(f"{address}/x@{asked}")
        assert str(lied.value) == (
            f"registry {address} was asked for {asked} of {address}/x and served a manifest "
            f"whose digest is {served}"
        )
        with pytest.raises(BtError) as lied:
            client.get_manifest(f"{address}/x:1")
        assert str(lied.value) == (
            f"registry {address} said the manifest of {address}/x:1 is {asked}, but the bytes "
            f"it served have the digest {served}"
        )


# An engine reports what its store holds; a malformed id cannot be produced for real.
@pytest.mark.parametrize("value", ["sha256:" + "1" * 64 + "\nRUN x", "abc", None, 7])
def test_an_image_id_an_engine_gives_is_checked_where_it_is_read(value: object) -> None:
    with pytest.raises(BtError, match=r"^engine unix:///e\.sock gave the image id "):
        checked_image_id("unix:///e.sock", value)
    with pytest.raises(BtError, match=r"^engine unix:///e\.sock gave the repository digest "):
        checked_local_image("unix:///e.sock", DIGEST, [f"r/x@{DIGEST} evil"])
    assert checked_local_image("e", DIGEST, None) == (DIGEST, ())
