"""Reading nborch's YAML files (SPEC §2): `jtype: Deployment`, `jtype: Flow`, executor YAMLs.

Parsing only: no processes, no sockets (an executor YAML's `py_modules` are imported, as
`uses=` imports a module). Values are checked by the objects they are handed to
(`DeploymentSpec.validate`, `Flow`); this module checks the shape — known keys, mappings and
lists where they belong — so that every mistake it finds is a `ConfigError` whose one line
starts with `FILE:LINE:` and names the key at fault. Lines come from the composed node tree's
marks, so they are right for keys nested under `with:` too.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
from typing import Any

import yaml

from nborch.compat import NO_EFFECT, NOT_SUPPORTED
from nborch.errors import ConfigError
from nborch.executor import Executor
from nborch.spec import DeploymentSpec
from nborch.uses import import_py_module, is_executor_yaml, resolve_uses

__all__ = ['ConfigError', 'deployment_keys', 'deployment_kwargs', 'executor_yaml', 'flow_keys',
           'flow_kwargs', 'yaml_jtype']

# Keys a Deployment takes besides DeploymentSpec's fields, passed on to it: the reference
# system's options that nborch warns about or refuses (nborch.compat), and the ones below.
REFERENCE_KEYS = tuple(dict.fromkeys(k.partition('@')[0] for k in (*NO_EFFECT, *NOT_SUPPORTED)))
PASS_THROUGH_KEYS = ('external', 'stateful', 'peer_ports', 'raft_configuration')
# DeploymentSpec fields that validate() fills in; they are not user input. Fields added for the
# same purpose are recognised by `repr=False`.
_RESOLVED_FIELDS = ('executor_class', 'polling_table')
_DEPLOYMENT_FILE_KEYS = ('jtype', 'with', 'version')
_FLOW_FILE_KEYS = ('jtype', 'with', 'executors', 'version')
_EXECUTOR_YAML_KEYS = ('jtype', 'with', 'py_modules', 'metas')
_METAS_KEYS = ('name', 'description', 'url', 'keywords', 'workspace', 'py_modules')


def deployment_keys() -> tuple[str, ...]:
    """Every key a Deployment accepts from YAML (the user-facing fields of DeploymentSpec,
    then the pass-through keys), in field order."""
    names = [f.name for f in dataclasses.fields(DeploymentSpec)
             if f.repr and f.name not in _RESOLVED_FIELDS]
    return tuple(dict.fromkeys([*names, *PASS_THROUGH_KEYS]))


def flow_keys() -> tuple[str, ...]:
    """Every key of a Flow's `with:`: the keyword arguments of `Flow()` — its gateway's, then
    the Deployment arguments it takes as defaults of every executor."""
    from nborch.flow import executor_default_keys, gateway_keys  # flow.py imports this module
    return (*gateway_keys(), *executor_default_keys())


# -- reading ------------------------------------------------------------------------------------

class _Source:
    """One YAML file as a node tree, with helpers that turn nodes into checked values."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.folder = os.path.dirname(os.path.abspath(self.path))
        try:
            with open(self.path, encoding='utf-8') as f:
                text = f.read()
        except FileNotFoundError:
            raise ConfigError(self.path, None, 'no such file') from None
        except IsADirectoryError:
            raise ConfigError(self.path, None, 'is a directory, not a YAML file') from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(self.path, None, f'cannot read it ({exc})') from None
        self.loader = yaml.SafeLoader(text)
        try:
            self.root = self.loader.get_single_node()  # what yaml.compose does
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or 'cannot parse'
            raise ConfigError(self.path, mark.line + 1 if mark else None,
                              f'invalid YAML: {problem}') from None
        except yaml.YAMLError as exc:
            raise ConfigError(self.path, None, f'invalid YAML: {exc}') from None

    def error(self, where: yaml.Node | int | None, message: str) -> ConfigError:
        line = where.start_mark.line + 1 if isinstance(where, yaml.Node) else where
        return ConfigError(self.path, line, message)

    def value(self, node: yaml.Node) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or node.start_mark
            raise ConfigError(self.path, mark.line + 1, f'invalid YAML: {exc.problem}') from None

    def mapping(self, node: yaml.Node | None, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """key → (key node, value node); a null node is an empty mapping."""
        if node is None or _is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f'{what}: expected a mapping, got {_kind(node)}')
        written: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == 'tag:yaml.org,2002:merge':
                continue
            key = self.value(key_node)
            if not isinstance(key, str):
                raise self.error(key_node, f'{what}: keys are names, got {key!r}')
            if key in written:
                first = written[key].start_mark.line + 1
                raise self.error(key_node, f"duplicate key '{key}' in {what} (first on line {first})")
            written[key] = key_node
        # `<<: *anchor` merges: flatten_mapping puts merged pairs first, so written keys win
        self.loader.flatten_mapping(node)
        return {self.value(key_node): (key_node, value_node) for key_node, value_node in node.value}

    def check_keys(self, entries: dict[str, tuple[yaml.Node, yaml.Node]], allowed, what: str):
        for key, (key_node, _) in entries.items():
            if key not in allowed:
                raise self.error(key_node, f"unknown key '{key}' in {what} ({_hint(key, allowed)})")

    def resolve_path(self, value: str) -> str:
        """A path written in this file, made absolute relative to the file's folder."""
        return os.path.normpath(os.path.join(self.folder, os.path.expanduser(value.strip())))


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == 'tag:yaml.org,2002:null'


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return 'a mapping'
    if isinstance(node, yaml.SequenceNode):
        return 'a list'
    if _is_null(node):
        return 'nothing'
    return repr(node.value)


def _hint(key: str, allowed) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return 'expected one of: ' + ', '.join(allowed)


def _root(source: _Source, expected: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if source.root is None:
        raise source.error(None, f'the file is empty; expected {expected}')
    if not isinstance(source.root, yaml.MappingNode):
        raise source.error(source.root, f'expected a mapping with {expected}, '
                                        f'got {_kind(source.root)}')
    return source.mapping(source.root, 'the file')


def _jtype(source: _Source, entries, expected: str) -> tuple[str, yaml.Node]:
    if 'jtype' not in entries:
        raise source.error(source.root, f'missing {expected}')
    _, node = entries['jtype']
    value = source.value(node)
    if not isinstance(value, str) or not value.strip():
        raise source.error(node, f'jtype: expected a class name, got {value!r}')
    return value.strip(), node


def yaml_jtype(path: str | os.PathLike) -> str:
    """The `jtype` of a YAML file (`Deployment`, `Flow`, or an executor class name)."""
    source = _Source(path)
    expected = "'jtype' (Deployment, Flow or an Executor class name)"
    return _jtype(source, _root(source, expected), expected)[0]


_KINDS = {
    'Deployment': ('a Deployment YAML', 'load it with Deployment.load_config or '
                                        '`nborch deployment --uses`'),
    'Flow': ('a Flow YAML', 'load it with Flow.load_config or `nborch flow --uses`'),
}


def _wrong_jtype(source: _Source, node: yaml.Node, jtype: str, expected: str) -> ConfigError:
    kind, how = _KINDS.get(jtype, ('an executor YAML',
                                   'name it in uses: of a Deployment or of a Flow executor'))
    return source.error(node, f"jtype '{jtype}': this is {kind}, not {expected} ({how})")


# -- Deployment and Flow ------------------------------------------------------------------------

def _executor_entry(source: _Source, entries, what: str, extra: tuple[str, ...] = ()) -> dict:
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
    source = _Source(path)
    entries = _root(source, "'jtype: Deployment'")
    jtype, jtype_node = _jtype(source, entries, "'jtype: Deployment'")
    if jtype != 'Deployment':
        raise _wrong_jtype(source, jtype_node, jtype, 'a Deployment YAML')
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
    source = _Source(path)
    entries = _root(source, "'jtype: Flow'")
    jtype, jtype_node = _jtype(source, entries, "'jtype: Flow'")
    if jtype != 'Flow':
        raise _wrong_jtype(source, jtype_node, jtype, 'a Flow YAML')
    source.check_keys(entries, _FLOW_FILE_KEYS, 'a Flow')
    gateway_entries = source.mapping(entries['with'][1], "a Flow's with:") \
        if 'with' in entries else {}
    source.check_keys(gateway_entries, flow_keys(), "a Flow's with:")
    gateway = {key: source.value(node) for key, (_, node) in gateway_entries.items()}
    executors: list[dict] = []
    if 'executors' in entries:
        node = entries['executors'][1]
        if not isinstance(node, yaml.SequenceNode) and not _is_null(node):
            raise source.error(node, f'executors: expected a list of executors (each line '
                                     f"starting with '- '), got {_kind(node)}")
        for i, item in enumerate([] if _is_null(node) else node.value):
            what = f'executors[{i}]'
            if not isinstance(item, yaml.MappingNode):
                raise source.error(item, f'{what}: expected a mapping of Flow.add() arguments, '
                                         f'got {_kind(item)}')
            item_entries = source.mapping(item, what)
            kwargs = _executor_entry(source, item_entries, f'{what} of a Flow', extra=('needs',))
            if 'needs' in kwargs:
                kwargs['needs'] = _needs(source, item_entries['needs'][1], what)
            executors.append(kwargs)
    return gateway, executors


def _needs(source: _Source, node: yaml.Node, what: str) -> str | list[str] | None:
    value = source.value(node)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise source.error(node, f'{what}: needs: expected an executor name or a list of names, '
                             f'got {value!r}')


# -- executor YAML ------------------------------------------------------------------------------

def executor_yaml(path: str | os.PathLike) -> tuple[type[Executor], dict]:
    """`(ExecutorClass, with_kwargs)` from an executor YAML: `jtype: MyExec`, `with:`,
    `py_modules:` (also accepted under `metas:`, the legacy place).

    Each py_module is imported under a name derived from its absolute path and registered in
    `sys.modules` and for pickling by value, so replica processes receive classes defined
    there without importing the file. An unchanged file is not imported twice.
    """
    source = _Source(path)
    entries = _root(source, "'jtype: <Executor class name>'")
    jtype, jtype_node = _jtype(source, entries, "'jtype: <Executor class name>'")
    if jtype in ('Deployment', 'Flow'):
        raise _wrong_jtype(source, jtype_node, jtype, 'an executor YAML')
    source.check_keys(entries, _EXECUTOR_YAML_KEYS, 'an executor YAML')
    with_entries = source.mapping(entries['with'][1], 'with:') if 'with' in entries else {}
    defaults = {key: source.value(node) for key, (_, node) in with_entries.items()}
    modules_nodes = []
    if 'metas' in entries:
        metas = source.mapping(entries['metas'][1], 'metas:')
        source.check_keys(metas, _METAS_KEYS, 'metas:')
        if 'py_modules' in metas:
            modules_nodes.append(metas['py_modules'][1])
    if 'py_modules' in entries:
        modules_nodes.append(entries['py_modules'][1])
    modules = [_import_py_module(source, file_node, file)
               for node in modules_nodes for file_node, file in _py_module_files(source, node)]
    return _find_class(source, jtype_node, jtype, modules), defaults


def _py_module_files(source: _Source, node: yaml.Node) -> list[tuple[yaml.Node, str]]:
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    files = []
    for item in items:
        value = source.value(item)
        if not isinstance(value, str) or not value.strip():
            raise source.error(item, f'py_modules: expected a file name, got {value!r}')
        files.append((item, value))
    return files


def _import_py_module(source: _Source, node: yaml.Node, file: str):
    try:
        return import_py_module(source.resolve_path(file), shown_as=file)
    except ValueError as exc:
        raise source.error(node, f'py_modules: {exc}') from None


def _find_class(source: _Source, node: yaml.Node, jtype: str, modules) -> type[Executor]:
    def is_executor(obj) -> bool:
        return inspect.isclass(obj) and issubclass(obj, Executor)

    for module in reversed(modules):  # the last file listed wins, as a later import would
        found = getattr(module, jtype, None)
        if is_executor(found):
            return found
    if ':' in jtype or '.' in jtype or Executor._registry.get(jtype):
        try:
            return resolve_uses(jtype)
        except (ValueError, TypeError) as exc:
            raise source.error(node, f"jtype '{jtype}': {exc}") from None
    candidates = [*Executor._registry,
                  *(n for m in modules for n, v in vars(m).items() if is_executor(v))]
    close = difflib.get_close_matches(jtype, candidates, n=1, cutoff=0.6)
    where = (f"in py_modules {', '.join(os.path.basename(m.__file__) for m in modules)} "
             'nor registered' if modules else 'registered (and no py_modules listed)')
    hint = f"did you mean '{close[0]}'?" if close else "or give it as 'module:Class'"
    raise source.error(node, f"jtype '{jtype}': no Executor class of that name {where}; {hint}")
