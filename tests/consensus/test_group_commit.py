"""Group commit on real logs: a batch of writes costs each replica one fsync, nothing is
acknowledged before a majority has it on disk, and a crash between a batch's write and its
fsync loses no acknowledged write."""
from __future__ import annotations

import asyncio
import os
import threading

import pytest

from nborch.runtime.consensus.replica import ConsensusReplica
from tests.consensus.local_group import LocalGroup, write_request


class Disk:
    """A replica's WAL as a disk sees it: what was fsynced survives a crash, the rest may
    not; its fsyncs can be held back (`hold`) to stand for a slow or dying disk."""

    def __init__(self, replica: ConsensusReplica):
        self.storage = replica.storage
        self.durable = self._position()
        self.gate = threading.Event()
        self.gate.set()
        self.crashed = False
        sync = self.storage._sync_wal

        def gated_sync() -> None:  # runs on the WAL thread
            self.gate.wait()
            if self.crashed:
                raise OSError('crashed before the fsync')
            sync()
            self.durable = self._position()

        self.storage._sync_wal = gated_sync

    def _position(self) -> tuple[str, int]:
        f = self.storage._file
        return f.name, os.fstat(f.fileno()).st_size

    def hold(self) -> None:
        self.gate.clear()

    def fail(self) -> None:
        """The power goes: no fsync completes from now on (a held one never does)."""
        self.crashed = True
        self.gate.set()

    def lose_unsynced(self) -> None:
        """After the crash: what was written but never fsynced is gone."""
        path, size = self.durable
        os.truncate(path, size)


async def until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f'never {what}'
        await asyncio.sleep(0.005)


def applied_everywhere(group: LocalGroup, n: int):
    return lambda: all(len(group.machines[i].applied) >= n for i in group.replicas)


def test_a_batch_of_writes_costs_each_replica_one_fsync_and_commit_only_appends_none(tmp_path):
    async def main() -> None:
        group = LocalGroup(tmp_path)
        leader = await group.start_all()
        await leader.write(write_request(0))
        await until(applied_everywhere(group, 1), 'applied the first write')
        await asyncio.sleep(0.1)  # heartbeats only: the group is quiet
        before = {i: r.storage.wal_syncs for i, r in group.replicas.items()}

        # Queued in one turn of the loop: the driver proposes them together.
        results = await asyncio.gather(*(leader.write(write_request(i)) for i in range(1, 51)))

        assert [r.docs for r in results] == [b'doc-%d' % i for i in range(1, 51)]
        await until(applied_everywhere(group, 51), 'applied the batch everywhere')
        await asyncio.sleep(0.1)  # the commit index reaches the followers: no fsync for it
        synced = {i: r.storage.wal_syncs - before[i] for i, r in group.replicas.items()}
        assert synced == {i: 1 for i in group.replicas}
        for i in group.replicas:
            assert group.machines[i].applied == [b'doc-%d' % n for n in range(51)]
        await group.close()
    asyncio.run(main())


def test_no_write_is_acknowledged_until_a_majority_has_fsynced_it(tmp_path):
    async def main() -> None:
        group = LocalGroup(tmp_path)
        leader = await group.start_all()
        followers = [i for i in group.replicas if i != leader.node_id]
        disks = {i: Disk(group.replicas[i]) for i in followers}
        for disk in disks.values():
            disk.hold()

        writes = [asyncio.ensure_future(leader.write(write_request(i))) for i in range(10)]
        await asyncio.sleep(0.3)  # the leader has them on disk; no follower has
        assert not any(w.done() for w in writes)
        last = leader.node.raft.log.last_index()
        # Neither follower acknowledged what it has not fsynced. (A leader that stepped down
        # meanwhile, silenced by held disks on a loaded machine, reports no progress.)
        progress = leader.node.status().progress
        for i in followers:
            assert i not in progress or progress[i].match < last
        assert leader.node.raft.log.committed < last

        disks[followers[0]].gate.set()  # one follower's disk catches up: a majority
        results = await asyncio.wait_for(asyncio.gather(*writes), 10)
        assert [r.docs for r in results] == [b'doc-%d' % i for i in range(10)]
        disks[followers[1]].gate.set()
        await group.close()
    asyncio.run(main())


@pytest.mark.parametrize('held', ['followers', 'leader'])
def test_a_crash_between_a_batch_write_and_its_fsync_loses_no_acknowledged_write(tmp_path,
                                                                                 held):
    """Acknowledged writes, then a batch whose fsync never completes on `held` (and each
    replica losing what it wrote but never fsynced): the batch is not acknowledged, and
    after a restart every acknowledged write is applied, once, in order."""
    async def main() -> None:
        group = LocalGroup(tmp_path)
        leader = await group.start_all()
        disks = {i: Disk(r) for i, r in group.replicas.items()}
        acked = [(await leader.write(write_request(i))).docs for i in range(20)]
        acked += [r.docs for r in await asyncio.gather(
            *(leader.write(write_request(i)) for i in range(20, 60)))]

        holding = [leader.node_id] if held == 'leader' else \
            [i for i in group.replicas if i != leader.node_id]
        for i in holding:
            disks[i].hold()
        batch = [asyncio.ensure_future(leader.write(write_request(i))) for i in range(60, 90)]
        await asyncio.sleep(0.3)
        assert not any(w.done() for w in batch)  # written (not fsynced) where held: no ack

        for disk in disks.values():
            disk.fail()
        for i in list(group.replicas):
            await group.crash(i)  # its WAL thread has stopped when this returns
        for disk in disks.values():
            disk.lose_unsynced()
        for w in batch:
            w.cancel()

        leader = await group.start_all()
        sentinel = await leader.write(write_request(1000))  # commits everything before it
        assert sentinel.docs == b'doc-1000'
        applied = group.machines[leader.node_id].applied
        assert applied[:len(acked)] == acked  # every acknowledged write, in order
        assert len(set(applied)) == len(applied)  # each once
        await group.close()
    asyncio.run(main())
