"""Framing of one columnar docs batch: a fixed prefix, a JSON header, raw buffers.

Layout (integers little-endian)::

    prefix  = b"NBDC" | u16 version | u16 reserved (0) | u32 n_rows | u32 header_len
    header  = UTF-8 JSON object {"doc": str, "cols": [column, ...], "bufs": [nbytes, ...]}
    buffers = every buffer of "bufs", back to back, in that order

A column is a JSON object naming its field, its kind and the indices of the buffers it
uses (see ``_codec_encode``). A nested batch (a ``matches`` DocList, a nested doc) is one
buffer holding a complete batch of this same format, so every level can be read alone.

This module only frames bytes; it knows nothing about docarray.
"""

from __future__ import annotations

import json
import struct
from typing import Any

MAGIC = b"NBDC"
VERSION = 1
_PREFIX = struct.Struct("<4sHHII")
PREFIX_SIZE = _PREFIX.size
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # built once, reused


def corrupt(reason: str) -> ValueError:
    """The one error type a malformed batch raises, so callers can catch ``ValueError``."""
    return ValueError(f"corrupt nborch docs batch: {reason}")


class BatchWriter:
    """Collects the buffers of one batch, then frames them with ``finish``.

    Owned by a single encode call; buffers are referenced, not copied, until ``finish``
    joins them, so callers must not mutate what they add before then.
    """

    def __init__(self) -> None:
        self._pieces: list[Any] = []
        self._sizes: list[int] = []

    def add(self, data: bytes) -> int:
        """Append one ``bytes`` buffer; return its index for the column header."""
        self._pieces.append(data)
        self._sizes.append(len(data))
        return len(self._sizes) - 1

    def add_pieces(self, pieces: list[Any], nbytes: int) -> int:
        """Append one buffer made of several C-contiguous bytes-like pieces of ``nbytes`` in total.

        Avoids an intermediate copy: the pieces are joined once, in ``finish``.
        """
        self._pieces.extend(pieces)
        self._sizes.append(nbytes)
        return len(self._sizes) - 1

    def finish(self, n_rows: int, doc_name: str, cols: list[dict]) -> bytes:
        """Return the framed batch: prefix, header, then all buffers."""
        header = _JSON.encode({"doc": doc_name, "cols": cols, "bufs": self._sizes})
        header = header.encode("utf-8", "surrogatepass")
        prefix = _PREFIX.pack(MAGIC, VERSION, 0, n_rows, len(header))
        return b"".join([prefix, header, *self._pieces])


def read_prefix(view: memoryview) -> tuple[int, int]:
    """Check magic and version; return ``(n_rows, header_len)``. Reads 16 bytes only."""
    if len(view) < PREFIX_SIZE:
        raise corrupt(f"{len(view)} bytes is shorter than the {PREFIX_SIZE}-byte prefix")
    magic, version, _reserved, n_rows, header_len = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise corrupt(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise corrupt(f"format version {version} is not supported (this reader knows {VERSION})")
    return n_rows, header_len


def as_byte_view(data: Any) -> memoryview:
    """A flat unsigned-byte memoryview over any bytes-like ``data`` (no copy)."""
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


class BatchReader:
    """A parsed, length-checked batch. Buffers are zero-copy slices of the input.

    The constructor validates the framing (magic, version, header JSON, buffer sizes that
    add up exactly to the input length); columns are validated by whoever decodes them.
    """

    def __init__(self, data: Any) -> None:
        view = as_byte_view(data)
        self.n_rows, header_len = read_prefix(view)
        if len(view) < PREFIX_SIZE + header_len:
            raise corrupt("truncated header")
        header = _parse_header(view[PREFIX_SIZE : PREFIX_SIZE + header_len])
        self.doc_name: str = header["doc"]
        self.cols: list[dict] = header["cols"]
        self._view = view
        self.nbytes = len(view)
        self._starts: list[int] = []
        pos = PREFIX_SIZE + header_len
        for size in header["bufs"]:
            self._starts.append(pos)
            pos += size
        self._sizes: list[int] = header["bufs"]
        if pos != len(view):
            raise corrupt(f"buffers need {pos} bytes, got {len(view)} (truncated or padded)")

    def buffer(self, index: Any) -> memoryview:
        """The buffer at ``index`` (as named by a column header)."""
        if type(index) is not int or not 0 <= index < len(self._sizes):
            raise corrupt(f"column names buffer {index!r}, batch has {len(self._sizes)}")
        start = self._starts[index]
        return self._view[start : start + self._sizes[index]]


def _parse_header(raw: memoryview) -> dict:
    try:
        header = json.loads(bytes(raw).decode("utf-8", "surrogatepass"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise corrupt(f"header is not JSON ({type(exc).__name__}: {exc})") from None
    if not (
        isinstance(header, dict)
        and isinstance(header.get("doc"), str)
        and isinstance(header.get("cols"), list)
        and all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in header["cols"])
        and isinstance(header.get("bufs"), list)
        and all(type(n) is int and n >= 0 for n in header["bufs"])
    ):
        raise corrupt("header lacks doc/cols/bufs or has them of the wrong type")
    return header
