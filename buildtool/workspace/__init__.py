"""The workspace: its root and ``.cache-spec`` (``config``), the BUILD.images language and
loader (``starlark``, ``budget``, ``loader``), labels and targets, the Dockerfile analyses the
graph infers parents from (``analysis``, ``parents``), the target graph (``graph``), the graph
kept between runs (``graphcache``), ``bt query`` (``query``) and ``bt import-bake`` (``bake``)."""
