"""Release: what images.lock holds, put behind tags as multi-platform indexes (``merge``)."""
