"""nborch's wire codec for batches of docarray documents.

A batch is columnar: one column per field, so a batch of 100 docs costs one header and a
handful of buffers instead of 100 protobuf messages. Ids and scalars are columns, tensors of
one shape and dtype are one raw matrix, nested DocLists (``matches``) and nested docs are
child batches of this same format; any other field falls back to docarray's own protobuf
for that field alone. Nothing is pickled: the bytes cross the network.

Framing (see ``_codec_frame``)::

    b"NBDC" | u16 version | u16 0 | u32 n_rows | u32 header_len | JSON header | buffers

Decoding matches fields by name, so a batch of ``TextDoc`` decodes into a ``QueryDoc``
that adds ``matches`` (which keeps its default) and the other way round (``matches`` is
dropped). Decoded tensors are writable rows of one matrix per field per batch.
"""

from __future__ import annotations

import struct
from typing import Iterable

from docarray import BaseDoc, DocList
from docarray.base_doc import AnyDoc
from docarray.base_doc.doc import BaseDocWithoutId

from nborch.runtime._codec_decode import decode_batch
from nborch.runtime._codec_encode import encode_batch
from nborch.runtime._codec_frame import as_byte_view, corrupt, read_prefix

__all__ = ["batch_length", "decode_docs", "encode_docs"]

# What decoding a batch whose header is inconsistent can raise besides ValueError.
_HEADER_LIES = (
    KeyError, IndexError, TypeError, AttributeError, OverflowError, RecursionError, struct.error
)


def encode_docs(docs: Iterable[BaseDoc]) -> bytes:
    """Encode a DocList (or any iterable of BaseDoc) as one columnar batch.

    Raises ``TypeError`` for items that are not BaseDoc, ``ValueError`` for a field value
    that neither the columnar format nor docarray's protobuf can hold (e.g. a ``datetime``).
    """
    declared = docs.doc_type if isinstance(docs, DocList) else None
    if not isinstance(docs, (list, tuple)):
        docs = list(docs)
    return encode_batch(docs, declared)


def decode_docs(data: bytes, doc_type: type[BaseDoc] | None = None) -> DocList:
    """Decode a batch from ``encode_docs`` into a ``DocList[doc_type]``.

    With ``doc_type``, fields are matched by name: batch fields the class lacks are
    dropped, class fields the batch lacks keep their defaults (``ValueError`` if one is
    required), and values are converted to the class's field types. Without it, docs are
    of a class rebuilt from the batch's schema (same name and field names, every field
    ``Optional[Any]``), cached so that equal schemas give the same class.

    Raises ``ValueError`` if ``data`` is not a well-formed batch or a value does not fit
    the target field.
    """
    is_doc_class = isinstance(doc_type, type) and issubclass(doc_type, BaseDocWithoutId)
    if doc_type is not None and not is_doc_class:
        raise TypeError(f"doc_type must be a BaseDoc subclass, got {doc_type!r}")
    if doc_type is not None and issubclass(doc_type, AnyDoc):
        doc_type = None
    try:
        docs, cls = decode_batch(data, doc_type)
    except _HEADER_LIES as exc:
        # A well-formed batch never gets here: these come from headers that lie (or nest
        # child batches absurdly deep).
        raise corrupt(f"{type(exc).__name__}: {exc}") from exc
    if doc_type is None and not docs and cls.__name__ == AnyDoc.__name__:
        return DocList()  # an empty batch of nothing in particular: any doc may join it
    return DocList[cls].construct(docs)


def batch_length(data: bytes) -> int:
    """Number of docs in a batch, read from its fixed prefix alone (no column is decoded).

    Raises ``ValueError`` if ``data`` does not start with a valid prefix.
    """
    n_rows, _header_len = read_prefix(as_byte_view(data))
    return n_rows

