"""bt: a content-addressed, incremental build tool for large matrices of Docker images.

Its packages follow the data path, lowest first (``LAYERS``): the cross-cutting modules every
stage uses, the registry protocol (and the image reference grammar), the state bt keeps on disk,
the Dockerfile language, the workspace (.cache-spec, BUILD.images, the target graph), the input
file sets, the plan (keys and the stale set), the build, the release (indexes, tags, promotion),
CI, and the command line. A module imports only from its own layer or those below it, type-only
imports and imports inside functions included (``tests/layers_test.py`` checks every import).
"""

__version__ = "0.1.0"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("platforms", "retry", "secrets"),
    ("registry",),
    ("state",),
    ("dockerfile",),
    ("workspace",),
    ("inputs",),
    ("plan",),
    ("build",),
    ("release",),
    ("ci",),
    ("cli", "__main__"),
)
