"""Named contexts (`image(contexts = {...})`, bake's `contexts`): a workspace target replaces the
stage or image of that name, a directory's read files are inputs sent hermetically, a
`docker-image://` reference is pinned; bad declarations stop at their BUILD.images line."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
from bake_test import FIXTURES, WHISPERX_FILES, bake_platform_builds
from btrun import bt, write_tree

from buildtool.build.builders.context import sent_context, tar_chunks
from buildtool.cli.watch import watch_set
from buildtool.dockerfile.rewrite import blank_stages, rewrite_directory_reads
from buildtool.plan.keys import KeyComputer
from buildtool.plan.session import Session, Workbench
from buildtool.state.cachedir import CacheDir
from buildtool.state.hashing import StatCache
from buildtool.workspace.labels import Label

DOCKER = "/usr/bin/docker"
BOTH = ("linux/amd64", "linux/arm64")


def docker(host: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([DOCKER, "-H", host, *args], capture_output=True, check=False)


def file_in(host: str, image: str, path: str) -> str:
    """The text of ``path`` in ``image`` on the engine at ``host`` (images FROM scratch too)."""
    created = docker(host, "create", image, "none")
    assert created.returncode == 0, created.stderr
    container = created.stdout.decode().strip()
    try:
        copied = docker(host, "cp", f"{container}:{path}", "-")
        assert copied.returncode == 0, copied.stderr
    finally:
        docker(host, "rm", container)
    with tarfile.open(fileobj=io.BytesIO(copied.stdout)) as tar:
        member = tar.next()
        assert member is not None
        extracted = tar.extractfile(member)
        assert extracted is not None
        return extracted.read().decode()


def lock(root: Path) -> dict[str, dict[str, dict[str, str]]]:
    return json.loads((root / "images.lock").read_text())["builds"]  # type: ignore[no-any-return]


def plan(root: Path, env: dict[str, str]) -> list[dict[str, object]]:
    out = bt("plan", "//...", "--all", "--format", "json", cwd=root, env=env, check=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def stale(root: Path, env: dict[str, str]) -> set[tuple[str, str]]:
    return {(str(b["label"]), str(b["platform"])) for b in plan(root, env) if b["stale"]}


def keys(root: Path, env: dict[str, str]) -> dict[tuple[str, str], str]:
    return {(str(b["label"]), str(b["platform"])): str(b["key"]) for b in plan(root, env)}


def two_engines(engine: str, engine2: str, backend: str = "buildkit") -> str:
    """A .cache-spec building amd64 on engine 1 and arm64 on engine 2, with new keys."""
    return (
        f'platforms = ["linux/amd64", "linux/arm64"]\nglobal_inputs = ["nonce.txt"]\n'
        f'[builders."*"]\nbackend = "{backend}"\nnetwork = "none"\nhost = "{engine}"\n'
        f'[builders."linux/arm64"]\nbackend = "{backend}"\nnetwork = "none"\nhost = "{engine2}"\n'
    )


# -- declarations ----------------------------------------------------------------------------

DOCKERFILE = "FROM scratch AS base\nCOPY a.txt /a\nFROM base AS app\nCOPY --from=shared a.txt /b\n"

BAD_CONTEXTS = [
    ("invalid name", 'image(name = "app", contexts = {"Bad Name": "shared"})\n',
     "BUILD.images:1: contexts: invalid context name 'Bad Name' (a stage name such as 'base', "
     "or an image name such as 'alpine')"),
    ("outside the workspace", 'image(name = "app", contexts = {"shared": "../elsewhere"})\n',
     "BUILD.images:1: contexts['shared'] '../elsewhere' points outside the workspace"),
    ("missing directory", 'image(name = "app", contexts = {"shared": "nothere"})\n',
     "BUILD.images:1: contexts['shared']: directory 'nothere' does not exist"),
    ("unknown label", 'image(name = "app", contexts = {"shared": "shared", "base": ":bsae"})\n',
     "BUILD.images:1: parent //:bsae of //:app (context base) not found"),
    ("also a parent", 'image(name = "b")\n'
     'image(name = "app", parents = {"base": ":b"}, contexts = {"base": ":b"})\n',
     "BUILD.images:2: 'base' is both in contexts and in parents: keep one of them"),
    ("oci layout", 'image(name = "app", contexts = {"shared": "oci-layout:///tmp/x"})\n',
     "BUILD.images:1: contexts['shared']: 'oci-layout:///tmp/x' is not supported (a label, "
     "docker-image://REF or a directory)"),
    ("git url", 'image(name = "app", contexts = {"shared": "https://github.com/a/b.git"})\n',
     "BUILD.images:1: contexts['shared']: 'https://github.com/a/b.git' is not supported"),
    ("bake spelling", 'image(name = "b")\nimage(name = "app", contexts = {"base": "target:b"})\n',
     "BUILD.images:2: contexts['base']: 'target:b' is bake's spelling; write the label ':b'"),
    ("read by no stage", 'image(name = "app", contexts = {"shared": "shared", "extra": "shared"})\n',
     "BUILD.images:1: named context 'extra' of //:app is read by no FROM, COPY --from or RUN "
     "--mount=from= of the stages Dockerfile builds"),
    ("unread when the stage is not reached",
     'image(name = "app", stage = "base", contexts = {"shared": "shared"})\n',
     "BUILD.images:1: named context 'shared' of //:app is read by no FROM"),
    ("a directory as FROM", 'image(name = "app", contexts = {"shared": "shared", "base": "shared"})\n',
     "Dockerfile:3: FROM base: named context 'base' is a directory, which bt reads only with "
     "COPY --from= and RUN --mount=from="),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "build", "message"), BAD_CONTEXTS, ids=[c[0] for c in BAD_CONTEXTS]
)
def test_a_bad_named_context_is_one_line_at_its_build_file_line_and_exit_2(
    tmp_path: Path, case: str, build: str, message: str
) -> None:
    root = write_tree(
        tmp_path / "ws",
        {".cache-spec": 'platforms = ["linux/amd64"]\n', "BUILD.images": build,
         "Dockerfile": DOCKERFILE, "a.txt": "a\n", "shared/a.txt": "shared\n"},
    )  # fmt: skip
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    result = bt("query", "//...", cwd=root)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(message), result.stderr
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_a_directory_context_linking_outside_the_workspace_is_refused(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "ws",
        {".cache-spec": 'platforms = ["linux/amd64"]\n', "Dockerfile": DOCKERFILE, "a.txt": "a\n",
         "BUILD.images": 'image(name = "app", contexts = {"shared": "out"})\n'},
    )  # fmt: skip
    (tmp_path / "elsewhere").mkdir()
    (root / "out").symlink_to(tmp_path / "elsewhere")
    result = bt("query", "//...", cwd=root)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "BUILD.images:1: contexts['shared']: directory 'out' is a link to outside the workspace\n"
    )


def test_bt_query_shows_a_targets_named_contexts(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "ws",
        {".cache-spec": 'platforms = ["linux/amd64"]\n', "Dockerfile": DOCKERFILE, "a.txt": "a\n",
         "shared/a.txt": "s\n",
         "BUILD.images": 'image(name = "base", stage = "base")\n'
         'image(name = "app", contexts = {"shared": "shared", "base": ":base"})\n'},
    )  # fmt: skip
    out = bt("query", "//:app", "--output", "json", cwd=root, check=True).stdout
    record = json.loads(out)[0]
    assert record["contexts"] == {"base": "//:base", "shared": "shared"}
    assert record["inferred_parents"] == {}
    assert bt("query", "deps(//:app)", cwd=root, check=True).stdout == "//:app\n//:base\n"


def test_bt_inputs_lists_a_directory_contexts_files_with_their_origin(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": 'platforms = ["linux/amd64"]\n',
            "app/BUILD.images": 'image(name = "app", contexts = {"shared": "../shared"})\n',
            "app/Dockerfile": "FROM scratch\nCOPY --from=shared lib/ /lib/\n"
            "RUN --mount=from=shared,source=tools/run.sh,target=/run.sh /run.sh\n",
            "shared/lib/x.py": "x\n",
            "shared/lib/x.pyc": "compiled\n",
            "shared/tools/run.sh": "true\n",
            "shared/docs/readme.md": "docs\n",
            "shared/.dockerignore": "**/*.pyc\n",
        },
    )
    out = bt("inputs", "//app:app", "--format", "json", cwd=root, check=True).stdout
    rows = [(r["path"], r["kind"], r["origin"]) for r in json.loads(out)["inputs"]]
    assert rows == [
        ("app/Dockerfile", "dockerfile", "the Dockerfile (the stages the build reaches)"),
        ("shared/lib", "dir", "context shared: app/Dockerfile:2 ('lib')"),
        ("shared/lib/x.py", "file", "context shared: app/Dockerfile:2 ('lib')"),
        ("shared/tools/run.sh", "file", "context shared: app/Dockerfile:3 ('tools/run.sh')"),
    ]


def test_a_label_context_replaces_the_stage_of_its_name_in_the_key(tmp_path: Path) -> None:
    """The replaced stage is not reached: editing it changes only the target that builds it."""
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": 'platforms = ["linux/amd64"]\n',
            "BUILD.images": 'image(name = "base", dockerfile = "base.Dockerfile")\n'
            'image(name = "app", stage = "app", contexts = {"base": ":base"})\n'
            'image(name = "own", stage = "base")\n',
            "base.Dockerfile": "FROM scratch\nCOPY b.txt /b\n",
            "Dockerfile": "FROM scratch AS base\nCOPY a.txt /a\nFROM base AS app\nCOPY c.txt /c\n",
            "a.txt": "a\n",
            "b.txt": "b\n",
            "c.txt": "c\n",
        },
    )
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    deps = bt("query", "deps(//:app)", cwd=root, env=env, check=True).stdout.split()
    assert deps == ["//:app", "//:base"]
    before = keys(root, env)
    (root / "a.txt").write_text("edited\n")  # read only by the stage the context replaces
    after = keys(root, env)
    assert {b for b in before if before[b] != after[b]} == {("//:own", "linux/amd64")}
    (root / "b.txt").write_text("edited\n")
    last = keys(root, env)
    assert {b for b in last if last[b] != after[b]} == {
        ("//:base", "linux/amd64"),
        ("//:app", "linux/amd64"),
    }


# -- bake prints, imported and built for real ----------------------------------------------------

# The chain of tests/bake/chain.json, unedited: `load` starts FROM the stage no_model, which its
# named context replaces with the image of target no_model (built with MODEL=real, where the
# stage's default is MODEL=none); `app` starts FROM load and reads a directory context.
CHAIN_FILES = {
    "Dockerfile": "FROM scratch AS no_model\nARG MODEL=none\nCOPY model-${MODEL}.txt /model.txt\n"
    "FROM no_model AS load\nCOPY load.txt /load.txt\n"
    "FROM load AS app\nCOPY --from=shared lib/x.py /x.py\nCOPY app.txt /app.txt\n",
    "model-real.txt": "real\n",
    "model-none.txt": "none\n",
    "load.txt": "load\n",
    "app.txt": "app\n",
    "shared/lib/x.py": "print('shared')\n",
}


@pytest.mark.engine
def test_a_bake_chain_through_named_contexts_imports_and_builds_on_both_engines(
    tmp_path: Path, engine: str, engine2: str
) -> None:
    root = write_tree(
        tmp_path / "ws",
        {".cache-spec": two_engines(engine, engine2), "nonce.txt": uuid.uuid4().hex, **CHAIN_FILES},
    )
    bt("import-bake", str(FIXTURES / "chain.json"), "-o", "BUILD.images", cwd=root, check=True)
    listed = bt("query", "//...", "--platforms", cwd=root, check=True).stdout.splitlines()
    assert listed == bake_platform_builds("chain.json")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    bt("build", "//...", cwd=root, env=env, check=True)
    records = lock(root)
    assert sorted(records) == ["//:app", "//:load", "//:no_model"]
    for platform, host in (("linux/amd64", engine), ("linux/arm64", engine2)):
        app, load = records["//:app"][platform]["image"], records["//:load"][platform]["image"]
        # The target's content, not the stage's: no_model was built with MODEL=real.
        assert file_in(host, load, "/model.txt") == "real\n"
        assert file_in(host, app, "/model.txt") == "real\n"
        assert file_in(host, app, "/load.txt") == "load\n"
        assert file_in(host, app, "/x.py") == "print('shared')\n"
    assert stale(root, env) == set()
    (root / "shared/lib/x.py").write_text("print('edited')\n")
    assert stale(root, env) == {("//:app", platform) for platform in BOTH}
    why = bt("why", "//:app", "--platform", "linux/arm64", cwd=root, env=env, check=True).stdout
    assert "  context shared: lib/x.py changed\n" in why
    (root / "model-real.txt").write_text("edited\n")
    why = bt("why", "//:load", "--platform", "linux/amd64", cwd=root, env=env, check=True).stdout
    assert why.splitlines()[-1].startswith("  context no_model: parent //:no_model changed: key ")


@pytest.mark.engine
def test_the_chain_builds_on_the_classic_builder_whose_stages_no_build_reaches_are_blanked(
    tmp_path: Path, engine: str
) -> None:
    """The classic builder runs every stage before the target: the stage no_model, which the
    contexts replace, must not read model-none.txt, which no key covers and no build is sent."""
    root = write_tree(
        tmp_path / "ws",
        {".cache-spec": amd64_only(engine, "engine"), "nonce.txt": uuid.uuid4().hex,
         **CHAIN_FILES},
    )  # fmt: skip
    bt("import-bake", str(FIXTURES / "chain.json"), "-o", "BUILD.images", cwd=root, check=True)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    bt("build", "//...", "--platform", "linux/amd64", cwd=root, env=env, check=True)
    app = lock(root)["//:app"]["linux/amd64"]["image"]
    assert file_in(engine, app, "/model.txt") == "real\n"
    assert file_in(engine, app, "/x.py") == "print('shared')\n"


@pytest.mark.engine
def test_the_whisperx_shaped_print_imports_and_builds_with_its_dockerfile_unedited(
    tmp_path: Path, engine: str, engine2: str
) -> None:
    files = {**WHISPERX_FILES, ".cache-spec": two_engines(engine, engine2)}
    root = write_tree(tmp_path / "ws", {**files, "nonce.txt": uuid.uuid4().hex})
    bt("import-bake", str(FIXTURES / "whisperx.json"), "-o", "BUILD.images", cwd=root, check=True)
    listed = bt("query", "//...", "--platforms", cwd=root, check=True).stdout.splitlines()
    assert listed == bake_platform_builds("whisperx.json")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    built = bt("build", "//...", "--jobs", "4", cwd=root, env=env, check=True)
    assert "built 32, cached 0, failed 0, skipped 0" in built.stdout + built.stderr
    record = lock(root)["//:large-v3-zh"]
    assert file_in(engine2, record["linux/arm64"]["image"], "/m") == "large-v3"
    assert file_in(engine, record["linux/amd64"]["image"], "/base.txt") == "base\n"
    assert file_in(engine, record["linux/amd64"]["image"], "/l") == "zh"


# -- a directory context ---------------------------------------------------------------------

SHARED_FILES = {
    "BUILD.images": 'image(name = "app", dockerfile = "app.Dockerfile", contexts = {"shared": "shared"})\n'
    'image(name = "tool", dockerfile = "tool.Dockerfile", contexts = {"shared": "shared"})\n'
    'image(name = "docs", dockerfile = "docs.Dockerfile", contexts = {"shared": "shared"})\n'
    'image(name = "plain", dockerfile = "plain.Dockerfile")\n',
    "app.Dockerfile": "FROM scratch\nCOPY --from=shared lib/x.py /opt/x.py\n",
    "tool.Dockerfile": "FROM scratch\nCOPY --from=shared lib/ /lib/\nCOPY tool.txt /tool.txt\n",
    "docs.Dockerfile": "FROM scratch\nCOPY --from=shared docs/readme.md /readme.md\n",
    "plain.Dockerfile": "FROM scratch\nCOPY tool.txt /tool.txt\n",
    "tool.txt": "tool\n",
    "shared/lib/x.py": "x = 1\n",
    "shared/lib/y.py": "y = 1\n",
    "shared/lib/cache.pyc": "compiled\n",
    "shared/docs/readme.md": "docs\n",
    "shared/notes.txt": "read by nothing\n",
    "shared/.dockerignore": "**/*.pyc\n",
}


def amd64_only(engine: str, backend: str) -> str:
    return (
        'platforms = ["linux/amd64"]\nglobal_inputs = ["nonce.txt"]\n'
        f'[builders."*"]\nbackend = "{backend}"\nnetwork = "none"\nhost = "{engine}"\n'
    )


@pytest.mark.engine
def test_a_directory_context_stales_exactly_its_readers_and_keys_agree_across_backends(
    tmp_path: Path, engine: str
) -> None:
    nonce = uuid.uuid4().hex
    roots = {}
    for backend in ("buildkit", "engine"):
        roots[backend] = write_tree(
            tmp_path / backend,
            {".cache-spec": amd64_only(engine, backend), "nonce.txt": nonce, **SHARED_FILES},
        )
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    for root in roots.values():
        bt("build", "//...", cwd=root, env=env, check=True)
    kit, api = lock(roots["buildkit"]), lock(roots["engine"])
    assert {label: r["linux/amd64"]["key"] for label, r in kit.items()} == {
        label: r["linux/amd64"]["key"] for label, r in api.items()
    }
    for records in (kit, api):
        assert file_in(engine, records["//:app"]["linux/amd64"]["image"], "/opt/x.py") == "x = 1\n"
        assert file_in(engine, records["//:tool"]["linux/amd64"]["image"], "/lib/y.py") == "y = 1\n"
    root = roots["engine"]
    (root / "shared/notes.txt").write_text("edited\n")  # in the folder, read by no build
    (root / "shared/lib/cache.pyc").write_text("edited\n")  # ignored by the folder's own rules
    assert stale(root, env) == set()
    (root / "shared/lib/x.py").write_text("x = 2\n")
    amd = "linux/amd64"
    assert stale(root, env) == {("//:app", amd), ("//:tool", amd)}
    bt("build", "//...", cwd=root, env=env, check=True)
    assert file_in(engine, lock(root)["//:app"][amd]["image"], "/opt/x.py") == "x = 2\n"
    (root / "shared/lib/y.py").write_text("y = 2\n")
    assert stale(root, env) == {("//:tool", amd)}


def test_a_directory_context_is_sent_under_a_private_prefix_and_read_from_there(
    tmp_path: Path,
) -> None:
    """What the engines without named contexts get: the folder's read files in the tar, and the
    instructions reading them rewritten to that place, each on its lines."""
    root = write_tree(tmp_path / "ws", {".cache-spec": 'platforms = ["linux/amd64"]\n',
                                        **SHARED_FILES})  # fmt: skip
    session = Session(root)
    cache = StatCache.load(CacheDir(session.config.cache_dir).stat_cache)
    computer = KeyComputer(session.config, session.graph, cache, session.analyses)
    fileset = computer.fileset((Label("", "tool"), "linux/amd64"))
    text = rewrite_directory_reads(
        fileset.dockerfile_text, {"shared": ".bt-contexts/shared"}, [2], "tool.Dockerfile"
    )
    assert text == "FROM scratch\nCOPY  .bt-contexts/shared/lib /lib/\nCOPY tool.txt /tool.txt\n"
    sent = sent_context(fileset, root, root / "tool.Dockerfile", text)
    with tarfile.open(fileobj=io.BytesIO(b"".join(tar_chunks(sent)))) as tar:
        names = tar.getnames()
    assert names == [
        ".bt-Dockerfile",
        ".bt-contexts",
        ".bt-contexts/shared",
        ".bt-contexts/shared/lib",
        ".bt-contexts/shared/lib/x.py",
        ".bt-contexts/shared/lib/y.py",
        "tool.txt",
    ]


def test_rewriting_a_mount_from_a_directory_context_keeps_its_other_fields() -> None:
    text = (
        "FROM scratch\nRUN --mount=type=bind,from=shared,source=../tools,target=/t \\\n"
        "    --mount=type=cache,target=/c /t/run\n"
    )
    assert rewrite_directory_reads(text, {"shared": ".bt-contexts/shared"}, [2], "D") == (
        "FROM scratch\nRUN --mount=type=bind,target=/t,source=.bt-contexts/shared/tools \\\n"
        "    --mount=type=cache,target=/c /t/run\n"
    )


# -- a docker-image:// context ---------------------------------------------------------------


@pytest.mark.engine
def test_a_docker_image_context_is_pinned_until_lock_update(
    tmp_path: Path, engine: str, registry: str
) -> None:
    repository = f"{registry}/bt-test/{tmp_path.name.lower()}-{uuid.uuid4().hex[:8]}"
    first = f"{repository}:v1"
    assert docker(engine, "tag", "bt-test/busybox:latest", first).returncode == 0
    assert docker(engine, "push", first).returncode == 0
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": amd64_only(engine, "buildkit"),
            "nonce.txt": uuid.uuid4().hex,
            "BUILD.images": f'image(name = "app", contexts = {{"base": "docker-image://{first}"}})\n'
            'image(name = "plain", dockerfile = "plain.Dockerfile")\n',
            "Dockerfile": "FROM base\nCOPY --from=base /bin/busybox /copied\nCOPY a.txt /a.txt\n",
            "plain.Dockerfile": "FROM scratch\nCOPY a.txt /a.txt\n",
            "a.txt": "a\n",
        },
    )
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "DOCKER_HOST": engine}
    bt("lock", "update", cwd=root, env=env, check=True)
    pinned = json.loads((root / "images.lock").read_text())["pins"][first]["linux/amd64"]
    bt("build", "//...", cwd=root, env=env, check=True)
    recorded = keys(root, env)
    # The tag moves in the registry: to a new image of one file.
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        data = uuid.uuid4().hex.encode()
        member = tarfile.TarInfo("moved.txt")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    moved = subprocess.run(
        [DOCKER, "-H", engine, "import", "-", first], input=layer.getvalue(), capture_output=True
    )
    assert moved.returncode == 0, moved.stderr
    assert docker(engine, "push", first).returncode == 0
    assert keys(root, env) == recorded
    assert stale(root, env) == set()
    bt("lock", "update", cwd=root, env=env, check=True)
    now = json.loads((root / "images.lock").read_text())["pins"][first]["linux/amd64"]
    assert now["digest"] != pinned["digest"]
    assert stale(root, env) == {("//:app", "linux/amd64")}
    why = bt("why", "//:app", cwd=root, env=env, check=True).stdout
    assert f"  external {first} moved sha256:" in why


def stand_in_buildx(directory: Path) -> Path:
    """A docker CLI whose `buildx build` records its arguments and context, then fails; every
    other command is the real CLI's. No buildx plugin can be installed here, so this is how the
    buildx path is checked: against the command line buildx documents."""
    directory.mkdir(parents=True)
    script = directory / "docker"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = buildx ] && [ "$2" = version ]; then echo "buildx v0.17.1"; exit 0; fi\n'
        'if [ "$1" = buildx ] && [ "$2" = build ]; then\n'
        f'  printf "%s\\n" "$@" > {directory}/argv; cat > {directory}/context.tar; exit 1\n'
        "fi\n"
        f'exec {DOCKER} "$@"\n'
    )
    script.chmod(0o755)
    return directory


@pytest.mark.engine
def test_on_buildx_an_image_context_is_a_build_context_and_the_dockerfile_is_not_rewritten(
    tmp_path: Path, engine: str
) -> None:
    cli = stand_in_buildx(tmp_path / "bin")
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": amd64_only(engine, "buildkit"),
            "nonce.txt": uuid.uuid4().hex,
            "BUILD.images": 'image(name = "app", contexts = '
            '{"base": "docker-image://bt-test/busybox:latest", "shared": "shared"})\n',
            "Dockerfile": "FROM base\nCOPY --from=shared x.txt /x.txt\n",
            "shared/x.txt": "x\n",
        },
    )
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": f"{cli}:/usr/bin:/bin"}
    bt("lock", "update", cwd=root, env=env, check=True)
    pin = json.loads((root / "images.lock").read_text())["pins"]
    image_id = pin["docker.io/bt-test/busybox:latest"]["linux/amd64"]["digest"]
    built = bt("build", "//:app", cwd=root, env=env)
    assert built.returncode == 1
    argv = (cli / "argv").read_text().splitlines()
    contexts = [argv[i + 1] for i, word in enumerate(argv) if word == "--build-context"]
    assert contexts == [f"base=docker-image://bt/pin:{image_id.removeprefix('sha256:')}"]
    with tarfile.open(cli / "context.tar") as tar:
        sent = {
            name: tar.extractfile(name) for name in tar.getnames() if tar.getmember(name).isfile()
        }
        texts = {name: f.read().decode() for name, f in sent.items() if f is not None}
    # The directory still travels in the context bt sends: buildx would read the folder itself.
    assert texts == {
        ".bt-Dockerfile": "FROM base\nCOPY  .bt-contexts/shared/x.txt /x.txt\n",
        ".bt-contexts/shared/x.txt": "x\n",
    }


def test_bt_watch_watches_the_files_a_directory_context_gives_and_a_round_rekeys_their_readers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = write_tree(
        tmp_path / "ws", {".cache-spec": 'platforms = ["linux/amd64"]\n', **SHARED_FILES}
    )
    bench = Workbench(Session(root))
    watched = watch_set(bench.config, bench.plan(["//:app"]))
    accepted = ["shared/lib/x.py", "shared/lib/new.py", "shared/.dockerignore", "app.Dockerfile"]
    rejected = ["shared/docs/readme.md", "tool.txt", "images.lock"]
    assert [p for p in accepted if not watched.accepts(str(root / p))] == []
    assert [p for p in rejected if watched.accepts(str(root / p))] == []
    before = {(str(p.label), p.platform): p.key for p in bench.plan(["//..."])}
    (root / "shared/lib/y.py").write_text("y = 2\n")
    dropped = bench.computer.forget(["shared/lib/y.py"])
    assert {str(label) for label, _ in dropped} == {"//:tool"}
    assert bench.forget(["shared/lib/y.py"])
    after = {(str(p.label), p.platform): p.key for p in bench.plan(["//..."])}
    assert {b for b in before if before[b] != after[b]} == {("//:tool", "linux/amd64")}


def test_stages_no_build_reaches_are_blanked_keeping_lines_and_indexes() -> None:
    text = (
        "FROM busybox AS no_model\nARG MODEL=none\nRUN echo \\\n    $MODEL\n"
        "FROM scratch\nCOPY a /a\n"
        "FROM registry.example/base@sha256:abc AS load\nCOPY --from=1 /a /a\n"
    )
    assert blank_stages(text, [7], "Dockerfile") == (
        "FROM scratch AS no_model\n# ARG MODEL=none\n# RUN echo \\\n#     $MODEL\n"
        "FROM scratch\n# COPY a /a\n"
        "FROM registry.example/base@sha256:abc AS load\nCOPY --from=1 /a /a\n"
    )


def test_a_stage_a_context_replaces_named_by_its_index_is_an_error_at_its_line(
    tmp_path: Path,
) -> None:
    root = write_tree(
        tmp_path / "ws",
        {
            ".cache-spec": 'platforms = ["linux/amd64"]\n',
            "BUILD.images": 'image(name = "b")\nimage(name = "app", contexts = {"base": ":b"})\n',
            "Dockerfile": "FROM scratch AS base\nCOPY a.txt /a\nFROM scratch\nCOPY --from=0 /a /a\n",
            "a.txt": "a\n",
        },
    )
    result = bt("query", "//...", cwd=root)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "Dockerfile:4: --from=0 is stage base, which named context 'base' replaces: "
        "write --from=base\n"
    )
