"""The analysis cache keeps the analyses of the workspace as it is: what is gone is dropped."""

from __future__ import annotations

from pathlib import Path

import msgpack
from btrun import bt, write_tree

TARGETS = "".join(
    f'image(name = "{lang}", args = {{"LANG": "{lang}"}})\n' for lang in ("en", "de", "fr")
)


def analyses(cache: Path) -> set[str]:
    return set(msgpack.unpackb((cache / "analysis.msgpack").read_bytes())["entries"])


def test_analyses_of_removed_targets_and_edited_dockerfiles_are_dropped(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": 'platforms = ["linux/amd64", "linux/arm64"]\n',
            "BUILD.images": TARGETS,
            "Dockerfile": "FROM scratch\nARG LANG\nCOPY ${LANG}.txt /\n",
            "en.txt": "",
            "de.txt": "",
            "fr.txt": "",
        },
    )
    cache = tmp_path / "cache"
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "BT_CACHE_DIR": str(cache)}
    bt("plan", "//...", cwd=root, env=env, check=True)
    three = analyses(cache)
    assert len(three) == 3  # one per target: the Dockerfile reads no platform arg

    (root / "BUILD.images").write_text(TARGETS.replace('image(name = "fr"', "# fr"))
    bt("plan", "//...", cwd=root, env=env, check=True)  # nothing new: written to prune
    two = analyses(cache)
    assert len(two) == 2 and two < three

    (root / "Dockerfile").write_text("FROM scratch\nARG LANG\nCOPY ${LANG}.txt /data/\n")
    bt("plan", "//:en", cwd=root, env=env, check=True)  # the graph still analyses all
    edited = analyses(cache)
    assert len(edited) == 2 and not edited & two
