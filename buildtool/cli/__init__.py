"""The command line: the click group (``main``), one module per command (``commands/``), how a
run is shown (``reporter``), the build sequence `bt build` and `bt watch` share (``pipeline``),
the watch loop (``watch``), ``bt clean`` (``clean``) and shell completion (``completion``)."""
