"""The IPython extension (`%load_ext nborch`): `%%deployment`, `%%flow` and `%nborch`, shells
over nborch's Python API.

Each magic parses its arguments, builds through the public API, starts, binds; everything
else is a call the user could make in plain Python (`nborch.yaml_text.deployment_from_yaml`,
`Serving.start/status/logs/close`, `nborch.orchestrator.stop_all`). Bad input raises a
ValueError/TypeError with one line, never a UsageError: nbval does not see UsageErrors.
"""
from __future__ import annotations

import re

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import ArgDecorator, argument, magic_arguments, parse_argstring

from nborch.cli import add_options, given
from nborch.options import Option, options_from_dataclass
from nborch.flow import Flow
from nborch.yaml_text import deployment_from_yaml, flow_from_yaml
from nborch.orchestrator import stop_all
from nborch.serving import Serving
from nborch.spec import FLOW_GATEWAY_KEYS, DeploymentSpec

# The cells' flags are the spec's fields, as the `nborch` command's options are (NAME is the
# variable the cell binds, and the default name).
_DEPLOYMENT_OPTIONS = options_from_dataclass(DeploymentSpec, exclude=('name',))
_FLOW_OPTIONS = [o for o in options_from_dataclass(DeploymentSpec)
                 if o.name in FLOW_GATEWAY_KEYS and o.name != 'name']


class spec_flags(ArgDecorator):
    """`@argument` for every option in `options` (`nborch.cli.add_options`)."""

    def __init__(self, options: list[Option], command: str, title: str):
        self.options, self.command, self.title = options, command, title

    def add_to_parser(self, parser, group):
        add_options(parser, self.options, self.command, self.title)


@magics_class
class NborchMagics(Magics):
    """The magics of `%load_ext nborch`. `started` holds what the cell magics started (by
    variable name); `%unload_ext nborch` stops those."""

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell, **kwargs)
        self.started: dict[str, Serving] = {}

    @magic_arguments('%deployment')  # the help's usage line adds one '%'
    @argument('name', nargs='?',
              help="variable to bind the deployment to; also its name when the YAML has no "
                   "'name:' (default: the YAML's name, else 'deployment')")
    @spec_flags(_DEPLOYMENT_OPTIONS, 'deployment', 'options (override the YAML)')
    @cell_magic
    def deployment(self, line: str, cell: str) -> Serving:
        """Start a Deployment from the cell's YAML and bind it to NAME.

        The body is the YAML of a Deployment (`jtype: Deployment` optional; keys at top
        level or under `with:`). Flags override the YAML. Re-running the cell while the
        deployment bound to NAME runs changes it live where it can: `replicas` by scaling,
        the executor's class or `uses_with` (`env`, ...) by a rolling update; any other
        change stops it and starts the new one. Plain Python equivalent:

            dep = nborch.yaml_text.deployment_from_yaml(yaml_text, replicas=3).start()

        Example:

            %%deployment indexer --replicas 3
            uses: MyIndexer
            shards: 2
        """
        args = _parse(self.deployment, line)
        dep = deployment_from_yaml(cell, name=args.name or 'deployment', first_line=2,
                                   origin='%%deployment cell', **given(args, _DEPLOYMENT_OPTIONS))
        return self._start_and_bind(args.name, dep)

    @magic_arguments('%flow')
    @argument('name', nargs='?',
              help="variable to bind the flow to; also its name when its 'with:' has none "
                   "(default: the flow's name, else 'flow')")
    @spec_flags(_FLOW_OPTIONS, 'flow', "options of the gateway (override the YAML's with:)")
    @cell_magic
    def flow(self, line: str, cell: str) -> Serving:
        """Start a Flow from the cell's YAML and bind it to NAME.

        The body is the YAML of a Flow (`jtype: Flow` optional; `with:` for the gateway,
        `executors:` a list of `Flow.add()` arguments). Flags override `with:`. Re-running
        the cell changes the running flow bound to NAME live where it can (executors'
        `replicas`, class, `uses_with`, ...), as `%%deployment` does; any other change stops
        it first. Plain Python equivalent:

            f = nborch.yaml_text.flow_from_yaml(yaml_text, port=5555).start()
        """
        args = _parse(self.flow, line)
        flow = flow_from_yaml(cell, name=args.name or 'flow', first_line=2, origin='%%flow cell',
                              **given(args, _FLOW_OPTIONS))
        return self._start_and_bind(args.name, flow)

    @magic_arguments()
    @argument('action', choices=('list', 'status', 'logs', 'scale', 'stop'),
              help='list: deployments and flows in this namespace; status NAME: their '
                   'processes and routing counters; logs NAME: the last lines of one '
                   'replica; scale NAME N: N replicas per shard while it runs; '
                   'stop NAME | stop --all')
    @argument('name', nargs='?', help='the variable a deployment or flow is bound to')
    @argument('replicas', nargs='?', type=int, help='with scale: replicas per shard')
    @argument('--all', action='store_true', dest='all',
              help='with stop: every deployment and flow this kernel started')
    @argument('--executor', help="with logs or scale on a Flow: the executor (default: the "
                                 "first)")
    @argument('--shard', type=int, default=0, help='with logs: the shard (default 0)')
    @argument('--replica', type=int, default=0, help='with logs: the replica (default 0)')
    @line_magic
    def nborch(self, line: str):
        """Look at and stop the deployments and flows of this kernel.

            %nborch list
            %nborch status dep          (dep.status())
            %nborch logs dep --shard 1 --replica 2    (print(dep.logs(1, 2)))
            %nborch scale dep 4         (dep.scale(4))
            %nborch scale f 4 --executor encoder      (f.scale('encoder', 4))
            %nborch stop dep            (dep.close())
            %nborch stop --all          (nborch.orchestrator.stop_all())
        """
        args = _parse(self.nborch, line)
        if args.action == 'list':
            for name, obj in self._bound().items():
                print(f'{name}: {obj!r}')
        elif args.action == 'stop' and args.all:
            self.stop_started()
            stop_all()
        elif args.action == 'stop':
            self._lookup(args).close()
            self.started.pop(args.name, None)
        elif args.action == 'status':
            return self._lookup(args).status()
        elif args.action == 'scale':
            obj = self._lookup(args)
            if args.replicas is None:
                raise ValueError('%nborch scale NAME N: N, the replicas per shard, is missing')
            if isinstance(obj, Flow):
                return obj.scale(args.executor or obj.executors[0].name, args.replicas)
            return obj.scale(args.replicas)
        elif isinstance(obj := self._lookup(args), Flow):
            print(obj.logs(args.executor or obj.executors[0].name, args.shard, args.replica),
                  end='')
        else:
            print(obj.logs(args.shard, args.replica), end='')

    # -- shared steps ---------------------------------------------------------------------
    def _start_and_bind(self, name: str | None, obj: Serving) -> Serving:
        """Start `obj`, bind it to `name` and return it. A re-run cell: what `name` is bound
        to is scaled when only replica counts changed, else stopped first."""
        name = name or _identifier(obj.name)
        previous = self.shell.user_ns.get(name)
        if isinstance(previous, Serving) and previous.running:
            edits = previous.live_edits(obj)
            if edits is not None:
                for executor, changes in edits.items():
                    _apply_live(previous, executor, dict(changes))
                self.started[name] = previous
                return previous
        if isinstance(previous, Serving):
            previous.close()
        self.started.pop(name, None)
        obj.start()
        self.started[name] = obj
        self.shell.user_ns[name] = obj
        return obj

    def stop_started(self) -> None:
        """Stop everything the cell magics started."""
        started, self.started = self.started, {}
        for obj in started.values():
            obj.close()

    def _bound(self) -> dict[str, Serving]:
        return {name: obj for name, obj in self.shell.user_ns.items()
                if isinstance(obj, Serving) and not name.startswith('_')}

    def _lookup(self, args) -> Serving:
        if not args.name:
            raise ValueError(f'%nborch {args.action} needs the NAME of a deployment or flow')
        obj = self.shell.user_ns.get(args.name)
        if not isinstance(obj, Serving):
            known = ', '.join(self._bound()) or 'none'
            raise ValueError(f'%nborch {args.action}: no deployment or flow named '
                             f'{args.name!r} (known: {known})')
        return obj


def _apply_live(serving: Serving, executor: str, changes: dict) -> None:
    """A re-run cell's changes to a running executor: fewer replicas first (fewer to
    replace), then the rolling update, then more replicas (started as the new version)."""
    replicas = changes.pop('replicas', None)
    flow = isinstance(serving, Flow)

    def scale() -> None:
        if replicas is not None:
            serving.scale(executor, replicas) if flow else serving.scale(replicas)

    current = next(s for s in (serving.executors if flow else [serving.spec])
                   if s.name == executor).replicas
    if replicas is not None and replicas < current:
        scale()
        replicas = None
    if changes:
        serving.rolling_update(executor, **changes) if flow else \
            serving.rolling_update(**changes)
    scale()


def _parse(magic, line: str):
    """The magic's arguments; a bad flag is a ValueError naming the magic."""
    try:
        args = parse_argstring(magic, line)
    except UsageError as exc:
        raise ValueError(f'%{magic.parser.prog}: {exc}') from None
    name = getattr(args, 'name', None)
    if name is not None and not name.isidentifier():
        raise ValueError(f'%{magic.parser.prog}: NAME {name!r} must be a Python identifier')
    return args


def _identifier(name: str) -> str:
    """A deployment's name as a variable name (`slow-encoder` → `slow_encoder`)."""
    name = re.sub(r'\W', '_', name)
    return f'_{name}' if name[0].isdigit() else name


def load_ipython_extension(ipython) -> None:
    """`%load_ext nborch`: register `%%deployment`, `%%flow` and `%nborch`."""
    ipython.register_magics(NborchMagics(ipython))


def unload_ipython_extension(ipython) -> None:
    """`%unload_ext nborch`: stop everything the magics started and remove the magics."""
    magics = ipython.magics_manager.registry.pop(NborchMagics.__name__, None)
    if magics is None:
        return
    magics.stop_started()
    for kind, table in magics.magics.items():
        registered = ipython.magics_manager.magics[kind]
        for name, method in table.items():
            if registered.get(name) == method:  # not one another extension put there since
                del registered[name]
