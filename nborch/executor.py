"""The Executor API: `Executor`, `@requests`, `@write` (SPEC §1).

Decorators only mark functions (no wrappers), so `@write` may sit above or below
`@requests` and a method stays an ordinary method. The endpoint table is built once per
class from those marks; the worker process asks it which method serves an endpoint.
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
from docarray.documents import TextDoc

__all__ = ['Executor', 'requests', 'write', 'Endpoint', 'DEFAULT_ENDPOINT']

DEFAULT_ENDPOINT = '/default'
_ENDPOINTS_ATTR = '_nborch_endpoints'
_WRITE_ATTR = '_nborch_write'


def requests(func: Optional[Callable] = None, *, on: str | list[str] | tuple[str, ...] | None = None):
    """Mark a method as the handler of `on` (a path or a list of paths).

    Bare `@requests` makes the method the fallback for every endpoint no other method serves.
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

    def mark(fn: Callable) -> Callable:
        setattr(fn, _ENDPOINTS_ATTR, [*getattr(fn, _ENDPOINTS_ATTR, []), *endpoints])
        return fn

    return mark(func) if func is not None else mark


def write(func: Callable) -> Callable:
    """Mark an endpoint as changing the executor's state (replicated under consensus)."""
    setattr(func, _WRITE_ATTR, True)
    return func


@dataclass(frozen=True)
class Endpoint:
    """How one endpoint is served: the method and the document schemas it speaks."""

    method_name: str
    input_type: type[BaseDoc]
    output_type: type[BaseDoc]
    is_write: bool
    is_async: bool
    accepted_kwargs: frozenset[str] | None  # None: the method takes **kwargs


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


def _describe(method_name: str, fn: Callable) -> Endpoint:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = getattr(fn, '__annotations__', {})
    input_type = doc_type_of(hints.get('docs')) or TextDoc
    output_type = doc_type_of(hints.get('return')) or input_type
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
    )


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
        args_ = dict(runtime_args or {})
        args_.setdefault('name', (metas or {}).get('name', type(self).__name__))
        args_.setdefault('replica_id', 0)
        args_.setdefault('shard_id', 0)
        args_.setdefault('replicas', 1)
        args_.setdefault('shards', 1)
        args_.setdefault('workspace', workspace or (metas or {}).get('workspace'))
        self.runtime_args = types.SimpleNamespace(**args_)
        self.metas = types.SimpleNamespace(name=args_['name'], workspace=args_['workspace'])
        self.logger = logging.getLogger(f"{args_['name']}/rep-{args_['replica_id']}")

    @property
    def workspace(self) -> str | None:
        """`<workspace>/<name>/<shard_id>`, created on first use; None without a workspace."""
        root = self.runtime_args.workspace
        if not root:
            return None
        path = os.path.join(root, self.runtime_args.name, str(self.runtime_args.shard_id))
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
                    table[endpoint] = _describe(name, fn)
        return table

    def endpoint_for(self, path: str) -> Endpoint | None:
        """The endpoint serving `path`: its own, else the `/default` fallback, else None."""
        table = type(self).endpoints()
        return table.get(path) or table.get(DEFAULT_ENDPOINT)

    def close(self) -> None:
        """Called once when the replica stops; override to release resources."""
