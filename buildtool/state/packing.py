"""msgpack as bt writes and reads it: keys, caches and manifests.

A file name is whatever bytes the file system allows, and Python holds one that is not UTF-8 as
a str with surrogate escapes (``os.fsdecode``). Packed and unpacked with ``surrogateescape``,
such a name is keyed and kept as its very bytes, and comes back as the same str.
"""

from __future__ import annotations

from typing import Any

import msgpack


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, unicode_errors="surrogateescape")  # type: ignore[no-any-return]


def unpack(data: bytes, **options: Any) -> Any:
    """``options``: msgpack's (``use_list``, ``strict_map_key``)."""
    return msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape", **options)
