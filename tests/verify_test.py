"""`bt lock check`: images.lock against a real registry, as a CI gate."""

from __future__ import annotations

import http.client
import json
import uuid
from pathlib import Path

import pytest
from btrun import bt, own_repository, write_tree

pytestmark = pytest.mark.engine


def request(method: str, ref: str, accept: str = "") -> int:
    host, _, rest = ref.partition("/")
    repository, _, digest = rest.partition("@")
    conn = http.client.HTTPConnection(host, timeout=10)
    headers = {"Accept": accept} if accept else {}
    conn.request(method, f"/v2/{repository}/manifests/{digest}", headers=headers)
    status = conn.getresponse().status
    conn.close()
    return status


def test_lock_check_passes_a_pushed_lockfile_and_names_each_lost_digest(
    tmp_path: Path, engine: str, registry: str
) -> None:
    url = own_repository(registry, "bt-check")
    spec = (
        'platforms = ["linux/amd64", "linux/arm64"]\n[builders."*"]\nnetwork = "none"\n'
        f'[registry]\nurl = "{url}"\n'
    )
    files = {
        ".cache-spec": spec,
        "BUILD.images": 'image(name = "app", tags = ["latest"])\n',
        "Dockerfile": "FROM scratch\nCOPY n.txt /n.txt\n",
        "n.txt": uuid.uuid4().hex,
    }
    root = write_tree(tmp_path / "ws", files)
    env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    bt("build", "//...", "--push", cwd=root, env=env, check=True)

    ok = bt("lock", "check", cwd=root, env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == ""
    assert ok.stderr == (
        "images.lock: 2 builds, 1 indexes checked: every digest and tag as recorded\n"
    )

    lock = json.loads((root / "images.lock").read_text())
    lost = lock["builds"]["//:app"]["linux/arm64"]
    assert request("DELETE", lost["image"]) == 202  # the key tag goes with it
    failed = bt("lock", "check", cwd=root, env=env)
    assert failed.returncode == 1
    key_tag = f"{url}/app:bt-{lost['key'][:32]}"
    assert failed.stdout.splitlines() == [
        f"//:app linux/arm64: {lost['image']} is missing from the registry",
        f"//:app linux/arm64: key tag: {key_tag} is missing from the registry",
    ]
    assert failed.stderr.endswith(": 2 problems\n")


def test_lock_check_names_a_build_that_was_never_pushed(tmp_path: Path, registry: str) -> None:
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": f'[registry]\nurl = "{registry}/bt-check"\n',
            "BUILD.images": 'image(name = "app")\n',
            "Dockerfile": "FROM scratch\n",
            "images.lock": json.dumps(
                {
                    "version": 1,
                    "images": {},
                    "builds": {
                        "//:app": {
                            "linux/amd64": {
                                "key": "c" * 64,
                                "digest": "sha256:" + "2" * 64,
                                "image": "bt/app:app-kkkk",
                            }
                        }
                    },
                }
            ),
        },
    )
    result = bt("lock", "check", cwd=root, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 1
    assert result.stdout == (
        "//:app linux/amd64: recorded only on an engine (bt/app:app-kkkk), not pushed\n"
    )
