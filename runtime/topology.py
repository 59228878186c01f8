"""The gateway's view of what it serves: executors, their shards' replica addresses, polling.

It is the contract between the orchestrator (which knows processes) and the gateway (which
only knows addresses), written as JSON so `nborch gateway --topology` can take it too.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from nborch.runtime.consensus.settings import RaftSettings
from nborch.runtime.limits import DEFAULT_MAX_MESSAGE_SIZE

GATEWAY = 'gateway'


@dataclass
class ExecutorTopology:
    name: str
    shards: list[list[str]]           # per shard, the 'host:port' of each replica
    polling: Any = 'ANY'              # anything PollingTable.parse accepts
    needs: list[str] = field(default_factory=lambda: [GATEWAY])
    stateful: bool = False            # replicas report Raft state: status() asks each of them
    discover: bool = False            # each shard's address is a DNS name; its records are
                                      # the replicas (a headless Service in Kubernetes)
    external: bool = False            # not this deployment's: dialed without its secret
    replicas: int | None = None       # per shard, as deployed: with `discover` the gateway is
                                      # not ready before its name resolves to this many
    timeout_send: int | None = None   # ms per request to a replica (router.CallPolicy)
    endpoints: dict[str, bool] | None = None  # path → is a @write; None: unknown (external)
    election_ms: float = RaftSettings.election_ms  # stateful: the group's election timeout
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE  # its replicas' limit (bytes)
    no_reduce: bool = False           # concatenate its shards' (and needs') results, not
                                      # merge them by id
    # path → {'input': JSON schema, 'output': JSON schema} of its docs (the HTTP gateway's
    # OpenAPI schema); None: unknown (external), any JSON docs go
    schemas: dict[str, dict] | None = None


@dataclass
class Topology:
    executors: list[ExecutorTopology]
    host: str = '127.0.0.1'
    port: int = 0                     # gRPC; without 'grpc' in protocols an internal port
                                      # on 127.0.0.1 that always asks for the secret
    protocols: list[str] = field(default_factory=lambda: ['grpc'])
    http_port: int | None = None      # with 'http' in protocols
    http_options: dict | None = None  # title, description, cors, uvicorn_kwargs (spec.py)
    require_secret: bool = False      # the public port, too, refuses callers without the secret
    tls: dict | None = None           # the public port's certificate files (runtime/tls.py)
    internal_tls: dict | None = None  # mutual TLS to the deployment's own replicas
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE  # the gateway's limit (bytes)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> 'Topology':
        raw = json.loads(text)
        return cls(executors=[ExecutorTopology(**e) for e in raw['executors']],
                   host=raw.get('host', '127.0.0.1'), port=raw.get('port', 0),
                   require_secret=raw.get('require_secret', False), tls=raw.get('tls'),
                   internal_tls=raw.get('internal_tls'),
                   max_message_size=raw.get('max_message_size', DEFAULT_MAX_MESSAGE_SIZE),
                   protocols=list(raw.get('protocols', ['grpc'])),
                   http_port=raw.get('http_port'), http_options=raw.get('http_options'))

    @classmethod
    def load(cls, source: str) -> 'Topology':
        """From JSON text or a JSON file, checked; ValueError says what is wrong."""
        text = source
        if not source.lstrip().startswith('{'):
            try:
                with open(source) as f:
                    text = f.read()
            except OSError as exc:
                raise ValueError(f'topology {source!r}: not JSON and not a readable file '
                                 f'({exc.strerror})') from None
        try:
            topology = cls.from_json(text)
        except ValueError as exc:
            raise ValueError(f'topology is not valid JSON: {exc}') from None
        except (KeyError, TypeError) as exc:
            raise ValueError(f'topology does not match the format of '
                             f'nborch.runtime.topology.Topology: {exc}') from None
        topology.check()
        return topology

    def check(self) -> None:
        from nborch.runtime.polling import PollingTable
        unknown = [p for p in self.protocols if p not in ('grpc', 'http')] or \
            (['(none)'] if not self.protocols else [])
        if unknown:
            raise ValueError(f"topology: protocol {unknown[0]!r}: 'grpc' and/or 'http'")
        if 'http' in self.protocols and self.http_port is None:
            raise ValueError("topology: protocol 'http' needs http_port")
        for e in self.executors:
            if not e.shards or not all(e.shards):
                raise ValueError(f'topology: executor {e.name!r} needs at least one address '
                                 'per shard')
            PollingTable.parse(e.polling)
            if not isinstance(e.no_reduce, bool):
                raise ValueError(f'topology: executor {e.name!r} has no_reduce='
                                 f'{e.no_reduce!r}; expected true or false')
        order_dag({e.name: e.needs for e in self.executors})


def order_dag(needs: dict[str, list[str]]) -> list[str]:
    """Executor names in an order where each comes after everything it needs.

    Raises ValueError naming an unknown predecessor, or the executors on a cycle.
    """
    for name, preds in needs.items():
        unknown = [p for p in preds if p != GATEWAY and p not in needs]
        if unknown:
            raise ValueError(f'executor {name!r} needs {unknown[0]!r}, which is not in the flow '
                             f'(known: {", ".join([GATEWAY, *needs])})')
    order: list[str] = []
    state: dict[str, str] = {}  # name → 'visiting' | 'done'

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 'done':
            return
        if state.get(name) == 'visiting':
            cycle = path[path.index(name):] + [name]
            raise ValueError(f'the flow has a cycle: {" -> ".join(cycle)}')
        state[name] = 'visiting'
        for pred in needs[name]:
            if pred != GATEWAY:
                visit(pred, [*path, name])
        state[name] = 'done'
        order.append(name)

    for name in needs:
        visit(name, [])
    return order
