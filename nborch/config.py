"""Reading Deployment and Flow YAML files (`jtype: Deployment`, `jtype: Flow`); executor
YAMLs are read where `uses=` is resolved (nborch.uses).

Parsing only: no processes, no sockets. Values are checked by the objects they are handed to
(`DeploymentSpec.validate`, `Flow`); this module checks the shape — known keys, mappings and
lists where they belong — so that every mistake it finds is a `ConfigError` whose one line
starts with `FILE:LINE:` and names the key at fault. Lines come from the composed node tree's
marks, so they are right for keys nested under `with:` too.
"""
from __future__ import annotations

import dataclasses
import os

import yaml

from nborch.compat import NO_EFFECT, NOT_SUPPORTED
from nborch.errors import ConfigError
from nborch.spec import FLOW_GATEWAY_KEYS, DeploymentSpec, flow_executor_default_keys
from nborch.uses import is_executor_yaml
from nborch.yaml_source import YamlSource, is_null, kind, read_jtype, root, wrong_jtype, yaml_jtype

__all__ = ['ConfigError', 'deployment_keys', 'deployment_kwargs', 'flow_keys', 'flow_kwargs',
           'yaml_jtype']

# Keys a Deployment takes besides DeploymentSpec's fields, passed on to it: the reference
# system's options that nborch warns about or refuses (nborch.compat), and the ones below.
REFERENCE_KEYS = tuple(dict.fromkeys(k.partition('@')[0] for k in (*NO_EFFECT, *NOT_SUPPORTED)))
PASS_THROUGH_KEYS = ('external', 'stateful', 'peer_ports', 'raft_configuration')
# DeploymentSpec fields that validate() fills in; they are not user input. Fields added for the
# same purpose are recognised by `repr=False`.
_RESOLVED_FIELDS = ('executor_class', 'polling_table')
_DEPLOYMENT_FILE_KEYS = ('jtype', 'with', 'version')
_FLOW_FILE_KEYS = ('jtype', 'with', 'executors', 'version')


def deployment_keys() -> tuple[str, ...]:
    """Every key a Deployment accepts from YAML (the user-facing fields of DeploymentSpec,
    then the pass-through keys), in field order."""
    names = [f.name for f in dataclasses.fields(DeploymentSpec)
             if f.repr and f.name not in _RESOLVED_FIELDS]
    return tuple(dict.fromkeys([*names, *PASS_THROUGH_KEYS]))


def flow_keys() -> tuple[str, ...]:
    """Every key of a Flow's `with:`: the keyword arguments of `Flow()` — its gateway's, then
    the Deployment arguments it takes as defaults of every executor."""
    return (*FLOW_GATEWAY_KEYS, *flow_executor_default_keys())


# -- Deployment and Flow ------------------------------------------------------------------------

def _executor_entry(source: YamlSource, entries, what: str, extra: tuple[str, ...] = ()) -> dict:
    """`Deployment(...)` / `Flow.add(...)` kwargs from checked entries of a mapping."""
    allowed = (*deployment_keys(), *REFERENCE_KEYS, *extra)
    source.check_keys(entries, allowed, what)
    kwargs = {key: source.value(node) for key, (_, node) in entries.items()}
    if is_executor_yaml(kwargs.get('uses')):
        kwargs['uses'] = source.resolve_path(kwargs['uses'])
    return kwargs


def deployment_kwargs(path: str | os.PathLike) -> dict:
    """`Deployment(**kwargs)` from a `jtype: Deployment` YAML, keys at top level or in `with:`.

    An executor YAML named in `uses:` is made absolute relative to this file's folder;
    the reference system's options in nborch.compat go on to the Deployment, which warns
    about or refuses them.
    """
    source = YamlSource(path)
    entries = root(source, "'jtype: Deployment'")
    jtype, jtype_node = read_jtype(source, entries, "'jtype: Deployment'")
    if jtype != 'Deployment':
        raise wrong_jtype(source, jtype_node, jtype, 'a Deployment YAML')
    source.check_keys(entries, (*_DEPLOYMENT_FILE_KEYS, *deployment_keys(), *REFERENCE_KEYS),
                      'a Deployment')
    top = {k: v for k, v in entries.items() if k not in _DEPLOYMENT_FILE_KEYS}
    nested = source.mapping(entries['with'][1], 'with:') if 'with' in entries else {}
    for key, (key_node, _) in nested.items():
        if key in top:
            first = top[key][0].start_mark.line + 1
            raise source.error(key_node, f"'{key}' is given twice: at the top (line {first}) "
                                         'and under with:')
    kwargs = _executor_entry(source, top, 'a Deployment')
    kwargs.update(_executor_entry(source, nested, "a Deployment's with:"))
    return kwargs


def flow_kwargs(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """`(Flow(**gateway), [flow.add(**entry), ...])` from a `jtype: Flow` YAML."""
    source = YamlSource(path)
    entries = root(source, "'jtype: Flow'")
    jtype, jtype_node = read_jtype(source, entries, "'jtype: Flow'")
    if jtype != 'Flow':
        raise wrong_jtype(source, jtype_node, jtype, 'a Flow YAML')
    source.check_keys(entries, _FLOW_FILE_KEYS, 'a Flow')
    gateway_entries = source.mapping(entries['with'][1], "a Flow's with:") \
        if 'with' in entries else {}
    source.check_keys(gateway_entries, flow_keys(), "a Flow's with:")
    gateway = {key: source.value(node) for key, (_, node) in gateway_entries.items()}
    executors: list[dict] = []
    if 'executors' in entries:
        node = entries['executors'][1]
        if not isinstance(node, yaml.SequenceNode) and not is_null(node):
            raise source.error(node, f'executors: expected a list of executors (each line '
                                     f"starting with '- '), got {kind(node)}")
        for i, item in enumerate([] if is_null(node) else node.value):
            what = f'executors[{i}]'
            if not isinstance(item, yaml.MappingNode):
                raise source.error(item, f'{what}: expected a mapping of Flow.add() arguments, '
                                         f'got {kind(item)}')
            item_entries = source.mapping(item, what)
            kwargs = _executor_entry(source, item_entries, f'{what} of a Flow', extra=('needs',))
            if 'needs' in kwargs:
                kwargs['needs'] = _needs(source, item_entries['needs'][1], what)
            executors.append(kwargs)
    return gateway, executors


def _needs(source: YamlSource, node: yaml.Node, what: str) -> str | list[str] | None:
    value = source.value(node)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise source.error(node, f'{what}: needs: expected an executor name or a list of names, '
                             f'got {value!r}')
