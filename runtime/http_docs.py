"""Docs as JSON, for the HTTP gateway and `Client(protocol='http')` (no web framework here:
the owner process imports it to describe its executors' schemas).

JSON docs become docs of a permissive class (every field `Optional[Any]`) and travel in
nborch's codec; whoever decodes the batch into a real doc class (the executor's input
type, a client's `return_type`) converts the values, exactly as for a batch that came over
gRPC. So lists become tensors and nested lists of objects become nested DocLists there.
"""
from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from docarray import BaseDoc, DocList
from pydantic.json_schema import GenerateJsonSchema

from nborch.runtime._codec_schema import dynamic_doc_class
from nborch.runtime.codec import decode_docs, encode_docs

ANY_DOC_SCHEMA = {'type': 'object', 'title': 'AnyDoc', 'additionalProperties': True,
                  'description': 'any JSON object (no schema is known for this endpoint)'}


class _DocSchema(GenerateJsonSchema):
    """docarray 0.40 gives a DocList field a plain validator pydantic 2 cannot describe:
    describe it as an array of its doc type; anything else undescribable is any value."""

    def handle_invalid_for_json_schema(self, schema, error_info):
        function = (schema.get('function') or {}).get('function')
        doc_type = getattr(getattr(function, '__self__', None), 'doc_type', None)
        if isinstance(doc_type, type) and issubclass(doc_type, BaseDoc):
            # A doc type nested in itself (LegacyDocument's chunks and matches) is described
            # once; deeper levels are any objects (else the generation never ends).
            inside = self.__dict__.setdefault('_nborch_inside', set())
            if doc_type in inside:
                return {'type': 'array', 'items': {'type': 'object'}}
            inside.add(doc_type)
            try:
                return {'type': 'array',
                        'items': self.generate_inner(doc_type.__pydantic_core_schema__)}
            finally:
                inside.discard(doc_type)
        return {}


def doc_json_schema(doc_type: type[BaseDoc]) -> dict:
    """`doc_type`'s JSON schema with its `$defs` inlined (it is embedded into OpenAPI
    documents, whose references point elsewhere); the permissive schema if pydantic fails."""
    try:
        schema = doc_type.model_json_schema(schema_generator=_DocSchema)
    except Exception:  # a field type pydantic cannot describe at all
        return dict(ANY_DOC_SCHEMA, title=doc_type.__name__)
    return _inline(schema, schema.pop('$defs', {}), inside=frozenset())


def _inline(node: Any, defs: dict, inside: frozenset) -> Any:
    if isinstance(node, list):
        return [_inline(n, defs, inside) for n in node]
    if not isinstance(node, dict):
        return node
    ref = node.get('$ref')
    if isinstance(ref, str) and ref.startswith('#/$defs/'):
        target = defs.get(ref.rsplit('/', 1)[1])
        # A doc type inside itself (recursive) is not described again: inlining it to a fixed
        # depth doubles the schema per level when it nests twice (chunks and matches).
        if target is None or ref in inside:
            return {'type': 'object'}
        return _inline(target, defs, inside | {ref})
    return {k: _inline(v, defs, inside) for k, v in node.items()}


def endpoint_schemas(endpoints: dict) -> dict[str, dict]:
    """{path: {'input': schema, 'output': schema}} of an executor's endpoint table."""
    cache: dict[type, dict] = {}

    def of(doc_type):
        if doc_type not in cache:
            cache[doc_type] = doc_json_schema(doc_type)
        return cache[doc_type]

    return {path: {'input': of(e.input_type), 'output': of(e.output_type)}
            for path, e in endpoints.items()}


# -- docs → JSON --------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseDoc):
        return doc_to_json(value)
    if isinstance(value, (DocList, list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, bytearray)):
        # JSON has no bytes: base64 text, as pydantic's own base64 mode writes it
        return base64.b64encode(bytes(value)).decode()
    if hasattr(value, 'tolist'):  # a torch/tf tensor docarray wraps
        return value.tolist()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def doc_to_json(doc: BaseDoc) -> dict:
    return {name: _jsonable(getattr(doc, name)) for name in type(doc).model_fields}


def docs_to_json(docs) -> list[dict]:
    return [doc_to_json(d) for d in docs]


def batch_to_json(data: bytes) -> list[dict]:
    """A codec batch (as a reply carries it) as JSON docs."""
    return docs_to_json(decode_docs(data)) if data else []


# -- JSON → docs --------------------------------------------------------------------------
def docs_from_json(items: Any) -> list[BaseDoc]:
    """JSON docs (a list of objects, or one object) as docs of a permissive class.

    ValueError says which doc is not an object or which field name no doc can have.
    """
    if items is None:
        return []
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise ValueError(f'data must be a list of JSON objects (docs), got {type(items).__name__}')
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f'data[{i}] must be a JSON object (a doc), got '
                             f'{type(item).__name__}: {json.dumps(item)[:80]}')
        if 'id' in item and not isinstance(item['id'], str):
            raise ValueError(f'data[{i}].id must be a string, got {json.dumps(item["id"])[:80]}')
        bad = [k for k in item if not k.isidentifier() or k.startswith('_')]
        if bad:
            raise ValueError(f'data[{i}]: {bad[0]!r} cannot be a doc field (fields are '
                             'identifiers not starting with "_")')
    names = tuple(sorted({k for item in items for k in item}))
    cls = dynamic_doc_class('JsonDoc', names)
    return [cls(**{k: v for k, v in item.items()}) for item in items]


def json_to_batch(items: Any) -> bytes:
    return encode_docs(docs_from_json(items))
