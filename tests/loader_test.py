"""BUILD.images evaluation: the language, the builtins, and the one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from btrun import bt, write_tree

from buildtool.workspace.config import load_config
from buildtool.workspace.labels import Label
from buildtool.workspace.loader import load_workspace
from buildtool.workspace.target import Location

SPEC = 'platforms = ["linux/amd64", "linux/arm64"]\n'
DOCKERFILE = "FROM scratch\nCOPY a.txt /a.txt\n"


def make(tmp_path: Path, build: str, extra: dict[str, str] | None = None) -> Path:
    root = tmp_path / "ws"
    write_tree(root, {".cache-spec": SPEC, "BUILD.images": build, "Dockerfile": DOCKERFILE,
                      "a.txt": "a\n", **(extra or {})})  # fmt: skip
    return root


def load(root: Path):  # type: ignore[no-untyped-def]
    return load_workspace(load_config(root))


def test_loops_functions_comprehensions_and_formatting_declare_targets(tmp_path: Path) -> None:
    root = make(
        tmp_path,
        """
MODELS = ["tiny", "base"]
LANGS = {"en": "English", "zh": "Chinese"}

def model_image(m):
    return image(name = m, package = "model", args = {"MODEL": m})

[model_image(m) for m in MODELS]
for m in MODELS:
    for lang in sorted(LANGS):
        image(
            package = "matrix",
            name = "{}-{}".format(m, lang),
            args = {"LANG": lang, "TITLE": "%s (%s)" % (LANGS[lang], m), "F": f"{m}/{lang}"},
            parents = {"BASE": "//model:" + m},
            tests = ["--help"],
        )
""",
    )
    loaded = load(root)
    assert sorted(str(label) for label in loaded.targets) == [
        "//matrix:base-en", "//matrix:base-zh", "//matrix:tiny-en", "//matrix:tiny-zh",
        "//model:base", "//model:tiny",
    ]  # fmt: skip
    target = loaded.targets[Label("matrix", "tiny-zh")]
    assert dict(target.args) == {"F": "tiny/zh", "LANG": "zh", "TITLE": "Chinese (tiny)"}
    assert target.parents == (("BASE", Label("model", "tiny")),)
    assert target.platforms == ("linux/amd64", "linux/arm64")
    assert target.tags == ("tiny-zh",)
    assert target.repository == "matrix"
    assert target.tests == ("--help",)
    assert target.dockerfile == "Dockerfile" and target.context == ""
    assert target.location.path == "BUILD.images" and target.location.line == 11


def test_subdirectory_build_files_are_their_own_packages(tmp_path: Path) -> None:
    root = make(
        tmp_path,
        'image(name = "top")\n',
        {
            "svc/api/BUILD.images": 'image(name = "api", parents = {"B": "//:top"})\n'
            'image(name = "worker", package = "jobs", parents = {"B": ":api"})\n',
            "svc/api/Dockerfile": DOCKERFILE,
        },
    )
    loaded = load(root)
    api = loaded.targets[Label("svc/api", "api")]
    assert api.context == "svc/api" and api.dockerfile == "svc/api/Dockerfile"
    worker = loaded.targets[Label("svc/api/jobs", "worker")]
    # a relative parent label resolves in the package the target is declared in
    assert worker.parents == (("B", Label("svc/api/jobs", "api")),)
    assert loaded.build_files == ("BUILD.images", "svc/api/BUILD.images")


def test_a_directory_with_its_own_cache_spec_is_another_workspace(tmp_path: Path) -> None:
    nested = {".cache-spec": SPEC, "BUILD.images": 'image(name = "inner")\n', "a.txt": "a\n"}
    root = make(
        tmp_path,
        'image(name = "top")\n',
        {
            **{f"examples/inner/{rel}": text for rel, text in nested.items()},
            "examples/inner/Dockerfile": DOCKERFILE,
            "examples/inner/deeper/BUILD.images": 'image(name = "deeper")\n',
        },
    )
    assert load(root).build_files == ("BUILD.images",)
    inner = load_workspace(load_config(root / "examples/inner"))
    assert inner.build_files == ("BUILD.images", "deeper/BUILD.images")
    assert sorted(map(str, inner.targets)) == ["//:inner", "//deeper:deeper"]


def test_relative_query_labels_resolve_against_the_current_package(tmp_path: Path) -> None:
    root = make(
        tmp_path,
        'image(name = "top")\n',
        {"svc/BUILD.images": 'image(name = "api", context = "..")\n'},
    )
    out = bt("query", ":api", cwd=root / "svc", check=True).stdout
    assert out.splitlines() == ["//svc:api"]


def test_glob_lists_files_below_the_build_file_sorted(tmp_path: Path) -> None:
    root = make(
        tmp_path,
        'FILES = glob(["conf/**/*.txt"], exclude = ["conf/skip.txt"])\n'
        'image(name = "x", args = {"FILES": ",".join(FILES)})\n',
        {"conf/b.txt": "", "conf/a/c.txt": "", "conf/skip.txt": "", "conf/d.md": ""},
    )
    target = load(root).targets[Label("", "x")]
    assert dict(target.args) == {"FILES": "conf/a/c.txt,conf/b.txt"}


def test_dict_order_in_build_files_does_not_change_the_target(tmp_path: Path) -> None:
    one = load(make(tmp_path / "1", 'image(name = "x", args = {"A": "1", "B": "2"})\n'))
    two = load(make(tmp_path / "2", 'image(name = "x", args = {"B": "2", "A": "1"})\n'))
    assert one.targets[Label("", "x")].args == two.targets[Label("", "x")].args


# Every bad input: one line `path:line: message`, exit code 2, nothing written.
BAD_BUILD_FILES = [
    ("syntax", 'image(name = "x"\n', "BUILD.images:1: syntax error"),
    ("import", "import os\n", "BUILD.images:1: import is not allowed"),
    ("from-import", "from os import path\n", "BUILD.images:1: import is not allowed"),
    ("dunder-import", '__import__("os")\n', "BUILD.images:1: names starting with '__'"),
    ("class-escape", "x = ().__class__\n", "BUILD.images:1: access to attribute '__class__'"),
    ("subclasses", "x = [].__class__.__base__.__subclasses__()\n", "access to attribute"),
    ("open", 'open("/etc/passwd")\n', "BUILD.images:1: name 'open' is not defined"),
    ("eval", 'eval("1")\n', "BUILD.images:1: name 'eval' is not defined"),
    ("getattr", 'getattr(1, "real")\n', "BUILD.images:1: name 'getattr' is not defined"),
    ("format-escape", 'x = "{0.__class__}".format(1)\n', "BUILD.images:1: ValueError: format field"),
    ("gi-frame", "x = (i for i in []).gi_frame\n", "BUILD.images:1: AttributeError"),
    ("while", "while True:\n    pass\n", "BUILD.images:1: 'while' is not allowed"),
    ("class", "class A:\n    pass\n", "BUILD.images:1: 'class' is not allowed"),
    ("try", "try:\n    x = 1\nexcept:\n    pass\n", "BUILD.images:1: 'try' is not allowed"),
    ("set", "x = {1, 2}\n", "BUILD.images:1: sets are not allowed"),
    ("recursion", "def f(n):\n    return f(n)\nf(1)\n", "BUILD.images:2: recursion is not allowed"),
    ("runtime", "x = 1\ny = x + 'a'\n", "BUILD.images:2: TypeError"),
    ("unknown-name", "image(name = nme)\n", "BUILD.images:1: name 'nme' is not defined"),
    ("unknown-kwarg", 'image(name = "x", dockerfil = "D")\n',
     "BUILD.images:1: image() has no argument 'dockerfil' (did you mean dockerfile=?)"),
    ("bake-target", 'image(name = "x", target = "final")\n',
     "BUILD.images:1: image() has no argument 'target' (did you mean stage=?)"),
    ("contexts-list", 'image(name = "x", contexts = [":y"])\n',
     "BUILD.images:1: contexts must be a dict of strings"),
    ("positional", 'image("x")\n',
     "BUILD.images:1: image() takes keyword arguments only, e.g. image(name = ...)"),
    ("missing-name", 'image(stage = "x")\n', "BUILD.images:1: image() needs argument 'name'"),
    ("glob-arity", 'glob(["*"], 3)\n', "BUILD.images:1: glob(): too many positional arguments"),
    ("tag-with-repo", 'image(name = "x", tags = ["base:cpu"])\n',
     "BUILD.images:1: invalid tag 'base:cpu': a tag has no repository; write repository = 'base', tags = ['cpu']"),
    ("bad-name", 'image(name = "a b")\n', "BUILD.images:1: invalid target name 'a b'"),
    ("duplicate", 'image(name = "x")\n\nimage(name = "x")\n',
     "BUILD.images:3: duplicate target //:x (first declared at BUILD.images:1)"),
    ("escape-context", 'image(name = "x", context = "../..")\n',
     "BUILD.images:1: context '../..' points outside the workspace"),
    ("bad-platform", 'image(name = "x", platforms = ["amd64"])\n',
     "BUILD.images:1: invalid platform 'amd64'"),
    ("unknown-stage", 'image(name = "x", stage = "buidl")\n',
     "BUILD.images:1: //:x: target stage 'buidl' could not be found; available stages: none are named (Dockerfile)"),
    ("platform-typo", 'image(name = "x", platforms = ["linux/amd65"])\n',
     "BUILD.images:1: invalid platform 'linux/amd65': unknown architecture 'amd65' (did you mean amd64?)"),
    ("one-tag-two-images", 'image(name = "a", repository = "r", tags = ["cpu"])\n'
     'image(name = "b", repository = "r", tags = ["cpu"])\n',
     "BUILD.images:2: //:b and //:a (declared at BUILD.images:1) are both image r:cpu: give one of them other tags, repository or aliases"),
    # Tags and repositories follow Docker's reference grammar (buildtool.registry.reference).
    ("bad-tag", 'image(name = "x", tags = ["v1", "caf\u00e9"])\n', "BUILD.images:1: invalid tag 'caf\u00e9'"),
    ("bad-repository", 'image(name = "x", repository = "acme/a..b")\n',
     "BUILD.images:1: invalid repository 'acme/a..b' (lower-case path components)"),
    ("args-type", 'image(name = "x", args = {"A": ["1"]})\n',
     "BUILD.images:1: args['A'] must be a string"),
    ("unknown-parent", 'image(name = "large-v3")\nimage(name = "zh", parents = {"P": ":larg-v3"})\n',
     "BUILD.images:2: parent //:larg-v3 of //:zh (P) not found (did you mean //:large-v3?)"),
    ("cycle", 'image(name = "a", parents = {"P": ":b"})\nimage(name = "b", parents = {"P": ":c"})\n'
     'image(name = "c", parents = {"P": ":a"})\n',
     "dependency cycle: //:a -> //:b -> //:c -> //:a"),
    ("platform-mismatch", 'image(name = "p", platforms = ["linux/amd64"])\n'
     'image(name = "c", parents = {"P": ":p"})\n',
     "BUILD.images:2: //:c builds for linux/arm64 but its parent //:p (P) has only linux/amd64"),
    ("fail", 'fail("no models configured")\n', "BUILD.images:1: fail: no models configured"),
    ("range-bomb", "x = range(10000000000)\n",
     "BUILD.images:1: range of 10000000000 elements is larger than the size budget (1000000)"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "source", "message"), BAD_BUILD_FILES, ids=lambda v: str(v)[:20])
def test_bad_build_file_gives_one_line_and_exit_2(
    tmp_path: Path, case: str, source: str, message: str
) -> None:
    root = make(tmp_path, source)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    result = bt("query", "//...", cwd=root)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


BAD_SPECS = [
    ("toml", 'platforms = ["linux/amd64"\n', ".cache-spec:2: invalid TOML"),
    ("unknown-key", 'jobs = 2\ncahce_dir = "x"\n', ".cache-spec:2: unknown key 'cahce_dir'"),
    ("jobs", "jobs = 0\n", ".cache-spec:1: jobs must be a positive integer"),
    ("platform", 'platforms = ["linux"]\n', ".cache-spec:1: invalid platform 'linux'"),
    ("backend", '[builders."linux/arm64"]\nbackend = "qemu"\n',
     ".cache-spec:2: builder backend must be one of buildkit, engine"),
    ("host", '[builders."linux/arm64"]\nhost = "/var/run/docker.sock"\n',
     ".cache-spec:2: builder host must start with unix://, tcp:// or ssh://"),
    ("registry", '[registry]\nurl = "https://r.example"\n',
     ".cache-spec:2: registry.url must be host[:port][/prefix], without a scheme"),
    ("registry-path", '[registry]\nurl = "127.0.0.1:5000/Team"\n',
     ".cache-spec:2: registry.url path 'Team' must be lower-case path components"),
    ("global", 'global_inputs = ["../outside"]\n',
     ".cache-spec:1: global input '../outside' must be a path inside the workspace"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "spec", "message"), BAD_SPECS, ids=lambda v: str(v)[:20])
def test_bad_cache_spec_gives_one_line_and_exit_2(
    tmp_path: Path, case: str, spec: str, message: str
) -> None:
    root = make(tmp_path, 'image(name = "x")\n', {".cache-spec": spec})
    result = bt("query", "//...", cwd=root)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(message)


def test_no_workspace_is_a_clear_error(tmp_path: Path) -> None:
    result = bt("query", "//...", cwd=tmp_path)
    assert result.returncode == 2
    assert "no .cache-spec found" in result.stderr


def test_a_missing_dockerfile_is_reported_at_the_target_that_names_it(tmp_path: Path) -> None:
    root = make(tmp_path, 'image(name = "x", context = "nope")\n', {"nope/README": "no Dockerfile"})
    result = bt("plan", "//...", cwd=root)
    assert (result.returncode, result.stderr.splitlines()) == (
        2,
        [
            "BUILD.images:1: //:x: cannot read Dockerfile: No such file or directory (nope/Dockerfile)"
        ],
    )


def test_inputs_and_tests_keep_where_and_how_they_are_written(tmp_path: Path) -> None:
    root = make(
        tmp_path,
        """
common = {"inputs": ["b.txt"]}
image(
    name = "own-line",
    inputs = ["a.txt"],
    tests = ["test -f /a.txt && echo ok", ["--version"]],
)
image(name = "spread", **common)
""",
    )
    targets = load(root).targets
    own = targets[Label("", "own-line")]
    assert (own.location.line, own.inputs_location) == (3, Location("BUILD.images", 5))
    assert own.tests == ("test -f /a.txt && echo ok", ("--version",))
    spread = targets[Label("", "spread")]
    assert spread.inputs_location == Location("BUILD.images", 8)  # the call's line
