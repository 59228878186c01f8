"""Resolving `uses=` to an Executor class in the owner process, before anything starts."""
from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys

import cloudpickle
import yaml

from nborch.executor import Executor
from nborch.yaml_source import YamlSource, read_jtype, root, wrong_jtype

HUB_PREFIXES = ('jinaai://', 'jinahub://', 'jinahub+docker://', 'jinahub+sandbox://')
YAML_SUFFIXES = ('.yml', '.yaml')
REFERENCE_DEFAULT_EXECUTOR = 'BaseExecutor'  # the reference system's default `uses`: passes docs on


class PassThrough(Executor):
    """The executor of a Deployment with no `uses`: docs pass through unchanged."""


def is_executor_yaml(uses) -> bool:
    return isinstance(uses, str) and uses.strip().lower().endswith(YAML_SUFFIXES)


def resolve_uses_and_defaults(uses) -> tuple[type[Executor], dict]:
    """`resolve_uses`, plus the constructor kwargs an executor YAML's `with:` gives (a new dict;
    `{}` for every other form). The caller merges the user's `uses_with` over them."""
    if is_executor_yaml(uses):
        return executor_yaml(uses.strip())
    return resolve_uses(uses), {}


def resolve_uses(uses) -> type[Executor]:
    """An Executor subclass, `'module:Class'` / `'module.Class'`, a registered class name, or
    an executor YAML (only its class: `resolve_uses_and_defaults` also returns its `with:`)."""
    if uses is None or uses == REFERENCE_DEFAULT_EXECUTOR:
        return PassThrough
    if inspect.isclass(uses):
        if not issubclass(uses, Executor):
            raise TypeError(f'uses={uses.__qualname__} is not a subclass of nborch.Executor')
        return uses
    if isinstance(uses, Executor):
        raise TypeError('uses= takes an Executor class, not an instance '
                        f'(use uses={type(uses).__name__} and uses_with={{...}})')
    if not isinstance(uses, str) or not uses.strip():
        raise TypeError(f'uses= takes an Executor class or a string, got {uses!r}')
    uses = uses.strip()
    if uses.startswith(HUB_PREFIXES):
        raise ValueError(
            f'uses={uses!r}: nborch has no executor hub. Use an Executor class, '
            "'module.path:ClassName', the name of an Executor subclass you imported, "
            'or an executor YAML file')
    if is_executor_yaml(uses):
        return resolve_uses_and_defaults(uses)[0]
    registered = Executor.registered(uses)
    if registered is not None:
        return registered
    return _import_class(uses)


def _import_class(path: str) -> type[Executor]:
    module_name, sep, attr = path.partition(':')
    if not sep:
        module_name, _, attr = path.rpartition('.')
    if not module_name or not attr:
        raise ValueError(f'unknown executor {path!r}: not a registered Executor name and not '
                         "of the form 'module.path:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f'unknown executor {path!r}: cannot import {module_name!r} ({exc})') from None
    obj = module
    for part in attr.split('.'):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f'unknown executor {path!r}: {module_name!r} has no {attr!r}')
    return resolve_uses(obj) if inspect.isclass(obj) else _not_a_class(path, obj)


def _not_a_class(path: str, obj) -> type[Executor]:
    raise TypeError(f'uses={path!r} names {type(obj).__name__}, not an Executor class')


def import_py_module(path: str, shown_as: str | None = None):
    """Import a Python file (or a package folder) given as `py_modules`, once per version.

    It is imported under a name derived from its absolute path, registered in `sys.modules`
    and for pickling by value, so replica processes receive classes defined there without
    importing the file. An unchanged file is not imported twice. ValueError says what failed.
    """
    shown = shown_as or path
    init = os.path.join(path, '__init__.py')
    if os.path.isdir(path) and os.path.isfile(init):
        location, search = init, [path]
    elif os.path.isfile(path):
        location, search = path, None
    else:
        raise ValueError(f"no such file '{shown}' (in {os.path.dirname(os.path.abspath(path))})")
    stat = os.stat(location)
    signature = (stat.st_mtime_ns, stat.st_size)
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
    stem = re.sub(r'\W', '_', os.path.splitext(os.path.basename(path))[0])
    name = f'_nborch_py_modules_{stem}_{digest}'
    module = sys.modules.get(name)
    if module is not None and getattr(module, '__nborch_signature__', None) == signature:
        return module
    spec = importlib.util.spec_from_file_location(name, location,
                                                  submodule_search_locations=search)
    module = importlib.util.module_from_spec(spec)
    module.__nborch_signature__ = signature
    sys.modules[name] = module  # before exec: dataclasses/pydantic look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if not isinstance(exc, Exception):
            raise
        detail = f'{type(exc).__name__}: {exc}'.splitlines()[0]
        raise ValueError(f"importing '{shown}' failed: {detail}") from None
    cloudpickle.register_pickle_by_value(module)
    return module


def import_py_modules(py_modules) -> list:
    """`py_modules=` of a Deployment: a path or a list of paths, imported in order."""
    if py_modules is None:
        return []
    paths = [py_modules] if isinstance(py_modules, (str, os.PathLike)) else py_modules
    if not isinstance(paths, (list, tuple)) or not all(
            isinstance(p, (str, os.PathLike)) and str(p).strip() for p in paths):
        raise ValueError(f'py_modules={py_modules!r}: a file path or a list of file paths')
    modules = []
    for path in paths:
        try:
            modules.append(import_py_module(os.path.abspath(os.path.expanduser(str(path))),
                                            shown_as=str(path)))
        except ValueError as exc:
            raise ValueError(f'py_modules: {exc}') from None
    return modules


_EXECUTOR_YAML_KEYS = ('jtype', 'with', 'py_modules', 'metas')
_METAS_KEYS = ('name', 'description', 'url', 'keywords', 'workspace', 'py_modules')


# -- executor YAML ------------------------------------------------------------------------------

def executor_yaml(path: str | os.PathLike) -> tuple[type[Executor], dict]:
    """`(ExecutorClass, with_kwargs)` from an executor YAML: `jtype: MyExec`, `with:`,
    `py_modules:` (also accepted under `metas:`, the legacy place).

    Each py_module is imported under a name derived from its absolute path and registered in
    `sys.modules` and for pickling by value, so replica processes receive classes defined
    there without importing the file. An unchanged file is not imported twice.
    """
    source = YamlSource(path)
    entries = root(source, "'jtype: <Executor class name>'")
    jtype, jtype_node = read_jtype(source, entries, "'jtype: <Executor class name>'")
    if jtype in ('Deployment', 'Flow'):
        raise wrong_jtype(source, jtype_node, jtype, 'an executor YAML')
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


def _py_module_files(source: YamlSource, node: yaml.Node) -> list[tuple[yaml.Node, str]]:
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    files = []
    for item in items:
        value = source.value(item)
        if not isinstance(value, str) or not value.strip():
            raise source.error(item, f'py_modules: expected a file name, got {value!r}')
        files.append((item, value))
    return files


def _import_py_module(source: YamlSource, node: yaml.Node, file: str):
    try:
        return import_py_module(source.resolve_path(file), shown_as=file)
    except ValueError as exc:
        raise source.error(node, f'py_modules: {exc}') from None


def _find_class(source: YamlSource, node: yaml.Node, jtype: str, modules) -> type[Executor]:
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
