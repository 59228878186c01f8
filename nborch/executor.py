"""The Executor API: `Executor`, `@requests`, `@write`, `@dynamic_batching`.

Decorators only mark functions (no wrappers), so they stack in any order and a method stays
an ordinary method. The endpoint table is built once per class from those marks; the
worker process asks it which method serves an endpoint.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional

from docarray import BaseDoc, DocList
from docarray.documents.legacy import LegacyDocument

__all__ = ['Executor', 'requests', 'write', 'dynamic_batching', 'Endpoint', 'Batching',
           'DEFAULT_ENDPOINT']

DEFAULT_ENDPOINT = '/default'
_ENDPOINTS_ATTR = '_nborch_endpoints'
_SCHEMAS_ATTR = '_nborch_schemas'
_WRITE_ATTR = '_nborch_write'
_BATCHING_ATTR = '_nborch_batching'


def _schema_doc_type(schema: Any, which: str) -> type[BaseDoc] | None:
    """The document class of a `request_schema`/`response_schema` (a `DocList[X]`)."""
    if schema is None:
        return None
    origin = typing.get_origin(schema) or schema
    doc_type = doc_type_of(schema) if inspect.isclass(origin) and issubclass(origin, DocList) \
        else None
    if doc_type is None:
        hint = f'; give DocList[{schema.__name__}]' if inspect.isclass(schema) and \
            issubclass(schema, BaseDoc) else ''
        raise TypeError(f'@requests({which}=...) takes DocList[SomeDoc], got {schema!r}{hint}')
    return doc_type


def requests(func: Optional[Callable] = None, *, on: str | list[str] | tuple[str, ...] | None = None,
             request_schema: Any = None, response_schema: Any = None):
    """Mark a method as the handler of `on` (a path or a list of paths).

    Bare `@requests` makes the method the fallback for every endpoint no other method serves.
    `request_schema`/`response_schema` (`DocList[X]`) name the documents the endpoint takes
    and returns; they take precedence over the method's annotations.
    """
    if on is None:
        endpoints = [DEFAULT_ENDPOINT]
    elif isinstance(on, str):
        endpoints = [on]
    else:
        endpoints = list(on)
    for endpoint in endpoints:
        if not isinstance(endpoint, str) or not endpoint:
            raise ValueError(f'@requests(on=...) takes endpoint paths, got {endpoint!r}')
    schemas = (_schema_doc_type(request_schema, 'request_schema'),
               _schema_doc_type(response_schema, 'response_schema'))

    def mark(fn: Callable) -> Callable:
        setattr(fn, _ENDPOINTS_ATTR, [*getattr(fn, _ENDPOINTS_ATTR, []), *endpoints])
        if schemas != (None, None):
            setattr(fn, _SCHEMAS_ATTR, {**getattr(fn, _SCHEMAS_ATTR, {}),
                                        **{endpoint: schemas for endpoint in endpoints}})
        return fn

    return mark(func) if func is not None else mark


def write(func: Callable) -> Callable:
    """Mark an endpoint as changing the executor's state (replicated under consensus)."""
    setattr(func, _WRITE_ATTR, True)
    return func


@dataclass(frozen=True)
class Batching:
    """An endpoint's `@dynamic_batching` settings (`timeout` in milliseconds)."""

    preferred_batch_size: int
    timeout: float = 10_000
    flush_all: bool = False
    custom_metric: Callable[[BaseDoc], float] | None = None  # a doc's weight (default 1)

    @classmethod
    def checked(cls, where: str, preferred_batch_size=None, timeout=10_000, flush_all=False,
                custom_metric=None, use_custom_metric=False,
                use_dynamic_batching=True) -> 'Batching | None':
        """The settings as the decorator takes them, checked; None when turned off."""
        if isinstance(preferred_batch_size, bool) or not isinstance(preferred_batch_size, int) \
                or preferred_batch_size < 1:
            raise ValueError(f'{where}(preferred_batch_size=...) takes a whole number of docs '
                             f'>= 1, got {preferred_batch_size!r}')
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f'{where}(timeout=...) takes milliseconds > 0, got {timeout!r}')
        if use_custom_metric and not callable(custom_metric):
            raise ValueError(f'{where}(use_custom_metric=True) needs custom_metric=, a function '
                             f'of one doc returning its weight; got {custom_metric!r}')
        if not use_dynamic_batching:
            return None
        return cls(preferred_batch_size, float(timeout), bool(flush_all),
                   custom_metric if use_custom_metric else None)


def dynamic_batching(func: Optional[Callable] = None, *, preferred_batch_size: int | None = None,
                     timeout: float = 10_000, flush_all: bool = False,
                     custom_metric: Callable[[BaseDoc], float] | None = None,
                     use_custom_metric: bool = False, use_dynamic_batching: bool = True):
    """Gather the docs of concurrent requests to this endpoint into batched calls.

    Each replica queues the requests per endpoint and per parameters (requests with
    different parameters never share a call) and calls the method once `preferred_batch_size`
    docs are queued, or `timeout` ms after the oldest queued request arrived. A call gets at
    most `preferred_batch_size` docs (with `flush_all=True`, everything queued); it must
    return the docs changed in place (None) or a DocList of as many docs, and each request
    gets its own docs back, in order. An exception fails every request in that call. With
    `use_custom_metric=True`, docs weigh `custom_metric(doc)` instead of 1 each.
    """
    config = Batching.checked('@dynamic_batching', preferred_batch_size, timeout, flush_all,
                              custom_metric, use_custom_metric, use_dynamic_batching)

    def mark(fn: Callable) -> Callable:
        setattr(fn, _BATCHING_ATTR, config)
        return fn

    return mark(func) if func is not None else mark


# What `uses_dynamic_batching` may set (it travels as JSON: a custom_metric is a decorator's).
_OVERRIDE_KEYS = ('preferred_batch_size', 'timeout', 'flush_all', 'use_dynamic_batching')


def batching_table(cls: type['Executor'], overrides: dict | None = None,
                   where: str = 'uses_dynamic_batching') -> dict[str, Batching | None]:
    """Endpoint path → its batching: the class's `@dynamic_batching`, replaced by `overrides`
    (`uses_dynamic_batching`: {path or method name: settings}, a path's winning over its
    method's, as in the reference system). ValueError for a key that is neither."""
    table = cls.endpoints()
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict):
        raise ValueError(f'{where} takes {{endpoint or method: {{"preferred_batch_size": n, '
                         f'"timeout": ms}}}}, got {overrides!r}')
    methods = {e.method_name for e in table.values()}
    checked = {}
    for key, settings in overrides.items():
        if key not in table and key not in methods:
            raise ValueError(f'{where}: {key!r} is neither an endpoint nor a method of '
                             f'{cls.__name__} (endpoints: {", ".join(sorted(table))})')
        if not isinstance(settings, dict) or not settings.keys() <= set(_OVERRIDE_KEYS):
            raise ValueError(f'{where}[{key!r}] takes a dict of {", ".join(_OVERRIDE_KEYS)}; '
                             f'got {settings!r}')
        checked[key] = Batching.checked(f'{where}[{key!r}]', **settings)
    return {path: checked[path] if path in checked else
            checked[e.method_name] if e.method_name in checked else e.batching
            for path, e in table.items()}


@dataclass(frozen=True)
class Endpoint:
    """How one endpoint is served: the method and the document schemas it speaks."""

    method_name: str
    input_type: type[BaseDoc]
    output_type: type[BaseDoc]
    is_write: bool
    is_async: bool
    accepted_kwargs: frozenset[str] | None  # None: the method takes **kwargs
    batching: Batching | None = None


def doc_type_of(annotation: Any) -> type[BaseDoc] | None:
    """`DocList[X]` (a parametrized class or a typing alias of one) or `X` itself → X."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if inspect.isclass(origin) and issubclass(origin, DocList) and args:
        annotation = args[0]
    elif inspect.isclass(annotation) and issubclass(annotation, DocList):
        annotation = getattr(annotation, 'doc_type', None)
    if inspect.isclass(annotation) and issubclass(annotation, BaseDoc):
        return annotation
    return None


def _describe(method_name: str, fn: Callable, endpoint: str) -> Endpoint:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = getattr(fn, '__annotations__', {})
    request_schema, response_schema = getattr(fn, _SCHEMAS_ATTR, {}).get(endpoint, (None, None))
    # Unannotated docs are the reference system's LegacyDocument (text, tags, embedding, ...).
    input_type = request_schema or doc_type_of(hints.get('docs')) or LegacyDocument
    # An endpoint that changes its docs in place returns what it took.
    output_type = response_schema or doc_type_of(hints.get('return')) or input_type
    params = inspect.signature(fn).parameters.values()
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    accepted = None if takes_any else frozenset(p.name for p in params)
    return Endpoint(
        method_name=method_name,
        input_type=input_type,
        output_type=output_type,
        is_write=bool(getattr(fn, _WRITE_ATTR, False)),
        is_async=inspect.iscoroutinefunction(fn),
        accepted_kwargs=accepted,
        batching=getattr(fn, _BATCHING_ATTR, None),
    )


def refuse_batched_writes(cls: type['Executor'], name: str, overrides: dict | None = None) -> None:
    """ValueError when a stateful executor has a `@write` endpoint with dynamic batching:
    each write is one Raft log entry, applied alone and in log order on every replica, so
    writes are never gathered into one call."""
    batching = batching_table(cls, overrides)
    batched = sorted(path for path, e in cls.endpoints().items() if e.is_write and batching[path])
    if batched:
        raise ValueError(f'{name}: stateful=True replicates each @write request as one Raft '
                         f'entry, so @dynamic_batching cannot apply to @write endpoint(s) '
                         f'{", ".join(batched)}; batch only endpoints that do not change state')


class Executor:
    """Base class of user executors.

    Subclasses take their own keyword arguments (from `uses_with`) and must pass `**kwargs`
    on to `super().__init__` so that `runtime_args` reaches here.
    """

    _registry: dict[str, dict[str, type['Executor']]] = {}  # name → {'module:qualname': class}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A registered name lets `uses='MyIndexer'` find a class the user already imported;
        # redefining a class in the same module (a re-run notebook cell) replaces it.
        Executor._registry.setdefault(cls.__name__, {})[f'{cls.__module__}:{cls.__qualname__}'] = cls

    @staticmethod
    def registered(name: str) -> type['Executor'] | None:
        """The one imported Executor subclass called `name`; ValueError when several are."""
        found = Executor._registry.get(name, {})
        if len(found) > 1:
            raise ValueError(f'uses={name!r} is ambiguous: {", ".join(sorted(found))}; '
                             "name one as 'module:Class'")
        return next(iter(found.values()), None)

    def __init__(self, *args, metas: dict | None = None, runtime_args: dict | None = None,
                 workspace: str | None = None, **kwargs):
        metas_ = dict(metas or {})
        # metas.name is the executor's name (a Deployment passes its own); runtime_args.name
        # is this replica's, e.g. 'indexer/rep-0' or 'indexer/shard-1/rep-0'.
        metas_['name'] = metas_.get('name') or type(self).__name__
        args_ = dict(runtime_args or {})
        args_.setdefault('name', metas_['name'])
        args_.setdefault('replica_id', 0)
        args_.setdefault('shard_id', 0)
        args_.setdefault('replicas', 1)
        args_.setdefault('shards', 1)
        args_.setdefault('workspace', workspace or metas_.get('workspace'))
        metas_['workspace'] = args_['workspace']
        self.runtime_args = types.SimpleNamespace(**args_)
        self.metas = types.SimpleNamespace(**metas_)
        self.logger = logging.getLogger(args_['name'])  # log lines: `indexer/rep-0@902 ...`

    @property
    def workspace(self) -> str | None:
        """`<workspace>/<metas.name>/<shard_id>`, created on first use; None without a
        workspace."""
        root = self.runtime_args.workspace
        if not root:
            return None
        path = os.path.join(root, self.metas.name, str(self.runtime_args.shard_id))
        os.makedirs(path, exist_ok=True)
        return path

    @classmethod
    @functools.cache
    def endpoints(cls) -> dict[str, Endpoint]:
        """Endpoint path → how it is served, from the `@requests` marks on the class's MRO."""
        table: dict[str, Endpoint] = {}
        for klass in reversed(cls.__mro__):  # subclasses override their bases
            for name, fn in vars(klass).items():
                for endpoint in getattr(fn, _ENDPOINTS_ATTR, ()):
                    table[endpoint] = _describe(name, fn, endpoint)
        return table

    def endpoint_for(self, path: str) -> Endpoint | None:
        """The endpoint serving `path`: its own, else the `/default` fallback, else None."""
        table = type(self).endpoints()
        return table.get(path) or table.get(DEFAULT_ENDPOINT)

    def close(self) -> None:
        """Called once when the replica stops; override to release resources."""
