"""Build secrets: declared in BUILD.images and .cache-spec, checked before any build, handed to
BuildKit by source, keyed by id and source, and found nowhere bt writes. Also the names of
build args that look secret, and the cache directory kept out of build contexts."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path

import pytest
from btrun import bt, write_tree

from buildtool.secrets import REDACTED, conceal, looks_secret, scrub

DOCKER = "/usr/bin/docker"
CANARY = f"canary-{uuid.uuid4().hex}"
ARG_CANARY = f"argcanary-{uuid.uuid4().hex}"
# Compares a digest, so the canary itself is in no Dockerfile bt reads or stores.
CHECK = f"test \"$(sha256sum /run/secrets/tok | cut -d' ' -f1)\" = {hashlib.sha256(CANARY.encode()).hexdigest()}"
DOCKERFILE = (
    "FROM bt-test/busybox:latest\n"
    "ARG HF_TOKEN\n"
    f"RUN --mount=type=secret,id=tok {CHECK} && echo secret arrived\n"
    "COPY data.txt /data.txt\n"
)


def spec(engine: str, extra: str = "") -> str:
    return (
        f'platforms = ["linux/amd64"]\ncache_dir = ".bt-cache"\nglobal_inputs = ["nonce.txt"]\n'
        f'[builders."*"]\nnetwork = "none"\nhost = "{engine}"\n{extra}'
    )


def workspace(root: Path, engine: str, build: str, extra_spec: str = "") -> Path:
    return write_tree(
        root,
        {
            ".cache-spec": spec(engine, extra_spec),
            "BUILD.images": build,
            "nonce.txt": uuid.uuid4().hex,  # new keys: no earlier run's image is reused
            "app/Dockerfile": DOCKERFILE,
            "app/data.txt": "data\n",
        },
    )


def files_holding(directory: Path, needle: str) -> list[str]:
    found = []
    for path in directory.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            found.append(str(path))
    return found


# -- names and concealing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("HF_TOKEN", True), ("API_KEY", True), ("apikey", True), ("DB_PASSWORD", True),
        ("AUTH", True), ("secret_message", True), ("AWS_CREDENTIALS", True),
        ("PUBLIC_KEY", False), ("KEY_FILE", False), ("TOKEN_VERSION", False), ("MONKEY", False),
        ("TOKENIZER", False), ("WHISPER_MODEL", False), ("LANG", False),
    ],
)  # fmt: skip
def test_build_arg_names_look_secret_by_buildkits_rule(name: str, secret: bool) -> None:
    assert looks_secret(name) is secret


def test_concealed_strings_are_scrubbed_from_text_and_short_ones_are_not() -> None:
    value = f"s3cret-{uuid.uuid4().hex}"
    conceal(value, "ab", None)
    assert scrub(f"got {value}, ab") == f"got {REDACTED}, ab"


# -- declaring ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ('{"tok": "HF_TOKEN"}', 'must be {"env": "VAR"} or {"src": "path"}'),
        ('{"tok": {"env": "A", "src": "b"}}', "exactly one of env, src"),
        ('{"tok": {"file": "b"}}', "exactly one of env, src"),
        ('{"tok": {"env": 1}}', "secrets['tok'].env must be a non-empty string"),
        ('{"tok": {"env": "HF-TOKEN"}}', "invalid environment variable name 'HF-TOKEN'"),
        ('{"a,b": {"env": "A"}}', "invalid secret id 'a,b'"),
        ('{"tok": {"src": "a,b.txt"}}', "cannot hold"),
        ('["tok"]', "must be a table"),
        ('{"tok": {"src": "app/token.txt"}}', "is inside the build context 'app'"),
    ],
)
def test_a_malformed_secret_is_one_line_at_its_build_file_line(
    tmp_path: Path, secrets: str, message: str
) -> None:
    build = f'\nimage(name = "app", context = "app",\n      secrets = {secrets})\n'
    root = workspace(tmp_path / "ws", "unix:///nowhere", build)
    done = bt("query", "//...", cwd=root)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("BUILD.images:2: "), done.stderr
    assert message in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("table", "line", "message"),
    [
        ('tok = "HF_TOKEN"', 6, "exactly one of env, src"),
        ('tok = {env = "A", src = "b"}', 6, "exactly one of env, src"),
        ("tok = {env = 3}", 6, "secrets['tok'].env must be a non-empty string"),
    ],
)
def test_a_malformed_cache_spec_secret_names_its_line(
    tmp_path: Path, table: str, line: int, message: str
) -> None:
    root = workspace(tmp_path / "ws", "unix:///nowhere", 'image(name = "app", context = "app")\n')
    (root / ".cache-spec").write_text(spec("unix:///nowhere") + f"[secrets]\n{table}\n")
    done = bt("query", "//...", cwd=root)
    assert done.returncode == 2
    assert done.stderr.startswith(f".cache-spec:{line + 2}: ") and message in done.stderr


def key_of(root: Path, env: dict[str, str] | None = None) -> str:
    out = bt("why", "//:app", cwd=root, env=env, check=True).stdout
    return next(line.split()[-1] for line in out.splitlines() if "key now:" in line)


def test_the_key_holds_a_secrets_id_and_source_never_its_value(tmp_path: Path) -> None:
    build = 'image(name = "app", context = "app", secrets = {"tok": {"env": "T1"}})\n'
    root = workspace(tmp_path / "ws", "unix:///nowhere", build)
    key = key_of(root, {"T1": "one"})
    assert key_of(root, {"T1": "two"}) == key_of(root) == key
    (root / "BUILD.images").write_text(build.replace('"T1"', '"T2"'))
    assert key_of(root) != key
    (root / "BUILD.images").write_text(build.replace('"tok"', '"other"'))
    assert key_of(root) != key
    # .cache-spec's secrets apply to every target; a target's own of the same id wins.
    (root / "BUILD.images").write_text('image(name = "app", context = "app")\n')
    (root / ".cache-spec").write_text(spec("unix:///nowhere") + '[secrets]\ntok = {env = "T1"}\n')
    assert key_of(root) == key
    query = json.loads(bt("query", "//...", "--output", "json", cwd=root, check=True).stdout)
    assert query[0]["secrets"] == {"tok": {"env": "T1"}}


def test_only_the_secrets_reached_stages_mount_are_keyed(tmp_path: Path) -> None:
    """A declared secret no reached RUN mounts changes nothing: keys, and no value needed."""
    unmounted = (
        "FROM scratch AS unreached\nRUN --mount=type=secret,id=tok true\n"
        "FROM scratch\nCOPY data.txt /data.txt\n"
    )
    root = workspace(tmp_path / "ws", "unix:///nowhere", 'image(name = "app", context = "app")\n')
    (root / "app/Dockerfile").write_text(unmounted)
    key = key_of(root)
    (root / ".cache-spec").write_text(
        spec("unix:///nowhere") + '[secrets]\ntok = {env = "BT_UNSET_VAR"}\n'
    )
    assert key_of(root) == key
    # The id a mount asks for defaults to the basename of its target (BuildKit's rule).
    (root / "app/Dockerfile").write_text(
        "FROM scratch\nRUN --mount=type=secret,target=/run/keys/tok true\n"
    )
    declared = key_of(root)
    (root / ".cache-spec").write_text(spec("unix:///nowhere"))
    assert key_of(root) != declared


def test_a_build_that_mounts_no_secret_needs_none_and_runs_on_the_engine_backend(
    tmp_path: Path,
) -> None:
    root = workspace(tmp_path / "ws", "unix:///nowhere", 'image(name = "app", context = "app")\n')
    (root / "app/Dockerfile").write_text("FROM scratch\nCOPY data.txt /data.txt\n")
    (root / ".cache-spec").write_text(
        'platforms = ["linux/amd64"]\ncache_dir = ".bt-cache"\n'
        '[builders."linux/amd64"]\nbackend = "engine"\nhost = "unix:///nowhere"\n'
        '[secrets]\ntok = {env = "BT_UNSET_VAR"}\n'
    )
    done = bt("build", "//...", cwd=root)
    assert done.returncode == 1, done.stderr  # the engine is not there; no refusal before
    assert "secret" not in done.stderr and "BT_UNSET_VAR" not in done.stderr


def test_a_required_mount_of_a_secret_declared_nowhere_fails_before_any_build(
    tmp_path: Path,
) -> None:
    root = workspace(tmp_path / "ws", "unix:///nowhere", 'image(name = "app", context = "app")\n')
    (root / "app/Dockerfile").write_text(
        "FROM scratch\nRUN --mount=type=secret,id=tok,required true\n"
    )
    done = bt("build", "//...", cwd=root)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "app/Dockerfile:2: RUN mounts secret 'tok' with required=true, which //:app does not "
        'declare: add secrets = {"tok": {"env": "VAR"}} to it (BUILD.images:1) or the id to '
        "[secrets] of .cache-spec"
    )
    assert not (root / "images.lock").exists()


# -- building -------------------------------------------------------------------------------


@pytest.mark.engine
@pytest.mark.parametrize("kind", ["env", "src"])
def test_a_secret_reaches_the_build_and_its_canary_is_nowhere_bt_writes(
    tmp_path: Path, engine: str, docker_cli: str, kind: str
) -> None:
    token_file = tmp_path / "outside" / "hf-token"  # outside the workspace, absolute
    token_file.parent.mkdir()
    token_file.write_text(CANARY)
    source = '{"env": "BT_TEST_HF_TOKEN"}' if kind == "env" else f'{{"src": "{token_file}"}}'
    build = (
        f'image(name = "app", context = "app", args = {{"HF_TOKEN": "{ARG_CANARY}"}},\n'
        f'      secrets = {{"tok": {source}}})\n'
    )
    root = workspace(tmp_path / "ws", engine, build)
    env = {"BT_TEST_HF_TOKEN": CANARY, "DOCKER_HOST": engine}
    done = bt("build", "//...", "--json", cwd=root, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["event"] for e in events if e["event"] == "finished"] == ["finished"]
    warning = next(e["message"] for e in events if e["event"] == "warning")
    assert "build arg HF_TOKEN looks like a secret" in warning and "secrets =" in warning
    log = next((root / ".bt-cache" / "logs").rglob("*.log")).read_text()
    assert "secret arrived" in log and f"--secret id=tok,{kind}=" in log
    outputs = [done.stdout, done.stderr]
    outputs.append(bt("why", "//...", cwd=root, env=env, check=True).stdout)
    outputs.append(bt("plan", "//...", "--format", "json", cwd=root, env=env, check=True).stdout)
    outputs.append(bt("query", "//...", "--output", "json", cwd=root, env=env, check=True).stdout)
    outputs.append(bt("inputs", "//:app", cwd=root, env=env, check=True).stdout)
    for text in outputs:
        assert CANARY not in text and ARG_CANARY not in text
    for needle in (CANARY, ARG_CANARY):
        assert files_holding(root / ".bt-cache", needle) == []
    assert CANARY not in (root / "images.lock").read_text()
    assert ARG_CANARY not in (root / "images.lock").read_text()


@pytest.mark.engine
def test_undeclared_and_unmounted_secrets_are_warnings_not_errors(
    tmp_path: Path, engine: str, docker_cli: str
) -> None:
    build = 'image(name = "app", context = "app", secrets = {"spare": {"env": "BT_UNSET_VAR"}})\n'
    root = workspace(tmp_path / "ws", engine, build)
    (root / "app/Dockerfile").write_text(
        "FROM bt-test/busybox:latest\n"
        "RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent\n"
    )
    done = bt("build", "//...", "--json", cwd=root, env={"DOCKER_HOST": engine})
    assert done.returncode == 0, done.stdout + done.stderr
    warnings = [
        json.loads(line)["message"]
        for line in done.stdout.splitlines()
        if json.loads(line)["event"] == "warning"
    ]
    assert warnings == [
        "app/Dockerfile:2: RUN mounts secret 'absent', which //:app does not declare, so "
        "BuildKit builds without it: declare it in secrets of BUILD.images:1 or [secrets] of "
        ".cache-spec",
        "secret 'spare' of //:app (BUILD.images:1) is mounted by no RUN of the stages this "
        "build reaches: it is neither passed nor keyed",
    ]


@pytest.mark.engine
def test_a_build_without_its_secret_fails_not_silently_empty(
    tmp_path: Path, engine: str, docker_cli: str
) -> None:
    """The RUN that needs the secret fails when BuildKit gets another value: bt passes the
    secret it was told, and nothing else (this is what proves the test above checks)."""
    build = 'image(name = "app", context = "app", secrets = {"tok": {"env": "BT_TEST_TOK"}})\n'
    root = workspace(tmp_path / "ws", engine, build)
    done = bt("build", "//...", cwd=root, env={"BT_TEST_TOK": "not-the-canary"})
    assert done.returncode == 1, done.stderr
    assert "FAILED //:app" in done.stderr


def test_a_missing_secret_fails_before_any_build_with_its_line(tmp_path: Path) -> None:
    build = '\n\nimage(name = "app", context = "app",\n      secrets = {"tok": {"env": "BT_UNSET_VAR"}})\n'
    root = workspace(tmp_path / "ws", "unix:///nowhere", build)
    done = bt("build", "//...", cwd=root)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "BUILD.images:3: secret 'tok' of //:app: environment variable BT_UNSET_VAR is not set"
    )
    assert not (root / "images.lock").exists()
    (root / "BUILD.images").write_text(build.replace('{"env": "BT_UNSET_VAR"}', '{"src": "../no"}'))
    done = bt("build", "//...", cwd=root)
    assert done.returncode == 2
    assert "BUILD.images:3: secret 'tok' of //:app: cannot read file" in done.stderr
    assert "No such file or directory" in done.stderr


def test_the_engine_api_backend_refuses_secrets_before_any_build(tmp_path: Path) -> None:
    build = 'image(name = "app", context = "app", secrets = {"tok": {"env": "BT_TEST_TOK"}})\n'
    extra = '[builders."linux/amd64"]\nbackend = "engine"\n'
    root = workspace(tmp_path / "ws", "unix:///nowhere", build)
    (root / ".cache-spec").write_text(
        'platforms = ["linux/amd64"]\ncache_dir = ".bt-cache"\n' + extra
    )
    done = bt("build", "//...", cwd=root, env={"BT_TEST_TOK": CANARY})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "BUILD.images:1: //:app has build secrets (tok), which the engine backend of linux/amd64 "
        'cannot pass (the classic builder has no secret mounts); set backend = "buildkit" in '
        '[builders."linux/amd64"] of .cache-spec'
    )


def test_an_early_failure_prints_no_secret_looking_arg_value(tmp_path: Path) -> None:
    """A value that ends up in an image reference fails its pin; the message hides it."""
    build = f'image(name = "app", context = "app", args = {{"BASE_TOKEN": "{ARG_CANARY}"}})\n'
    root = workspace(tmp_path / "ws", "unix:///nowhere", build)
    (root / "app/Dockerfile").write_text("ARG BASE_TOKEN\nFROM ${BASE_TOKEN}:UPPER\n")
    done = bt("build", "//...", cwd=root)
    assert done.returncode == 1, done.stderr
    assert ARG_CANARY not in done.stderr + done.stdout
    assert REDACTED in done.stderr


# -- the cache directory and contexts --------------------------------------------------------


@pytest.mark.engine
def test_a_cache_directory_inside_the_context_is_never_sent(
    tmp_path: Path, engine: str, docker_cli: str
) -> None:
    root = workspace(tmp_path / "ws", engine, 'image(name = "app")\n')
    (root / "Dockerfile").write_text("FROM bt-test/busybox:latest\nCOPY . /ctx/\n")
    env = {"DOCKER_HOST": engine}
    bt("plan", "//...", cwd=root, env=env, check=True)  # fills .bt-cache inside the context
    assert any((root / ".bt-cache").iterdir())
    done = bt("build", "//...", "--json", cwd=root, env=env, check=True)
    image = next(
        json.loads(line)["digest"]
        for line in done.stdout.splitlines()
        if json.loads(line)["event"] == "finished"
    )
    listing = subprocess.run(
        [DOCKER, "-H", engine, "run", "--rm", "--network=none", image, "ls", "-a", "/ctx"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert "BUILD.images" in listing and ".cache-spec" in listing
    assert ".bt-cache" not in listing and "images.lock" not in listing


# -- secret-looking values in engine and registry errors --------------------------------------


def _echoing_registry(method: str, path: str, headers: dict[str, str], body: bytes):  # type: ignore[no-untyped-def]
    # A registry whose error text repeats the reference it was asked for (a real one cannot be
    # made to fail that way on demand): the text reaches bt's messages and logs.
    return 400, {"Content-Type": "application/json"}, json.dumps({"errors": [path]}).encode()


@pytest.mark.engine
@pytest.mark.parametrize("fails_in", ["engine", "pin lookup", "registry"])
def test_a_secret_looking_value_in_engine_and_registry_errors_is_nowhere_bt_writes(
    tmp_path: Path, engine: str, registry: str, docker_cli: str, fails_in: str
) -> None:
    from registries import fake_registry

    value = f"pw{uuid.uuid4().hex}"
    with fake_registry(_echoing_registry) as echoing:
        dockerfile = {
            "engine": "FROM bt-test/busybox:latest\nARG DB_PASSWORD\nRUN echo $DB_PASSWORD; exit 3\n",
            "pin lookup": f"ARG DB_PASSWORD\nFROM {registry}/{tmp_path.name}:${{DB_PASSWORD}}\n",
            "registry": f"ARG DB_PASSWORD\nFROM {echoing}/x:${{DB_PASSWORD}}\n",
        }[fails_in]
        build = f'image(name = "app", context = "app", args = {{"DB_PASSWORD": "{value}"}})\n'
        root = workspace(tmp_path / "ws", engine, build, f'[registry]\nurl = "{registry}/bt"\n')
        (root / "app/Dockerfile").write_text(dockerfile + "COPY data.txt /\n")
        env = {"DOCKER_HOST": engine, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
        outputs = []
        for args in (["build", "//..."], ["build", "//...", "--json"], ["plan", "//..."]):
            done = bt(*args, cwd=root, env=env)
            outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0  # the plan
        assert [o.count("FAILED") for o in outputs[:1]] == [1], outputs[0]
    for text in outputs:
        assert value not in text, text
    log = next((root / ".bt-cache" / "logs").rglob("*.log")).read_text()
    assert REDACTED in log, log
    for top in (root / ".bt-cache", root / "app", tmp_path / "xdg"):
        assert files_holding(top, value) == []
    assert [p.name for p in root.iterdir() if p.is_file() and value in p.read_text()] == [
        "BUILD.images"  # where the user wrote it
    ]
