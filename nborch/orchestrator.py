"""`Orchestrator`: reconciles processes to validated specs — one gateway, workers per
(executor, shard, replica) — and tears them down again. `Deployment` and `Flow` are thin
layers that build its input.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from nborch.addresses import Address
from nborch.ports import check_port_free, free_port
from nborch.runtime.auth import new_secret
from nborch.runtime.consensus.membership import check_workspace
from nborch.runtime.gpu import CUDA_VISIBLE_DEVICES, detect_device_count, replica_environments
from nborch.runtime.limits import DEFAULT_MAX_MESSAGE_SIZE
from nborch.runtime.supervisor import ProcessHandle, ReplicaId, Supervisor, WorkerHandle
from nborch.runtime.tls import TlsFiles
from nborch.runtime.topology import ExecutorTopology, Topology
from nborch.runtime.worker_spec import WorkerSpec, raft_dir
from nborch.spec import DeploymentSpec

_live: set['Orchestrator'] = set()  # strong refs: a running orchestration is never collected


def stop_all() -> None:
    """Stop every orchestration this process started (atexit, `%nborch stop --all`)."""
    for orchestrator in list(_live):
        orchestrator.stop()


def _echo(line: str) -> None:
    sys.stdout.write(line)


_THREAD_VARS = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')


def _threads_per_worker(plans: list['ExecutorPlan']) -> dict[str, str]:
    """Default BLAS/OpenMP threads per replica: the cores shared out, at least one.

    Replicas are the parallelism; a BLAS pool per replica on top oversubscribes the cores
    (measured here: a 10 000 × 128 float32 mat-vec takes 0.27 ms on one thread and 3.2 ms
    when two replicas' pools fight over 2 cores). A value the user sets wins.
    """
    workers = sum(p.spec.replicas * p.spec.shards for p in plans if not p.spec.external)
    per_worker = str(max(1, (os.cpu_count() or 1) // max(workers, 1)))
    return {var: per_worker for var in _THREAD_VARS}


@dataclass
class ExecutorPlan:
    """One executor of the orchestration: its spec and its predecessors in the DAG."""

    spec: DeploymentSpec
    needs: list[str]


class Orchestrator:
    """Owns every process of one Deployment or Flow. Not reentrant; start() once."""

    def __init__(self, label: str, plans: list[ExecutorPlan], *, host: str, port: int,
                 ready_timeout: float, quiet: bool = False, require_secret: bool = False,
                 secret: bytes | None = None, tls: TlsFiles | None = None,
                 tls_internal: bool = False, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 direct: Address | None = None,
                 protocols: tuple[str, ...] = ('grpc',), ports: list[int] | None = None,
                 http_options: dict | None = None):
        self.label = label
        # One external replica and nothing a gateway adds: posts go straight to it (it serves
        # the gateway's Executor service), and start() starts no process.
        self.direct = direct
        # The gateway's public doors, one port per protocol in order; `port` is the first.
        self.protocols = tuple(protocols)
        self.http_options = http_options
        self.ports = list(ports) if ports is not None else [port]
        if len(self.ports) != len(self.protocols):
            raise ValueError(f'{label}: {len(self.ports)} port(s) for protocols {list(protocols)}')
        port = self.ports[0]
        # Without a public gRPC door the owner still talks gRPC to the gateway (status,
        # leaders) on a loopback port picked at start.
        self.grpc_port: int | None = self.port_of('grpc')
        self.tls = tls  # the gateway's public port
        self.internal_tls = tls.to_dict() if tls and tls_internal else None
        self.require_secret = require_secret
        self.given_secret = secret  # then external executors hold it too
        self.secret: bytes | None = None  # this run's deployment secret (runtime/auth.py)
        self.max_message_size = max_message_size  # the gateway's (and its client's)
        self.plans = plans
        self.host = host
        self.port = port
        self.ready_timeout = ready_timeout
        self.quiet = quiet
        self.workers: dict[str, list[list[WorkerHandle]]] = {}
        self.gateway: ProcessHandle | None = None
        self.supervisor: Supervisor | None = None
        self.run_dir: str | None = None
        self.started = False
        self._lock = threading.Lock()

    def port_of(self, protocol: str) -> int | None:
        """The public port of `protocol`, or None when the gateway does not serve it."""
        return self.ports[self.protocols.index(protocol)] if protocol in self.protocols else None

    @property
    def running(self) -> bool:
        """Started, and the gateway (what serves posts) is up: False while it restarts."""
        return self.started and (self.direct is not None or
                                 (self.gateway is not None and self.gateway.up))

    @property
    def healthy(self) -> bool:
        """Running with every process up (no replica dead or restarting)."""
        return self.running and all(w.up for w in self.all_workers())

    def down(self) -> list[str]:
        """The processes that are not up now, by name (empty when healthy or stopped)."""
        if not self.started:
            return []
        return [str(p.id) for p in [self.gateway, *self.all_workers()]
                if p is not None and not p.up]

    def all_workers(self) -> list[WorkerHandle]:
        return [w for shards in self.workers.values() for replicas in shards for w in replicas]

    # -- start -----------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self.started:
                return
            if self.direct is not None:
                self.secret = self.given_secret  # an external replica is dialed with it, or none
                self.started = True
                return
            for protocol, port in zip(self.protocols, self.ports):
                check_port_free(self.host, port, f'{self.label} gateway ({protocol})')
            if 'grpc' not in self.protocols:
                self.grpc_port = free_port('127.0.0.1')
            self.run_dir = tempfile.mkdtemp(prefix=f'nborch-{self.label}-')  # 0700
            self.secret = self.given_secret or new_secret()
            _live.add(self)
            try:
                self._start_workers()
                self._start_gateway()
            except BaseException:
                self._teardown()
                raise
            self.started = True
            self.supervisor = Supervisor([self.gateway, *self.all_workers()], self.ready_timeout)
            self.supervisor.start()

    def _start_workers(self) -> None:
        echo = None if self.quiet else _echo
        device_count = None
        threads = _threads_per_worker(self.plans)
        # Before any process: a workspace recording another replica count is refused.
        groups = {p.spec.name: check_workspace(p.spec.name, p.spec.workspace, p.spec.shards,
                                               p.spec.replicas)
                  for p in self.plans if p.spec.stateful and not p.spec.external}
        for plan in self.plans:
            spec = plan.spec
            if spec.external:
                continue
            env = {**threads, **os.environ, **spec.env}
            environments = [env] * spec.replicas
            if spec.round_robin is not None:
                if device_count is None:  # one nvidia-smi call per start, only when asked for
                    device_count = detect_device_count(env)
                # strict=False: SPEC §6 maps RR1,3 onto 3 devices as 1,3,1,3,1, as Jina does.
                environments = replica_environments(env, spec.replicas, device_count,
                                                    strict=False)
            packed = WorkerSpec.pack_class(spec.executor_class)
            peer_ports = self._peer_ports(spec)
            shards = []
            for shard in range(spec.shards):
                replicas = []
                for replica in range(spec.replicas):
                    rid = ReplicaId(spec.name, shard, replica)
                    stem = os.path.join(self.run_dir, f'{spec.name}-{shard}-{replica}')
                    WorkerSpec(name=spec.name, uses=packed, uses_with=spec.uses_with,
                               uses_dynamic_batching=spec.uses_dynamic_batching,
                               shard_id=shard, replica_id=replica, shards=spec.shards,
                               replicas=spec.replicas, workspace=spec.workspace,
                               host=self.host, sys_path=list(sys.path),
                               log_level=spec.log_level, stateful=spec.stateful,
                               peers=[f'{self.host}:{p}' for p in peer_ports.get(shard, [])],
                               raft_dir=(raft_dir(spec.workspace, spec.shards, shard, replica)
                                         if spec.stateful else None),
                               raft_group=groups[spec.name][shard] if spec.stateful else None,
                               raft_configuration=spec.raft_configuration,
                               read_consistency=spec.read_consistency,
                               tls=self.internal_tls, max_message_size=spec.max_message_size,
                               max_request_docs=spec.max_request_docs).dump(stem + '.json')
                    replicas.append(WorkerHandle(rid, stem + '.json', env=environments[replica],
                                                 log_path=stem + '.log', echo=echo,
                                                 secret=self.secret))
                shards.append(replicas)
            self.workers[spec.name] = shards
        workers = self.all_workers()
        for worker in workers:
            worker.spawn()
        deadline = time.monotonic() + self.ready_timeout
        for worker in workers:  # all start in parallel; wait for each in turn
            worker.wait_ready(max(deadline - time.monotonic(), 0.1))

    def _start_gateway(self) -> None:
        topology = Topology(host=self.host, port=self.grpc_port, protocols=list(self.protocols),
                            http_port=self.port_of('http'), http_options=self.http_options,
                            max_message_size=self.max_message_size, executors=[
            ExecutorTopology(name=plan.spec.name, polling=plan.spec.polling, needs=plan.needs,
                             stateful=plan.spec.stateful,
                             external=plan.spec.external and self.given_secret is None,
                             max_message_size=plan.spec.max_message_size,
                             no_reduce=plan.spec.no_reduce,
                             shards=self._addresses(plan.spec), **plan.spec.routing())
            for plan in self.plans], require_secret=self.require_secret,
            tls=self.tls.to_dict() if self.tls else None, internal_tls=self.internal_tls)
        path = os.path.join(self.run_dir, 'topology.json')
        with open(path, 'w') as f:
            f.write(topology.to_json())
        self.gateway = ProcessHandle(f'{self.label}/gateway', 'nborch.runtime.gateway',
                                     ['--topology', path], env=None,
                                     log_path=os.path.join(self.run_dir, 'gateway.log'),
                                     echo=None if self.quiet else _echo, secret=self.secret)
        self.gateway.spawn()
        self.gateway.wait_ready(self.ready_timeout)

    def _peer_ports(self, spec: DeploymentSpec) -> dict[int, list[int]]:
        """The Raft ports of a stateful executor (checked free), or {} when stateless."""
        if not spec.stateful:
            return {}
        table = spec.peer_port_table or {
            shard: [free_port(self.host) for _ in range(spec.replicas)]
            for shard in range(spec.shards)}
        for ports in table.values():
            for port in ports:
                check_port_free(self.host, port, f'{spec.name} Raft peer')
        return table

    def _addresses(self, spec: DeploymentSpec) -> list[list[str]]:
        if spec.external:
            return [[str(a) for a in spec.external_addresses]]
        return [[f'{self.host}:{w.port}' for w in replicas] for replicas in self.workers[spec.name]]

    # -- stop ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the supervisor, then every process; idempotent, safe from any thread."""
        with self._lock:
            self._teardown()

    def _teardown(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        children = [w for w in self.all_workers()]
        if self.gateway is not None:
            self.gateway.terminate()
        for worker in children:
            worker.terminate()
        with ThreadPoolExecutor(max(len(children), 1)) as pool:
            list(pool.map(lambda w: w.stop(), children))
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        self.workers = {}
        self.started = False
        _live.discard(self)
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    # -- observation -----------------------------------------------------------------------
    def process_status(self) -> dict:
        """What the owner knows of its processes (pids, ports, states, restarts)."""
        if self.direct is not None:
            return {'gateway': {'pid': None, 'port': None, 'alive': False, 'state': 'none',
                                'restarts': 0, 'direct': str(self.direct)},
                    'executors': {p.spec.name: self._replica_status(p.spec) for p in self.plans}}
        return {
            'gateway': {'pid': self.gateway.pid if self.gateway else None,
                        'port': self.port,
                        'ports': dict(zip(self.protocols, self.ports)),
                        'alive': bool(self.gateway and self.gateway.alive),
                        'state': self.gateway.state if self.gateway else 'stopped',
                        'restarts': self.gateway.restarts if self.gateway else 0},
            'executors': {plan.spec.name: self._replica_status(plan.spec) for plan in self.plans},
        }

    def _replica_status(self, spec: DeploymentSpec) -> list[list[dict]]:
        if spec.external:
            return [[{'replica': i, 'address': str(a), 'external': True, 'state': 'external'}
                     for i, a in enumerate(spec.external_addresses)]]
        return [[{'replica': w.id.replica, 'pid': w.pid, 'port': w.port, 'state': w.state,
                  'restarts': w.restarts, 'last_exit': w.last_exit,
                  'gpu': {'assigned': w.env.get(CUDA_VISIBLE_DEVICES) if spec.round_robin else None,
                          'seen': w.seen_devices}}
                 for w in replicas] for replicas in self.workers.get(spec.name, [])]

    def logs(self, executor: str, shard: int = 0, replica: int = 0) -> str:
        worker = self.workers[executor][shard][replica]
        return worker.child.log_tail() if worker.child else ''


atexit.register(stop_all)
