"""One YAML file read as a node tree, so every mistake names its file and line
(`ConfigError`): the reader shared by Deployment/Flow files and executor YAMLs."""
from __future__ import annotations

import difflib
import os
from typing import Any

import yaml

from nborch.errors import ConfigError


class YamlSource:
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
        if node is None or is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f'{what}: expected a mapping, got {kind(node)}')
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
                raise self.error(key_node, f"unknown key '{key}' in {what} ({hint(key, allowed)})")

    def resolve_path(self, value: str) -> str:
        """A path written in this file, made absolute relative to the file's folder."""
        return os.path.normpath(os.path.join(self.folder, os.path.expanduser(value.strip())))


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == 'tag:yaml.org,2002:null'


def kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return 'a mapping'
    if isinstance(node, yaml.SequenceNode):
        return 'a list'
    if is_null(node):
        return 'nothing'
    return repr(node.value)


def hint(key: str, allowed) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return 'expected one of: ' + ', '.join(allowed)


def root(source: YamlSource, expected: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if source.root is None:
        raise source.error(None, f'the file is empty; expected {expected}')
    if not isinstance(source.root, yaml.MappingNode):
        raise source.error(source.root, f'expected a mapping with {expected}, '
                                        f'got {kind(source.root)}')
    return source.mapping(source.root, 'the file')


def read_jtype(source: YamlSource, entries, expected: str) -> tuple[str, yaml.Node]:
    if 'jtype' not in entries:
        raise source.error(source.root, f'missing {expected}')
    _, node = entries['jtype']
    value = source.value(node)
    if not isinstance(value, str) or not value.strip():
        raise source.error(node, f'jtype: expected a class name, got {value!r}')
    return value.strip(), node


def yaml_jtype(path: str | os.PathLike) -> str:
    """The `jtype` of a YAML file (`Deployment`, `Flow`, or an executor class name)."""
    source = YamlSource(path)
    expected = "'jtype' (Deployment, Flow or an Executor class name)"
    return read_jtype(source, root(source, expected), expected)[0]


KINDS = {
    'Deployment': ('a Deployment YAML', 'load it with Deployment.load_config or '
                                        '`nborch deployment --uses`'),
    'Flow': ('a Flow YAML', 'load it with Flow.load_config or `nborch flow --uses`'),
}


def wrong_jtype(source: YamlSource, node: yaml.Node, jtype: str, expected: str) -> ConfigError:
    kind, how = KINDS.get(jtype, ('an executor YAML',
                                   'name it in uses: of a Deployment or of a Flow executor'))
    return source.error(node, f"jtype '{jtype}': this is {kind}, not {expected} ({how})")
