"""One module per ``bt`` command; each exposes a click ``command``."""
