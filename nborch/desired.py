"""The desired state of an orchestration: which replicas should run, each as the
`WorkerSpec` its process starts from, keyed by `ReplicaId`, and what the gateway knows of
each executor (`executor_topology`).

A pure function of the spec and of what the owner fixed once at start (the packed class, the
Raft peers and group ids): the reconciler (`Orchestrator`) diffs this table against the
processes that run, so start, scale and restart are edits of it.
"""
from __future__ import annotations

from dataclasses import dataclass

from nborch.runtime.supervisor import ReplicaId
from nborch.runtime.topology import ExecutorTopology
from nborch.runtime.worker_spec import WorkerSpec, raft_dir
from nborch.spec import DeploymentSpec


@dataclass(frozen=True)
class Placement:
    """What the owner fixed for one executor when it started: it stays for the run."""

    packed: str                           # WorkerSpec.pack_class of the executor class
    host: str                             # the interface replicas bind
    sys_path: tuple[str, ...]             # the owner's, so by-reference classes import
    peers: dict[int, list[str]]           # shard → every replica's Raft 'host:port' (stateful)
    groups: list[str] | None = None       # Raft group id per shard (stateful)
    tls: dict | None = None               # mutual TLS of internal links


def replica_ids(spec: DeploymentSpec) -> list[ReplicaId]:
    """Every replica the spec asks for, shard by shard, in replica order."""
    return [ReplicaId(spec.name, shard, replica)
            for shard in range(spec.shards) for replica in range(spec.replicas)]


def worker_specs(spec: DeploymentSpec, placement: Placement) -> dict[ReplicaId, WorkerSpec]:
    """The table of one executor: `{replica id → WorkerSpec}` (none for an external one)."""
    if spec.external:
        return {}
    return {rid: worker_spec(spec, placement, rid) for rid in replica_ids(spec)}


def executor_topology(plan, shards: list[list[str]], **naming) -> ExecutorTopology:
    """The gateway's entry for one `ExecutorPlan`: its replicas' addresses per shard
    (`shards`) and the spec's routing. `naming`: what a local run and a cluster export set
    differently (`external`, `discover`, `replicas`, `schemas`)."""
    spec = plan.spec
    return ExecutorTopology(**{
        'name': spec.name, 'shards': shards, 'polling': spec.polling, 'needs': list(plan.needs),
        'stateful': spec.stateful, 'external': spec.external,
        'max_message_size': spec.max_message_size, 'no_reduce': spec.no_reduce,
        **spec.routing(), **naming})


def worker_spec(spec: DeploymentSpec, placement: Placement, rid: ReplicaId) -> WorkerSpec:
    stateful = spec.stateful
    return WorkerSpec(
        name=spec.name, uses=placement.packed, uses_with=spec.uses_with,
        uses_dynamic_batching=spec.uses_dynamic_batching, shard_id=rid.shard,
        replica_id=rid.replica, shards=spec.shards, replicas=spec.replicas,
        workspace=spec.workspace, host=placement.host, sys_path=list(placement.sys_path),
        log_level=spec.log_level, stateful=stateful,
        peers=list(placement.peers.get(rid.shard, [])) if stateful else [],
        raft_dir=raft_dir(spec.workspace, spec.shards, rid.shard, rid.replica)
        if stateful else None,
        raft_group=placement.groups[rid.shard] if stateful and placement.groups else None,
        raft_configuration=spec.raft_configuration, read_consistency=spec.read_consistency,
        tls=placement.tls, max_message_size=spec.max_message_size,
        max_request_docs=spec.max_request_docs)
