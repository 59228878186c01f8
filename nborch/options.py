"""Command-line options made from the spec dataclasses and signatures (the CLI and the cell
magics both build their flags from these), and a `WorkerSpec` rendered as the `nborch executor`
command line that starts it (what exported containers run)."""
from __future__ import annotations

import dataclasses
import inspect
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:  # imported when needed: `nborch --help` stays quick
    from nborch.runtime.worker_spec import WorkerSpec


@dataclass(frozen=True)
class Option:
    """One command-line option made from a dataclass field or a keyword parameter."""

    name: str
    kind: str          # int | float | str | bool | dict | list | any
    default: Any
    help: str | None = None

    @property
    def flag(self) -> str:
        return '--' + self.name.replace('_', '-')


def _kind(annotation: Any) -> str:
    """The option kind of an annotation, read from its text (`int | None` → int)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, '__name__',
                                                                  str(annotation))
    parts = [p.strip() for p in text.split('|') if p.strip() not in ('None', 'NoneType', '')]
    if len(parts) != 1:
        return 'any'
    base = parts[0].split('[')[0]
    return base if base in ('int', 'float', 'str', 'bool', 'dict', 'list') else 'any'


def options_from_dataclass(cls: type, exclude: Iterable[str] = ()) -> list[Option]:
    """Options for the user-facing fields of `cls` (fields with `repr=False` are derived state)."""
    out = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.repr or not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        out.append(Option(f.name, _kind(f.type), default, f.metadata.get('help')))
    return out


def options_from_signature(func: Callable, exclude: Iterable[str] = ()) -> list[Option]:
    """Options for the named parameters of `func` (Flow() has no spec dataclass)."""
    out = []
    for p in inspect.signature(func).parameters.values():
        if p.name in exclude or p.name == 'self' or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        annotation = p.annotation if p.annotation is not p.empty else type(p.default).__name__
        default = None if p.default is p.empty else p.default
        out.append(Option(p.name, _kind(annotation), default))
    return out


def executor_options() -> list[Option]:
    from nborch.runtime.worker_spec import WorkerSpec
    options = options_from_dataclass(WorkerSpec, exclude=('uses', 'sys_path'))
    # `name` has no default in WorkerSpec; a lone replica is called what a Deployment would be
    return [dataclasses.replace(o, default='executor') if o.name == 'name' else o
            for o in options]


def executor_argv(spec: WorkerSpec, uses: str) -> list[str]:
    """The `nborch executor` command line that starts the replica a `WorkerSpec` describes,
    with `uses` ('module:Class' or an executor YAML) for its packed class: every field that
    differs from the command's default, as its flag. `nborch.cli.executor_fields` reads it
    back."""
    argv = ['executor', '--uses', uses]
    for option in executor_options():
        value = getattr(spec, option.name)
        if value == option.default or value is None:
            continue
        if option.kind == 'bool':
            argv.append(option.flag if value else '--no-' + option.flag[2:])
        elif option.kind == 'list' and all(isinstance(v, str) and ',' not in v for v in value):
            argv += [option.flag, ','.join(value)]  # --peers a:8081,b:8081
        elif option.kind in ('dict', 'list', 'any'):
            argv += [option.flag, json.dumps(value, separators=(',', ':'), sort_keys=True)]
        else:
            argv += [option.flag, str(value)]
    return argv
