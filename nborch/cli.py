"""The `nborch` command: a shell over the Python API.

    nborch deployment --uses dep.yml [--replicas N ...]   Deployment(...).start(); block()
    nborch flow --uses flow.yml                          Flow.load_config(...).start(); block()
    nborch executor --uses X --port P                    one replica in this process
    nborch gateway --topology T --port P                 a gateway over replicas by address
    nborch export kubernetes|compose FLOW_OR_DEP.yml OUT  manifests for a cluster (nborch.export)
    nborch ping HOST:PORT                                Client(HOST:PORT).status()

`executor` and `gateway` take the deployment secret from `--secret-file PATH` or the
`NBORCH_SECRET` variable (removed from the environment once read) and refuse to start
without one unless told `--insecure` (docs/security.md).

The options of `deployment` are generated from `DeploymentSpec`'s fields, those of `flow` from
`Flow`'s signature and those of `executor` from `WorkerSpec`'s fields, so a field added there
is an option here. Bad input is one line on stderr, `nborch: error: ...`, exit code 2, and
nothing is started; Ctrl-C or SIGTERM stop what was started and exit with 0.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any, Callable

from nborch.options import Option, executor_options, options_from_dataclass, options_from_signature

# `add_options` and `given` are public so that other shells (the %%deployment magic) build
# the same flags from the same options (nborch.options).
__all__ = ['add_options', 'build_parser', 'executor_fields', 'given', 'main']

_DESCRIPTIONS = {
    'deployment': 'serve an executor as replicas x shards behind one gateway',
    'flow': 'serve a Flow YAML (executors in a DAG behind one gateway)',
    'executor': 'serve one executor replica in this process (usable as an external executor)',
    'gateway': 'serve a gateway over executor replicas named by address (a topology)',
    'export': 'write Kubernetes manifests or a Docker Compose file for a Flow/Deployment YAML',
    'ping': "check that a gateway or an executor answers (exit 0 if it does, 1 if not; a "
            "gateway answers once it has found every executor's replicas)",
}
_USES_HELP = {
    'deployment': "a Deployment YAML (jtype: Deployment), an executor YAML, or 'module:Class'; "
                  'options given here override the YAML',
    'flow': 'a Flow YAML (jtype: Flow)',
    'executor': "an executor YAML or 'module:Class'",
}


class _Failure(Exception):
    """Ends the command with one line on stderr and `code`."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class _StopRequested(BaseException):
    """SIGTERM outside `block()`: unwinds like Ctrl-C, so whatever started is stopped."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f'nborch: error: {message} (see `{self.prog} --help`)\n')


# -- converting option values ---------------------------------------------------------------------

def _json(kind: str) -> Callable[[str], Any]:
    expected, what = {'dict': (dict, 'a JSON object'), 'list': (list, 'a JSON list')}[kind]

    def convert(text: str):
        if kind == 'list' and not text.lstrip().startswith('['):
            return [item.strip() for item in text.split(',') if item.strip()]  # a,b,c
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f'expected {what}, got {text!r} ({exc.msg})') from None
        if not isinstance(value, expected):
            raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}')
        return value

    return convert


def _json_or_text(text: str) -> Any:
    """`5555` → 5555, `{"/search": "ALL"}` → a dict, `ANY` → 'ANY'."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _number(kind: type) -> Callable[[str], Any]:
    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f'expected {"an integer" if kind is int else "a number"}, got {text!r}') from None

    return convert


# What an option is for, where the field itself says nothing (`field(metadata={'help': ...})`
# wins); keyed by field name, or by (command, field name) where a command reads it differently.
_HELP = {
    'name': 'the executor\'s name (logs, parameters[name], target_executor)',
    'uses': "the Executor: a class name (defined in this notebook or imported), "
            "'module:Class' or an executor YAML",
    'uses_with': "keyword arguments of the executor's constructor",
    'uses_dynamic_batching': '{endpoint or method: {"preferred_batch_size": n, "timeout": ms}} '
                             "over the class's @dynamic_batching",
    'replicas': 'replica processes per shard',
    'shards': 'partitions, each with its own replicas',
    'polling': "ANY, ALL, or {endpoint: ANY|ALL, '*': default}",
    'port': 'port of the gateway; with --external the replicas\' port(s)',
    'host': "address to bind (0.0.0.0: all interfaces); with --external the replicas' host(s)",
    'external': 'host/port name replicas that already run: start only a gateway (none for one)',
    'env': 'environment of the replica processes (e.g. {"CUDA_VISIBLE_DEVICES": "RR"})',
    'workspace': 'folder for executor state',
    'timeout_ready': 'milliseconds to wait for readiness; -1 waits forever',
    'timeout_send': 'milliseconds a replica may take per request before the gateway ejects '
                    'it and retries elsewhere (reads, stateful writes); -1: no limit; '
                    'default: no limit while the replica answers health checks',
    'quiet': "do not echo the replicas' output",
    'log_level': 'DEBUG, INFO, WARNING or ERROR',
    'stateful': 'replicate @write endpoints with Raft consensus',
    'peer_ports': 'Raft ports of the replicas (a list, or {shard: [ports]})',
    'raft_configuration': 'Raft settings (heartbeat_timeout, election_timeout, ...)',
    'read_consistency': "eventual, or linearizable (reads wait for the leader's commit index)",
    'max_message_size': 'bytes one request or reply may take (gateway, replicas, Raft links, '
                        'client); larger ones fail with MessageTooLargeError',
    'max_request_docs': 'docs one request to a replica may hold',
    'no_reduce': "concatenate the results of the shards (ALL polling) and of the executors "
                 'it needs instead of merging them by id',
    'protocol': "the gateway's: grpc, http, or both (grpc,http; then --port [P1,P2], one "
                'per protocol)',
    ('flow', 'name'): "the flow's name",
    ('flow', 'port'): 'port of the gateway ([P1,P2] with two protocols)',
    ('flow', 'host'): 'address to bind (0.0.0.0: all interfaces)',
    ('executor', 'port'): 'port to serve on; 0 picks a free one (see the ready line)',
    ('executor', 'host'): 'address to bind (0.0.0.0: all interfaces)',
    ('executor', 'shard_id'): 'the shard this replica stands for (runtime_args.shard_id)',
    ('executor', 'replica_id'): 'the replica this process stands for (runtime_args.replica_id)',
    ('executor', 'shards'): 'shards of the deployment it belongs to (runtime_args.shards)',
    ('executor', 'replicas'): 'replicas of the deployment it belongs to (runtime_args.replicas)',
    ('executor', 'peers'): 'with --stateful: the Raft address of every replica of the shard, '
                           'in replica order (host:port,host:port,...)',
    ('executor', 'raft_dir'): 'with --stateful: the Raft log folder; default '
                              '<workspace>/raft/[<shard>/]<replica>',
    ('executor', 'stateful'): 'replicate @write endpoints with Raft among --peers',
    'gpus': 'GPUs per replica in exported manifests (nvidia.com/gpu); locally use '
            'CUDA_VISIBLE_DEVICES=RR',
}

_ALIASES = {'no_reduce': ('--disable-reduce',)}  # the reference system's other spelling
_CONVERT = {'int': (_number(int), 'N'), 'float': (_number(float), 'X'), 'str': (str, 'TEXT'),
            'dict': (_json('dict'), 'JSON'), 'list': (_json('list'), 'JSON'),
            'any': (_json_or_text, 'VALUE')}
_KIND_HELP = {'int': 'an integer', 'float': 'a number', 'str': 'text', 'bool': 'on/off',
              'dict': 'a JSON object', 'list': 'a JSON list or a,b,c', 'any': 'JSON or text'}


def add_options(parser: argparse.ArgumentParser, options: list[Option], command: str,
                title: str) -> None:
    """Each option defaults to "not given" (absent from the parsed namespace)."""
    group = parser.add_argument_group(title)
    for option in options:
        text = option.help or _HELP.get((command, option.name)) or _HELP.get(option.name)
        text = text or _KIND_HELP[option.kind]
        if option.default not in (None, {}, [], False):
            text += f'; default: {option.default}'
        text = text.replace('%', '%%')
        if option.kind == 'bool' and option.flag.startswith('--no-'):
            # BooleanOptionalAction reads a '--no-' flag as the negative: it would set False.
            group.add_argument(option.flag, *_ALIASES.get(option.name, ()), dest=option.name,
                               action='store_true', default=argparse.SUPPRESS, help=text)
        elif option.kind == 'bool':
            group.add_argument(option.flag, dest=option.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=text)
        else:
            convert, metavar = _CONVERT[option.kind]
            group.add_argument(option.flag, dest=option.name, type=convert, metavar=metavar,
                               default=argparse.SUPPRESS, help=text)


def given(args: argparse.Namespace, options: list[Option]) -> dict:
    """The options given on the command line (the others are absent, not defaulted)."""
    return {o.name: getattr(args, o.name) for o in options if hasattr(args, o.name)}


def executor_fields(args: argparse.Namespace) -> dict:
    """The `WorkerSpec` fields of a parsed `nborch executor` command line: the given options
    over the command's defaults (`uses` and `sys_path` are the caller's)."""
    fields = {o.name: o.default for o in args.options}
    fields.update(given(args, args.options))
    return fields


# -- the parser ---------------------------------------------------------------------------------

def _deployment_options() -> list[Option]:
    from nborch.spec import DeploymentSpec
    return options_from_dataclass(DeploymentSpec, exclude=('uses',))


def _flow_options() -> list[Option]:
    from nborch.flow import Flow
    return options_from_signature(Flow.__init__)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog='nborch', description='Serve nborch executors, deployments and flows '
                                                 'from the command line.')
    from nborch._version import __version__
    parser.add_argument('--version', action='version', version=f'nborch {__version__}')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name, options, handler in (('deployment', _deployment_options(), _deployment),
                                   ('flow', _flow_options(), _flow),
                                   ('executor', executor_options(), _executor)):
        sub = commands.add_parser(name, help=_DESCRIPTIONS[name],
                                  description=_DESCRIPTIONS[name])
        sub.add_argument('--uses', required=name != 'deployment', metavar='USES',
                         help=_USES_HELP[name])
        add_options(sub, options, name, 'options (override the YAML)' if name != 'executor'
                    else 'options (uses_with is merged over the YAML\'s with:)')
        sub.set_defaults(handler=handler, options=options)
        if name == 'executor':
            _add_secret_options(sub, serving=True)
    gateway = commands.add_parser('gateway', help=_DESCRIPTIONS['gateway'],
                                  description=_DESCRIPTIONS['gateway'])
    gateway.add_argument('--topology', required=True, metavar='JSON|FILE',
                         help='executors, their shards\' replica addresses, polling and needs '
                              '(the JSON `nborch export` writes; see nborch.runtime.topology)')
    gateway.add_argument('--port', type=_number(int), default=None, metavar='N',
                         help="port to serve on; default: the topology's")
    gateway.add_argument('--host', default=None, metavar='TEXT',
                         help="address to bind; default: the topology's")
    gateway.add_argument('--require-secret', action='store_true', default=None,
                         help='the public port, too, refuses callers without the secret; '
                              "default: the topology's (open)")
    _add_secret_options(gateway, serving=True)
    gateway.set_defaults(handler=_gateway, options=[])
    export = commands.add_parser('export', help=_DESCRIPTIONS['export'],
                                 description=_DESCRIPTIONS['export'])
    export.add_argument('engine', choices=('kubernetes', 'compose'),
                        help='kubernetes: a folder of manifests for `kubectl apply -f`; '
                             'compose: one docker-compose.yml')
    export.add_argument('uses', metavar='YAML', help='a Flow or Deployment YAML')
    export.add_argument('out', metavar='OUT', help='kubernetes: a folder (made if missing); '
                                                   'compose: a file, or a folder to hold one')
    export.add_argument('--image', default=None, metavar='IMAGE',
                        help='the image every container runs (build it with the Dockerfile the '
                             'export writes); default: nborch:<version>')
    export.add_argument('--namespace', default='default', metavar='NS',
                        help='Kubernetes namespace; default: default')
    export.set_defaults(handler=_export, options=[])
    ping = commands.add_parser('ping', help=_DESCRIPTIONS['ping'], description=_DESCRIPTIONS['ping'])
    ping.add_argument('address', metavar='HOST:PORT', help="also grpc://HOST:PORT")
    ping.add_argument('--timeout', type=_number(float), default=5.0, metavar='S',
                      help='seconds to wait for the answer; default: 5')
    _add_secret_options(ping, serving=False)
    ping.set_defaults(handler=_ping, options=[])
    return parser


def _add_secret_options(parser: argparse.ArgumentParser, *, serving: bool) -> None:
    from nborch.runtime.auth import SECRET_ENV
    group = parser.add_argument_group('the deployment secret (docs/security.md)')
    group.add_argument('--secret-file', default=None, metavar='PATH',
                       help=f'a file holding the deployment secret, the same for every process '
                            f'of the deployment; or set {SECRET_ENV}' +
                            ('' if serving else ' (needed to ping a worker)'))
    if serving:
        group.add_argument('--insecure', action='store_true',
                           help='serve without a secret: anyone who reaches the port can call it')


def _secret_of(args: argparse.Namespace, what: str, *, required: bool) -> bytes | None:
    """The secret from --secret-file or the environment; a _Failure when a server has none
    and was not told --insecure."""
    from nborch.runtime import auth
    try:
        from_env = auth.pop_secret_env()
        secret = auth.read_secret_file(args.secret_file) if args.secret_file else from_env
    except ValueError as exc:
        raise _Failure(2, str(exc)) from None
    if secret is None and required and not getattr(args, 'insecure', False):
        raise _Failure(2, f'{what} has no deployment secret: give --secret-file PATH or set '
                          f'{auth.SECRET_ENV} (the same on every process of the deployment), or '
                          '--insecure to let anyone who reaches its ports call it')
    return None if getattr(args, 'insecure', False) else secret


# -- commands -----------------------------------------------------------------------------------

def _plural(n: int, word: str) -> str:
    return f'{n} {word}' if n == 1 else f'{n} {word}s'


def _deployment(args: argparse.Namespace) -> int:
    from nborch.deployment import Deployment
    from nborch.config import ConfigError, yaml_jtype
    from nborch.uses import is_executor_yaml

    overrides = given(args, args.options)
    try:
        jtype = yaml_jtype(args.uses) if is_executor_yaml(args.uses) else None
        if jtype == 'Flow':
            raise _Failure(2, f'{args.uses} is a Flow YAML: run `nborch flow --uses {args.uses}`')
        if jtype == 'Deployment':
            dep = Deployment.load_config(args.uses, **overrides)
        else:  # an executor YAML, 'module:Class', a registered name, or nothing (pass-through)
            dep = Deployment(uses=args.uses, **overrides)
    except (ConfigError, ValueError, TypeError, OSError) as exc:
        raise _Failure(2, str(exc)) from None
    spec = dep.spec
    detail = f'({_plural(spec.replicas, "replica")} × {_plural(spec.shards, "shard")})'
    return _serve(dep, f'deployment {dep.name}', detail)


def _flow(args: argparse.Namespace) -> int:
    from nborch.flow import Flow
    from nborch.config import ConfigError

    overrides = given(args, args.options)
    try:
        flow = Flow.load_config(args.uses, **overrides) if overrides else \
            Flow.load_config(args.uses)
    except (ConfigError, ValueError, TypeError, OSError) as exc:
        raise _Failure(2, str(exc)) from None
    names = [spec.name for spec in flow.executors]
    detail = f'({_plural(len(names), "executor")}: {", ".join(names)})' if names \
        else '(no executors)'
    return _serve(flow, f'flow {flow.name}', detail)


def _say(line: str) -> None:
    """One write per line: replica output is echoed to the same stdout from other threads."""
    sys.stdout.write(line + '\n')
    sys.stdout.flush()


def _serve(serving, what: str, detail: str) -> int:
    """Start, announce, block until Ctrl-C/SIGTERM, stop. Exit code 0 once stopped on request."""
    from nborch.errors import PortInUseError

    def stop_requested(*_):
        raise _StopRequested

    previous = signal.signal(signal.SIGTERM, stop_requested)
    try:
        try:
            serving.start()  # on any exception (signals included) it stops what it started
        except PortInUseError as exc:
            raise _Failure(2, str(exc)) from None
        except Exception as exc:
            raise _Failure(1, f'{what} did not start: {exc}') from None
        doors = '' if serving.ports.keys() == {'grpc'} else ' (' + ', '.join(
            f'{protocol} {port}' for protocol, port in serving.ports.items()) + ')'
        _say(f'nborch: {what} serving on {serving.host}:{serving.port}{doors} {detail}')
        serving.block()
    except (_StopRequested, KeyboardInterrupt):
        pass  # asked to stop before block() took over the signals
    finally:
        # Teardown is bounded; a second Ctrl-C must not cut it short and leave processes.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            serving.close()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous)
    _say(f'nborch: {what} stopped')
    return 0


def _executor(args: argparse.Namespace) -> int:
    from nborch.config import ConfigError
    from nborch.errors import PortInUseError
    from nborch.ports import check_port_free
    from nborch.runtime.worker import serve
    from nborch.runtime.worker_spec import WorkerSpec
    from nborch.uses import resolve_uses_and_defaults

    fields = executor_fields(args)
    try:
        cls, defaults = resolve_uses_and_defaults(args.uses)
        fields['uses_with'] = {**defaults, **(fields.get('uses_with') or {})}
        spec = WorkerSpec(uses=WorkerSpec.pack_class(cls), sys_path=list(sys.path), **fields)
        spec.complete()
        if spec.port:
            check_port_free(spec.host, spec.port, f'executor {spec.name}')
    except (ConfigError, ValueError, TypeError, PortInUseError) as exc:
        raise _Failure(2, str(exc)) from None
    secret = _secret_of(args, f'executor {spec.name}', required=True)
    return _run_role(lambda: serve(spec, ready_fd=None), f'executor {spec.name}',
                     spec.log_level, secret=secret)


def _run_role(serve: Callable, what: str, log_level: str = 'INFO', *,
              secret: bytes | None) -> int:
    """Run one runtime role's `serve()` in this process until Ctrl-C/SIGTERM; it prints
    `{"pid": ..., "port": ...}` once it serves."""
    from nborch.runtime import auth, child

    child.keep_files_private()
    auth.install(auth.LinkAuth(secret) if secret is not None else None)

    def stop_requested(*_):
        raise _StopRequested

    signal.signal(signal.SIGTERM, stop_requested)  # until serve() installs its own handlers
    child.configure_logging(log_level)
    try:
        asyncio.run(serve())
    except (_StopRequested, KeyboardInterrupt):
        pass
    except Exception as exc:
        raise _Failure(1, f'{what} failed: {type(exc).__name__}: {exc}') from None
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from nborch.errors import PortInUseError
    from nborch.ports import check_port_free
    from nborch.runtime.gateway import serve
    from nborch.runtime.topology import Topology

    try:
        topology = Topology.load(args.topology)
        if args.port is not None:
            topology.port = args.port
        if args.host is not None:
            topology.host = args.host
        if args.require_secret is not None:
            topology.require_secret = args.require_secret
        if topology.port:
            check_port_free(topology.host, topology.port, 'gateway')
        if topology.http_port and 'http' in topology.protocols:
            check_port_free(topology.host, topology.http_port, 'gateway (http)')
    except (ValueError, PortInUseError) as exc:
        raise _Failure(2, str(exc)) from None
    secret = _secret_of(args, 'the gateway', required=True)
    if secret is None and topology.require_secret:
        raise _Failure(2, '--require-secret needs the secret (--secret-file or '
                          'NBORCH_SECRET), not --insecure')
    return _run_role(lambda: serve(topology, ready_fd=None), 'gateway', secret=secret)


def _load_serving(path: str):
    """The Flow or Deployment a YAML describes (by its `jtype`), not started."""
    from nborch.config import yaml_jtype
    from nborch.deployment import Deployment
    from nborch.errors import ExportError
    from nborch.flow import Flow
    jtype = yaml_jtype(path)
    if jtype == 'Flow':
        return Flow.load_config(path)
    if jtype == 'Deployment':
        from nborch.config import deployment_kwargs
        from nborch.export.plan import WORKSPACE
        kwargs = deployment_kwargs(path)
        if kwargs.get('stateful') and not kwargs.get('workspace'):
            # Run locally, a Raft group needs a folder for its logs; exported, each replica
            # gets a volume at WORKSPACE, so the YAML need not name one only to be replaced.
            return Deployment.load_config(path, workspace=WORKSPACE)
        return Deployment.load_config(path)
    raise ExportError(f'{path}: jtype is {jtype!r}; export takes a Flow or a Deployment YAML')


def _export(args: argparse.Namespace) -> int:
    from nborch.config import ConfigError
    from nborch.errors import ExportError

    try:
        serving = _load_serving(args.uses)
        if args.engine == 'kubernetes':
            written = serving.to_kubernetes_yaml(args.out, namespace=args.namespace,
                                                 image=args.image)
        else:
            written = serving.to_docker_compose_yaml(args.out, image=args.image)
    except (ExportError, ConfigError, ValueError, TypeError, OSError) as exc:
        raise _Failure(2, str(exc)) from None
    for path in written:
        _say(f'nborch: wrote {path}')
    return 0


def _ping(args: argparse.Namespace) -> int:
    from nborch.client import Client

    secret = _secret_of(args, 'ping', required=False)
    try:
        client = Client(args.address, secret=secret)
    except (ValueError, TypeError) as exc:
        raise _Failure(2, str(exc)) from None
    try:
        status = client.status(timeout=args.timeout)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        print(f'nborch: {args.address} is not ready: {exc}', file=sys.stderr, flush=True)
        return 1
    finally:
        client.close()
    if status.get('unresolved'):  # a gateway that has not found every replica yet
        print(f'nborch: {args.address} is not ready: ' + '; '.join(status['unresolved']),
              file=sys.stderr, flush=True)
        return 1
    print(f'{args.address} is ready ({_describe_status(status)})', flush=True)
    return 0


def _describe_status(status: dict) -> str:
    if status.get('role') == 'worker':
        return (f"worker {status.get('name')!r} shard {status.get('shard')} replica "
                f"{status.get('replica')}, pid {status.get('pid')}")
    if status.get('role') == 'gateway':
        names = [e.get('name') for e in status.get('executors', [])]
        return f"gateway, pid {status.get('pid')}, executors: {', '.join(names) or 'none'}"
    return f"{status.get('role', 'unknown role')}, pid {status.get('pid')}"


# -- entry point --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """`nborch ...`; returns the exit code."""
    if os.getcwd() not in sys.path and '' not in sys.path:
        # `module:Class` given on the command line names modules from where the user stands,
        # as with `python -m`; replica processes inherit this sys.path.
        sys.path.insert(0, os.getcwd())
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except _Failure as failure:
        print(f'nborch: error: {failure}', file=sys.stderr, flush=True)
        return failure.code
