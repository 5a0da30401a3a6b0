"""Releases: tag templates and index annotations from the commit's git context (`bt merge`), and
promotion by digest to a second registry (`bt promote`).

The git context is read from real repositories made in temporary directories; the images are
built with `bt build --push` on engine 1 and pushed to the test registry; promotion copies them
to the second registry `.ci/setup` starts.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from btrun import bt, write_tree

from buildtool.errors import BtError
from buildtool.registry import sha256_digest
from buildtool.release.annotations import commit_annotations
from buildtool.release.gitcontext import GitContext, Semver, read_context, web_url
from buildtool.release.tags import release, sanitise

COMMIT_DATE = "2024-05-06T07:08:09+00:00"
COMMIT_TIME = "2024-05-06T07:08:09Z"
ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


def git(root: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "A",
        "GIT_AUTHOR_EMAIL": "a@example.com",
        "GIT_COMMITTER_NAME": "A",
        "GIT_COMMITTER_EMAIL": "a@example.com",
        "GIT_AUTHOR_DATE": COMMIT_DATE,
        "GIT_COMMITTER_DATE": COMMIT_DATE,
        "PATH": "/usr/bin:/bin",
        "HOME": str(root),
    }
    done = subprocess.run(["git", "-C", str(root), *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def commit_all(root: Path, message: str = "c") -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


def repository(root: Path, branch: str = "main") -> str:
    """A git repository at ``root`` with one commit on ``branch``; returns the commit's sha."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", branch)
    (root / "f.txt").write_text("f\n")
    return commit_all(root)


# -- the git context and the templates ---------------------------------------------------------


def test_semver_tag_v1_2_3_gives_1_2_3_then_1_2_then_1_and_latest_as_the_highest(
    tmp_path: Path,
) -> None:
    repository(tmp_path)
    git(tmp_path, "tag", "v1.2.2")
    (tmp_path / "f.txt").write_text("g\n")
    commit_all(tmp_path)
    git(tmp_path, "tag", "v1.2.3")
    context = read_context(tmp_path, {})
    assert context.semver == Semver(1, 2, 3)
    templates = ["{version}", "{minor}", "{major}", "latest"]
    plan = release(templates, context, "highest-semver")
    assert plan.skipped == ()
    assert plan.tags_for(["cpu"]) == ("cpu", "1.2.3", "1.2", "1", "latest")


def test_latest_is_skipped_for_a_version_lower_than_the_highest_tag(tmp_path: Path) -> None:
    repository(tmp_path)
    git(tmp_path, "tag", "v1.2.3")
    git(tmp_path, "tag", "v2.0.0", "HEAD")  # the same commit: the highest of it wins
    (tmp_path / "f.txt").write_text("g\n")
    commit_all(tmp_path)
    git(tmp_path, "tag", "v1.9.0")
    plan = release(["{version}", "latest"], read_context(tmp_path, {}), "highest-semver")
    assert plan.tags_for(["x"]) == ("x", "1.9.0")
    assert plan.skipped == (
        "tag template 'latest' skipped: latest goes to the highest vX.Y.Z release; 1.9.0 is "
        "lower than 2.0.0",
    )


def test_latest_on_the_default_branch_only(tmp_path: Path) -> None:
    repository(tmp_path, branch="main")
    on_main = release(["latest"], read_context(tmp_path, {}, default_branch="main"))
    assert on_main.tags_for(["x"]) == ("x", "latest")
    git(tmp_path, "checkout", "-q", "-b", "dev")
    on_dev = release(["latest"], read_context(tmp_path, {}, default_branch="main"))
    assert on_dev.tags_for(["x"]) == ("x",)
    assert on_dev.skipped == (
        "tag template 'latest' skipped: latest goes to the default branch (main), not dev",
    )
    unknown = release(["latest"], read_context(tmp_path, {}))
    assert unknown.skipped == (
        "tag template 'latest' skipped: latest goes to the default branch, which is unknown "
        "here (set [release] default_branch in .cache-spec)",
    )


def test_a_pre_release_gives_version_only(tmp_path: Path) -> None:
    repository(tmp_path)
    git(tmp_path, "tag", "v2.0.0-rc.1")
    plan = release(["{version}", "{major}"], read_context(tmp_path, {}))
    assert plan.tags_for(["x"]) == ("x", "2.0.0-rc.1")
    assert plan.skipped == ("tag template '{major}' skipped: {major} has no value: 2.0.0-rc.1 "
                            "is a pre-release",)  # fmt: skip


def test_a_branch_name_with_a_slash_gives_a_valid_tag(tmp_path: Path) -> None:
    repository(tmp_path)
    git(tmp_path, "checkout", "-q", "-b", "feature/Add--thing+more")
    sha = git(tmp_path, "rev-parse", "HEAD")
    plan = release(["{branch}", "{branch}-{sha7}"], read_context(tmp_path, {}))
    assert plan.tags_for(["x"]) == (
        "x",
        "feature-Add--thing-more",
        f"feature-Add--thing-more-{sha[:7]}",
    )
    assert sanitise("/.release/1.x") == "release-1.x"


def test_a_pr_template_outside_a_pull_request_is_skipped_with_one_line(tmp_path: Path) -> None:
    sha = repository(tmp_path)
    plan = release(["pr-{pr}", "{tag}-{sha7}"], read_context(tmp_path, {}))
    assert plan.tags_for(["a", "b"]) == ("a", "b", f"a-{sha[:7]}", f"b-{sha[:7]}")
    assert plan.skipped == (
        "tag template 'pr-{pr}' skipped: {pr} has no value: not a pull request",
    )


def test_github_actions_variables_give_the_pull_request_and_its_head_branch(
    tmp_path: Path,
) -> None:
    sha = repository(tmp_path)
    env = {
        "GITHUB_REF": "refs/pull/42/merge",
        "GITHUB_SHA": sha,
        "GITHUB_HEAD_REF": "fix/login",
    }
    context = read_context(tmp_path, env)
    assert (context.sha, context.pr, context.branch) == (sha, "42", "fix/login")
    plan = release(["pr-{pr}", "{branch}", "latest"], context, "default-branch")
    assert plan.tags_for(["x"]) == ("x", "pr-42", "fix-login")
    tag_push = read_context(tmp_path, {"GITHUB_REF": "refs/tags/v3.1.0", "GITHUB_SHA": sha})
    assert (tag_push.branch, tag_push.semver) == (None, Semver(3, 1, 0))


def test_outside_a_checkout_every_git_variable_is_skipped_and_declared_tags_stay(
    tmp_path: Path,
) -> None:
    context = read_context(tmp_path, {})
    assert context == GitContext()
    plan = release(["{tag}-{sha7}", "{version}"], context)
    assert plan.tags_for(["cpu"]) == ("cpu",)
    assert plan.skipped == (
        "tag template '{tag}-{sha7}' skipped: {sha7} has no value: not a git checkout, and "
        "GITHUB_SHA is not set",
        "tag template '{version}' skipped: {version} has no value: no vX.Y.Z tag on this commit",
    )
    assert commit_annotations(context) == {}


def test_an_expansion_that_is_not_a_valid_tag_is_an_error(tmp_path: Path) -> None:
    repository(tmp_path)
    plan = release(["-{sha7}"], read_context(tmp_path, {}))
    with pytest.raises(BtError) as caught:
        plan.tags_for(["x"])
    sha7 = git(tmp_path, "rev-parse", "HEAD")[:7]
    assert str(caught.value) == (
        f"tag template '-{{sha7}}' gives '-{sha7}', which is not a valid tag (up to 128 of "
        "A-Z a-z 0-9 _ . -, not starting with . or -)"
    )


def test_the_source_url_never_carries_credentials() -> None:
    assert web_url("https://x-access-token:s3cret@github.com/acme/app.git") == (
        "https://github.com/acme/app"
    )
    assert web_url("git@github.com:acme/app.git") == "https://github.com/acme/app"
    assert web_url("ssh://git@gitlab.example.com:2222/g/app") == "https://gitlab.example.com/g/app"
    assert web_url("/srv/git/app.git") is None


def test_a_template_with_an_unknown_variable_in_cache_spec_is_refused_with_its_line(
    tmp_path: Path,
) -> None:
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": '[registry]\nurl = "127.0.0.1:5000/x"\n[release]\n'
            'tag_templates = ["{tag}", "{sah}"]\n',
            "BUILD.images": 'image(name = "app")\n',
            "Dockerfile": "FROM scratch\n",
        },
    )
    done = bt("merge", "//...", "--dry-run", cwd=root)
    assert done.returncode == 2
    assert done.stderr == (
        ".cache-spec:4: release.tag_templates: tag template '{sah}': unknown variable "
        "{sah} (known: {tag}, {sha}, {sha7}, {branch}, {pr}, {version}, {major}, {minor})\n"
    )


def test_a_template_that_gives_two_images_one_tag_is_refused_before_anything_is_put(
    tmp_path: Path,
) -> None:
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": '[registry]\nurl = "127.0.0.1:9/x"\n',
            "BUILD.images": 'image(name = "a", repository = "same")\n'
            'image(name = "b", repository = "same")\n',
            "Dockerfile": "FROM scratch\n",
        },
    )
    sha = repository(root)
    done = bt("merge", "//...", "--tag-template", "{sha7}", cwd=root)
    assert done.returncode == 2
    assert done.stderr == (f"127.0.0.1:9/x/same:{sha[:7]} would serve both //:a and //:b\n")


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        (
            {".cache-spec": '[registry]\nurl = "r.example/x"\nmirrors = ["https://m.example"]\n'},
            ("promote", "//..."),
            ".cache-spec:3: registry.mirrors: 'https://m.example' must be host[:port][/prefix], "
            "without a scheme",
        ),
        (
            {".cache-spec": '[registry]\nurl = "r.example/x"\n[release]\nlatest = "always"\n'},
            ("merge", "//..."),
            ".cache-spec:4: release.latest must be one of default-branch, highest-semver",
        ),
        (
            {"BUILD.images": 'image(name = "a", annotations = {"bad key": "v"})\n'},
            ("merge", "//..."),
            "BUILD.images:1: annotations: invalid key 'bad key' (letters, digits and . _ / -, "
            "e.g. 'org.opencontainers.image.title')",
        ),
        (
            {},
            ("promote", "//..."),
            "promoting needs a registry: pass --to, or set [registry] mirrors",
        ),
    ],
)
def test_bad_release_settings_are_one_line_and_exit_2(
    tmp_path: Path, files: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    base = {
        ".cache-spec": '[registry]\nurl = "r.example/x"\n',
        "BUILD.images": 'image(name = "a")\n',
        "Dockerfile": "FROM scratch\n",
    }
    root = write_tree(tmp_path / "ws", {**base, **files})
    done = bt(*args, cwd=root)
    assert (done.returncode, done.stderr, done.stdout) == (2, message + "\n", "")


def test_promote_refuses_a_destination_that_is_no_registry_url(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": '[registry]\nurl = "r.example/x"\n',
            "BUILD.images": 'image(name = "a")\n',
            "Dockerfile": "FROM scratch\n",
        },
    )
    done = bt("promote", "//...", "--to", "m.example/Upper", cwd=root)
    assert done.returncode == 2
    assert done.stderr == (
        "bt promote: Invalid value for '--to' (env var: 'BT_PROMOTE_TO'): 'm.example/Upper' "
        "path 'Upper' must be lower-case path components (see bt promote --help)\n"
    )


# -- against the registries --------------------------------------------------------------------


def manifest(reference: str) -> tuple[str, dict[str, Any]]:
    """(digest, JSON body) of the manifest at ``host/repo:tag`` or ``host/repo@digest``."""
    host, rest = reference.split("/", 1)
    if "@" in rest:
        repo, ref = rest.split("@", 1)
    else:
        repo, ref = rest.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 200, (reference, body)
    return sha256_digest(body), json.loads(body)


def status(method: str, url: str) -> int:
    host, path = url.split("/", 1)
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request(method, f"/{path}", headers={"Accept": ACCEPT})
    code = conn.getresponse().status
    conn.close()
    return code


class Released:
    """A git checkout of a workspace whose images were built, pushed and merged."""

    def __init__(self, root: Path, url: str, env: dict[str, str]):
        self.root, self.url, self.env = root, url, env

    def bt(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return bt(*args, cwd=self.root, env={**self.env, **env})

    def lock(self) -> dict[str, Any]:
        return json.loads((self.root / "images.lock").read_text())  # type: ignore[no-any-return]

    def sha(self) -> str:
        return git(self.root, "rev-parse", "HEAD")


@pytest.fixture()
def released(tmp_path: Path, engine: str, registry: str) -> Released:
    url = f"{registry}/bt-release-{uuid.uuid4().hex[:12]}"
    spec = (
        'platforms = ["linux/amd64", "linux/arm64"]\n[builders."*"]\nnetwork = "none"\n'
        f'[registry]\nurl = "{url}"\n'
    )
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": spec,
            "BUILD.images": 'image(name = "app", tags = ["cpu", "stable"])\n'
            'image(name = "tool", tags = ["cpu"], dockerfile = "Dockerfile.tool")\n',
            "Dockerfile": "FROM scratch\nCOPY n.txt /n.txt\n",
            "Dockerfile.tool": "FROM scratch\nCOPY t.txt /t.txt\n",
            "n.txt": uuid.uuid4().hex,
            "t.txt": uuid.uuid4().hex,
            ".gitignore": "images.lock\n",
        },
    )
    git(root, "init", "-q", "-b", "main")
    git(root, "remote", "add", "origin", "https://ci-bot:t0ken@git.example.com/acme/app.git")
    commit_all(root)
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    bt("build", "//...", "--push", cwd=root, env=env, check=True)
    bt("merge", "//...", cwd=root, env=env, check=True)
    return Released(root, url, env)


def test_a_tag_template_puts_the_declared_tags_index_under_tag_dash_sha7(
    released: Released,
) -> None:
    sha7 = released.sha()[:7]
    done = released.bt("merge", "//:app", "--tag-template", "{tag}-{sha7}")
    assert done.returncode == 0, done.stderr
    app = f"{released.url}/app"
    assert done.stdout.splitlines() == [
        f"{app}:cpu: unchanged",
        f"{app}:stable: unchanged",
        f"{app}:cpu-{sha7}: created",
        f"{app}:stable-{sha7}: created",
    ]
    declared, _ = manifest(f"{app}:cpu")
    assert declared == released.lock()["images"]["//:app"]["digest"]
    assert manifest(f"{app}:cpu-{sha7}")[0] == declared
    assert manifest(f"{app}:stable-{sha7}")[0] == declared
    # images.lock keeps the declared tags: the release tags are the checkout's, not the build's
    assert released.lock()["images"]["//:app"]["tags"] == [f"{app}:cpu", f"{app}:stable"]

    again = released.bt("merge", "//:app", "--tag-template", "{tag}-{sha7}")
    assert again.stdout.splitlines() == [
        f"{app}:cpu: unchanged",
        f"{app}:stable: unchanged",
        f"{app}:cpu-{sha7}: unchanged",
        f"{app}:stable-{sha7}: unchanged",
    ]


def test_templates_from_cache_spec_apply_without_flags_and_dry_run_prints_every_tag(
    released: Released,
) -> None:
    spec = released.root / ".cache-spec"
    spec.write_text(
        spec.read_text() + '[release]\ntag_templates = ["{branch}", "pr-{pr}", "latest"]\n'
        'default_branch = "main"\n'
    )
    git(released.root, "checkout", "-q", "-b", "feature/x")
    done = released.bt("merge", "//:tool", "--dry-run")
    assert done.returncode == 0, done.stderr
    tool = f"{released.url}/tool"
    assert done.stdout.splitlines() == [f"{tool}:cpu: unchanged", f"{tool}:feature-x: would create"]
    assert done.stderr.splitlines() == [
        "tag template 'pr-{pr}' skipped: {pr} has no value: not a pull request",
        "tag template 'latest' skipped: latest goes to the default branch (main), not feature/x",
    ]
    host, repo = tool.split("/", 1)
    assert status("HEAD", f"{host}/v2/{repo}/manifests/feature-x") == 404


def test_an_invalid_expansion_stops_the_merge_before_anything_is_put(released: Released) -> None:
    before = (released.root / "images.lock").read_bytes()
    done = released.bt("merge", "//...", "--tag-template", "{tag}", "--tag-template", ".{sha7}")
    assert done.returncode == 2
    sha7 = released.sha()[:7]
    assert done.stderr == (
        f"tag template '.{{sha7}}' gives '.{sha7}', which is not a valid tag (up to 128 of "
        "A-Z a-z 0-9 _ . -, not starting with . or -)\n"
    )
    assert done.stdout == ""
    assert (released.root / "images.lock").read_bytes() == before


def test_index_annotations_hold_the_commit_and_change_no_platform_image_or_key(
    released: Released,
) -> None:
    lock = released.lock()
    builds = {p: r["digest"] for p, r in lock["builds"]["//:app"].items()}
    app = f"{released.url}/app"
    digest, index = manifest(f"{app}:cpu")
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert index["annotations"] == {
        "org.opencontainers.image.created": COMMIT_TIME,
        "org.opencontainers.image.revision": released.sha(),
        "org.opencontainers.image.source": "https://git.example.com/acme/app",
    }
    assert {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]} == {
        "amd64": builds["linux/amd64"],
        "arm64": builds["linux/arm64"],
    }

    # The target's own annotations, and a version tag: a new index, the same platform images.
    build_file = released.root / "BUILD.images"
    build_file.write_text(
        build_file.read_text().replace(
            'tags = ["cpu", "stable"])',
            'tags = ["cpu", "stable"], annotations = {"org.opencontainers.image.title": "App"})',
        )
    )
    sha = commit_all(released.root)
    git(released.root, "tag", "v1.2.3")
    plan = released.bt("plan", "//...", "--format", "json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout) == []  # no key changed: nothing to build
    done = released.bt("merge", "//:app")
    assert done.stdout.splitlines() == [
        f"{app}:cpu: updated (was {digest})",
        f"{app}:stable: updated (was {digest})",
    ]
    new_digest, new_index = manifest(f"{app}:cpu")
    assert new_index["annotations"] == {
        "org.opencontainers.image.created": COMMIT_TIME,
        "org.opencontainers.image.revision": sha,
        "org.opencontainers.image.source": "https://git.example.com/acme/app",
        "org.opencontainers.image.title": "App",
        "org.opencontainers.image.version": "1.2.3",
    }
    assert [m["digest"] for m in new_index["manifests"]] == [
        m["digest"] for m in index["manifests"]
    ]
    assert released.lock()["builds"] == lock["builds"]
    assert released.lock()["images"]["//:app"]["digest"] == new_digest
    # Merging the same commit again gives the same bytes: nothing is put.
    again = released.bt("merge", "//:app")
    assert again.stdout.splitlines() == [f"{app}:cpu: unchanged", f"{app}:stable: unchanged"]


def test_promote_copies_every_recorded_digest_to_the_second_registry_once(
    released: Released, registry2: str
) -> None:
    mirror = f"{registry2}/bt-mirror-{uuid.uuid4().hex[:12]}"
    lock_before = (released.root / "images.lock").read_bytes()
    lock = released.lock()
    expected_blobs: set[str] = set()
    for records in lock["builds"].values():
        for record in records.values():
            _, body = manifest(record["image"])
            expected_blobs |= {
                body["config"]["digest"],
                *(layer["digest"] for layer in body["layers"]),
            }
    preview = released.bt("promote", "//...", "--to", mirror, "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout.splitlines() == [
        f"{mirror}/app:cpu: would create",
        f"{mirror}/app:stable: would create",
        f"{mirror}/tool:cpu: would create",
        f"would copy 6 manifests and {len(expected_blobs)} blobs "
        f"({_size_of(lock, expected_blobs)} bytes); 0 manifests are already there",
    ]
    host, prefix = mirror.split("/", 1)
    assert status("GET", f"{host}/v2/{prefix}/app/tags/list") == 404  # nothing was put
    # No engine answers: promotion must not build, nor ask an engine anything.
    done = released.bt(
        "promote", "//...", "--to", mirror, "--tag-template", "{tag}-{sha7}",
        DOCKER_HOST="unix:///nonexistent/docker.sock",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    sha7 = released.sha()[:7]
    assert done.stdout.splitlines() == [
        f"{mirror}/app:cpu: created",
        f"{mirror}/app:stable: created",
        f"{mirror}/app:cpu-{sha7}: created",
        f"{mirror}/app:stable-{sha7}: created",
        f"{mirror}/tool:cpu: created",
        f"{mirror}/tool:cpu-{sha7}: created",
        f"copied 6 manifests and {len(expected_blobs)} blobs "
        f"({_size_of(lock, expected_blobs)} bytes), mounted 0 blobs; 0 manifests were already "
        "there",
    ]
    for label, records in lock["builds"].items():
        name = label.removeprefix("//:")
        for record in records.values():
            assert manifest(f"{mirror}/{name}@{record['digest']}")[0] == record["digest"]
        index = lock["images"][label]["digest"]
        assert manifest(f"{mirror}/{name}@{index}")[0] == index
        assert manifest(f"{mirror}/{name}:cpu")[0] == index
    assert (released.root / "images.lock").read_bytes() == lock_before

    again = released.bt("promote", "//...", "--to", mirror, "--tag-template", "{tag}-{sha7}")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == (
        "copied 0 manifests and 0 blobs (0 bytes), mounted 0 blobs; 6 manifests were already there"
    )
    assert all(line.endswith(": unchanged") for line in again.stdout.splitlines()[:-1])


def test_a_failed_promotion_names_what_is_missing_and_a_rerun_copies_only_that(
    released: Released, registry2: str
) -> None:
    mirror = f"{registry2}/bt-mirror-{uuid.uuid4().hex[:12]}"
    lock = released.lock()
    lost = lock["builds"]["//:tool"]["linux/arm64"]
    host, rest = lost["image"].split("/", 1)
    repo, digest = rest.split("@")
    # Take the manifest from the source registry for a while (its blobs stay).
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request("GET", f"/v2/{repo}/manifests/{digest}", headers={"Accept": ACCEPT})
    response = conn.getresponse()
    raw, media_type = response.read(), response.getheader("Content-Type") or ""
    conn.close()
    assert status("DELETE", f"{host}/v2/{repo}/manifests/{digest}") == 202

    failed = released.bt("promote", "//...", "--to", mirror)
    assert failed.returncode == 2
    assert failed.stderr == (
        "1 images were not fully promoted (run the same command again to copy what is "
        f"missing): //:tool to {mirror}: manifest {lost['image']} not found in the registry\n"
    )
    assert manifest(f"{mirror}/app:cpu")[0] == lock["images"]["//:app"]["digest"]

    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request("PUT", f"/v2/{repo}/manifests/{digest}", body=raw,
                 headers={"Content-Type": media_type})  # fmt: skip
    assert conn.getresponse().status == 201
    conn.close()
    again = released.bt("promote", "//...", "--to", mirror)
    assert again.returncode == 0, again.stderr
    arm_config = json.loads(raw)["config"]
    # The arm64 image and the index listing it; amd64 (and its layer, if the same) were there.
    assert again.stdout.splitlines()[-1].startswith("copied 2 manifests and ")
    assert again.stdout.splitlines()[-1].endswith("; 4 manifests were already there")
    assert manifest(f"{mirror}/tool@{digest}")[0] == digest
    mirror_repo = f"{mirror.split('/', 1)[1]}/tool"
    assert status("HEAD", f"{registry2}/v2/{mirror_repo}/blobs/{arm_config['digest']}") == 200


def _size_of(lock: dict[str, Any], blobs: set[str]) -> int:
    sizes: dict[str, int] = {}
    for records in lock["builds"].values():
        for record in records.values():
            _, body = manifest(record["image"])
            for blob in (body["config"], *body["layers"]):
                sizes[blob["digest"]] = blob["size"]
    return sum(sizes[b] for b in blobs)


def test_promote_within_one_registry_mounts_every_blob_instead_of_copying_it(
    released: Released, registry: str
) -> None:
    mirror = f"{registry}/bt-mount-{uuid.uuid4().hex[:12]}"
    done = released.bt("promote", "//...", "--to", mirror)
    assert done.returncode == 0, done.stderr
    blobs = {
        blob["digest"]
        for records in released.lock()["builds"].values()
        for record in records.values()
        for blob in (
            manifest(record["image"])[1]["config"],
            *manifest(record["image"])[1]["layers"],
        )
    }
    assert done.stdout.splitlines()[-1] == (
        f"copied 6 manifests and 0 blobs (0 bytes), mounted {len(blobs)} blobs; 0 manifests "
        "were already there"
    )
    for label, index in released.lock()["images"].items():
        assert manifest(f"{mirror}/{label.removeprefix('//:')}:cpu")[0] == index["digest"]


def test_promote_to_the_mirrors_of_cache_spec_signs_in_with_that_registrys_credentials(
    released: Released, token_registry: tuple[str, Any], tmp_path: Path
) -> None:
    from registries import PASSWORD, USER, basic_auths, write_docker_config

    from buildtool.registry import RegistryClient

    address, _ = token_registry
    mirror = f"{address}/bt-token-{uuid.uuid4().hex[:12]}"
    spec = released.root / ".cache-spec"
    spec.write_text(
        spec.read_text().replace("[registry]\n", f'[registry]\nmirrors = ["{mirror}"]\n')
    )
    docker_config = write_docker_config(tmp_path / "docker", basic_auths(address, USER, PASSWORD))
    done = released.bt("promote", "//:app", DOCKER_CONFIG=str(docker_config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == [
        f"{mirror}/app:cpu: created",
        f"{mirror}/app:stable: created",
    ]
    client = RegistryClient(docker_config_dir=docker_config)
    lock = released.lock()
    for record in lock["builds"]["//:app"].values():
        assert client.manifest_digest(f"{mirror}/app@{record['digest']}") == record["digest"]
    assert client.manifest_digest(f"{mirror}/app:stable") == lock["images"]["//:app"]["digest"]
