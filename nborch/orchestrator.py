"""`Orchestrator`: reconciles processes to validated specs — one gateway, workers per
(executor, shard, replica) — and tears them down again. `Deployment` and `Flow` are thin
layers that build its input.
"""
from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from nborch.addresses import Address
from nborch.client import Client
from nborch.desired import (Placement, executor_topology, replica_ids, worker_spec,
                            worker_specs)
from nborch.errors import MembershipError, RolloutError
from nborch.owner_router import OwnerRouter
from nborch.ports import check_port_free, free_port
from nborch.runtime.auth import new_secret
from nborch.runtime.consensus.membership import check_workspace, set_voters
from nborch.runtime.gpu import CUDA_VISIBLE_DEVICES, detect_device_count, replica_environments
from nborch.runtime.limits import DEFAULT_MAX_MESSAGE_SIZE
from nborch.runtime.supervisor import ProcessHandle, ReplicaId, Supervisor, WorkerHandle
from nborch.runtime.tls import TlsFiles
from nborch.runtime.topology import Topology
from nborch.runtime.worker_spec import WorkerSpec, raft_dir, raft_node_id
from nborch.spec import ROLLING_KEYS, DeploymentSpec

_live: set['Orchestrator'] = set()  # strong refs: a running orchestration is never collected


def stop_all() -> None:
    """Stop every orchestration this process started (atexit, `%nborch stop --all`)."""
    for orchestrator in list(_live):
        orchestrator.stop()


def _echo(line: str) -> None:
    sys.stdout.write(line)


_THREAD_VARS = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')
DRAIN_SECONDS = 30.0  # how long a removed replica may take to answer what it holds


def _adopt(spec: DeploymentSpec, edited: DeploymentSpec) -> None:
    """The running spec takes the rolled-out version's values (and what they resolve to)."""
    for key in (*ROLLING_KEYS, 'executor_class', 'round_robin'):
        setattr(spec, key, getattr(edited, key))


def _stop_all(handles: list[ProcessHandle]) -> None:
    """SIGTERM every process at once, then wait for each (they drain in parallel)."""
    for handle in handles:
        handle.terminate()
    if handles:
        with ThreadPoolExecutor(len(handles)) as pool:
            list(pool.map(lambda h: h.stop(), handles))


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
        # The reconciler's two tables: what should run, and the processes that do (both
        # replaced whole on change, so the supervisor's thread reads either safely).
        self.desired: dict[ReplicaId, WorkerSpec] = {}
        self.handles: dict[ReplicaId, WorkerHandle] = {}
        # Processes the gateway does not route to: starting, or removed from the table and
        # draining or stopping (status shows them after the routed ones).
        self.unrouted: list[WorkerHandle] = []
        self.placements: dict[str, Placement] = {}
        self._threads: dict[str, str] = {}  # BLAS threads per replica, set at start
        self._device_count: int | None = None
        self._generation = 0
        self.gateway: ProcessHandle | None = None
        # The owner's own routing (`Deployment.post`), beside the gateway process's; none
        # for one external address (no gateway either).
        self.router = OwnerRouter() if direct is None else None
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
        return list(self.handles.values())

    @property
    def workers(self) -> dict[str, list[list[WorkerHandle]]]:
        """The running replicas as `[executor][shard][replica]`."""
        table: dict[str, list[list[WorkerHandle]]] = {}
        for rid in sorted(self.handles, key=lambda r: (r.shard, r.replica)):
            shards = table.setdefault(rid.executor, [])
            while len(shards) <= rid.shard:
                shards.append([])
            shards[rid.shard].append(self.handles[rid])
        return table

    def _children(self) -> list[ProcessHandle]:
        """What the supervisor keeps alive: the gateway and the table's replicas."""
        return [self.gateway, *self.handles.values()] if self.gateway else \
            list(self.handles.values())

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
                self.router.open(self._topology(), self.secret)
            except BaseException:
                self._teardown()
                raise
            self.started = True
            self.supervisor = Supervisor(self._children, self.ready_timeout)
            self.supervisor.start()

    def _start_workers(self) -> None:
        # Before any process: a workspace recording another replica count is refused.
        groups = {p.spec.name: check_workspace(p.spec.name, p.spec.workspace, p.spec.shards,
                                               p.spec.replicas)
                  for p in self.plans if p.spec.stateful and not p.spec.external}
        self._threads = _threads_per_worker(self.plans)
        for plan in self.plans:
            spec = plan.spec
            if spec.external:
                continue
            peers = {shard: [f'{self.host}:{p}' for p in ports]
                     for shard, ports in self._peer_ports(spec).items()}
            self.placements[spec.name] = Placement(
                packed=WorkerSpec.pack_class(spec.executor_class), host=self.host,
                sys_path=tuple(sys.path), peers=peers, groups=groups.get(spec.name),
                tls=self.internal_tls)
            self.desired = {**self.desired, **worker_specs(spec, self.placements[spec.name])}
        self.handles = self._launch(list(self.desired))

    def _environments(self, spec: DeploymentSpec) -> list[dict[str, str]]:
        """Each replica's environment: the executor's, with its GPU under round robin."""
        env = {**self._threads, **os.environ, **spec.env}
        if spec.round_robin is None:
            return [env] * spec.replicas
        if self._device_count is None:  # one nvidia-smi call per run, only when asked for
            self._device_count = detect_device_count(env)
        # strict=False: RR1,3 maps onto 3 devices as 1,3,1,3,1, as the reference system does.
        return replica_environments(env, spec.replicas, self._device_count, strict=False)

    def _launch(self, rids: list[ReplicaId],
                spec: DeploymentSpec | None = None) -> dict[ReplicaId, WorkerHandle]:
        """Start the desired replicas `rids` in parallel and wait until each is ready; when
        one cannot start, the others are stopped too and the error is raised. `spec`: the
        version they run, when it is not (yet) the executor's own."""
        echo = None if self.quiet else _echo
        environments = {}
        handles: dict[ReplicaId, WorkerHandle] = {}
        for rid in rids:
            if spec is None or spec.name != rid.executor:
                spec = self._spec_of(rid.executor)
            if rid.executor not in environments:
                environments[rid.executor] = self._environments(spec)
            self._generation += 1  # a fresh file per process: a replaced one may still read
            stem = os.path.join(self.run_dir, f'{rid.executor}-{rid.shard}-{rid.replica}'
                                              f'-{self._generation}')
            self.desired[rid].dump(stem + '.json')
            handles[rid] = WorkerHandle(rid, stem + '.json',
                                        env=environments[rid.executor][rid.replica],
                                        log_path=stem + '.log', echo=echo, secret=self.secret)
        self.unrouted = [*self.unrouted, *handles.values()]
        try:
            for handle in handles.values():
                handle.spawn()
            deadline = time.monotonic() + self.ready_timeout
            for handle in handles.values():  # all start in parallel; wait for each in turn
                handle.wait_ready(max(deadline - time.monotonic(), 0.1))
        except BaseException:
            _stop_all(list(handles.values()))
            raise
        finally:
            self.unrouted = [h for h in self.unrouted if h not in handles.values()]
        return handles

    def _spec_of(self, executor: str) -> DeploymentSpec:
        for plan in self.plans:
            if plan.spec.name == executor:
                return plan.spec
        known = ', '.join(p.spec.name for p in self.plans)
        raise ValueError(f'{self.label} has no executor named {executor!r} (it has {known})')

    # -- live changes ----------------------------------------------------------------------
    def scale(self, executor: str, replicas: int, *, drain_s: float = DRAIN_SECONDS) -> dict:
        """Change how many replicas each shard of an executor runs, while it serves (before
        start: the count it starts with).

        New replicas start and join the gateway's pools once ready; removed ones (the
        highest replica ids) leave the pools at once and stop after answering what they
        hold (at most `drain_s`). A stateful executor's Raft group changes one member at a
        time (`_scale_group`). Returns what changed: {'started', 'stopped', 'undrained'}.
        """
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f'replicas={replicas!r}: must be an integer >= 1')
        with self._lock:
            spec = self._spec_of(executor)
            if spec.external:
                raise ValueError(f'{executor!r} is external: its replicas run elsewhere')
            if not self.started:  # the count it will start with
                spec.replicas = replicas
                return {'started': 0, 'stopped': 0, 'undrained': 0}
            before = spec.replicas
            if replicas == before:
                return {'started': 0, 'stopped': 0, 'undrained': 0}
            if spec.stateful:
                return self._scale_group(spec, replicas, drain_s)
            spec.replicas = replicas
            kept = {rid: w for rid, w in self.desired.items() if rid.executor != executor}
            self.desired = {**kept, **worker_specs(spec, self.placements[executor])}
            try:
                return self._converge(executor, drain_s)
            except BaseException:
                spec.replicas = before
                self.desired = {**kept, **worker_specs(spec, self.placements[executor])}
                raise

    def _scale_group(self, spec: DeploymentSpec, replicas: int, drain_s: float) -> dict:
        """Grow or shrink each shard's Raft group one member at a time, as etcd does: a new
        replica starts empty as a learner, is added by a membership change carrying its
        address, catches up from a snapshot and the log, and only then is promoted to voter
        and routed to. A removed replica first leaves the gateway's pools, then the group
        (the change commits), then stops; its folder is deleted (the group holds its data).
        The workspace's membership records follow each completed change."""
        executor = spec.name
        started = stopped = undrained = 0
        while spec.replicas < replicas:
            r = spec.replicas
            placement = self.placements[executor]
            new_peers = {shard: [*peers, f'{self.host}:{free_port(self.host)}']
                         for shard, peers in placement.peers.items()}
            placement = dataclasses.replace(placement, peers=new_peers)
            spec.replicas = r + 1
            joiners = {rid: dataclasses.replace(worker_spec(spec, placement, rid), raft_join=True)
                       for rid in replica_ids(spec) if rid.replica == r}
            for joiner in joiners.values():
                shutil.rmtree(joiner.raft_dir, ignore_errors=True)  # a former member's state
            self.placements[executor] = placement
            self.desired = {**self.desired, **joiners}
            added = []
            try:
                self.handles = {**self.handles, **self._launch(list(joiners))}
                for rid in joiners:
                    self._change_membership(rid, 'add-learner', new_peers[rid.shard][r])
                    added.append(rid)
                    self._change_membership(rid, 'promote')
            except BaseException:
                for rid in added:  # the group forgets a newcomer that did not make it
                    try:
                        self._change_membership(rid, 'remove')
                    except MembershipError:
                        pass  # a learner left behind counts for nothing; the error below says why
                self._forget_replicas(spec, r)
                raise
            self._record_members(spec)
            started += len(joiners)
            undrained += self._route(executor, drain_s).get('undrained', 0)
        while spec.replicas > replicas:
            r = spec.replicas - 1
            # By id, not by process: a replica stopped by an earlier attempt that failed is
            # still a voter until its removal commits, so asking again finishes the job.
            leaving = [ReplicaId(executor, shard, r) for shard in range(spec.shards)]
            groups = {rid: self._group_of(rid) for rid in leaving}  # the leaving one may lead
            self.desired = {rid: w for rid, w in self.desired.items() if rid not in leaving}

            def leave_the_groups() -> None:
                for rid in leaving:
                    self._change_membership(rid, 'remove', members=groups[rid])
            running = [self.handles[rid] for rid in leaving if rid in self.handles]
            routed = self._retire(
                executor, running,
                {rid: h for rid, h in self.handles.items() if rid not in leaving}, drain_s,
                before_stop=leave_the_groups)
            undrained += routed.get('undrained', 0)
            self._forget_replicas(spec, r)
            self._record_members(spec)
            stopped += len(running)
        return {'started': started, 'stopped': stopped, 'undrained': undrained}

    def _forget_replicas(self, spec: DeploymentSpec, r: int) -> None:
        """Replica `r` of every shard is no member any more (removed, or never added): drop
        it from the tables, stop what runs of it and delete its Raft folders."""
        executor = spec.name
        gone = [rid for rid in self.handles if rid.executor == executor and rid.replica >= r]
        _stop_all([self.handles[rid] for rid in gone])
        self.handles = {rid: h for rid, h in self.handles.items() if rid not in gone}
        spec.replicas = r
        placement = self.placements[executor]
        self.placements[executor] = dataclasses.replace(
            placement, peers={shard: peers[:r] for shard, peers in placement.peers.items()})
        for shard in range(spec.shards):
            shutil.rmtree(raft_dir(spec.workspace, spec.shards, shard, r), ignore_errors=True)
        self._refresh_specs(spec)

    def _record_members(self, spec: DeploymentSpec) -> None:
        """The group is now `spec.replicas` voters: the workspace and the specs a restarted
        replica reads say so."""
        voters = tuple(range(1, spec.replicas + 1))
        for shard in range(spec.shards):
            for r in range(spec.replicas):
                set_voters(raft_dir(spec.workspace, spec.shards, shard, r), voters)
        self._refresh_specs(spec)

    def _refresh_specs(self, spec: DeploymentSpec) -> None:
        """Every replica's desired spec from the current placement (peers, count), written
        where its supervisor restarts it from."""
        table = worker_specs(spec, self.placements[spec.name])
        self.desired = {**{rid: w for rid, w in self.desired.items()
                           if rid.executor != spec.name}, **table}
        for rid, handle in self.handles.items():
            if rid in table:
                table[rid].dump(handle.spec_path)

    def _group_of(self, rid: ReplicaId) -> dict[int, WorkerHandle]:
        """The running replicas of `rid`'s Raft group, by node id (replica id + 1)."""
        return {raft_node_id(other.replica): handle for other, handle in self.handles.items()
                if other.executor == rid.executor and other.shard == rid.shard}

    def _change_membership(self, rid: ReplicaId, op: str, address: str = '', *,
                           members: dict[int, WorkerHandle] | None = None) -> dict:
        """One membership change of `rid`'s Raft group (for its Raft node), asked of
        its members until the leader has committed it; a learner that is not caught up yet
        is promoted once it is. Raises MembershipError when it cannot be made in time."""
        members = members or self._group_of(rid)
        if not members:
            raise MembershipError(f'{rid.executor} (shard {rid.shard}): no running member to '
                                  f'{op} replica {rid.replica} through')
        node = raft_node_id(rid.replica)
        ask = next(iter(members))
        deadline = time.monotonic() + self.ready_timeout
        while True:
            reply = self._ask_member(members[ask], op, node, address)
            if 'index' in reply:
                return reply
            if time.monotonic() > deadline:
                raise MembershipError(f'{rid.executor} (shard {rid.shard}): could not {op} '
                                      f'replica {rid.replica} within {self.ready_timeout:.0f} s: '
                                      f'{reply["error"]}')
            leader = reply.get('leader', 0)
            ask = leader if leader in members else sorted(members)[
                (sorted(members).index(ask) + 1) % len(members)]
            time.sleep(0.05)  # an election or a catch-up in progress: ask again shortly

    def _ask_member(self, handle: WorkerHandle, op: str, node: int, address: str) -> dict:
        client = self._worker_client(handle)
        try:
            return client.change_membership(op, node, address, timeout=35.0)
        except ConnectionError as exc:
            return {'error': str(exc), 'leader': 0}
        finally:
            client.close()

    def roll_out(self, executor: str, changes: dict, *, drain_s: float = DRAIN_SECONDS) -> dict:
        """Replace an executor's replicas one at a time by ones built with `changes`
        (`uses`, `uses_with`, ...): each new replica starts, becomes ready and joins the
        pools, then the one it replaces drains and stops. A stateful replica is restarted in
        place instead (`_restart_member`), followers first. Returns {'replaced': n}.

        A new replica that cannot start stops the rollout (RolloutError): the replicas not
        replaced yet keep serving the old version. Before start it edits the spec."""
        unknown = sorted(set(changes) - set(ROLLING_KEYS))
        if unknown:
            raise TypeError(f'a rolling update changes {", ".join(ROLLING_KEYS)}; not '
                            f'{", ".join(unknown)}')
        with self._lock:
            spec = self._spec_of(executor)
            if spec.external:
                raise ValueError(f'{executor!r} is external: its replicas run elsewhere')
            edited = dataclasses.replace(spec, **changes)
            edited.validate()  # every input error before any process
            if not self.started:
                _adopt(spec, edited)
                return {'replaced': 0}
            placement = dataclasses.replace(self.placements[executor],
                                            packed=WorkerSpec.pack_class(edited.executor_class))
            old, new = spec.routing()['endpoints'] or {}, edited.routing()['endpoints'] or {}
            # While both versions serve, an endpoint either one writes is a write.
            mixed = {path: old.get(path, False) or new.get(path, False)
                     for path in {*old, *new}}
            rids = [rid for rid in self.desired if rid.executor == executor]
            if spec.stateful:
                rids = self._leaders_last(rids)
            for done, rid in enumerate(rids):
                previous = self.desired[rid]
                self.desired = {**self.desired, rid: worker_spec(edited, placement, rid)}
                try:
                    if spec.stateful:
                        self._restart_member(executor, rid, edited, drain_s, mixed)
                        continue
                    started = self._launch([rid], edited)
                except BaseException as exc:
                    self.desired = {**self.desired, rid: previous}
                    if spec.stateful and rid not in self.handles:  # its old version again
                        self.handles = {**self.handles, **self._launch([rid], spec)}
                        self._route(executor, drain_s, endpoints=mixed)
                    raise RolloutError(
                        f'{executor}: the new version of {rid} did not start, so the rollout '
                        f'stopped: {done} of {len(rids)} replicas run it, the others the old '
                        f'one. {exc}') from exc
                self._replace(executor, rid, started[rid], drain_s, mixed)
            _adopt(spec, edited)
            self.placements[executor] = placement
            self._route(executor, drain_s, endpoints=new)
            return {'replaced': len(rids)}

    def _leaders_last(self, rids: list[ReplicaId]) -> list[ReplicaId]:
        """Followers first: restarting a leader costs its group an election, so once."""
        def leads(rid: ReplicaId) -> bool:
            handle = self.handles.get(rid)
            return handle is not None and self._raft_status(handle).get('role') == 'leader'
        return sorted(rids, key=leads)

    def _worker_client(self, handle: WorkerHandle) -> Client:
        """A client of one replica's own port, as the owner (it holds the secret)."""
        return Client(host=self.host, port=handle.port, secret=self.secret,
                      tls=self.tls.for_own_client() if self.internal_tls else False,
                      max_message_size=self.max_message_size)

    def _raft_status(self, handle: WorkerHandle) -> dict:
        client = self._worker_client(handle)
        try:
            return client.status(timeout=5.0).get('raft') or {}
        except ConnectionError:
            return {}
        finally:
            client.close()

    def _restart_member(self, executor: str, rid: ReplicaId, edited: DeploymentSpec,
                        drain_s: float, endpoints: dict[str, bool]) -> None:
        """A stateful rolling update's step: the replica leaves the pools, stops, and starts
        again as the new version on its own Raft folder and port (same node id: its log
        and its place in the group stay), and is routed to once it has applied what the
        group had committed when it came back. The group keeps a majority meanwhile (a
        group of one waits for it)."""
        self._retire(executor, [self.handles[rid]],
                     {r: h for r, h in self.handles.items() if r != rid}, drain_s, endpoints)
        started = self._launch([rid], edited)[rid]
        target = max((self._raft_status(h).get('commit', 0) for r, h in self.handles.items()
                      if r.executor == executor and r.shard == rid.shard), default=0)
        deadline = time.monotonic() + self.ready_timeout
        while self._raft_status(started).get('applied', -1) < target:
            if time.monotonic() > deadline:
                _stop_all([started])
                raise MembershipError(f'{rid}: the new version did not catch up with the group '
                                      f'(index {target}) within {self.ready_timeout:.0f} s')
            time.sleep(0.05)  # it replays its log and takes what it missed from the leader
        self.handles = {**self.handles, rid: started}
        self._route(executor, drain_s, endpoints=endpoints)

    def _replace(self, executor: str, rid: ReplicaId, handle: WorkerHandle, drain_s: float,
                 endpoints: dict[str, bool]) -> None:
        """Route to `handle` instead of the process now serving `rid`, then stop that one."""
        self._retire(executor, [self.handles[rid]], {**self.handles, rid: handle}, drain_s,
                     endpoints)

    def _retire(self, executor: str, retiring: list[WorkerHandle],
                handles: dict[ReplicaId, WorkerHandle], drain_s: float,
                endpoints: dict[str, bool] | None = None, before_stop=None) -> dict:
        """Route to `handles` (which leave out `retiring`), and stop `retiring` once the
        gateway says they answered what they held; `before_stop` runs in between (a Raft
        member leaves its group). Returns the gateway's answer."""
        for handle in retiring:
            handle.retire('draining')
        self.unrouted = [*self.unrouted, *retiring]
        self.handles = handles
        try:
            routed = self._route(executor, drain_s, endpoints=endpoints)
            if before_stop is not None:
                before_stop()
        finally:
            for handle in retiring:
                handle.state = 'stopping'
            _stop_all(retiring)
            self.unrouted = [h for h in self.unrouted if h not in retiring]
        return routed

    def _converge(self, executor: str, drain_s: float) -> dict:
        """Make `executor`'s processes what the desired table says: start the missing
        replicas, route to the table's replicas, then stop the ones it no longer names."""
        desired = [rid for rid in self.desired if rid.executor == executor]
        running = [rid for rid in self.handles if rid.executor == executor]
        started = self._launch([rid for rid in desired if rid not in self.handles])
        removed = [self.handles[rid] for rid in running if rid not in self.desired]
        routed = self._retire(executor, removed, {
            rid: h for rid, h in {**self.handles, **started}.items() if rid in self.desired},
            drain_s)
        return {'started': len(started), 'stopped': len(removed),
                'undrained': routed.get('undrained', 0)}

    def _route(self, executor: str, drain_s: float,
               endpoints: dict[str, bool] | None = None) -> dict:
        """Give the gateway `executor`'s replicas as they now are (and rewrite the topology a
        restarted gateway reads); returns its answer once removed replicas are drained."""
        self._write_topology()
        shards = self._addresses(self._spec_of(executor))
        client = Client(host=self.host if 'grpc' in self.protocols else '127.0.0.1',
                        port=self.grpc_port, secret=self.secret,
                        tls=self.tls.for_own_client() if self.tls else False,
                        max_message_size=self.max_message_size)
        deadline = time.monotonic() + self.ready_timeout
        try:
            while True:
                try:
                    routed = client.set_pools(executor, shards, drain_s=drain_s,
                                              endpoints=endpoints, timeout=drain_s + 5.0)
                    break
                except ConnectionError:  # the gateway is restarting: it reads the new file,
                    if time.monotonic() > deadline:  # or takes the update once it is back
                        raise
                    time.sleep(0.1)
        finally:
            client.close()
        if self.router is None:
            return routed
        owned = self.router.set_pools(executor, shards, drain_s, endpoints)
        return {**routed, 'undrained': routed.get('undrained', 0) + owned['undrained']}

    def _topology(self) -> Topology:
        return Topology(host=self.host, port=self.grpc_port, protocols=list(self.protocols),
                        http_port=self.port_of('http'), http_options=self.http_options,
                        max_message_size=self.max_message_size, executors=[
            # An external executor holding the deployment secret is dialed as our own.
            executor_topology(plan, self._addresses(plan.spec),
                              external=plan.spec.external and self.given_secret is None)
            for plan in self.plans], require_secret=self.require_secret,
            tls=self.tls.to_dict() if self.tls else None, internal_tls=self.internal_tls)

    def _write_topology(self) -> str:
        """The gateway's topology file (what a restarted gateway reads), replaced whole."""
        path = os.path.join(self.run_dir, 'topology.json')
        with open(path + '.new', 'w') as f:
            f.write(self._topology().to_json())
        os.replace(path + '.new', path)
        return path

    def _start_gateway(self) -> None:
        path = self._write_topology()
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
        if self.router is not None:
            self.router.close()
        children = [*self.all_workers(), *self.unrouted]
        if self.gateway is not None:
            self.gateway.terminate()
        _stop_all(children)
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        self.handles, self.desired, self.unrouted = {}, {}, []
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
        shards = [list(replicas) for replicas in self.workers.get(spec.name, [])]
        for handle in self.unrouted:  # after the routed ones: the gateway has none of them
            if handle.id.executor == spec.name and handle.id.shard < len(shards):
                shards[handle.id.shard].append(handle)
        return [[{'replica': w.id.replica, 'pid': w.pid, 'port': w.port, 'state': w.state,
                  'restarts': w.restarts, 'last_exit': w.last_exit,
                  'gpu': {'assigned': w.env.get(CUDA_VISIBLE_DEVICES) if spec.round_robin else None,
                          'seen': w.seen_devices}}
                 for w in replicas] for replicas in shards]

    def logs(self, executor: str, shard: int = 0, replica: int = 0) -> str:
        worker = self.workers[executor][shard][replica]
        return worker.child.log_tail() if worker.child else ''


atexit.register(stop_all)
