"""`bt merge` and `bt lock merge`: indexes built from images.lock, put to a real registry.

Platform images are built FROM scratch on engine 1 with the docker CLI and pushed to the test
registry; each test records them in a workspace of its own, under a repository prefix no other
test uses.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from btrun import bt, own_repository, write_tree
from registries import (
    PASSWORD,
    USER,
    basic_auths,
    push_scratch,
    write_docker_config,
)

from buildtool.plan.session import Session
from buildtool.registry import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryClient,
    sha256_digest,
)
from buildtool.release.merge import (
    Child,
    IndexPlatform,
    TagOutcome,
    index_for,
    merge_images,
)
from buildtool.state.lockfile import BuildRecord, Lockfile, read_lockfile
from buildtool.workspace.labels import Label

BOTH = ("linux/amd64", "linux/arm64")
ANY_KEY = "f" * 64  # well formed; `bt merge` does not compare keys
LIST_ACCEPT = f"{DOCKER_MANIFEST_LIST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {OCI_MANIFEST}"


@dataclass
class Workspace:
    root: Path
    url: str  # [registry] url of .cache-spec
    env: dict[str, str]

    @property
    def repo(self) -> str:
        """Where //x:y is pushed and tagged."""
        return f"{self.url}/x"

    @property
    def tags(self) -> list[str]:
        return [f"{self.repo}:latest", f"{self.repo}:v1"]

    def bt(self, *args: str) -> subprocess.CompletedProcess[str]:
        return bt(*args, cwd=self.root, env=self.env)

    def record(self, builds: dict[str, str], path: Path | None = None) -> None:
        """Record platform -> pushed digest for //x:y in images.lock (or in ``path``), built
        from the key the workspace gives it now (`bt lock merge` takes no other)."""
        target = path or self.root / "images.lock"
        lock = read_lockfile(target)
        keys = self.keys()
        for platform, digest in builds.items():
            record = BuildRecord(keys[platform], digest, f"{self.repo}@{digest}")
            lock.put("//x:y", platform, record)
        target.write_bytes(lock.dumps())

    def keys(self) -> dict[str, str]:
        """platform -> the current key of //x:y."""
        result = self.bt("plan", "//x:y", "--all", "--format", "json")
        assert result.returncode == 0, result.stderr
        return {build["platform"]: build["key"] for build in json.loads(result.stdout)}

    def lockfile(self) -> Lockfile:
        return read_lockfile(self.root / "images.lock")


def make_workspace(path: Path, url: str, docker_config: Path) -> Workspace:
    root = write_tree(
        path,
        {
            ".cache-spec": f'[registry]\nurl = "{url}"\n',
            "BUILD.images": 'image(package = "x", name = "y", tags = ["latest", "v1"])\n',
            "Dockerfile": "FROM scratch\nCOPY a.txt /\n",
            "a.txt": "a\n",
        },
    )
    env = {"XDG_CACHE_HOME": str(path.parent / "cache"), "DOCKER_CONFIG": str(docker_config)}
    return Workspace(root, url, env)


@pytest.fixture()
def workspace(tmp_path: Path, registry: str) -> Workspace:
    docker_config = write_docker_config(tmp_path / "docker", {})
    url = own_repository(registry, "bt-merge")
    return make_workspace(tmp_path / "ws", url, docker_config)


@pytest.fixture()
def children(workspace: Workspace, engine: str, docker_cli: str) -> dict[str, str]:
    """platform -> digest of a FROM scratch image pushed to the workspace's repository."""
    return {p: push_scratch(engine, f"{workspace.repo}:build-{p.split('/')[1]}", p) for p in BOTH}


def fetch(ref_repo: str, reference: str) -> tuple[str, str, dict[str, Any]]:
    """(content type, Docker-Content-Digest, JSON body) of a manifest, by plain HTTP GET."""
    content_type, body = fetch_raw(ref_repo, reference)
    return content_type, sha256_digest(body), json.loads(body)


def fetch_raw(ref_repo: str, reference: str) -> tuple[str, bytes]:
    host, repo = ref_repo.split("/", 1)
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": LIST_ACCEPT})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, body
    assert response.getheader("Docker-Content-Digest") == sha256_digest(body)
    return response.getheader("Content-Type") or "", body


def listed(index: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    return [(m["mediaType"], m["digest"], m["platform"]) for m in index["manifests"]]


AMD64 = {"architecture": "amd64", "os": "linux"}
ARM64 = {"architecture": "arm64", "os": "linux"}


# -- the index ---------------------------------------------------------------------------------


def test_index_of_docker_manifests_is_a_docker_manifest_list_in_the_order_given() -> None:
    arm = Child(DOCKER_MANIFEST, "sha256:" + "b" * 64, 528, IndexPlatform("linux", "arm64", "v8"))
    amd = Child(DOCKER_MANIFEST, "sha256:" + "a" * 64, 527, IndexPlatform("linux", "amd64"))
    media_type, body = index_for([amd, arm])
    assert media_type == DOCKER_MANIFEST_LIST
    assert json.loads(body) == {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": amd.digest, "size": 527,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": DOCKER_MANIFEST, "digest": arm.digest, "size": 528,
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ],
    }  # fmt: skip
    assert index_for([amd, arm]) == (media_type, body)


def test_index_with_any_oci_child_is_an_oci_index() -> None:
    children = [
        Child(DOCKER_MANIFEST, "sha256:" + "a" * 64, 1, IndexPlatform("linux", "amd64")),
        Child(
            OCI_MANIFEST, "sha256:" + "b" * 64, 2, IndexPlatform("windows", "amd64", None, "10.0.1")
        ),
    ]
    media_type, body = index_for(children)
    assert media_type == OCI_INDEX
    assert json.loads(body)["mediaType"] == OCI_INDEX
    assert json.loads(body)["manifests"][1]["platform"] == {
        "architecture": "amd64",
        "os": "windows",
        "os.version": "10.0.1",
    }


@pytest.mark.parametrize(
    ("outcome", "line"),
    [
        (TagOutcome(Label("x", "y"), "r/x:1", "unchanged", "sha256:n"), "r/x:1: unchanged"),
        (TagOutcome(Label("x", "y"), "r/x:1", "created", "sha256:n"), "r/x:1: created"),
        (TagOutcome(Label("x", "y"), "r/x:1", "updated", "sha256:n", "sha256:o"),
         "r/x:1: updated (was sha256:o)"),
        (TagOutcome(Label("x", "y"), "r/x:1", "created", "sha256:n", None, True), "r/x:1: would create"),
        (TagOutcome(Label("x", "y"), "r/x:1", "updated", "sha256:n", "sha256:o", True),
         "r/x:1: would update (was sha256:o)"),
    ],
)  # fmt: skip
def test_one_line_per_tag_says_what_happened(outcome: TagOutcome, line: str) -> None:
    assert str(outcome) == line


# -- bt merge against the real registry --------------------------------------------------------


def test_merge_puts_an_index_of_exactly_the_recorded_platform_builds_to_every_tag(
    workspace: Workspace, children: dict[str, str], docker_cli: str
) -> None:
    workspace.record(children)

    result = workspace.bt("merge", "//x:y")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{tag}: created" for tag in workspace.tags]
    recorded = workspace.lockfile().images["//x:y"]
    assert recorded.tags == tuple(workspace.tags)
    for tag in ("latest", "v1"):
        content_type, digest, index = fetch(workspace.repo, tag)
        assert (content_type, digest) == (DOCKER_MANIFEST_LIST, recorded.digest)
        assert listed(index) == [
            (DOCKER_MANIFEST, children["linux/amd64"], AMD64),
            (DOCKER_MANIFEST, children["linux/arm64"], ARM64),
        ]
    for entry in index["manifests"]:
        assert entry["size"] == len(fetch_raw(workspace.repo, entry["digest"])[1])

    inspect = subprocess.run(
        [docker_cli, "manifest", "inspect", "--insecure", f"{workspace.repo}:v1"],
        env={**os.environ, "DOCKER_CLI_EXPERIMENTAL": "enabled", **workspace.env},
        capture_output=True,
        text=True,
    )
    assert inspect.returncode == 0, inspect.stderr
    seen = json.loads(inspect.stdout)
    assert [(m["digest"], m["platform"]) for m in seen["manifests"]] == [
        (children["linux/amd64"], AMD64),
        (children["linux/arm64"], ARM64),
    ]


def test_a_second_merge_puts_nothing_and_a_moved_tag_is_put_back(
    workspace: Workspace, children: dict[str, str]
) -> None:
    workspace.record(children)
    assert workspace.bt("merge", "//x:y").returncode == 0
    index_digest = workspace.lockfile().images["//x:y"].digest

    again = workspace.bt("merge", "//x:y")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [f"{tag}: unchanged" for tag in workspace.tags]

    client = RegistryClient()
    _, body, moved_to = client.get_manifest(f"{workspace.repo}@{children['linux/amd64']}")
    client.put_manifest(f"{workspace.repo}:v1", DOCKER_MANIFEST, body)

    restored = workspace.bt("merge", "//x:y")
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.splitlines() == [
        f"{workspace.repo}:latest: unchanged",
        f"{workspace.repo}:v1: updated (was {moved_to})",
    ]
    assert client.manifest_digest(f"{workspace.repo}:v1") == index_digest


class CountingClient(RegistryClient):
    def __init__(self) -> None:
        super().__init__()
        self.puts: list[str] = []

    def put_manifest(self, ref: Any, media_type: str, body: bytes) -> str:
        self.puts.append(str(ref))
        return super().put_manifest(ref, media_type, body)


def merge_in_process(workspace: Workspace, **options: Any) -> tuple[Any, CountingClient]:
    session = Session(workspace.root)
    client = CountingClient()
    report = merge_images(
        session.config,
        session.graph.targets,
        [Label("x", "y")],
        session.config.cache_dir / "workspace.lock",
        client=client,
        **options,
    )
    return report, client


def test_merging_an_unchanged_image_sends_no_put_at_all(
    workspace: Workspace, children: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    workspace.record(children)
    _, first = merge_in_process(workspace)
    report, second = merge_in_process(workspace)
    assert first.puts == workspace.tags
    assert second.puts == []
    assert [o.status for o in report.tags] == ["unchanged", "unchanged"]


def test_dry_run_says_what_it_would_do_and_writes_nothing(
    workspace: Workspace, children: dict[str, str]
) -> None:
    workspace.record(children)
    before = (workspace.root / "images.lock").read_bytes()

    result = workspace.bt("merge", "//x:y", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{tag}: would create" for tag in workspace.tags]
    assert (workspace.root / "images.lock").read_bytes() == before
    assert RegistryClient().head_manifest(f"{workspace.repo}:latest") is None


def test_an_image_missing_a_platform_is_refused_unless_partial_is_allowed(
    workspace: Workspace, children: dict[str, str]
) -> None:
    workspace.record({"linux/amd64": children["linux/amd64"]})

    refused = workspace.bt("merge", "//x:y")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "//x:y has no pushed build for linux/arm64 in images.lock (run `bt build //x:y "
        "--platform linux/arm64 --push`, or pass --allow-partial)"
    )
    assert RegistryClient().head_manifest(f"{workspace.repo}:latest") is None

    partial = workspace.bt("merge", "//x:y", "--allow-partial")
    assert partial.returncode == 0, partial.stderr
    assert partial.stdout.splitlines() == [f"{tag}: created" for tag in workspace.tags]
    assert partial.stderr.strip() == "//x:y: partial index, without linux/arm64"
    _, _, index = fetch(workspace.repo, "latest")
    assert listed(index) == [(DOCKER_MANIFEST, children["linux/amd64"], AMD64)]


def test_images_with_nothing_recorded_are_skipped_when_partial_is_allowed(
    workspace: Workspace, registry: str
) -> None:
    result = workspace.bt("merge", "//x:y", "--allow-partial")
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr.strip()) == (
        "",
        "//x:y: skipped, no platform build recorded",
    )


def test_a_build_that_was_not_pushed_is_refused(workspace: Workspace, registry: str) -> None:
    lock = Lockfile()
    local = BuildRecord(ANY_KEY, "sha256:" + "e" * 64, "bt/x:y-0123456789abcdef01234567")
    lock.put("//x:y", "linux/amd64", local)
    lock.put("//x:y", "linux/arm64", local)
    (workspace.root / "images.lock").write_bytes(lock.dumps())

    result = workspace.bt("merge", "//x:y")

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "//x:y linux/amd64 was not pushed (images.lock has bt/x:y-0123456789abcdef01234567); "
        "run `bt build //x:y --platform linux/amd64 --push`; "
        "//x:y linux/arm64 was not pushed (images.lock has bt/x:y-0123456789abcdef01234567); "
        "run `bt build //x:y --platform linux/arm64 --push`"
    )


def test_a_build_pushed_to_another_repository_is_refused(
    workspace: Workspace, registry: str
) -> None:
    elsewhere = f"{registry}/other/x@sha256:{'d' * 64}"
    lock = Lockfile()
    for platform in BOTH:
        lock.put("//x:y", platform, BuildRecord(ANY_KEY, "sha256:" + "d" * 64, elsewhere))
    (workspace.root / "images.lock").write_bytes(lock.dumps())

    result = workspace.bt("merge", "//x:y")

    assert result.returncode == 2
    assert result.stderr.startswith(
        f"//x:y linux/amd64 was pushed to {registry}/other/x, but its tags go to "
        f"{workspace.repo} (an index can only list manifests of its own repository)"
    )


def test_a_recorded_build_the_registry_no_longer_has_is_an_error(
    workspace: Workspace, registry: str
) -> None:
    gone = "sha256:" + "0" * 64
    workspace.record({p: gone for p in BOTH})

    result = workspace.bt("merge", "//x:y")

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "2 recorded builds are missing from the registry (run `bt build --push` to push them "
        f"again): //x:y linux/amd64 ({workspace.repo}@{gone}); "
        f"//x:y linux/arm64 ({workspace.repo}@{gone})"
    )


def test_merge_names_exactly_the_recorded_builds_the_registry_lost_and_puts_nothing(
    workspace: Workspace, children: dict[str, str]
) -> None:
    gone = "sha256:" + "1" * 64
    workspace.record({"linux/amd64": children["linux/amd64"], "linux/arm64": gone})

    result = workspace.bt("merge", "//x:y")

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "1 recorded builds are missing from the registry (run `bt build --push` to push them "
        f"again): //x:y linux/arm64 ({workspace.repo}@{gone})"
    )
    assert workspace.lockfile().images == {}
    for tag in workspace.tags:
        host, _, rest = tag.partition("/")
        repository, _, name = rest.rpartition(":")
        conn = http.client.HTTPConnection(host, timeout=10)
        conn.request("HEAD", f"/v2/{repository}/manifests/{name}", headers={"Accept": LIST_ACCEPT})
        assert conn.getresponse().status == 404  # no index was put
        conn.close()


def test_a_build_recorded_for_the_wrong_platform_is_refused(
    workspace: Workspace, children: dict[str, str]
) -> None:
    swapped = {"linux/amd64": children["linux/arm64"], "linux/arm64": children["linux/amd64"]}
    workspace.record(swapped)

    result = workspace.bt("merge", "//x:y")

    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"//x:y is recorded for linux/amd64 in images.lock, but the image it names "
        f"({workspace.repo}@{children['linux/arm64']}) is linux/arm64"
    )
    assert "//x:y" not in workspace.lockfile().images


def test_oci_children_give_an_oci_index(workspace: Workspace, children: dict[str, str]) -> None:
    client = RegistryClient()
    _, body, _ = client.get_manifest(f"{workspace.repo}@{children['linux/amd64']}")
    manifest = json.loads(body)
    manifest["mediaType"] = OCI_MANIFEST
    manifest["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json"
    for layer in manifest["layers"]:
        layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    oci_body = json.dumps(manifest).encode()
    oci = client.put_manifest(f"{workspace.repo}@{sha256_digest(oci_body)}", OCI_MANIFEST, oci_body)
    workspace.record({"linux/amd64": oci, "linux/arm64": children["linux/arm64"]})

    assert workspace.bt("merge", "//x:y").returncode == 0

    content_type, _, index = fetch(workspace.repo, "latest")
    assert (content_type, index["mediaType"]) == (OCI_INDEX, OCI_INDEX)
    assert listed(index) == [
        (OCI_MANIFEST, oci, AMD64),
        (DOCKER_MANIFEST, children["linux/arm64"], ARM64),
    ]


def test_a_platform_pushed_as_an_index_with_attestations_is_listed_by_its_image(
    workspace: Workspace, children: dict[str, str]
) -> None:
    """BuildKit pushes one platform as an index of the image and its attestation manifest."""
    client = RegistryClient()
    entries = []
    for digest, platform in (
        (children["linux/arm64"], ARM64),
        (children["linux/amd64"], {"architecture": "unknown", "os": "unknown"}),
    ):
        _, body, _ = client.get_manifest(f"{workspace.repo}@{digest}")
        entries.append(
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": digest,
                "size": len(body),
                "platform": platform,
            }
        )
    wrapper = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    ).encode()
    wrapped = client.put_manifest(f"{workspace.repo}@{sha256_digest(wrapper)}", OCI_INDEX, wrapper)
    workspace.record({"linux/amd64": children["linux/amd64"], "linux/arm64": wrapped})

    result = workspace.bt("merge", "//x:y")

    assert result.returncode == 0, result.stderr
    _, _, index = fetch(workspace.repo, "latest")
    assert listed(index) == [
        (DOCKER_MANIFEST, children["linux/amd64"], AMD64),
        (DOCKER_MANIFEST, children["linux/arm64"], ARM64),
    ]


def test_merge_needs_a_registry_in_the_cache_spec(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "ws",
        {".cache-spec": "", "BUILD.images": 'image(name = "y")\n', "Dockerfile": "FROM scratch\n"},
    )
    result = bt("merge", "//:y", cwd=root)
    assert result.returncode == 2
    assert result.stderr.strip() == ".cache-spec: merging needs [registry] url in .cache-spec"


# -- fragments ---------------------------------------------------------------------------------


def test_fragments_folded_by_lock_merge_give_the_same_index_as_one_lockfile(
    workspace: Workspace, children: dict[str, str], tmp_path: Path
) -> None:
    # Another checkout with one lockfile holding both builds, tagging the same repository.
    whole = make_workspace(tmp_path / "whole", workspace.url, Path(workspace.env["DOCKER_CONFIG"]))
    whole.record(children)
    assert whole.bt("merge", "//x:y").returncode == 0
    expected = whole.lockfile().images["//x:y"]

    workspace.record({"linux/amd64": children["linux/amd64"]}, workspace.root / "a.json")
    workspace.record({"linux/arm64": children["linux/arm64"]}, workspace.root / "b.json")
    folded = workspace.bt("lock", "merge", "a.json", "b.json")
    assert folded.returncode == 0, folded.stderr
    assert folded.stderr.strip() == "images.lock: folded 2 fragments (2 builds), 2 records changed"
    merged = workspace.bt("merge", "//x:y")

    assert merged.returncode == 0, merged.stderr
    assert merged.stdout.splitlines() == [f"{tag}: unchanged" for tag in workspace.tags]
    assert workspace.lockfile().images["//x:y"] == expected
    assert workspace.lockfile().dumps() == whole.lockfile().dumps()


# -- registries that need credentials ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_merge_signs_in_with_the_docker_config_and_a_wrong_password_is_a_clear_error(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, engine: str, docker_cli: str
) -> None:
    if kind == "basic":
        address: str = request.getfixturevalue("basic_registry")
    else:
        address, _ = request.getfixturevalue("token_registry")
    good = write_docker_config(tmp_path / "good", basic_auths(address, USER, PASSWORD))
    ws = make_workspace(tmp_path / "ws", f"{address}/merge-{uuid.uuid4().hex[:12]}", good)
    pushed = {
        p: push_scratch(engine, f"{ws.repo}:build-{p.split('/')[1]}", p, docker_config=good)
        for p in BOTH
    }
    ws.record(pushed)

    wrong_password = "not-" + PASSWORD
    bad = write_docker_config(tmp_path / "bad", basic_auths(address, USER, wrong_password))
    refused = bt("merge", "//x:y", cwd=ws.root, env={**ws.env, "DOCKER_CONFIG": str(bad)})
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        f"registry {address} rejected the credentials of user 'alice' from {bad / 'config.json'} ("
    )
    assert refused.stderr.strip().endswith(f"); run `docker login {address}`")
    assert wrong_password not in refused.stderr + refused.stdout
    assert PASSWORD not in refused.stderr + refused.stdout

    merged = ws.bt("merge", "//x:y")
    assert merged.returncode == 0, merged.stderr
    assert merged.stdout.splitlines() == [f"{tag}: created" for tag in ws.tags]
    index_digest = ws.lockfile().images["//x:y"].digest
    client = RegistryClient(docker_config_dir=good)
    _, body, digest = client.get_manifest(f"{ws.repo}:latest")
    assert digest == index_digest
    assert [(m["digest"], m["platform"]) for m in json.loads(body)["manifests"]] == [
        (pushed["linux/amd64"], AMD64),
        (pushed["linux/arm64"], ARM64),
    ]
