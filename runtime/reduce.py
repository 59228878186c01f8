"""Reduce: merge the DocLists returned by several shards (or several Flow predecessors).

Pure: no I/O. Used by the gateway on the hot path of ALL polling and of Flow joins.

Contract of :func:`reduce_docs` (Jina's ``reduce_all`` semantics, plus a global top-k):

- **Identity and order.** Documents are merged by ``id``. The result holds the first result's
  docs in order, then the docs of later results whose ids are new, in result order. A result
  that holds one id twice keeps both: the k-th occurrence of an id in one result merges with
  the k-th occurrence in the others (ids are unique in practice; this just never drops docs).
- **Fields of a doc present in several results**, folded left to right:
  a value of ``None`` never wins; otherwise DocLists (such as ``matches``) are merged by id
  with these same rules, recursively; nested docs are merged field by field recursively;
  lists are concatenated; sets united; dicts updated (right wins per key); anything else
  (str, numbers, tensors, tuples, or values of different kinds) — the right-hand value wins.
- **Schemas.** The result has the doc type of the first non-empty result. A doc that is not an
  instance of it is rebuilt with the fields the two share (missing fields take their
  defaults; a missing *required* field is a ``ValueError``); when merging, a field a doc lacks
  simply does not take part. ``AnyDoc`` results merge every attribute any doc has.
- **Global top-k (beyond Jina).** Score convention: a match carries its relevance in a numeric
  attribute named ``score`` (``int``/``float``/numpy real, not ``bool``), *higher is better*
  (cosine or dot-product similarity; store a distance negated, or under another name).
  When ``limit`` is given, every nested DocList of a merged doc (a doc present in two or more
  results) whose docs *all* carry a numeric ``score`` is sorted by score, descending and
  stable (equal scores keep merge order, i.e. shard order), NaN last, and cut to ``limit``
  docs. So a search over 3 shards, each answering its top-``limit``, returns exactly the
  unsharded top-``limit``. Nested DocLists whose docs have no score (the reference page's
  ``QueryDoc.matches`` of plain ``TextDoc``) stay in merge order and are **not** cut: without
  a score there is no order to cut by. ``limit`` never cuts the top-level docs (the queries).
- **One input.** With a single non-empty result nothing is merged: a new DocList of the
  same docs is returned, unchanged (``limit`` ignored). No input, or only empty ones: an empty
  DocList (of the first input's type; ``DocList[AnyDoc]`` when there is no input).
- **Ownership.** Inputs are never mutated. The returned DocList is new, and so is every doc
  that was merged or rebuilt and every container that was combined. A doc present in one
  result only is placed in the output as is (the same object), and values that needed no
  combining (tensors, strings, a list present on one side only) are shared with the inputs.
  The gateway decodes, reduces, encodes and drops the inputs, so sharing saves copies; a caller
  that keeps both and mutates one deep-copies first.
- **Speed.** No per-doc pydantic validation: merged docs are built with ``model_copy`` /
  ``model_construct`` and DocLists with ``validate_input_docs=False``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

from docarray import BaseDoc, DocList
from docarray.base_doc import AnyDoc

__all__ = ['SCORE_FIELD', 'concat_docs', 'reduce_docs']

SCORE_FIELD = 'score'
"""Name of the numeric, higher-is-better attribute that ranks nested matches."""

_ID = 'id'


def reduce_docs(results: Sequence[DocList], limit: int | None = None) -> DocList:
    """Merge ``results`` by document id; see the module docstring for the full contract.

    ``limit``: keep the top ``limit`` scored matches of each merged doc (``None``: no cut).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f'invalid limit={limit!r}: expected None or an integer >= 0')
    non_empty = _non_empty(results)
    if isinstance(non_empty, DocList):  # nothing to merge: the empty result
        return non_empty
    if len(non_empty) == 1:
        only = non_empty[0]
        return type(only)(list(only), validate_input_docs=False)
    return _merge_doclists(non_empty, limit)


def concat_docs(results: Sequence[DocList]) -> DocList:
    """Every doc of every result, in result order, none merged: an id present in two
    results appears twice (``no_reduce=True``, Jina's concatenation when reduce is off).

    The result has the doc type of the first non-empty result; a doc of another schema is
    rebuilt with the fields the two share, as in :func:`reduce_docs`. Inputs are not mutated.
    """
    non_empty = _non_empty(results)
    if isinstance(non_empty, DocList):
        return non_empty
    out_cls = type(non_empty[0])
    schema = out_cls.doc_type
    return out_cls([_as_schema(doc, schema) for result in non_empty for doc in result],
                   validate_input_docs=False)


def _non_empty(results: Sequence[DocList]) -> list[DocList] | DocList:
    """The results that hold docs; when none does, the empty DocList to return (of the
    first result's type, AnyDoc when there are no results)."""
    results = list(results)
    if not results:
        return DocList[AnyDoc]([], validate_input_docs=False)
    non_empty = [result for result in results if len(result)]
    return non_empty or type(results[0])([], validate_input_docs=False)


def _merge_doclists(lists: Sequence[DocList], limit: int | None) -> DocList:
    """Merge two or more non-empty DocLists by id (no ranking at this level)."""
    out_cls = type(lists[0])
    schema = out_cls.doc_type
    groups: dict[Any, list[BaseDoc]] = {}
    for docs in lists:
        occurrences: dict[str, int] = {}
        for doc in docs:
            doc_id = doc.id
            nth = occurrences.get(doc_id, 0)
            occurrences[doc_id] = nth + 1
            key = doc_id if nth == 0 else (doc_id, nth)
            group = groups.get(key)
            if group is None:
                groups[key] = [doc]
            else:
                group.append(doc)
    merged = [
        _merge_docs(group, schema, limit)
        if len(group) > 1
        else _as_schema(group[0], schema)
        for group in groups.values()
    ]
    return out_cls(merged, validate_input_docs=False)


def _as_schema(doc: BaseDoc, schema: type[BaseDoc]) -> BaseDoc:
    """``doc`` itself when it already fits ``schema``, else a rebuilt copy."""
    if type(doc) is schema or schema is AnyDoc or isinstance(doc, schema):
        return doc
    return _construct(schema, doc.__dict__, doc)


def _field_names(target: type[BaseDoc], docs: Iterable[BaseDoc]) -> Iterable[str]:
    if issubclass(target, AnyDoc):
        names: dict[str, None] = {}
        for doc in docs:
            names.update(dict.fromkeys(doc.__dict__))
        return names
    return target.model_fields


def _merge_docs(docs: Sequence[BaseDoc], schema: type[BaseDoc], limit: int | None) -> BaseDoc:
    """Fold two or more docs (same id, or nested docs under one field) into a new doc."""
    first = docs[0]
    target = type(first) if schema is AnyDoc or isinstance(first, schema) else schema
    values: dict[str, Any] = {}
    for name in _field_names(target, docs):
        if name == _ID:
            continue
        present = [doc.__dict__[name] for doc in docs if name in doc.__dict__]
        if present:
            values[name] = _merge_values(present, limit)
    if type(first) is target:
        return first.model_copy(update=values)
    values[_ID] = first.__dict__.get(_ID)
    return _construct(target, values, first)


def _merge_values(values: Sequence[Any], limit: int | None) -> Any:
    """Combine one field's values from several docs, left to right (see module docstring)."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    if all(isinstance(value, DocList) for value in present):
        non_empty = [value for value in present if len(value)]
        if not non_empty:
            return present[0]
        merged = non_empty[0] if len(non_empty) == 1 else _merge_doclists(non_empty, limit)
        return _top(merged, limit)
    if len(present) == 1:
        return present[0]
    if all(isinstance(value, BaseDoc) for value in present):
        return _merge_docs(present, type(present[0]), limit)
    if all(isinstance(value, list) for value in present):
        return [item for value in present for item in value]
    if all(isinstance(value, (set, frozenset)) for value in present):
        return type(present[0]).union(*present)
    if all(isinstance(value, dict) for value in present):
        combined: dict[Any, Any] = {}
        for value in present:
            combined.update(value)
        return combined
    return present[-1]


def _score_key(doc: BaseDoc) -> float | None:
    """Sort key for descending score (NaN last), or None when ``doc`` has no numeric score."""
    score = doc.__dict__.get(SCORE_FIELD)
    if type(score) is float:  # the common case; the ABC check below is ~10x slower
        value = score
    elif isinstance(score, bool) or not isinstance(score, numbers.Real):
        return None
    else:
        value = float(score)
    return math.inf if math.isnan(value) else -value


def _top(docs: DocList, limit: int | None) -> DocList:
    """The top ``limit`` docs by score, or ``docs`` unchanged when unscored or no limit."""
    if limit is None or not len(docs):
        return docs
    items = list(docs)  # plain list indexing; DocList.__getitem__ is slow
    keys = []
    for doc in items:
        key = _score_key(doc)
        if key is None:
            return docs
        keys.append(key)
    order = sorted(range(len(items)), key=keys.__getitem__)[:limit]
    return type(docs)([items[i] for i in order], validate_input_docs=False)


def _construct(target: type[BaseDoc], values: dict[str, Any], source: BaseDoc) -> BaseDoc:
    """Build ``target`` from ``values`` without validation (fields it lacks are dropped)."""
    if issubclass(target, AnyDoc):
        return target(**values)
    fields = target.model_fields
    kept = {name: value for name, value in values.items() if name in fields}
    for name, info in fields.items():
        if name not in kept and info.is_required():
            raise ValueError(
                f'cannot reduce doc id={source.__dict__.get(_ID)!r}: a {type(source).__name__}'
                f' has no field {name!r}, required by {target.__name__}, the schema of the'
                ' first non-empty result'
            )
    return target.model_construct(**kept)
