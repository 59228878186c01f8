"""Encoding side of the docs codec: docs -> one framed columnar batch.

Each field becomes one column. Its *kind* is inferred from the values of that batch (not
from annotations, so ``Any`` fields and subclasses work) and says how it is stored:

    none    every row is None: no buffers
    bool    u8 per present row                    int    <i8 per present row
    float   <f8 per present row                   json   JSON list (str, mixed scalars, big ints)
    bytes   one blob + <i8 offsets (k+1)          tensor one C-order matrix: "dtype", "shape"
    doc     a child batch of the present docs     docs   a child batch of all nested docs
                                                         + <i8 offsets (k+1) per row
    proto   docarray's own protobuf: a ListOfAnyProto, one NodeProto per present row

Every kind but ``none`` stores present rows only, plus a u8 presence mask buffer (``mask``)
when some rows are None. ``dt`` records a docarray type name (``id``, ``text_url``,
``ndarray_embedding``...) when all present values share one, so a reader without the user's
classes can restore the value types. Nothing here pickles.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Sequence

import numpy as np
from docarray import BaseDoc, DocList
from docarray.base_doc import AnyDoc
from docarray.base_doc.doc import BaseDocWithoutId
from docarray.base_doc.mixins.io import _type_to_protobuf
from docarray.proto import ListOfAnyProto
from docarray.typing.proto_register import _PROTO_TYPE_NAME_TO_CLASS

from nborch.runtime._codec_frame import BatchWriter

# Numeric dtype kinds that round-trip as raw bytes; anything else (object, str, structured)
# goes through docarray's protobuf instead.
_RAW_DTYPE_KINDS = frozenset("biufc")

# Built once: json.dumps with non-default options builds a new encoder on every call.
# surrogatepass on the way out: Python str may hold lone surrogates, UTF-8 alone refuses.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class _NotColumnar(Exception):
    """Raised by a column encoder whose values turn out not to fit its kind."""


def encode_batch(docs: Sequence[BaseDoc], declared: type | None) -> bytes:
    """Encode ``docs`` as one framed batch.

    ``declared`` is the doc type the container promises (``DocList[X].doc_type``); it names
    the schema of an empty batch. Docs of several classes are allowed: the columns are the
    union of their fields and a doc lacking a field contributes None to that column.
    """
    types = list(dict.fromkeys(map(type, docs)))
    for doc_type in types:
        if not issubclass(doc_type, BaseDocWithoutId):
            raise TypeError(f"encode_docs takes docarray BaseDoc instances, got {doc_type!r}")
    if declared is not None and issubclass(declared, AnyDoc):
        declared = None
    names = _field_names(types or ([declared] if declared is not None else []))
    doc_name = _doc_name(types, declared)
    dicts = [doc.__dict__ for doc in docs]
    writer = BatchWriter()
    cols = [_encode_column(name, _gather(dicts, name), writer) for name in names]
    return writer.finish(len(docs), doc_name, cols)


def _field_names(types: list[type]) -> list[str]:
    names: dict[str, None] = {}
    for doc_type in types:
        names.update(dict.fromkeys(doc_type.model_fields))
    return list(names)


def _doc_name(types: list[type], declared: type | None) -> str:
    if len(types) == 1:
        return types[0].__name__
    if declared is not None:
        return declared.__name__
    return types[0].__name__ if types else AnyDoc.__name__


def _gather(dicts: list[dict], name: str) -> list[Any]:
    try:
        return [d[name] for d in dicts]
    except KeyError:  # mixed doc classes, or a doc built with model_construct
        return [d.get(name) for d in dicts]


def _encode_column(name: str, values: list[Any], writer: BatchWriter) -> dict:
    """Write one column's buffers; return its header entry."""
    present = [v for v in values if v is not None]
    if not present:
        return {"name": name, "kind": "none"}
    types = frozenset(map(type, present))
    kind = _infer_kind(types)
    try:
        col = _ENCODERS[kind](name, present, types, writer)
    except _NotColumnar:
        kind, col = "proto", _encode_proto(name, present, types, writer)
    col["name"] = name
    col.setdefault("kind", kind)  # an encoder may settle on another kind (int -> json)
    if len(present) != len(values):
        col["mask"] = writer.add(bytes([v is not None for v in values]))
    return col


@functools.lru_cache(maxsize=1024)
def _infer_kind(types: frozenset[type]) -> str:
    """The column kind for present values of ``types`` (cached: issubclass on ABCs is slow)."""
    # Order matters: bool is an int, and np.float64 is a float.
    if types == {bool}:
        return "bool"
    if _all_sub(types, np.ndarray):
        return "tensor"
    if _all_sub(types, BaseDocWithoutId):
        return "doc"
    if _all_sub(types, DocList):
        return "docs"
    if _all_sub(types, bytes):
        return "bytes"
    if _all_sub(types, float):
        return "float"
    if bool not in types and _all_sub(types, int):
        return "int"
    if _all_sub(types, (str, int, float)):
        return "json"
    return "proto"


def _all_sub(types: frozenset[type], base: Any) -> bool:
    return all(issubclass(t, base) for t in types)


def _docarray_type_name(types: frozenset[type]) -> str | None:
    """The docarray proto type name shared by all values, if any (e.g. ``"id"``)."""
    if len(types) != 1:
        return None
    name = getattr(next(iter(types)), "_proto_type_name", None)
    return name if name in _PROTO_TYPE_NAME_TO_CLASS else None


def _encode_bool(name: str, present: list, types: frozenset, writer: BatchWriter) -> dict:
    return {"data": writer.add(bytes(present))}


def _encode_int(name: str, present: list, types: frozenset, writer: BatchWriter) -> dict:
    try:
        data = np.array(present, dtype="<i8").tobytes()
    except OverflowError:  # beyond int64: JSON keeps Python's big ints exact
        return _encode_json(name, present, types, writer) | {"kind": "json"}
    return {"data": writer.add(data)}


def _encode_float(name: str, present: list, types: frozenset, writer: BatchWriter) -> dict:
    return {"data": writer.add(np.array(present, dtype="<f8").tobytes())}


def _encode_json(name: str, present: list, types: frozenset, writer: BatchWriter) -> dict:
    encoded = _JSON.encode(present).encode("utf-8", "surrogatepass")
    return {"data": writer.add(encoded), "dt": _docarray_type_name(types)}


def _encode_bytes(name: str, present: list, types: frozenset, writer: BatchWriter) -> dict:
    offsets = np.zeros(len(present) + 1, dtype="<i8")
    np.cumsum([len(v) for v in present], out=offsets[1:])
    return {
        "data": writer.add(b"".join(present)),
        "offsets": writer.add(offsets.tobytes()),
        "dt": _docarray_type_name(types),
    }


def _encode_tensor(name: str, present: list, types: frozenset, writer: BatchWriter) -> dict:
    """One raw matrix of all present rows; ragged shapes or mixed dtypes are not columnar."""
    first = present[0]
    dtype, shape = first.dtype, first.shape
    if dtype.kind not in _RAW_DTYPE_KINDS:
        raise _NotColumnar
    pieces = []
    for value in present:
        if value.shape != shape or value.dtype != dtype:
            raise _NotColumnar
        # Contiguous rows go to the final join as-is: one copy instead of two.
        pieces.append(value if value.flags.c_contiguous else value.tobytes())
    data = writer.add_pieces(pieces, first.nbytes * len(present))
    dt = _docarray_type_name(types)
    return {"data": data, "dtype": dtype.str, "shape": list(shape), "dt": dt}


def _encode_doc(name: str, present: list, types: frozenset, writer: BatchWriter) -> dict:
    declared = next(iter(types)) if len(types) == 1 else None
    return {"child": writer.add(encode_batch(present, declared))}


def _encode_docs(name: str, present: list, types: frozenset, writer: BatchWriter) -> dict:
    flat = [doc for doc_list in present for doc in doc_list]
    offsets = np.zeros(len(present) + 1, dtype="<i8")
    np.cumsum([len(doc_list) for doc_list in present], out=offsets[1:])
    # The first list's doc_type names the child schema even when every list is empty.
    child = encode_batch(flat, present[0].doc_type)
    return {"child": writer.add(child), "offsets": writer.add(offsets.tobytes())}


def _encode_proto(name: str, present: list, types: frozenset, writer: BatchWriter) -> dict:
    """Fallback: each value as docarray's NodeProto, the way ``BaseDoc.to_protobuf`` writes it."""
    nodes = ListOfAnyProto()
    for value in present:
        try:
            nodes.data.append(_type_to_protobuf(value))
        except (ValueError, TypeError, RecursionError) as exc:
            raise ValueError(
                f"field {name!r}: cannot encode a {type(value).__name__} value ({exc})"
            ) from exc
    return {"data": writer.add(nodes.SerializeToString())}


_ENCODERS = {
    "bool": _encode_bool,
    "int": _encode_int,
    "float": _encode_float,
    "json": _encode_json,
    "bytes": _encode_bytes,
    "tensor": _encode_tensor,
    "doc": _encode_doc,
    "docs": _encode_docs,
    "proto": _encode_proto,
}
