"""Decoding side of the docs codec: one framed columnar batch -> docs of a target class.

Columns are matched to the target's fields by name: a column the target lacks is skipped
without being decoded, a target field without a column keeps its default. Each column is
converted to its target field's type: by a fast path when the stored kind already is that
type (str -> str, tensor -> the NdArray class the field validates to), else by pydantic
validation of each value, as ``SomeDoc(**fields)`` would. For a target field typed ``Any``
(all fields of a class rebuilt without the user's types) the recorded docarray type name
(``dt``) restores ``ID``, ``TextUrl``, ``NdArrayEmbedding``... values.
"""

from __future__ import annotations

import json
import math
from itertools import pairwise
from typing import Any, Callable

import numpy as np
from docarray import BaseDoc, DocList
from docarray.proto import ListOfAnyProto
from docarray.typing import ID
from docarray.typing.proto_register import _PROTO_TYPE_NAME_TO_CLASS
from google.protobuf.message import DecodeError

from nborch.runtime._codec_frame import BatchReader, corrupt, read_prefix
from nborch.runtime._codec_schema import (
    TargetField,
    build_docs,
    dynamic_doc_class,
    is_ndarray_class,
    registry_adapter,
    target_schema,
)

_RAW_DTYPE_KINDS = frozenset("biufc")

# Rows a batch may claim with no column data behind them: docs whose every field is None
# (and no id) cost no bytes, so only a bound on their number keeps their cost bounded.
UNBACKED_ROWS = 1024


def decode_batch(data: Any, target: type | None) -> tuple[list[BaseDoc], type]:
    """Decode one batch into docs of ``target`` (or of a class rebuilt from the batch).

    Returns the docs and their class. Raises ``ValueError`` on a malformed batch or on
    values that the target's field types reject.
    """
    reader = BatchReader(data)
    if target is None:
        target = dynamic_doc_class(reader.doc_name, tuple(col["name"] for col in reader.cols))
    schema = target_schema(target)
    wanted = [col for col in reader.cols if col["name"] in schema.fields]
    _check_row_count(reader, wanted)
    # Columns with data first: their length checks confirm n_rows before any column
    # that has no data (kind "none") allocates n_rows values on the header's word.
    wanted.sort(key=lambda col: col.get("kind") == "none")
    columns: dict[str, list] = {}
    for col in wanted:
        columns[col["name"]] = _decode_column(reader, col, schema.fields[col["name"]])
    return build_docs(schema, reader.n_rows, columns), target


def _check_row_count(reader: BatchReader, wanted: list[dict]) -> None:
    """Refuse a row count the batch's bytes do not back, before anything loops over rows.

    A decoded column with data checks its buffers against the count before it allocates
    (those columns go first). Without one, another column must vouch for the count from
    its buffer sizes alone, and rows that no data backs at all (every field None) are
    few in an honest batch: a header claiming a million of them would cost a worker
    seconds of default values (a fresh id each) for a few bytes.
    """
    if any(col.get("kind") != "none" for col in wanted):
        return
    n_rows = reader.n_rows
    for col in reader.cols:
        held = _rows_held(reader, col)
        if held is not None:
            if held != n_rows:
                raise corrupt(f"column {col['name']!r} holds {held} rows, the batch claims {n_rows}")
            return
    if n_rows > UNBACKED_ROWS:
        raise corrupt(f"{n_rows} rows claimed with no column data behind them "
                      f"(at most {UNBACKED_ROWS} such rows)")


def _rows_held(reader: BatchReader, col: dict) -> int | None:
    """How many rows a column's buffers hold, from their sizes alone (nothing decoded);
    None when only decoding could tell (JSON, protobuf, tensors) or it holds no data."""
    kind = col.get("kind")
    if kind == "none":
        return None
    if col.get("mask") is not None:
        return len(reader.buffer(col["mask"]))
    if kind == "bool":
        return len(reader.buffer(col.get("data")))
    if kind in ("int", "float"):
        nbytes = len(reader.buffer(col.get("data")))
        return nbytes // 8 if nbytes % 8 == 0 else -1
    if kind in ("bytes", "docs"):
        nbytes = len(reader.buffer(col.get("offsets")))
        return nbytes // 8 - 1 if nbytes % 8 == 0 else -1
    if kind == "doc":
        return read_prefix(reader.buffer(col.get("child")))[0]
    return None


def _decode_column(reader: BatchReader, col: dict, field: TargetField) -> list[Any]:
    """All ``n_rows`` values of one column, None where the row had none."""
    n_rows, kind = reader.n_rows, col.get("kind")
    if kind == "none":
        return _fill_nones([None] * n_rows, n_rows, field)
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise corrupt(f"column {col['name']!r} has unknown kind {kind!r}")
    mask, n_present = _read_mask(reader, col, n_rows)
    present = decoder(reader, col, n_present, field)
    if mask is None:
        return present
    values = iter(present)
    return _fill_nones([next(values) if bit else None for bit in mask], n_rows - n_present, field)


def _fill_nones(values: list, n_none: int, field: TargetField) -> list:
    """Nones for a field that does not take None become its default, else ``ValueError``.

    Such Nones come from a batch of mixed doc classes (a doc without the field) or from a
    batch of another schema; a field with a default then gets it, as if it were absent.
    """
    if not n_none or field.allows_none:
        return values
    if field.info.is_required():
        raise ValueError(
            f"{field.owner.__name__}.{field.name} does not accept None, "
            f"but the batch has None in {n_none} row(s)"
        )
    def default() -> Any:
        return field.info.get_default(call_default_factory=True, validated_data={})

    return [default() if v is None else v for v in values]


def _read_mask(reader: BatchReader, col: dict, n_rows: int) -> tuple[bytes | None, int]:
    if col.get("mask") is None:
        return None, n_rows
    mask = bytes(reader.buffer(col["mask"]))
    n_present = mask.count(1)
    if len(mask) != n_rows or n_present + mask.count(0) != n_rows:
        raise corrupt(f"column {col['name']!r} has a malformed presence mask")
    return mask, n_present


def _fixed_width(reader: BatchReader, col: dict, n: int, dtype: str) -> np.ndarray:
    buf = reader.buffer(col.get("data"))
    if len(buf) != n * np.dtype(dtype).itemsize:
        raise corrupt(f"column {col['name']!r}: {len(buf)} bytes for {n} values of {dtype}")
    return np.frombuffer(buf, dtype=dtype)


def _read_offsets(reader: BatchReader, col: dict, n: int, total: int) -> list[int]:
    """``n + 1`` non-decreasing offsets from 0 to ``total``, from the ``offsets`` buffer."""
    buf = reader.buffer(col.get("offsets"))
    if len(buf) != (n + 1) * 8:
        raise corrupt(f"column {col['name']!r}: offsets buffer of {len(buf)} bytes for {n} rows")
    offsets = np.frombuffer(buf, dtype="<i8")
    if offsets[0] != 0 or offsets[-1] != total or np.any(np.diff(offsets) < 0):
        raise corrupt(f"column {col['name']!r}: offsets do not split {total} items")
    return offsets.tolist()


# --- scalar kinds ---------------------------------------------------------------------


def _decode_bool(reader: BatchReader, col: dict, n: int, field: TargetField) -> list:
    raw = bytes(reader.buffer(col.get("data")))
    if len(raw) != n or raw.count(0) + raw.count(1) != n:
        raise corrupt(f"column {col['name']!r}: malformed bool buffer")
    return _to_field([b == 1 for b in raw], bool, None, field)


def _decode_int(reader: BatchReader, col: dict, n: int, field: TargetField) -> list:
    return _to_field(_fixed_width(reader, col, n, "<i8").tolist(), int, None, field)


def _decode_float(reader: BatchReader, col: dict, n: int, field: TargetField) -> list:
    return _to_field(_fixed_width(reader, col, n, "<f8").tolist(), float, None, field)


def _decode_json(reader: BatchReader, col: dict, n: int, field: TargetField) -> list:
    try:
        text = bytes(reader.buffer(col.get("data"))).decode("utf-8", "surrogatepass")
        values = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise corrupt(f"column {col['name']!r} is not JSON ({exc})") from None
    if not isinstance(values, list) or len(values) != n:
        raise corrupt(f"column {col['name']!r} is not a JSON list of {n} values")
    types = set(map(type, values))
    if not types <= {str, int, float, bool}:
        raise corrupt(f"column {col['name']!r} holds non-scalar JSON values")
    return _to_field(values, next(iter(types)) if len(types) == 1 else None, col.get("dt"), field)


def _decode_bytes(reader: BatchReader, col: dict, n: int, field: TargetField) -> list:
    data = reader.buffer(col.get("data"))
    offsets = _read_offsets(reader, col, n, len(data))
    values = [bytes(data[a:b]) for a, b in pairwise(offsets)]
    return _to_field(values, bytes, col.get("dt"), field)


def _to_field(values: list, py_type: type | None, dt: str | None, field: TargetField) -> list:
    """Convert decoded scalars (all of ``py_type`` when not None) to the field's type."""
    if field.is_any:
        return _restore_docarray_type(values, dt)
    if py_type is not None and field.core is py_type:
        return values
    if py_type is str and field.core is ID:  # every doc's id: skip pydantic
        return list(map(ID, values))
    return field.validate(values)


def _restore_docarray_type(values: list, dt: str | None) -> list:
    cls = _PROTO_TYPE_NAME_TO_CLASS.get(dt) if dt else None
    if cls is None:  # plain values, or a type this docarray does not know: keep as is
        return values
    if cls is ID:
        return list(map(ID, values))
    validate = registry_adapter(cls).validate_python
    return [validate(v) for v in values]


# --- tensors --------------------------------------------------------------------------


def _decode_tensor(reader: BatchReader, col: dict, n: int, field: TargetField) -> list:
    matrix = _read_matrix(reader, col, n)
    if field.is_any:
        cls = _PROTO_TYPE_NAME_TO_CLASS.get(col.get("dt")) if col.get("dt") else None
        return _rows(matrix, cls if is_ndarray_class(cls) else None)
    if n == 0:
        return []
    # Validate one row to learn the class the field turns a numpy row into (NdArray,
    # NdArrayEmbedding...); if it keeps shape and dtype, view every row as that class.
    (probe,) = field.validate([matrix[0, ...]])
    if isinstance(probe, np.ndarray) and probe.shape == matrix.shape[1:]:
        if probe.dtype == matrix.dtype:
            return _rows(matrix, type(probe))
    return field.validate(_rows(matrix, None))


def _read_matrix(reader: BatchReader, col: dict, n: int) -> np.ndarray:
    try:
        dtype = np.dtype(col["dtype"])
        shape = tuple(col["shape"])
    except (TypeError, ValueError, KeyError) as exc:
        raise corrupt(f"column {col['name']!r}: bad tensor dtype/shape ({exc})") from None
    if dtype.kind not in _RAW_DTYPE_KINDS or not all(type(d) is int and d >= 0 for d in shape):
        raise corrupt(f"column {col['name']!r}: bad tensor dtype {dtype} or shape {shape}")
    buf = reader.buffer(col.get("data"))
    if len(buf) != n * math.prod(shape) * dtype.itemsize:
        raise corrupt(f"column {col['name']!r}: {len(buf)} bytes for {n} tensors {shape} {dtype}")
    # Copy once: rows become writable, aligned, and independent of the wire buffer.
    return np.frombuffer(buf, dtype=dtype).reshape((n, *shape)).copy()


def _rows(matrix: np.ndarray, cls: type | None) -> list:
    """One view per row of ``matrix`` (sharing its memory), as ``cls`` when given."""
    view = matrix if cls is None or cls is np.ndarray else matrix.view(cls)
    if matrix.ndim == 1:  # 0-d rows: plain indexing would give numpy scalars
        return [view[i, ...] for i in range(len(view))]
    return list(view)


# --- nested docs and the protobuf fallback --------------------------------------------


def _decode_doc(reader: BatchReader, col: dict, n: int, field: TargetField) -> list:
    docs, _ = decode_batch(reader.buffer(col.get("child")), field.doc_type)
    if len(docs) != n:
        raise corrupt(f"column {col['name']!r}: child batch has {len(docs)} docs for {n} rows")
    if field.doc_type is None and not field.is_any:
        return field.validate(docs)
    return docs


def _decode_docs(reader: BatchReader, col: dict, n: int, field: TargetField) -> list:
    children, child_cls = decode_batch(reader.buffer(col.get("child")), field.list_doc_type)
    offsets = _read_offsets(reader, col, n, len(children))
    doc_list_cls = field.doc_list_cls if field.list_doc_type is not None else DocList[child_cls]
    values = [doc_list_cls.construct(children[a:b]) for a, b in pairwise(offsets)]
    if field.doc_list_cls is None and not field.is_any:
        return field.validate(values)
    return values


def _decode_proto(reader: BatchReader, col: dict, n: int, field: TargetField) -> list:
    try:
        nodes = ListOfAnyProto.FromString(bytes(reader.buffer(col.get("data")))).data
    except DecodeError as exc:
        raise corrupt(f"column {col['name']!r} is not a ListOfAnyProto ({exc})") from None
    if len(nodes) != n:
        raise corrupt(f"column {col['name']!r}: {len(nodes)} protobuf values for {n} rows")
    read = field.owner._get_content_from_node_proto
    try:
        values = [read(node, field.name) for node in nodes]
    except ValueError as exc:
        raise ValueError(f"field {field.name!r}: {exc}") from exc
    return values if field.is_any else field.validate(values)


_DECODERS: dict[str, Callable[[BatchReader, dict, int, TargetField], list]] = {
    "bool": _decode_bool,
    "int": _decode_int,
    "float": _decode_float,
    "json": _decode_json,
    "bytes": _decode_bytes,
    "tensor": _decode_tensor,
    "doc": _decode_doc,
    "docs": _decode_docs,
    "proto": _decode_proto,
}
