"""What a Deployment/Flow becomes in a cluster, before any engine's syntax: one workload per
(executor, shard) with the exact `nborch ...` arguments its containers run, and a gateway
whose topology names those workloads by DNS.

Kubernetes and Compose render the same plan; tests run its commands as local processes.
Everything is checked here, so an export either writes every file or none.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass, field

from nborch.desired import Placement, executor_topology, worker_spec
from nborch.errors import ExportError
from nborch.options import executor_argv
from nborch.runtime.gpu import CUDA_VISIBLE_DEVICES
from nborch.runtime.limits import DEFAULT_MAX_MESSAGE_SIZE
from nborch.runtime.supervisor import ReplicaId
from nborch.runtime.topology import ExecutorTopology, Topology
from nborch.spec import DeploymentSpec
from nborch.uses import PassThrough, is_executor_yaml, resolve_uses

EXECUTOR_PORT = 8080     # every container has its own address, so one port serves them all
RAFT_PORT = 8081
DEFAULT_GATEWAY_PORT = 8080
WORKSPACE = '/workspace'  # where a replica's volume is mounted
# The deployment secret (runtime/auth.py): a Kubernetes Secret or a Compose secret mounted as
# this file in every container; `nborch executor|gateway --secret-file` reads it at start.
SECRET_DIR = '/etc/nborch'
SECRET_KEY = 'secret'
SECRET_FILE = f'{SECRET_DIR}/{SECRET_KEY}'
# Kubernetes fills this from the pod's index in its StatefulSet; Compose writes the number.
REPLICA_ID_VAR = 'NBORCH_REPLICA_ID'
REPLICA_ID_ARG = f'$({REPLICA_ID_VAR})'

_DNS_LABEL = re.compile(r'^[a-z]([-a-z0-9]*[a-z0-9])?$')
_MAX_NAME = 52  # a StatefulSet's name goes into a 63-character pod label with a hash suffix


@dataclass
class Workload:
    """The replicas of one shard of one executor, as one cluster workload."""

    name: str                  # DNS label: '<executor>' or '<executor>-<shard>'
    executor: str
    replicas: int
    args: list[str]            # after the image's `nborch` entry point
    env: dict[str, str]
    gpus: int = 0              # per replica
    stateful: bool = False     # a Raft group: stable names, a volume each, REPLICA_ID_ARG in args
    workspace: bool = False    # a volume at WORKSPACE (persistent when stateful)
    ready_seconds: float = 60.0
    volumes: list[str] = field(default_factory=list)  # 'host_path:container_path[:mode]'

    def args_for(self, replica: int) -> list[str]:
        """The arguments of one replica (the replica id filled in where the engine cannot)."""
        return [a.replace(REPLICA_ID_ARG, str(replica)) for a in self.args]


@dataclass
class Naming:
    """How workloads reach each other in one engine: DNS names per service and per replica."""

    service_host: str = '{service}'                 # all replicas of a workload
    replica_host: str = '{service}-{replica}'       # one replica of a stateful workload

    def service(self, workload: str, port: int) -> str:
        return f'{self.service_host.format(service=workload)}:{port}'

    def replica(self, workload: str, replica: int, port: int) -> str:
        return f'{self.replica_host.format(service=workload, replica=replica)}:{port}'


def kubernetes_naming(namespace: str) -> Naming:
    # A StatefulSet's pod i is `<set>-i.<headless service>`; names qualified by namespace so the
    # gateway resolves them from anywhere in the cluster.
    return Naming(service_host=f'{{service}}.{namespace}.svc',
                  replica_host=f'{{service}}-{{replica}}.{{service}}.{namespace}.svc')


COMPOSE_NAMING = Naming()  # a Compose service per stateful replica: '<workload>-<i>'


@dataclass
class ExportPlan:
    name: str
    workloads: list[Workload]
    gateway_args: list[str]
    gateway_port: int
    topology: Topology


def dns_label(name: str, what: str) -> str:
    """A Kubernetes/Compose name for `name`: lower case, '-' for '_' and '.'; checked."""
    label = re.sub(r'[_.]', '-', name.lower())
    if not _DNS_LABEL.match(label) or len(label) > _MAX_NAME:
        raise ExportError(f'{what} {name!r} cannot be a cluster name ({label!r}): use at most '
                          f'{_MAX_NAME} letters, digits and "-", starting with a letter')
    return label


def importable_uses(spec: DeploymentSpec) -> str:
    """What `nborch executor --uses` takes in the image to load the same executor: the
    executor YAML by its path under the build folder (the current one: the Dockerfile copies
    it to /app), or `module:Class`."""
    if is_executor_yaml(spec.uses):
        path = os.path.relpath(os.path.abspath(spec.uses))
        if path.startswith(os.pardir):
            raise ExportError(f'executor {spec.name!r} uses {spec.uses}, outside this folder, '
                              'which the image is built from: export from a folder that holds '
                              'it (the Dockerfile copies the current folder to /app)')
        return path
    cls = spec.executor_class
    if cls is PassThrough:
        return 'nborch.uses:PassThrough'
    module = sys.modules.get(cls.__module__)
    where = 'a notebook or the __main__ script' if cls.__module__ == '__main__' \
        else f'module {cls.__module__!r}'
    uses = f'{cls.__module__}:{cls.__qualname__}'
    try:
        same = module is not None and cls.__module__ != '__main__' and resolve_uses(uses) is cls
    except (ValueError, TypeError):
        same = False
    if not same:
        raise ExportError(
            f'executor {spec.name!r} uses {cls.__qualname__}, defined in {where}, which no image '
            f'can import: move it into a module next to your YAML (say executors.py) and use '
            f"uses='executors:{cls.__name__}'")
    return uses


def _replica_args(spec: DeploymentSpec, shard: int, uses: str, peers: list[str]) -> list[str]:
    """The container's `nborch executor` arguments: the replica's row of the desired table
    (the same `worker_spec` a local run starts from), rendered as its command line, in
    cluster naming (every interface, the fixed port, the volume, DNS peers)."""
    placement = Placement(packed='', host='0.0.0.0', sys_path=(), peers={shard: peers})
    replica = dataclasses.replace(
        worker_spec(spec, placement, ReplicaId(spec.name, shard, 0)), port=EXECUTOR_PORT,
        workspace=WORKSPACE if spec.workspace or spec.stateful else None,
        raft_dir=None)  # each container finds its log under its own volume
    for key in ('uses_with', 'uses_dynamic_batching', 'raft_configuration'):
        try:
            json.dumps(getattr(spec, key))
        except (TypeError, ValueError) as exc:
            raise ExportError(f'{spec.name}: {key} must be JSON to travel in container '
                              f'arguments: {exc}') from None
    args = executor_argv(replica, uses) + ['--secret-file', SECRET_FILE]
    if spec.stateful:  # every replica of the shard runs these arguments: its id comes in env
        args += ['--replica-id', REPLICA_ID_ARG]
    return args


def _workloads(spec: DeploymentSpec, uses: str, naming: Naming) -> tuple[list[Workload],
                                                                         list[list[str]]]:
    """The workloads of one executor and, per shard, the addresses the gateway dials."""
    base = dns_label(spec.name, 'executor')
    env = {k: v for k, v in spec.env.items()
           if not (k == CUDA_VISIBLE_DEVICES and spec.round_robin is not None)}
    gpus = spec.gpus or (1 if spec.round_robin is not None else 0)
    workloads, addresses = [], []
    for shard in range(spec.shards):
        name = base if spec.shards == 1 else f'{base}-{shard}'
        peers = [naming.replica(name, i, RAFT_PORT) for i in range(spec.replicas)] \
            if spec.stateful else []
        args = _replica_args(spec, shard, uses, peers)
        if spec.stateful:
            addresses.append([naming.replica(name, i, EXECUTOR_PORT)
                              for i in range(spec.replicas)])
        else:
            addresses.append([naming.service(name, EXECUTOR_PORT)])
        workloads.append(Workload(name=name, executor=spec.name, replicas=spec.replicas, args=args, env=env, gpus=gpus,
                                  stateful=spec.stateful,
                                  workspace=bool(spec.workspace or spec.stateful),
                                  ready_seconds=spec.ready_seconds,
                                  volumes=list(spec.volumes or [])))
    return workloads, addresses


def build_plan(label: str, plans, gateway_port: int | None, naming: Naming) -> ExportPlan:
    """The plan for an orchestration's `ExecutorPlan`s; ExportError names what cannot go."""
    name = dns_label(label, 'name')
    port = gateway_port or DEFAULT_GATEWAY_PORT
    workloads: list[Workload] = []
    executors: list[ExecutorTopology] = []
    for plan in plans:
        spec = plan.spec
        if spec.external:
            shards = [[str(a) for a in spec.external_addresses]]
        else:
            own, shards = _workloads(spec, importable_uses(spec), naming)
            workloads += own
        # Exported gateways serve gRPC only: no doc schemas in the manifests' arguments.
        executors.append(executor_topology(
            plan, shards, discover=not spec.external and not spec.stateful,
            replicas=spec.replicas, schemas=None))
    taken: dict[str, str] = {}
    for w in workloads:
        if w.name in taken or w.name == 'gateway':
            raise ExportError(f'executors {taken.get(w.name, "gateway")!r} and {w.executor!r} '
                              f'would both be named {w.name!r} in the cluster: rename one')
        taken[w.name] = w.executor
    # The gateway carries what any of its executors accepts (a Flow's executors default to
    # the Flow's own limit, so this is the Flow's unless one executor raised its own).
    limit = max((e.max_message_size for e in executors), default=DEFAULT_MAX_MESSAGE_SIZE)
    topology = Topology(executors=executors, host='0.0.0.0', port=port, max_message_size=limit)
    gateway_args = ['gateway', '--host', '0.0.0.0', '--port', str(port),
                    '--secret-file', SECRET_FILE, '--topology', topology.to_json()]
    return ExportPlan(name=name, workloads=workloads, gateway_args=gateway_args,
                      gateway_port=port, topology=topology)
