"""Static analysis of a Dockerfile: which files of the build context a build of one stage reads.

A platform build is stale exactly when something it reads changed, so this package follows
BuildKit's Dockerfile frontend (moby/buildkit ``frontend/dockerfile``) rule by rule rather than
approximating, in BuildKit's own split: ``syntax`` (the parser), ``flags`` (instruction flags
and mounts), ``shell`` (variable substitution) and ``evaluate`` (dockerfile2llb: the stages a
build reaches, what they read and the images they use), with ``meaning`` (what they build, as a
canonical value for build keys).
"""

from buildtool.dockerfile.evaluate import context_reads
from buildtool.dockerfile.records import (
    Dockerfile,
    ImageRef,
    Instruction,
    InstructionMeaning,
    Meaning,
    SecretMount,
    SourceRef,
    Stage,
    StageReads,
)
from buildtool.dockerfile.syntax import parse_dockerfile

__all__ = [
    "Dockerfile",
    "ImageRef",
    "Instruction",
    "InstructionMeaning",
    "Meaning",
    "SecretMount",
    "SourceRef",
    "Stage",
    "StageReads",
    "context_reads",
    "parse_dockerfile",
]
