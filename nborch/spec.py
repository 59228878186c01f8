"""`DeploymentSpec`: the user's intent, typed and validated before any process starts.

Every input error surfaces here, before anything starts. Starting a deployment is
reconciling processes to a valid spec.
"""
from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from nborch.addresses import Address, external_addresses
from nborch.compat import take_reference_arguments
from nborch.errors import IgnoredArgumentWarning
from nborch.executor import Executor, batching_table, refuse_batched_writes
from nborch.ports import free_port
from nborch.runtime.consensus.settings import RaftSettings
from nborch.runtime.gpu import CUDA_VISIBLE_DEVICES, RoundRobinSpec, parse_rr
from nborch.runtime.limits import (DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_REQUEST_DOCS,
                                   GRPC_MAX_MESSAGE_SIZE, RAFT_ENVELOPE, check_limit)
from nborch.runtime.polling import PollingTable
from nborch.runtime.tls import TlsFiles
from nborch.uses import import_py_modules, resolve_uses_and_defaults

_NAME = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.\-]*$')
_RESOLVED = ('executor_class', 'polling_table', 'external_addresses', 'round_robin',
             'raft_settings', 'peer_port_table', 'port_given', 'tls_files', 'ports')


@dataclass
class DeploymentSpec:
    name: str = 'executor'
    uses: Any = None
    uses_with: dict = field(default_factory=dict)
    # {endpoint or method: {'preferred_batch_size': n, 'timeout': ms, ...}} over the class's
    # @dynamic_batching, as the reference system's uses_dynamic_batching
    uses_dynamic_batching: dict = field(default_factory=dict)
    py_modules: Any = None             # Python files imported before `uses` is resolved
    replicas: int = 1
    shards: int = 1
    polling: Any = 'ANY'
    port: Any = None                   # the gateway's (a list: one per protocol, in order);
                                       # with external=True the replicas' port(s)
    host: Any = '127.0.0.1'            # the gateway's; with external=True the replicas' host(s)
    external: bool = False             # host/port name running replicas; nothing is started
    env: dict = field(default_factory=dict)
    workspace: str | None = None
    timeout_ready: int = 60_000        # ms, as in the reference system; -1 waits forever
    protocol: Any = 'grpc'             # the gateway's: 'grpc', 'http', or a list of both
    timeout_send: int | None = None    # ms per request to a replica, as in the reference
                                       # system; -1: none; None: liveness checks only
    quiet: bool = False                # do not echo replica output to this process's stdout
    log_level: str = 'INFO'
    stateful: bool = False             # replicas of a shard form a Raft group
    peer_ports: Any = None             # list, {shard: [ports]} or JSON; None: free ports
    raft_configuration: dict = field(default_factory=dict)
    read_consistency: str = 'eventual' # or 'linearizable' (also per request: parameters)
    gpus: int = 0                      # per replica, in exported manifests (nvidia.com/gpu)
    require_secret: bool = False       # the gateway's public port refuses callers without the
                                       # deployment secret too (internal ports always do)
    # The deployment secret to use instead of a fresh one per start (bytes or text, >= 16):
    # external executors started with it (`nborch executor --secret-file`) are then dialed
    # with it. Never a CLI option, never in the repr.
    secret: Any = field(default=None, repr=False)
    # TLS on the gateway's public port: {'cert', 'key'[, 'ca': mutual TLS]} (runtime/tls.py),
    # or the reference system's ssl_certfile / ssl_keyfile.
    tls: Any = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    tls_internal: bool = False         # the same files as mutual TLS on every internal link
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE  # bytes of one request or reply
    max_request_docs: int = DEFAULT_MAX_REQUEST_DOCS  # docs in one request to a replica
    no_reduce: bool = False            # concatenate the results of its shards (ALL polling)
                                       # and of its needs in a Flow instead of merging by id
    # The reference system's docker volumes ('host_path[:container_path]'): local replicas
    # see the host's files already; exports mount them (nborch/export).
    volumes: Any = None
    # The HTTP gateway's (protocol='http'), as in the reference system: the OpenAPI title and
    # description, CORS for every origin, and options for uvicorn.
    title: str | None = None
    description: str | None = None
    cors: bool = False
    uvicorn_kwargs: dict | None = None

    # Resolved by validate():
    executor_class: type[Executor] | None = field(default=None, repr=False)
    polling_table: PollingTable | None = field(default=None, repr=False)
    external_addresses: list[Address] = field(default_factory=list, repr=False)
    round_robin: RoundRobinSpec | None = field(default=None, repr=False)
    raft_settings: RaftSettings | None = field(default=None, repr=False)
    peer_port_table: dict[int, list[int]] | None = field(default=None, repr=False)
    port_given: bool = field(default=False, repr=False)  # False: port was picked free
    tls_files: TlsFiles | None = field(default=None, repr=False)
    ports: list[int] = field(default_factory=list, repr=False)  # the gateway's, per protocol

    @classmethod
    def from_kwargs(cls, **kwargs) -> 'DeploymentSpec':
        known = set(user_keys())
        take_reference_arguments(kwargs, 'Deployment')  # warned about or refused there
        unknown = sorted(kwargs.keys() - known)
        if unknown:
            raise TypeError(f'unknown argument(s) {", ".join(unknown)}; '
                            f'a Deployment takes {", ".join(sorted(known))}')
        spec = cls(**{k: v for k, v in kwargs.items() if v is not None})
        spec.validate()
        return spec

    def validate(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f'name={self.name!r}: use letters, digits, "_", "-" and "."')
        for key in ('replicas', 'shards'):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{key}={value!r}: must be an integer >= 1')
        if not isinstance(self.uses_with, dict):
            raise TypeError(f'uses_with must be a dict, got {type(self.uses_with).__name__}')
        self.polling_table = PollingTable.parse(self.polling)
        self.protocol = check_protocol(self.protocol)
        if self.secret is not None:
            from nborch.runtime.auth import secret_from_text
            self.secret = secret_from_text(self.secret, 'secret=')
        # The reference system's tls=True on an external executor: dial it over TLS (system
        # roots). Elsewhere `tls` is the gateway's own certificate files.
        external_tls = self.external and self.tls is True
        self.tls_files = TlsFiles.parse(None if external_tls else self.tls,
                                        ssl_certfile=self.ssl_certfile,
                                        ssl_keyfile=self.ssl_keyfile, server=True)
        if not isinstance(self.no_reduce, bool):
            raise ValueError(f'no_reduce={self.no_reduce!r}: True or False')
        if self.tls_internal and (self.tls_files is None or self.tls_files.ca is None):
            raise ValueError("tls_internal=True needs tls={'cert', 'key', 'ca'}: internal links "
                             'are mutual TLS, each side checked against the ca')
        if self.external:
            if self.uses_dynamic_batching:
                raise ValueError(f'{self.name}: uses_dynamic_batching configures the replicas '
                                 'nborch starts; set it where the external executor runs')
            self._validate_external()
            if external_tls:
                self.external_addresses = [dataclasses.replace(a, tls=True)
                                           for a in self.external_addresses]
        else:
            import_py_modules(self.py_modules)  # their Executor classes are then registered
            self.executor_class, defaults = resolve_uses_and_defaults(self.uses)
            self.uses_with = {**defaults, **self.uses_with}  # an executor YAML's `with:` first
            batching_table(self.executor_class, self.uses_dynamic_batching)  # checked now
        if isinstance(self.host, (list, tuple)) and len(self.host) == 1:
            self.host = self.host[0]  # the reference system's parser gives a list
        if self.host in ('localhost', None):
            self.host = '127.0.0.1'
        if not isinstance(self.host, str) or ',' in self.host:
            raise ValueError(f'host={self.host!r}: one host to bind (a list of hosts needs '
                             'external=True)')
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 0:
            raise ValueError(f'gpus={self.gpus!r}: GPUs per replica, an integer >= 0')
        check_http_options(self)
        self.volumes = parse_volumes(self.volumes)
        if self.volumes:
            warnings.warn(f'{self.name}: volumes={self.volumes} are docker mounts; local replica '
                          'processes see these paths as they are, and the Kubernetes and '
                          'Compose exports mount them', IgnoredArgumentWarning, stacklevel=4)
        self.port_given = self.port is not None
        self.ports = gateway_ports(self.port, self.protocol, self.host)
        self.port = self.ports[0]
        if not isinstance(self.timeout_ready, int) or (self.timeout_ready <= 0 and self.timeout_ready != -1):
            raise ValueError(f'timeout_ready={self.timeout_ready!r}: milliseconds > 0, or -1')
        if self.timeout_send is not None and (
                isinstance(self.timeout_send, bool) or not isinstance(self.timeout_send, int)
                or (self.timeout_send <= 0 and self.timeout_send != -1)):
            raise ValueError(f'timeout_send={self.timeout_send!r}: milliseconds > 0, or -1 '
                             '(no limit)')
        check_limit('max_message_size', self.max_message_size,
                    GRPC_MAX_MESSAGE_SIZE - RAFT_ENVELOPE)
        check_limit('max_request_docs', self.max_request_docs, 2**32 - 1)
        self.env = {str(k): str(v) for k, v in (self.env or {}).items()}
        visible = self.env.get(CUDA_VISIBLE_DEVICES, os.environ.get(CUDA_VISIBLE_DEVICES, ''))
        try:
            self.round_robin = parse_rr(visible)
        except ValueError as exc:
            raise ValueError(f'{self.name}: {exc}') from None
        if self.workspace is not None:
            self.workspace = os.path.abspath(os.path.expanduser(self.workspace))
        self._validate_consensus()

    def _validate_external(self) -> None:
        """host/port name the replicas; the deployment runs only a gateway in front of them
        (none for one address: Deployment dials it directly).

        With shards > 1 the address(es) are the sharded executor's entry point (its own
        gateway, which polls and reduces its shards), as the reference system dials an
        external sharded executor's head: `shards` is then that executor's business.
        """
        self.external_addresses = external_addresses(self.host, self.port)
        self.executor_class = None
        self.replicas = len(self.external_addresses)
        self.host, self.port = '127.0.0.1', None

    def _validate_consensus(self) -> None:
        if self.read_consistency not in ('eventual', 'linearizable'):
            raise ValueError(f"read_consistency={self.read_consistency!r}: 'eventual' or "
                             "'linearizable'")
        if not self.stateful:
            if self.peer_ports is not None or self.raft_configuration:
                raise ValueError(f'{self.name}: peer_ports and raft_configuration need stateful=True')
            return
        if self.external:
            raise ValueError(f'{self.name}: stateful=True runs its own replicas; not with external=True')
        if not self.workspace:
            raise ValueError(f'{self.name}: stateful=True needs a workspace (where each replica '
                             'keeps its Raft log and snapshots)')
        if self.replicas < 3:
            warnings.warn(f'{self.name}: stateful with replicas={self.replicas} tolerates no '
                          'failure; Raft needs replicas >= 3 for that', stacklevel=4)
        if not any(e.is_write for e in self.executor_class.endpoints().values()):
            warnings.warn(f'{self.name}: stateful=True but no endpoint is marked @write, so '
                          'nothing is replicated', stacklevel=4)
        refuse_batched_writes(self.executor_class, self.name, self.uses_dynamic_batching)
        self.raft_settings = RaftSettings.parse(self.raft_configuration)
        self.peer_port_table = parse_peer_ports(self.peer_ports, self.shards, self.replicas)

    def routing(self) -> dict:
        """What the gateway needs to route this executor's requests safely, and the doc
        schemas its HTTP door describes (fields of runtime.topology.ExecutorTopology)."""
        from nborch.runtime.http_docs import endpoint_schemas
        table = None if self.executor_class is None else self.executor_class.endpoints()
        endpoints = None if table is None else {path: e.is_write for path, e in table.items()}
        return {'timeout_send': self.timeout_send, 'endpoints': endpoints,
                'schemas': None if table is None else endpoint_schemas(table),
                'election_ms': (self.raft_settings or RaftSettings()).election_ms}

    @property
    def ready_seconds(self) -> float:
        return 10 ** 9 if self.timeout_ready == -1 else self.timeout_ready / 1000


# What a rolling update may change: what the replicas run, not the shape or the routing.
ROLLING_KEYS = ('uses', 'uses_with', 'uses_dynamic_batching', 'py_modules', 'env', 'log_level')


def live_edits(running: 'DeploymentSpec', edited: 'DeploymentSpec') -> dict | None:
    """What a re-run cell changes that a running executor can take without a restart:
    {'replicas': n} (live scale) and ROLLING_KEYS (a rolling update), with `uses` as the
    edited class. None when anything else differs (the cell restarts it then). A port
    left to pick a free one matches any."""
    from nborch.runtime.worker_spec import WorkerSpec
    changes = {}
    for key in user_keys():
        if key == 'uses' or (key == 'port' and not edited.port_given):
            continue
        if getattr(running, key) != getattr(edited, key):
            if key != 'replicas' and key not in ROLLING_KEYS:
                return None
            changes[key] = getattr(edited, key)
    old, new = running.executor_class, edited.executor_class
    if old is not new and (old is None or new is None or
                           WorkerSpec.class_fingerprint(old) != WorkerSpec.class_fingerprint(new)):
        changes['uses'] = new
    return changes


# `Flow()`'s arguments for its gateway, in its signature's order (a unit test keeps the two
# in step); its other arguments are Deployment arguments, defaults of every `add()`.
FLOW_GATEWAY_KEYS = ('port', 'host', 'name', 'quiet', 'timeout_ready', 'protocol',
                     'require_secret', 'secret', 'tls', 'ssl_certfile', 'ssl_keyfile',
                     'tls_internal', 'max_message_size', 'max_request_docs', 'title',
                     'description', 'cors', 'uvicorn_kwargs')
# Not executor defaults: the executor itself, which each add() names (in the reference system
# a Flow's `uses` is a Flow YAML: Flow.load_config here).
_NOT_INHERITED = ('uses', 'uses_with', 'uses_dynamic_batching')


def flow_executor_default_keys() -> tuple[str, ...]:
    """The Deployment arguments `Flow()` also takes, as defaults of every `add()`."""
    gateway = set(FLOW_GATEWAY_KEYS)
    return tuple(k for k in user_keys() if k not in gateway and k not in _NOT_INHERITED)


def user_keys() -> tuple[str, ...]:
    """Every argument a Deployment takes, in field order (besides the reference system's
    arguments that nborch.compat warns about or refuses)."""
    return tuple(f.name for f in dataclasses.fields(DeploymentSpec) if f.name not in _RESOLVED)


def parse_peer_ports(peer_ports, shards: int, replicas: int) -> dict[int, list[int]] | None:
    """`[ports]` (one shard), `{shard: [ports]}`, or either as JSON → {shard: ports}.

    None stays None (the owner picks free ports). Every shard needs exactly `replicas`
    distinct ports.
    """
    if peer_ports is None:
        return None
    if isinstance(peer_ports, str):
        try:
            peer_ports = json.loads(peer_ports)
        except ValueError:
            raise ValueError(f'peer_ports={peer_ports!r}: not valid JSON') from None
    if isinstance(peer_ports, (list, tuple)):
        if shards != 1:
            raise ValueError(f'peer_ports: a list serves one shard; with shards={shards} give '
                             '{shard: [ports], ...}')
        peer_ports = {0: list(peer_ports)}
    if not isinstance(peer_ports, dict):
        raise ValueError(f'peer_ports={peer_ports!r}: a list of ports or {{shard: [ports]}}')
    table: dict[int, list[int]] = {}
    for key, ports in peer_ports.items():
        try:
            shard = int(key)
        except (TypeError, ValueError):
            raise ValueError(f'peer_ports: shard key {key!r} is not a number') from None
        if not isinstance(ports, (list, tuple)) or any(
                isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536 for p in ports):
            raise ValueError(f'peer_ports[{key!r}]={ports!r}: a list of ports (1..65535)')
        table[shard] = list(ports)
    if sorted(table) != list(range(shards)):
        raise ValueError(f'peer_ports names shards {sorted(table)}; the deployment has shards '
                         f'{list(range(shards))}')
    for shard, ports in table.items():
        if len(ports) != replicas:
            raise ValueError(f'peer_ports for shard {shard} has {len(ports)} ports; replicas={replicas}')
    every = [p for ports in table.values() for p in ports]
    if len(set(every)) != len(every):
        raise ValueError(f'peer_ports repeats a port: {every}')
    return table


# uvicorn options the gateway sets itself: where it listens, TLS (tls=), its app and signals.
_UVICORN_OWN = ('app', 'host', 'port', 'uds', 'fd', 'lifespan', 'ssl_keyfile', 'ssl_certfile',
                'ssl_ca_certs', 'ssl_cert_reqs', 'ssl_keyfile_password', 'ssl_version',
                'ssl_ciphers', 'reload', 'workers')


def check_http_options(spec: 'DeploymentSpec') -> None:
    """title / description / cors / uvicorn_kwargs: checked, and warned about when the
    gateway serves no HTTP (the reference system ignores them there)."""
    for key in ('title', 'description'):
        value = getattr(spec, key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f'{key}={value!r}: a string (shown in the OpenAPI page)')
    if not isinstance(spec.cors, bool):
        raise ValueError(f'cors={spec.cors!r}: True or False')
    if spec.uvicorn_kwargs is not None:
        if not isinstance(spec.uvicorn_kwargs, dict):
            raise ValueError(f'uvicorn_kwargs={spec.uvicorn_kwargs!r}: a dict of uvicorn.Config '
                             'options')
        import uvicorn  # only when asked: the web stack is not needed for gRPC
        known = set(inspect.signature(uvicorn.Config).parameters) - set(_UVICORN_OWN)
        wrong = sorted(set(spec.uvicorn_kwargs) - known)
        if wrong:
            own = [k for k in wrong if k in _UVICORN_OWN]
            raise ValueError(f'uvicorn_kwargs: {", ".join(wrong)} ' + (
                'set by nborch (port=, host=, tls=)' if own and len(own) == len(wrong) else
                f'not options of uvicorn.Config (known: {", ".join(sorted(known))})'))
    given = [k for k in ('title', 'description', 'uvicorn_kwargs') if getattr(spec, k)] + \
        (['cors'] if spec.cors else [])
    if given and 'http' not in spec.protocol:
        warnings.warn(f'{spec.name}: {", ".join(given)} configure the HTTP gateway, and this '
                      f"one serves {', '.join(spec.protocol)} only", IgnoredArgumentWarning,
                      stacklevel=5)


def http_options(spec: 'DeploymentSpec') -> dict:
    """What the gateway's HTTP app takes from the spec (Topology.http_options)."""
    return {'title': spec.title, 'description': spec.description, 'cors': spec.cors,
            'uvicorn_kwargs': dict(spec.uvicorn_kwargs or {})}


def parse_volumes(volumes: Any) -> list[str] | None:
    """`volumes` in the reference system's forms: one 'host_path[:container_path]' string,
    a list of them, or comma-separated. Host paths are made absolute (as docker needs)."""
    if volumes is None:
        return None
    items = [v.strip() for v in volumes.split(',')] if isinstance(volumes, str) else volumes
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) and v for v in items):
        raise ValueError(f'volumes={volumes!r}: a path, "host_path:container_path", or a list '
                         'of them')
    parsed = []
    for item in items:
        host, sep, rest = item.partition(':')
        if not host:
            raise ValueError(f'volumes: {item!r} has no host path')
        host = os.path.abspath(os.path.expanduser(host))
        # Without a container path the folder goes to /<basename>, as in the reference system.
        parsed.append(f'{host}:{rest}' if sep else f'{host}:/{os.path.basename(host)}')
    return parsed


SERVED_PROTOCOLS = ('grpc', 'http')  # lower case, as the check compares


def check_protocol(protocol: Any) -> tuple[str, ...]:
    """The gateway's protocols, normalized: 'grpc' and/or 'http' in the reference system's
    spellings (any case, a list or tuple, an enum member whose name says it, such as its
    ProtocolType). Anything else is refused here, before any process starts."""
    if isinstance(protocol, str) and ',' in protocol:  # the command line's grpc,http
        protocol = [p.strip() for p in protocol.split(',')]
    names = list(protocol) if isinstance(protocol, (list, tuple)) else [protocol]
    if not names:
        raise ValueError("protocol=[]: name at least one protocol ('grpc', 'http')")
    normalized: list[str] = []
    for item in names:
        name = (item.name if isinstance(item, enum.Enum) else str(item)).lower()
        if name == 'websocket':
            raise ValueError(f'protocol={protocol!r}: nborch does not serve websocket; '
                             "use 'grpc' or 'http' (or both)")
        if name not in SERVED_PROTOCOLS:
            raise ValueError(f"protocol={protocol!r}: nborch serves 'grpc' and 'http', "
                             f'not {name!r}')
        if name in normalized:
            raise ValueError(f'protocol={protocol!r}: {name!r} is named twice')
        normalized.append(name)
    return tuple(normalized)


def gateway_ports(port: Any, protocols: tuple[str, ...], host: str) -> list[int]:
    """One port per protocol, in order: `port` is one port (one protocol) or a list of as
    many ports as protocols; None picks free ones."""
    if port is None:
        ports = [free_port(host) for _ in protocols]
    elif isinstance(port, (list, tuple)):
        ports = list(port)
        if len(ports) != len(protocols):
            raise ValueError(f'port={port!r}: {len(ports)} port(s) for {len(protocols)} '
                             f'protocol(s) {list(protocols)}; give one port per protocol, '
                             'in the same order')
    elif len(protocols) > 1:
        raise ValueError(f'port={port!r}: protocol={list(protocols)} needs one port per '
                         f'protocol, in the same order (port=[p1, p2])')
    else:
        ports = [port]
    for p in ports:
        if isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536:
            raise ValueError(f'port={p!r}: must be an integer in 1..65535')
    if len(set(ports)) != len(ports):
        raise ValueError(f'port={port!r}: each protocol needs its own port')
    return ports
