"""What bt keeps on disk: the cache directory and its one locked read-merge-write
(``cachedir``), atomic state files (``statefile``), the stat cache behind every file digest
(``hashing``), and ``images.lock`` with its schema (``lockfile``, ``lockschema``)."""
