"""Deployments and Flows from YAML text: the plain-Python helpers the cell magics shell over.

`deployment_from_yaml(text)` and `flow_from_yaml(text)` build (never start) a Deployment or
a Flow from the YAML body of a cell, exactly as `load_config` does from a file. Nothing here
imports IPython; `nborch.magics` does, and only once the extension is loaded.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, TypeVar

import yaml

from nborch.config import deployment_kwargs, flow_kwargs
from nborch.deployment import Deployment
from nborch.errors import ConfigError
from nborch.flow import Flow

T = TypeVar('T')

__all__ = ['deployment_from_yaml', 'flow_from_yaml']


def deployment_from_yaml(text: str, *, name: str | None = None, origin: str = '<yaml>',
                         first_line: int = 1, **overrides) -> Deployment:
    """A Deployment (not started) from `jtype: Deployment` YAML text; `jtype` may be omitted.

    `name` is the deployment's name unless the YAML gives one; `overrides` (Deployment
    keyword arguments) win over the YAML. YAML mistakes are a `ConfigError` whose message
    is `ORIGIN:LINE: what is wrong`, where `text` starts on line `first_line` of `origin`.
    """
    kwargs = _read(deployment_kwargs, _with_jtype(text, 'Deployment'), origin, first_line)
    if name is not None:
        kwargs.setdefault('name', name)
    return Deployment(**{**kwargs, **overrides})


def flow_from_yaml(text: str, *, name: str | None = None, origin: str = '<yaml>',
                   first_line: int = 1, **overrides) -> Flow:
    """A Flow (not started) from `jtype: Flow` YAML text; `jtype` may be omitted.

    `name` names the flow unless its `with:` does; `overrides` (Flow keyword arguments:
    the gateway's `port`, `host`, ...) win over `with:`. Errors as in `deployment_from_yaml`.
    """
    def load(path: str) -> Flow:
        gateway, _ = flow_kwargs(path)
        default = {'name': name} if name is not None and 'name' not in gateway else {}
        return Flow.load_config(path, **{**default, **overrides})

    return _read(load, _with_jtype(text, 'Flow'), origin, first_line)


def _with_jtype(text: str, jtype: str) -> str:
    """`text` with `jtype: <jtype>` appended when it is a mapping (or empty) without one.

    Appended, not prepended, so that line numbers in error messages stay those of `text`.
    Text that does not parse is returned unchanged: the config reader reports where.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if data is None or (isinstance(data, dict) and 'jtype' not in data):
        return f'{text.rstrip()}\njtype: {jtype}\n'
    return text


def _read(reader: Callable[[str], T], text: str, origin: str, first_line: int) -> T:
    """`reader(path)` over `text` written to a file in the working directory (so relative
    `uses:` and `py_modules:` paths resolve from there, as they would for a YAML file next to
    the notebook; the system's temp dir if that is not writable), removed afterwards.
    Errors in `text` name `origin` (where `text` starts on line `first_line`), not the file."""
    try:
        fd, path = tempfile.mkstemp(prefix='.nborch-', suffix='.yml', dir=os.getcwd())
    except OSError:
        fd, path = tempfile.mkstemp(prefix='nborch-', suffix='.yml')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
        return reader(path)
    except ConfigError as exc:
        if exc.path != path:  # an executor YAML named in `uses:` keeps its own name
            raise
        line = exc.line + first_line - 1 if exc.line else None
        raise ConfigError(origin, line, exc.problem) from None
    finally:
        os.unlink(path)
