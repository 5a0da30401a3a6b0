"""The evaluation of a build follows dockerfile2llb: reachability, ARG/ENV, platforms, reads."""

from __future__ import annotations

import string

import pytest
from dockerfile_cases import parse, paths, reads
from hypothesis import given, settings
from hypothesis import strategies as st

from buildtool.dockerfile import (
    ImageRef,
    SecretMount,
    SourceRef,
    StageReads,
    context_reads,
    parse_dockerfile,
)
from buildtool.errors import BtError

# --- targets and reachability --------------------------------------------------------------------

MULTI = """
    FROM scratch AS deps
    COPY requirements.txt /

    FROM deps AS build
    COPY src/ /src/

    FROM scratch AS docs
    COPY docs/ /docs/

    FROM alpine AS test
    COPY --from=BUILD /src /src
    COPY tests/ /tests/

    FROM scratch
    COPY --from=1 /src /app
    COPY README.md /
    """


def test_default_target_is_the_last_stage_and_unreached_stages_read_nothing() -> None:
    result = reads(MULTI)
    assert paths(result) == ["requirements.txt", "src", "README.md"]
    assert result.stage_lines == ((1, 2), (4, 5), (14, 16))
    assert result.external_bases == ()


def test_named_target_reaches_copy_from_stages_case_insensitively() -> None:
    result = reads(MULTI, stage="Test")
    assert paths(result) == ["requirements.txt", "src", "tests"]
    assert result.external_bases == ("alpine",)


def test_unknown_target_names_the_available_stages() -> None:
    with pytest.raises(BtError) as caught:
        reads(MULTI, stage="buidl")
    assert str(caught.value) == (
        "Dockerfile: target stage 'buidl' could not be found (did you mean build?); "
        "available stages: deps, build, docs, test"
    )


def test_copy_from_an_image_is_no_context_read() -> None:
    result = reads("FROM scratch\nCOPY --from=busybox:1.36 /bin/sh /sh\nCOPY --from=scratch / /\n")
    assert result.sources == ()
    assert result.from_images == ("busybox:1.36",)


def test_from_names_only_stages_declared_above_it() -> None:
    result = reads("FROM later\nCOPY a /\nFROM scratch AS later\nCOPY b /\n", stage=None)
    assert paths(result) == ["b"]
    result = reads("FROM later\nCOPY a /\nFROM scratch AS later\nCOPY b /\n", stage="later")
    assert paths(result) == ["b"]
    first = context_reads(parse("FROM later\nCOPY a /\nFROM scratch AS later\n"), None, {})
    assert first.external_bases == ()


def test_copy_from_a_later_stage_makes_the_whole_context_count() -> None:
    result = reads("FROM scratch AS a\nCOPY --from=b / /\nFROM scratch AS b\nCOPY x /\n", "a")
    assert result.whole_context is not None
    assert "not defined before it" in result.whole_context


def test_run_mount_from_a_stage_reaches_it() -> None:
    result = reads(
        """
        FROM scratch AS assets
        COPY assets/ /assets/
        FROM alpine
        RUN --mount=type=bind,from=assets,source=/assets,target=/a cp -r /a /out
        """
    )
    assert paths(result) == ["assets"]
    assert result.has_run


def test_stage_named_scratch_is_the_source_of_mounts_without_from() -> None:
    result = reads(
        """
        FROM alpine AS scratch
        COPY seed /seed
        FROM alpine
        RUN --mount=type=cache,target=/cache true
        """
    )
    assert paths(result) == ["seed"]


# --- ARG, ENV and substitution -------------------------------------------------------------------


def test_whisperx_shaped_dockerfile_resolves_model_paths_from_build_args() -> None:
    text = """
        ARG NO_MODEL_STAGE=no_model
        FROM scratch AS no_model
        COPY whisperX/ /app/
        FROM ${NO_MODEL_STAGE} AS final
        ARG WHISPER_MODEL
        COPY models/${WHISPER_MODEL}/ /models/
        """
    local = reads(text, args={"WHISPER_MODEL": "large-v3"})
    assert paths(local) == ["whisperX", "models/large-v3"]
    assert local.whole_context is None

    parent = "registry.example/whisperx:no_model@sha256:" + "a" * 64
    with_parent = reads(text, args={"NO_MODEL_STAGE": parent, "WHISPER_MODEL": "tiny"})
    assert paths(with_parent) == ["models/tiny"]
    assert with_parent.external_bases == (parent,)
    assert with_parent.stage_lines == ((4, 6),)

    unset = reads(text, args={"NO_MODEL_STAGE": parent})
    assert unset.sources == ()
    assert unset.whole_context == (
        "line 6: cannot resolve COPY source 'models/${WHISPER_MODEL}/': variable "
        f"WHISPER_MODEL is not set in the Dockerfile and may be set by image {parent}"
    )


def test_meta_arg_is_visible_in_a_stage_only_when_redeclared() -> None:
    text = """
        ARG DIR=meta
        FROM scratch
        COPY a/${DIR} /
        ARG DIR
        COPY b/${DIR} /
        ARG DIR=stage
        COPY c/${DIR} /
        """
    assert paths(reads(text)) == ["a", "b/meta", "c/stage"]
    assert paths(reads(text, args={"DIR": "cli"})) == ["a", "b/cli", "c/cli"]


def test_build_args_are_invisible_without_an_arg_declaration() -> None:
    assert paths(reads("FROM scratch\nCOPY src/${X} /\n", args={"X": "secret"})) == ["src"]


def test_undefined_variable_is_empty_on_a_scratch_base() -> None:
    result = reads("FROM scratch\nCOPY ${NOPE}/file ${NOPE} /dst\n")
    assert paths(result) == ["file", "."]
    assert result.whole_context is None


def test_arg_without_value_stays_unset_and_falls_through_to_the_base_image() -> None:
    result = reads("FROM debian\nARG VERSION\nCOPY app-${VERSION}.jar /\n")
    assert result.whole_context is not None
    assert "variable VERSION is not set in the Dockerfile and may be set by image debian" in (
        result.whole_context
    )
    assert paths(
        reads("FROM debian\nARG VERSION\nCOPY app-${VERSION}.jar /\n", args={"VERSION": "2"})
    ) == ["app-2.jar"]


def test_env_sets_variables_for_later_instructions_not_its_own() -> None:
    result = reads(
        """
        FROM scratch
        ENV A=one
        ENV A=two B=${A}
        COPY ${A}/${B} /
        ENV C three
        COPY ${C} /
        """
    )
    assert paths(result) == ["two/one", "three"]


def test_arg_defaults_see_earlier_args_of_the_same_instruction_except_on_docker_20_10() -> None:
    # Current BuildKit gives B=xy; Docker 20.10's frontend (checked on a real engine) B=y.
    assert paths(reads("FROM scratch\nARG A=x B=${A}y\nCOPY ${B} /\n")) == ["xy", "y"]


def test_meta_arg_without_value_hides_platform_args_on_docker_20_10() -> None:
    text = "ARG TARGETARCH\nFROM scratch\nARG TARGETARCH\nCOPY bin/${TARGETARCH} /\n"
    # Current BuildKit copies bin/amd64; Docker 20.10 (checked on a real engine) copies bin.
    assert paths(reads(text, platform="linux/amd64")) == ["bin/amd64", "bin"]
    assert paths(reads(text, args={"TARGETARCH": "arm64"})) == ["bin/arm64"]


def test_later_env_overrides_arg_and_later_arg_overrides_env() -> None:
    text = "FROM scratch\nARG V=arg\nENV V=env\nCOPY ${V} /\nARG V=again\nCOPY ${V} /\n"
    assert paths(reads(text)) == ["env", "again"]


def test_child_stage_inherits_environment_of_its_base_stage() -> None:
    text = (
        "FROM scratch AS base\nARG FLAVOR=slim\nENV DIR=conf\nFROM base\nCOPY ${DIR}/${FLAVOR} /\n"
    )
    assert paths(reads(text)) == ["conf/slim"]


def test_from_resolves_meta_args_and_build_args() -> None:
    text = "ARG REPO=library\nARG TAG\nFROM ${REPO}/python:${TAG:-3.12}\nCOPY . /app\n"
    assert reads(text).external_bases == ("library/python:3.12",)
    assert reads(text, args={"TAG": "3.11", "REPO": "mirror"}).external_bases == (
        "mirror/python:3.11",
    )


def test_blank_base_name_makes_the_whole_context_count() -> None:
    result = reads("FROM ${UNDECLARED}\nCOPY a /\n", args={"UNDECLARED": "alpine"})
    assert result.whole_context == (
        "line 1: FROM ${UNDECLARED}: base name should not be blank (Docker fails this build)"
    )


def test_env_with_an_unknown_name_makes_later_lookups_unknown() -> None:
    text = "FROM scratch\nARG TARGETOS\nENV ${TARGETOS}_DIR=x\nCOPY ${OTHER} /\n"
    result = reads(text)
    assert result.whole_context is not None
    assert "the name set by ENV at line 3 is unknown" in result.whole_context
    assert paths(reads(text, platform="linux/amd64")) == ["."]


def test_variables_set_in_the_dockerfile_are_known_on_an_image_base() -> None:
    assert reads("FROM debian\nENV D=data\nCOPY ${D} /\n").sources == (
        SourceRef("data", 3, "COPY", False),
    )


def test_run_commands_are_not_substituted() -> None:
    result = reads("FROM scratch\nRUN echo ${BROKEN\n")
    assert (result.has_run, result.whole_context) == (True, None)


# --- platform args -----------------------------------------------------------------------------


PLATFORM_DOCKERFILE = """
    FROM scratch
    ARG TARGETARCH
    ARG TARGETVARIANT
    ARG TARGETPLATFORM
    COPY bin/${TARGETARCH}${TARGETVARIANT}/app ${TARGETPLATFORM} /
    """


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ("linux/amd64", ["bin/amd64/app", "linux/amd64"]),
        ("linux/arm64/v8", ["bin/arm64/app", "linux/arm64"]),
        ("linux/arm", ["bin/armv7/app", "linux/arm/v7"]),
        ("Linux/AArch64", ["bin/arm64/app", "linux/arm64"]),
    ],
)
def test_target_platform_args_follow_containerd_normalisation(
    platform: str, expected: list[str]
) -> None:
    assert paths(reads(PLATFORM_DOCKERFILE, platform=platform)) == expected


def test_platform_args_are_unknown_without_a_platform() -> None:
    result = reads(PLATFORM_DOCKERFILE)
    assert result.whole_context is not None
    assert "TARGETPLATFORM is not known (the target platform was not given)" in (
        result.whole_context
    )


def test_build_args_override_platform_args() -> None:
    result = reads(
        PLATFORM_DOCKERFILE,
        args={"TARGETARCH": "riscv64", "TARGETVARIANT": "", "TARGETPLATFORM": "x"},
    )
    assert paths(result) == ["bin/riscv64/app", "x"]


def test_platform_args_need_an_arg_declaration_inside_a_stage() -> None:
    result = reads("FROM scratch\nCOPY bin/${TARGETARCH} /\n", platform="linux/amd64")
    assert paths(result) == ["bin"]


def test_invalid_platform_parameter_is_rejected() -> None:
    with pytest.raises(BtError, match="invalid platform 'amd64'"):
        reads("FROM scratch\n", platform="amd64")


# --- COPY and ADD sources -------------------------------------------------------------------------


def test_sources_are_normalised_relative_to_the_context() -> None:
    result = reads("FROM scratch\nCOPY /abs ./rel ../../up dir/ a/./b//c . /dst/\n")
    assert paths(result) == ["abs", "rel", "up", "dir", "a/b/c", "."]


def test_copy_parents_and_excludes_are_recorded_verbatim() -> None:
    result = reads(
        "FROM scratch\nARG X=y\n"
        "COPY --parents --exclude=*.pyc --exclude=$X src/./pkg/*.py /app/\n"
        "COPY --parents=false a /b\n"
    )
    assert result.sources == (
        SourceRef("src/pkg/*.py", 3, "COPY", True, ("*.pyc", "$X")),
        SourceRef("a", 4, "COPY", False, ()),
    )


def test_add_excludes_are_recorded_verbatim_on_each_of_its_sources() -> None:
    result = reads("FROM scratch\nARG X=y\nADD --exclude=*.md --exclude=$X docs/ extra /d/\n")
    assert result.sources == (
        SourceRef("docs", 3, "ADD", False, ("*.md", "$X")),
        SourceRef("extra", 3, "ADD", False, ("*.md", "$X")),
    )


def test_add_urls_and_git_repositories_are_remote_sources() -> None:
    result = reads(
        """
        FROM scratch
        ARG V=1.2
        ADD https://example.com/tool-${V}.tar.gz /opt/
        ADD https://github.com/moby/buildkit.git#v0.12 /src/
        ADD git@github.com:moby/buildkit.git /src2/
        ADD ssh://git.example.com/repo /src3/
        ADD local.tar.gz github.com/not/remote /x/
        """
    )
    assert result.remote_sources == (
        "https://example.com/tool-1.2.tar.gz",
        "https://github.com/moby/buildkit.git#v0.12",
        "git@github.com:moby/buildkit.git",
        "ssh://git.example.com/repo",
    )
    # Docker 20.10's frontend fetches only http(s) URLs and reads the others from the context.
    assert paths(result) == [
        "git@github.com:moby/buildkit.git",
        "ssh:/git.example.com/repo",
        "local.tar.gz",
        "github.com/not/remote",
    ]


def test_copy_of_a_url_makes_the_whole_context_count() -> None:
    result = reads("FROM scratch\nCOPY https://example.com/f /\n")
    assert result.whole_context == (
        "line 2: COPY source 'https://example.com/f' is a URL, which COPY does not accept "
        "(Docker fails this build)"
    )


def test_heredoc_sources_mix_with_context_sources() -> None:
    text = "FROM scratch\nCOPY <<EOF conf.d/ /etc/\ninline\nEOF\n"
    assert paths(context_reads(parse_dockerfile(text, "Dockerfile"), None, {})) == ["conf.d"]


# --- RUN --mount --------------------------------------------------------------------------------


def test_bind_mounts_read_their_source_from_the_context() -> None:
    result = reads(
        """
        FROM alpine
        ARG REQ=requirements.txt
        RUN --mount=type=bind,source=${REQ},target=/r \\
            --mount=src=vendor,dst=/v,ro \\
            --mount=target=/ctx \\
            --mount="type=bind,source=a b" \\
            pip install -r /r
        """
    )
    assert result.sources == (
        SourceRef("requirements.txt", 3, "RUN --mount", False),
        SourceRef("vendor", 3, "RUN --mount", False),
        SourceRef(".", 3, "RUN --mount", False),
        SourceRef("a b", 3, "RUN --mount", False),
        # Docker 20.10's frontend does not substitute mount values.
        SourceRef("${REQ}", 3, "RUN --mount", False),
    )


def test_other_mount_types_read_nothing_from_the_context() -> None:
    result = reads(
        """
        FROM alpine
        RUN --mount=type=cache,target=/root/.cache \\
            --mount=type=tmpfs,target=/tmp \\
            --mount=type=secret,id=token \\
            --mount=type=ssh \\
            --mount=type=bind,from=golang:1.22,source=/usr/local/go,target=/go \\
            true
        """
    )
    assert (result.sources, result.from_images, result.has_run) == ((), ("golang:1.22",), True)


def test_secret_mounts_of_reached_stages_name_the_id_buildkit_asks_for() -> None:
    text = """
        # syntax=docker/dockerfile:1
        FROM scratch AS unreached
        RUN --mount=type=secret,id=never true

        FROM alpine
        ARG WHICH=npm
        RUN --mount=type=secret,id=hf \\
            --mount=type=secret,id=tok,required \\
            --mount=type=secret,target=/root/.config/deploy_key,required=True \\
            --mount=type=secret,src=legacy,required=false \\
            --mount=type=secret,id=${WHICH}rc \\
            --mount=type=secret,env=NO_ID \\
            true
        RUN --mount=type=secret,id=$UNSET true
        """
    assert reads(text).secrets == (
        SecretMount("hf", 7, False),
        SecretMount("tok", 7, True),
        SecretMount("deploy_key", 7, True),  # the basename of target=
        SecretMount("legacy", 7, False),  # source= is the id
        SecretMount("npmrc", 7, False),
        SecretMount(None, 7, False),  # no id at all: BuildKit fails the build
        SecretMount(None, 14, False),  # not known statically (the base may set UNSET)
    )
    assert reads(text, args={"WHICH": "pip"}).secrets[4] == SecretMount("piprc", 7, False)
    # Docker 20.10's frontend takes mount values literally.
    both = reads(text.replace("# syntax=docker/dockerfile:1\n", ""))
    assert [m.id for m in both.secrets] == [
        "hf", "tok", "deploy_key", "legacy", "npmrc", None, None, "${WHICH}rc", "$UNSET",
    ]  # fmt: skip


def test_mount_type_from_a_variable_is_resolved() -> None:
    text = "FROM scratch\nARG T=cache\nRUN --mount=type=$T,target=/c,source=x true\n"
    assert (reads(text).sources, reads(text).whole_context) == ((), None)
    assert paths(reads(text, args={"T": "BIND"})) == ["x"]
    assert reads(text, args={"T": "BIND"}).whole_context is None
    result = reads(text, args={"T": "volume"})
    assert (
        result.whole_context == "line 3: unsupported mount type 'volume' (Docker fails this build)"
    )


# --- ONBUILD ------------------------------------------------------------------------------------


def test_onbuild_triggers_of_a_base_stage_run_in_the_child_stage() -> None:
    text = """
        FROM scratch AS template
        ENV DIR=site
        ONBUILD COPY ${DIR}/ /srv/
        ONBUILD RUN make
        COPY base.txt /

        FROM template AS child
        COPY child.txt /
        """
    parent_only = reads(text, stage="template")
    assert (paths(parent_only), parent_only.has_run) == (["base.txt"], False)
    child = reads(text, stage="child")
    assert paths(child) == ["site", "base.txt", "child.txt"]
    assert child.has_run


# --- frontend and results -----------------------------------------------------------------------


def test_unknown_frontend_makes_the_whole_context_count() -> None:
    text = "# syntax=example.com/custom-frontend:1\nFROM scratch\nCOPY a /\n"
    assert reads(text).whole_context == (
        "the build runs frontend 'example.com/custom-frontend:1', whose semantics bt does not know"
    )
    assert reads("# syntax=docker/dockerfile:1-labs\nFROM scratch\n").whole_context is None
    overridden = reads("FROM scratch\n", args={"BUILDKIT_SYNTAX": "other/frontend"})
    assert overridden.whole_context is not None


def test_a_floating_current_frontend_uses_only_current_rules() -> None:
    text = "# syntax=docker/dockerfile:1\nFROM scratch\nARG A=x B=${A}y\nCOPY ${B} /\n"
    assert paths(reads(text)) == ["xy"]
    pinned = text.replace("dockerfile:1", "dockerfile:1.4")
    assert paths(reads(pinned)) == ["xy", "y"]


def test_copy_only_dockerfile_has_no_run() -> None:
    result = reads('FROM scratch\nCOPY a /\nCMD ["/a"]\n')
    assert result == StageReads(
        sources=(SourceRef("a", 2, "COPY", False),),
        whole_context=None,
        remote_sources=(),
        has_run=False,
        external_bases=(),
        stage_lines=((1, 3),),
        from_images=(),
        meaning=(
            ("directives", None, "\\", None),
            ("global-args",),
            (
                "stage",
                0,
                ("FROM", ("scratch",), None),
                ("COPY", "shell", (), ("a", "/"), ()),
                ("CMD", "json", (), ("/a",), ()),
            ),
        ),
        instructions=(
            (0, 1, "FROM", '["FROM",["scratch"],null]'),
            (0, 2, "COPY", '["COPY","shell",[],["a","/"],[]]'),
            (0, 3, "CMD", '["CMD","json",[],["/a"],[]]'),
        ),
        images=(),
    )


IMAGES = """
    ARG BASE=alpine:3.20
    ARG TOOL
    FROM $BASE AS build
    COPY --from=busybox:1.36 /bin/sh /sh
    RUN --mount=from=golang:1.22,target=/go --mount=type=cache,target=/c true
    FROM ${TOOL} AS tool
    FROM python:${PY} AS unreached
    FROM build
    COPY --from=tool / /
    COPY --from=scratch / /
    """


def test_images_of_reached_stages_are_listed_with_the_arg_that_names_them() -> None:
    assert reads(IMAGES).images == (
        ImageRef("alpine:3.20", 3, "from", "BASE"),
        ImageRef("busybox:1.36", 4, "copy"),
        ImageRef("golang:1.22", 5, "mount"),
        ImageRef("${TOOL}", 6, "from", "TOOL", unresolved=True),
    )
    assert reads(IMAGES, args={"TOOL": "debian:12"}).images[3] == (
        ImageRef("debian:12", 6, "from", "TOOL")
    )


# --- properties -----------------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "FROM ",
        "scratch",
        "alpine",
        " AS ",
        "b",
        "COPY ",
        "ADD ",
        "RUN ",
        "ARG ",
        "ENV ",
        "ONBUILD ",
        "--from=b ",
        "--mount=type=bind,source=",
        "--parents ",
        "$X",
        "${X:-y}",
        "${X",
        "}",
        "<<EOF",
        "EOF",
        "\\",
        "\n",
        " ",
        "#",
        "# escape=`",
        '["a", "b"]',
        "'",
        '"',
        "/",
        "..",
        ".",
        "*",
        "=",
        "x",
        "1",
        "\t",
    ]
)


_ARGS = st.dictionaries(st.sampled_from("XYZ"), st.text(string.ascii_letters + "/.$", max_size=5))


@settings(max_examples=500, deadline=None, database=None)
@given(st.lists(_FRAGMENTS, max_size=40).map("".join), _ARGS)
def test_any_text_parses_or_raises_bt_error_and_sources_are_clean(
    text: str, args: dict[str, str]
) -> None:
    try:
        df = parse_dockerfile(text, "Dockerfile")
    except BtError:
        return
    for stage in [None, *(s.name for s in df.stages if s.name)]:
        result = context_reads(df, stage, args, platform="linux/amd64")
        for ref in result.sources:
            segments = ref.source.split("/")
            assert ref.source == "." or not {"", ".", ".."} & set(segments)
