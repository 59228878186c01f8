"""The owner-side package's shape: every module imports alone in a fresh interpreter, and the
import graph among them (function-level imports included) has no cycle."""
from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import nborch

PACKAGE = Path(nborch.__file__).parent


def owner_modules() -> dict[str, Path]:
    """`nborch.*` modules of the owner side (the runtime and widgets are other packages)."""
    found = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
        if parts[-1] == '__init__':
            parts = parts[:-1]
        found['.'.join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules `name` imports anywhere in its body (inside functions too)."""
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1]
                                + ([node.module] if node.module else []))
            found.add(base)
            found.update(f'{base}.{alias.name}' for alias in node.names)
    return {m for m in found if m in known and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None


def test_no_import_cycle_among_the_owner_modules():
    modules = owner_modules()
    graph = {name: imports_of(name, path, set(modules)) for name, path in modules.items()}
    # The package itself is the public facade: it imports the API; nothing imports it back.
    importers = sorted(name for name, deps in graph.items() if 'nborch' in deps)
    assert importers == [], f'{importers} import the nborch package facade'
    assert find_cycle(graph) is None, ' -> '.join(find_cycle(graph))


def _import_alone(module: str) -> tuple[str, int, str]:
    done = subprocess.run([sys.executable, '-c', f'import {module}'], capture_output=True,
                          text=True, timeout=60)
    return module, done.returncode, done.stderr[-600:]


@pytest.mark.timeout(300)
def test_every_owner_module_imports_alone_in_a_fresh_interpreter():
    with ThreadPoolExecutor(4) as pool:
        failed = [(m, err) for m, rc, err in pool.map(_import_alone, owner_modules()) if rc]
    assert failed == []


def test_flow_gateway_keys_are_flows_gateway_parameters():
    from nborch import Flow
    from nborch.spec import FLOW_GATEWAY_KEYS
    keyword_only = [p.name for p in inspect.signature(Flow.__init__).parameters.values()
                    if p.kind is p.KEYWORD_ONLY]
    assert tuple(keyword_only) == FLOW_GATEWAY_KEYS
