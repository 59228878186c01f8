"""What the decoder needs to know about a target doc class, and how it builds the docs.

``target_schema(cls)`` reads a BaseDoc class's fields once (cached per class) into
``TargetField``s that tell the column decoders which fast path applies. ``dynamic_doc_class``
makes (and caches) a BaseDoc subclass for a batch decoded without a type. ``build_docs``
assembles docs from decoded columns without re-running pydantic validation: the columns
have already been checked or converted against the target field types.

The ``lru_cache``s below are the module's only state, all keyed by class or schema:
target class -> plan, batch schema -> rebuilt class, docarray type -> validator.
"""

from __future__ import annotations

import functools
import types as pytypes
from dataclasses import dataclass, field
from itertools import repeat
from typing import Annotated, Any, Optional, Union, get_args, get_origin

import numpy as np
from docarray import BaseDoc, DocList
from docarray.base_doc import AnyDoc
from docarray.base_doc.doc import BaseDocWithoutId
from pydantic import ConfigDict, TypeAdapter, create_model
from pydantic.fields import FieldInfo

_SCALARS = (str, int, float, bool, bytes)


@dataclass
class TargetField:
    """One field of a target doc class, pre-digested for the column decoders.

    ``core`` is the annotation without its ``None`` option (a ``Union`` when several types
    remain). ``is_any`` fields take decoded values as they are. ``doc_type`` is set when the
    core is one BaseDoc class; ``list_doc_type``/``doc_list_cls`` when it is ``DocList[X]``.
    """

    name: str
    owner: type
    info: FieldInfo
    core: Any
    allows_none: bool
    is_any: bool
    doc_type: Optional[type] = None
    list_doc_type: Optional[type] = None
    doc_list_cls: Optional[type] = None

    @functools.cached_property
    def adapter(self) -> TypeAdapter:
        """A validator for this field's full annotation (built on first use: it is slow)."""
        annotation = self.info.annotation
        if self.info.metadata:
            annotation = Annotated[(annotation, *self.info.metadata)]
        config = None
        if self.owner.model_config.get("arbitrary_types_allowed"):
            config = ConfigDict(arbitrary_types_allowed=True)
        return TypeAdapter(annotation, config=config)

    def validate(self, values: list[Any]) -> list[Any]:
        """Run pydantic validation on each value, as ``SomeDoc(**fields)`` would.

        Raises ``ValueError`` naming the field: pydantic's own error, or docarray's
        validators' ``TypeError``, which would otherwise read as a corrupt batch.
        """
        validate = self.adapter.validate_python
        try:
            return [validate(v) for v in values]
        except TypeError as exc:
            raise ValueError(f"{self.owner.__name__}.{self.name}: {exc}") from exc


@dataclass
class TargetSchema:
    """A target doc class and its fields, in declaration order."""

    cls: type
    fields: dict[str, TargetField]
    fast_construct: bool
    constant_defaults: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=512)
def target_schema(cls: type) -> TargetSchema:
    """The decoding plan for ``cls`` (cached: classes are long-lived and few)."""
    fields = {name: _target_field(cls, name, info) for name, info in cls.model_fields.items()}
    # model_construct does more than fill __dict__ only for these; then we call it instead.
    fast = (
        not cls.__pydantic_post_init__
        and cls.model_config.get("extra") != "allow"
        and not getattr(cls, "__pydantic_root_model__", False)
    )
    constants = {
        name: info.default
        for name, info in cls.model_fields.items()
        if info.default_factory is None and type(info.default) in (type(None), *_SCALARS)
    }
    return TargetSchema(cls, fields, fast, constants)


@functools.lru_cache(maxsize=64)
def registry_adapter(cls: type) -> TypeAdapter:
    """A validator for one docarray type (``TextUrl``, ``ImageBytes``...), built once."""
    return TypeAdapter(Optional[cls])


def _target_field(owner: type, name: str, info: FieldInfo) -> TargetField:
    core, allows_none = _strip_optional(info.annotation)
    is_any = core is Any or core is object
    result = TargetField(name, owner, info, core, allows_none or is_any, is_any)
    if _is_class(core, BaseDocWithoutId):
        result.doc_type = core
    elif _is_class(core, DocList) or _is_class(get_origin(core), DocList):
        # DocList[X] is a typing alias whose origin is the DocList subclass for X.
        result.doc_list_cls = core if _is_class(core, DocList) else get_origin(core)
        item_type = result.doc_list_cls.doc_type
        result.list_doc_type = None if _is_class(item_type, AnyDoc) else item_type
    return result


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, pytypes.UnionType):
        args = get_args(annotation)
        rest = tuple(a for a in args if a is not type(None))
        if len(rest) < len(args):
            return (rest[0] if len(rest) == 1 else Union[rest]), True
    return annotation, annotation is None or annotation is type(None)


def _is_class(obj: Any, base: type) -> bool:
    return isinstance(obj, type) and issubclass(obj, base)


def is_ndarray_class(obj: Any) -> bool:
    return _is_class(obj, np.ndarray)


@functools.lru_cache(maxsize=512)
def dynamic_doc_class(name: str, field_names: tuple[str, ...]) -> type[BaseDoc]:
    """A BaseDoc subclass named ``name`` with ``field_names`` (cached per schema).

    Every field is ``Optional[Any] = None``: the decoder restores value types from the
    batch's records (``dt``), and keying the class on names alone gives the same class to
    batches of one schema whatever their None patterns, so DocLists decoded from several
    shards can be merged (``DocList.extend`` checks the doc class).
    """
    fields = {f: (Optional[Any], None) for f in field_names if f != "id"}
    base = BaseDoc if "id" in field_names else BaseDocWithoutId
    try:
        return create_model(name, __base__=base, **fields)
    except Exception as exc:  # pydantic refuses some names (leading underscore, ...)
        raise ValueError(f"cannot rebuild doc class {name!r} {field_names}: {exc}") from exc


def build_docs(schema: TargetSchema, n_rows: int, columns: dict[str, list]) -> list[BaseDoc]:
    """Assemble ``n_rows`` docs of ``schema.cls`` from decoded columns, without validation.

    ``columns`` maps field names to lists of ``n_rows`` values that already have the
    target field's type. Target fields absent from ``columns`` get their defaults, as in
    ``model_construct``; a required one raises ``ValueError``.
    """
    cls = schema.cls
    for name, target in schema.fields.items():
        if name not in columns and target.info.is_required():
            raise ValueError(f"{cls.__name__}.{name} is required but the batch has no such field")
    if not schema.fast_construct:
        rows = zip(*columns.values()) if columns else repeat((), n_rows)
        return [cls.model_construct(**dict(zip(columns, row))) for row in rows]
    names, cols, factories = [], [], []
    for name, target in schema.fields.items():
        if name in columns:
            names.append(name)
            cols.append(columns[name])
        elif name in schema.constant_defaults:
            names.append(name)
            cols.append([schema.constant_defaults[name]] * n_rows)
        elif not target.info.is_required():  # mutable default or factory: fresh per doc
            factories.append((name, target.info))
    return _construct(cls, names, cols, factories, frozenset(columns), n_rows)


def _construct(cls, names, cols, factories, fields_set, n_rows) -> list[BaseDoc]:
    # Mirrors pydantic's model_construct for classes without post-init, extras or private
    # attributes, at a third of its cost: that cost is most of decoding.
    new = cls.__new__
    setattr_ = object.__setattr__
    docs = []
    for row in zip(*cols) if cols else repeat((), n_rows):
        values = dict(zip(names, row))
        for name, info in factories:
            values[name] = info.get_default(call_default_factory=True, validated_data=values)
        doc = new(cls)
        setattr_(doc, "__dict__", values)
        setattr_(doc, "__pydantic_fields_set__", set(fields_set))
        setattr_(doc, "__pydantic_extra__", None)
        setattr_(doc, "__pydantic_private__", None)
        docs.append(doc)
    return docs
