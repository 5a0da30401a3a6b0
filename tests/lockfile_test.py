"""images.lock, and folding the fragments parallel jobs write into it (`bt lock merge`)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from btrun import bt, write_tree
from registries import push_scratch

from buildtool.errors import BtError
from buildtool.state.lockfile import (
    BuildRecord,
    IndexRecord,
    Lockfile,
    LockfileReader,
    PinRecord,
    apply_fragments,
    fold_fragments,
    read_lockfile,
)


def workspace(path: Path) -> Path:
    return write_tree(
        path / "ws",
        {
            ".cache-spec": "",
            "BUILD.images": 'image(package = "x", name = "y")\n',
            "Dockerfile": "FROM scratch\n",
        },
    )


def write_fragment(path: Path, platform: str, key: str, digest: str, repo: str = "r/x") -> None:
    """A lockfile fragment recording //x:y for ``platform``, as `bt build --lock-out` does."""
    lock = read_lockfile(path)
    lock.put("//x:y", platform, BuildRecord(key, digest, f"{repo}@{digest}"))
    path.write_bytes(lock.dumps())


def current_key(root: Path, platform: str = "linux/amd64") -> str:
    """The key the workspace gives //x:y now: `bt lock merge` takes records of no other."""
    result = bt("plan", "//x:y", "--platform", platform, "--format", "json", cwd=root)
    assert result.returncode == 0, result.stderr
    key: str = json.loads(result.stdout)[0]["key"]
    return key


def pushed_images(registry: str, engine: str, count: int) -> tuple[str, list[str]]:
    """A fresh repository and the digests of ``count`` different images pushed to it."""
    repo = f"{registry}/bt-lock-{uuid.uuid4().hex[:12]}/x"
    return repo, [push_scratch(engine, f"{repo}:{n}", "linux/amd64") for n in range(count)]


@pytest.mark.engine
def test_lock_merge_keeps_the_first_of_two_digests_of_one_key_and_says_so(
    tmp_path: Path, registry: str, engine: str, docker_cli: str
) -> None:
    """Two machines raced to build one key: both images are valid, the first fragment's wins."""
    root = workspace(tmp_path)
    key = current_key(root)
    repo, (d1, d2) = pushed_images(registry, engine, 2)
    write_fragment(root / "a.json", "linux/amd64", key, d1, repo)
    write_fragment(root / "b.json", "linux/amd64", key, d2, repo)

    result = bt("lock", "merge", "a.json", "b.json", cwd=root)

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"a.json and b.json record two images of one key for //x:y linux/amd64 (key {key[:16]}), "
        f"{d1} and {d2}: either is valid; images.lock keeps the one it records, else a.json's"
    )
    assert read_lockfile(root / "images.lock").get("//x:y", "linux/amd64") == BuildRecord(
        key, d1, f"{repo}@{d1}"
    )


@pytest.mark.engine
def test_lock_merge_keeps_the_image_images_lock_records_for_the_same_key(
    tmp_path: Path, registry: str, engine: str, docker_cli: str
) -> None:
    root = workspace(tmp_path)
    key = current_key(root)
    repo, (d1, d2, d3) = pushed_images(registry, engine, 3)
    write_fragment(root / "images.lock", "linux/amd64", key, d3, repo)
    write_fragment(root / "a.json", "linux/amd64", key, d1, repo)
    write_fragment(root / "b.json", "linux/amd64", key, d2, repo)

    result = bt("lock", "merge", "b.json", "a.json", cwd=root)

    assert result.returncode == 0, result.stderr
    assert "0 records changed" in result.stderr
    assert read_lockfile(root / "images.lock").get("//x:y", "linux/amd64") == BuildRecord(
        key, d3, f"{repo}@{d3}"
    )


def test_a_pushed_record_of_a_key_replaces_a_local_one_in_images_lock() -> None:
    base = Lockfile()
    base.put("//x:y", "linux/amd64", BuildRecord("k", "sha256:id", "bt/x:y-k"))
    fragment = lockfile_of(("//x:y", "linux/amd64", "k", "sha256:1"))
    assert apply_fragments(base, fragment) == 1
    assert base.get("//x:y", "linux/amd64") == BuildRecord("k", "sha256:1", "r/x@sha256:1")


def test_lock_merge_refuses_fragments_of_different_revisions(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    write_fragment(root / "a.json", "linux/amd64", "a" * 64, "sha256:" + "1" * 64)
    write_fragment(root / "b.json", "linux/amd64", "b" * 64, "sha256:" + "1" * 64)

    result = bt("lock", "merge", "a.json", "b.json", cwd=root)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"a.json and b.json record //x:y linux/amd64 built from different keys "
        f"({'a' * 16} and {'b' * 16}); fragments must come from one revision"
    )


def test_lock_merge_of_a_missing_fragment_is_an_error(tmp_path: Path) -> None:
    result = bt("lock", "merge", "nope.json", cwd=workspace(tmp_path))
    assert (result.returncode, result.stderr.strip()) == (2, "nope.json: no such lockfile fragment")


def lockfile_of(*records: tuple[str, str, str, str]) -> Lockfile:
    lock = Lockfile()
    for label, platform, key, digest in records:
        lock.put(label, platform, BuildRecord(key, digest, f"r/x@{digest}"))
    return lock


def test_folding_is_independent_of_fragment_order_and_tolerates_repeats() -> None:
    a = lockfile_of(
        ("//x:y", "linux/amd64", "k1", "sha256:1"), ("//x:z", "linux/amd64", "k3", "sha256:3")
    )
    b = lockfile_of(
        ("//x:y", "linux/arm64", "k2", "sha256:2"), ("//x:z", "linux/amd64", "k3", "sha256:3")
    )
    b.images["//x:y"] = IndexRecord("sha256:i", ("r/x:latest",))
    forward = fold_fragments([("a", a), ("b", b)]).dumps()
    assert fold_fragments([("b", b), ("a", a)]).dumps() == forward
    assert json.loads(forward)["builds"] == {
        "//x:y": {
            "linux/amd64": {"key": "k1", "digest": "sha256:1", "image": "r/x@sha256:1"},
            "linux/arm64": {"key": "k2", "digest": "sha256:2", "image": "r/x@sha256:2"},
        },
        "//x:z": {"linux/amd64": {"key": "k3", "digest": "sha256:3", "image": "r/x@sha256:3"}},
    }


def test_fragments_replace_what_images_lock_held_for_the_same_builds() -> None:
    base = lockfile_of(
        ("//x:y", "linux/amd64", "old", "sha256:old"), ("//x:q", "linux/amd64", "q", "sha256:q")
    )
    fragment = lockfile_of(
        ("//x:y", "linux/amd64", "new", "sha256:new"), ("//x:q", "linux/amd64", "q", "sha256:q")
    )
    assert apply_fragments(base, fragment) == 1
    assert base.get("//x:y", "linux/amd64") == BuildRecord("new", "sha256:new", "r/x@sha256:new")
    assert apply_fragments(base, fragment) == 0


def test_fragments_with_different_indexes_for_one_image_are_refused() -> None:
    a, b = Lockfile(), Lockfile()
    a.images["//x:y"] = IndexRecord("sha256:1", ())
    b.images["//x:y"] = IndexRecord("sha256:2", ())
    with pytest.raises(BtError) as err:
        fold_fragments([("a.json", a), ("b.json", b)])
    assert (
        err.value.message
        == "a.json and b.json record different indexes for //x:y: sha256:1 and sha256:2"
    )


# -- pins of external images ------------------------------------------------------------------

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def test_pins_are_written_sorted_per_reference_and_platform_and_read_back() -> None:
    lock = Lockfile()
    lock.put_pin("docker.io/library/python:3", "linux/arm64", PinRecord(D2, "registry"))
    lock.put_pin("docker.io/library/python:3", "linux/amd64", PinRecord(D1, "registry"))
    lock.put_pin("docker.io/acme/local:1", "linux/amd64", PinRecord(D1, "engine"))

    text = lock.dumps().decode()

    assert json.loads(text)["pins"] == {
        "docker.io/acme/local:1": {"linux/amd64": {"digest": D1, "source": "engine"}},
        "docker.io/library/python:3": {
            "linux/amd64": {"digest": D1, "source": "registry"},
            "linux/arm64": {"digest": D2, "source": "registry"},
        },
    }
    assert text.index('"docker.io/acme/local:1"') < text.index('"docker.io/library/python:3"')
    assert Lockfile.loads(text, "images.lock") == lock


def test_a_lockfile_written_before_pins_existed_reads_and_is_written_unchanged() -> None:
    old = lockfile_of(("//x:y", "linux/amd64", "a" * 64, D1)).dumps()
    assert "pins" not in json.loads(old)

    lock = Lockfile.loads(old.decode(), "images.lock")

    assert lock.pins == {}
    assert lock.dumps() == old


def test_fragments_fold_pins_and_refuse_two_digests_for_one_pin() -> None:
    a, b = Lockfile(), Lockfile()
    a.put_pin("r/base:1", "linux/amd64", PinRecord(D1, "registry"))
    b.put_pin("r/base:1", "linux/arm64", PinRecord(D2, "registry"))
    folded = fold_fragments([("a.json", a), ("b.json", b)])
    assert dict(folded.pins["r/base:1"]) == {
        "linux/amd64": PinRecord(D1, "registry"),
        "linux/arm64": PinRecord(D2, "registry"),
    }
    base = Lockfile()
    assert apply_fragments(base, folded) == 2
    assert base.pins == folded.pins

    b.put_pin("r/base:1", "linux/amd64", PinRecord(D2, "registry"))
    with pytest.raises(BtError) as err:
        fold_fragments([("a.json", a), ("b.json", b)])
    assert err.value.message == (
        f"a.json and b.json pin r/base:1 (linux/amd64) to different digests: {D1} (from the "
        f"registry) and {D2} (from the registry); the builds that use it differ in key for "
        "that reason"
    )


def test_two_machines_engine_pins_that_differ_are_named_not_their_keys() -> None:
    # Each machine pinned a base image present only in its own engine: the image ids differ,
    # so the builds on it differ in key. The pin is the cause, and what to do about it.
    a, b = Lockfile(), Lockfile()
    for fragment, digest, key in ((a, D1, "a" * 64), (b, D2, "b" * 64)):
        fragment.put_pin("local/base:1", "linux/amd64", PinRecord(digest, "engine"))
        fragment.record_build("//:app", "linux/amd64", BuildRecord(key, D1, "bt/app:x"))
    with pytest.raises(BtError) as err:
        fold_fragments([("a.json", a), ("b.json", b)])
    assert err.value.message == (
        f"a.json and b.json pin local/base:1 (linux/amd64) to different digests: {D1} (from "
        f"the engine) and {D2} (from the engine); an image found only in an engine is pinned "
        "by that engine's image id, which another machine's engine does not share: push "
        "local/base:1 to a registry (then run bt lock update), or build every platform against "
        "one engine; the builds that use it differ in key for that reason"
    )


@pytest.mark.engine
def test_lock_merge_refuses_a_digest_the_registry_does_not_have_and_writes_nothing(
    tmp_path: Path, registry: str, engine: str, docker_cli: str
) -> None:
    root = workspace(tmp_path)
    key = current_key(root)
    repo, _ = pushed_images(registry, engine, 1)
    invented = "sha256:" + "0" * 64
    write_fragment(root / "a.json", "linux/amd64", key, invented, repo)

    result = bt("lock", "merge", "a.json", cwd=root)

    assert result.returncode == 2
    assert f"{repo}@{invented} is not in the registry; not merged" in result.stderr
    assert not (root / "images.lock").exists()


@pytest.mark.engine
def test_lock_merge_of_an_older_fragment_never_rolls_newer_records_back(
    tmp_path: Path, registry: str, engine: str, docker_cli: str
) -> None:
    """A fragment of an earlier revision (another key) arriving after images.lock moved on."""
    root = workspace(tmp_path)
    old_key = current_key(root)
    repo, (old, new) = pushed_images(registry, engine, 2)
    write_fragment(root / "old.json", "linux/amd64", old_key, old, repo)
    (root / "Dockerfile").write_text("FROM scratch\nLABEL revision=2\n")
    new_key = current_key(root)
    write_fragment(root / "new.json", "linux/amd64", new_key, new, repo)
    assert bt("lock", "merge", "new.json", cwd=root).returncode == 0
    before = (root / "images.lock").read_bytes()

    result = bt("lock", "merge", "old.json", cwd=root)

    assert result.returncode == 2
    assert f"built from key {old_key[:16]}, but its key is now {new_key[:16]}" in result.stderr
    assert (root / "images.lock").read_bytes() == before


def test_lockfile_bytes_that_passed_the_schema_check_are_not_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import buildtool.state.lockschema

    checked: list[str] = []
    real = buildtool.state.lockschema.check_lockfile

    def counting(data: dict[str, object], text: str, path: str) -> None:
        checked.append(text)
        real(data, text, path)

    monkeypatch.setattr(buildtool.state.lockschema, "check_lockfile", counting)
    path, mark = tmp_path / "images.lock", tmp_path / "cache" / "lockfile-checked"
    mark.parent.mkdir()
    lock = Lockfile()
    lock.put("//x:y", "linux/amd64", BuildRecord("a" * 64, "sha256:" + "b" * 64, "local/y"))
    path.write_bytes(lock.dumps())

    first = LockfileReader(path, mark)
    assert first.read() == lock
    assert len(checked) == 1 and not mark.exists()  # kept only when a command saves
    first.save()
    assert LockfileReader(path, mark).read() == lock
    assert len(checked) == 1  # the same bytes: not checked again

    lock.put("//x:y", "linux/arm64", BuildRecord("c" * 64, "sha256:" + "d" * 64, "local/y"))
    path.write_bytes(lock.dumps())
    assert LockfileReader(path, mark).read() == lock
    assert len(checked) == 2  # other bytes: checked

    path.write_text(path.read_text().replace('"c', '"Z', 1))  # a key that is not hex
    with pytest.raises(BtError, match="key"):
        LockfileReader(path, mark).read()
    assert len(checked) == 3

    path.write_bytes(lock.dumps())
    mark.write_text("garbage")
    assert LockfileReader(path, mark).read() == lock
    assert len(checked) == 4  # a mark of other bytes vouches for nothing
