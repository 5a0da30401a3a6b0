"""The plan: content-addressed keys (``keys``, ``keymemo``, ``stamp``), pins of external images
(``pins``), the stale set against images.lock (``stale``), what changed since the recorded
build (``changes``), and the session every command starts from (``session``)."""
