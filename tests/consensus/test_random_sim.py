"""Randomized simulation: many seeds, random faults, Raft's safety properties after every
step (§5.2 Figure 3: Election Safety, Log Matching, Leader Completeness, State Machine
Safety; thesis §6.4 for ReadIndex), and liveness once the faults heal.

Faults: message loss, duplication, delay/reordering, partitions, isolation, crashes (also
between persisting a Ready and sending its messages) and restarts from storage, and log
compaction at random points (so lagging nodes need chunked snapshots). With ``churn``, the
membership changes too: new nodes join as learners and are promoted, voters (the leader
among them) are removed (thesis §4).

The default run checks ``NBORCH_RAFT_SEEDS`` seeds (200); e.g. ``NBORCH_RAFT_SEEDS=5000``
for a long run. ``NBORCH_RAFT_SEED=<n>`` replays a single seed.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import random
from pathlib import Path

import pytest

from nborch.runtime.consensus.core import (ConfChange, ConfChangeError, ConfOp, HardState,
                                           MemoryStorage, NotLeaderError, Role)

from .sim import Cluster

SEEDS = int(os.environ.get("NBORCH_RAFT_SEEDS", "200"))
ONE_SEED = os.environ.get("NBORCH_RAFT_SEED")
TICKS = 300
CHUNK = 20  # seeds per test case, so a failure names a small range


def random_config(rng: random.Random) -> dict:
    return {
        "pre_vote": rng.random() < 0.7,
        "check_quorum": rng.random() < 0.7,
        "election_ticks": rng.choice((6, 10)),
        "heartbeat_ticks": rng.choice((1, 2)),
        "max_append_entries": rng.choice((1, 3, 64)),
        "max_inflight": rng.choice((1, 4, 64)),
        "snapshot_chunk_size": rng.choice((32, 128, 4096)),
        "max_inflight_snapshot_chunks": rng.choice((1, 3)),
    }


def run_seed(seed: int, ticks: int = TICKS, storage_dir: Path | None = None,
             log_loss: float = 0.0, churn: float = 0.0) -> Cluster:
    """``log_loss``: per tick, the odds that a node loses its whole log and rejoins empty
    (one at a time: only once no other node still rejoins). ``churn``: per tick, the odds
    that the leader is asked for a membership change."""
    rng = random.Random(seed)
    cluster = Cluster(rng, seed=f"seed{seed}", storage_dir=storage_dir)
    n = rng.choice((3, 3, 5))
    config = random_config(rng)
    if churn:
        # A removed node that never learns of its removal campaigns on and on: Raft relies
        # on CheckQuorum's lease to ignore it (thesis §4.2.3); without, liveness is lost.
        config["check_quorum"] = True
    cluster.add_nodes(n, **config)
    ids = list(cluster.nodes)
    cluster.drop_rate = rng.choice((0.0, 0.02, 0.1))
    cluster.dup_rate = rng.choice((0.0, 0.02))
    cluster.max_delay = rng.choice((0, 2, 5))
    crash_rate = rng.choice((0.0, 0.002))
    proposals = 0
    reads = 0

    for _ in range(ticks):
        # Faults and their repair.
        r = rng.random()
        if r < 0.01:
            down = [i for i in ids if cluster.nodes[i].node is None]
            if down:
                cluster.restart(rng.choice(down))
        elif r < 0.02:
            up = [i for i in ids if cluster.nodes[i].node is not None]
            if len(up) > 1:
                cluster.crash(rng.choice(up))
        elif r < 0.03:
            shuffled = ids[:]
            rng.shuffle(shuffled)
            cut = rng.randint(1, len(ids) - 1)
            cluster.partition(shuffled[:cut], shuffled[cut:])
        elif r < 0.035:
            cluster.isolate(rng.choice(ids))
        elif r < 0.06:
            cluster.heal()
        if churn and rng.random() < churn:
            change_membership(cluster, rng, config, ids)
        if log_loss and rng.random() < log_loss and not any(
                sn.config.rejoin_commit is not None and (sn.node is None or sn.node.rejoining)
                for sn in cluster.nodes.values()):
            lose_the_log(cluster, rng.choice(ids))

        # Client traffic: proposals (forwarded to the known leader), reads, compaction.
        for sn in cluster.live():
            if rng.random() < 0.15:
                node = sn.node
                target = node
                if node.role is not Role.LEADER:
                    leader = cluster.nodes.get(node.leader)
                    if leader is None or leader.node is None or not cluster.connected(
                            sn.id, leader.id):
                        continue
                    target = leader.node
                try:
                    target.propose(f"s{seed}-{proposals}".encode())
                    proposals += 1
                except NotLeaderError:
                    pass
            if rng.random() < 0.03:
                ctx = f"r{seed}-{reads}".encode()
                reads += 1
                floor = max(x.node.raft.log.committed for x in cluster.live())
                try:
                    sn.node.read_index(ctx)
                    cluster.checker.on_read_request(ctx, floor)
                except NotLeaderError:
                    pass
            if rng.random() < 0.02:
                cluster.compact(sn.id, keep=rng.choice((0, 0, 2)))

        cluster.now += 1
        cluster.tick_all()
        cluster.deliver_due()
        cluster.drain(crash_rate)
        cluster.checker.check_leaders(cluster.nodes)
        if log_loss:
            forget_finished_rejoins(cluster)

    check_liveness(cluster, seed)
    return cluster


def change_membership(cluster: Cluster, rng: random.Random, config: dict,
                      ids: list[int]) -> None:
    """Ask the leader for one change: promote a learner, add a new node, or remove a voter
    (refusals -- a change in progress, a learner not caught up -- are part of the test)."""
    leader = cluster.leader()
    if leader is None:
        return
    node = cluster.nodes[leader].node
    conf = node.conf_state()
    if conf.learners and rng.random() < 0.7:
        change = ConfChange(ConfOp.PROMOTE, rng.choice(conf.learners))
    elif len(conf.voters) < 5 and rng.random() < 0.6:
        change = ConfChange(ConfOp.ADD_LEARNER, max(cluster.nodes) + 1)
    elif len(conf.voters) > 1:
        change = ConfChange(ConfOp.REMOVE, rng.choice(conf.voters))
    else:
        return
    try:
        node.propose_conf_change(change)
    except (ConfChangeError, NotLeaderError):
        return
    cluster.conf_changes_proposed[change.op] += 1
    if change.op is ConfOp.ADD_LEARNER:
        ids += cluster.add_nodes(1, join=True, **config)


def members_of(cluster: Cluster) -> list[int]:
    """The members by the leader's log (a removed node keeps what it had)."""
    leader = cluster.leader()
    return list(cluster.nodes[leader].node.conf_state().members)


def lose_the_log(cluster: Cluster, i: int) -> None:
    """Node ``i`` restarts on empty storage, as after its log was quarantined as corrupt: it
    keeps only what the quarantine marker carries (term, vote, highest index held)."""
    sn = cluster.nodes[i]
    old = sn.storage
    if sn.node is not None:
        cluster.crash(i)
    hs = old.initial_state()
    sn.storage = MemoryStorage()
    sn.storage.set_hard_state(HardState(hs.term, hs.vote, 0))
    sn.config = dataclasses.replace(sn.config, rejoin_commit=old.last_index())
    cluster.restart(i)


def forget_finished_rejoins(cluster: Cluster) -> None:
    """The driver removes the rejoin marker once the node is caught up (and persisted)."""
    for sn in cluster.live():
        if sn.config.rejoin_commit is not None and not sn.node.rejoining:
            sn.config = dataclasses.replace(sn.config, rejoin_commit=None)


def check_liveness(cluster: Cluster, seed: int) -> None:
    """After healing everything, a leader emerges and a new proposal is applied everywhere."""
    cluster.heal()
    cluster.drop_rate = cluster.dup_rate = 0.0
    cluster.max_delay = min(cluster.max_delay, 1)  # a healthy network: RTT below a heartbeat
    for i, sn in cluster.nodes.items():
        if sn.node is None:
            cluster.restart(i)
    assert cluster.run_until(lambda: cluster.leader() is not None, 400), \
        f"seed {seed}: no leader after healing"
    value = f"final-{seed}".encode()
    proposed = None  # (leader, EntryId) of the latest attempt
    for _ in range(600):
        leader = cluster.leader()
        if leader is not None and all(value in cluster.nodes[i].app.values
                                      for i in members_of(cluster)):
            break
        leader = cluster.leader()
        if leader is not None:
            log = cluster.nodes[leader].node.raft.log
            lost = proposed is None or (
                proposed[0] != leader and log.term(proposed[1].index) != proposed[1].term)
            if lost:  # a client retries a write whose leader lost it (here: at most once)
                try:
                    proposed = (leader, cluster.nodes[leader].node.propose(value))
                except NotLeaderError:
                    pass
        cluster.step_time()
    else:
        states = {i: sn.node.status() for i, sn in cluster.nodes.items()}
        raise AssertionError(f"seed {seed}: proposal not applied everywhere: {states}")
    # Everyone applied the same sequence.
    apps = {i: (sn.app.applied, sn.app.values) for i, sn in cluster.nodes.items()}
    longest = max(apps.values(), key=lambda a: a[0])
    for i, (applied, values) in apps.items():
        assert values == longest[1][:len(values)], f"seed {seed}: node {i} diverged"


if ONE_SEED is not None:
    CASES = [(int(ONE_SEED), int(ONE_SEED) + 1)]
else:
    CASES = [(lo, min(lo + CHUNK, SEEDS)) for lo in range(0, SEEDS, CHUNK)]


@pytest.mark.parametrize("lo,hi", CASES, ids=[f"seeds{lo}-{hi - 1}" for lo, hi in CASES])
def test_random_faults_keep_raft_safe_and_live(lo: int, hi: int) -> None:
    for seed in range(lo, hi):
        run_seed(seed)


@pytest.mark.parametrize("lo,hi", CASES[:5], ids=[f"seeds{lo}-{hi - 1}" for lo, hi in CASES[:5]])
def test_random_membership_changes_keep_raft_safe_and_live(lo: int, hi: int) -> None:
    """Nodes join as learners, are promoted, and voters (leaders too) are removed while the
    faults go on: every safety property holds, and the final group makes progress."""
    proposed: collections.Counter = collections.Counter()
    final_sizes = set()
    for seed in range(lo, hi):
        cluster = run_seed(30_000 + seed, churn=0.05)
        proposed += cluster.conf_changes_proposed
        final_sizes.add(len(cluster.nodes[cluster.leader()].node.conf_state().voters))
    assert all(proposed[op] > 0 for op in ConfOp), proposed  # every kind was exercised
    assert len(final_sizes) > 1, final_sizes  # groups ended at different sizes


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_faults_with_file_storage(seed: int, tmp_path: Path) -> None:
    """The same simulation on the real write-ahead log, hard state and snapshot files."""
    cluster = run_seed(10_000 + seed, ticks=150, storage_dir=tmp_path)
    cluster.close()


@pytest.mark.parametrize("lo,hi", CASES[:5], ids=[f"seeds{lo}-{hi - 1}" for lo, hi in CASES[:5]])
def test_random_faults_with_lost_logs_keep_raft_safe_and_live(lo: int, hi: int) -> None:
    """Nodes also lose their whole log now and then and rejoin empty (the storage
    quarantined it): the rejoin rule keeps every safety property."""
    for seed in range(lo, hi):
        run_seed(20_000 + seed, log_loss=0.01)
