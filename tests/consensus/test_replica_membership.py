"""Membership changes through the replica driver (`ConsensusReplica.change_membership`), on
real logs: what the owner's live scale asks of a group."""
from __future__ import annotations

import asyncio

from nborch.runtime.consensus.core import ConfChange, ConfOp
from tests.consensus.local_group import LocalGroup, address, write_request
from tests.consensus.test_group_commit import applied_everywhere, until


def test_a_newcomer_joins_as_a_learner_catches_up_and_is_promoted(tmp_path):
    async def main() -> None:
        group = LocalGroup(tmp_path)
        leader = await group.start_all()
        for i in range(20):
            await leader.write(write_request(i))
        follower = next(r for i, r in group.replicas.items() if r is not leader)
        assert await follower.change_membership('add-learner', 4, address(4)) == {
            'error': 'not the leader', 'leader': leader.node_id}
        assert 'needs its Raft address as host:port' in (
            await leader.change_membership('add-learner', 4, 'nowhere'))['error']
        assert (await leader.change_membership('join', 4))['error'].startswith(
            "unknown membership change 'join'")

        newcomer = await group.start(4, joining=True)
        assert newcomer.node.conf_state().learners == (4,)
        added = await leader.change_membership('add-learner', 4, address(4))
        assert added == await leader.change_membership('add-learner', 4, address(4))  # again
        await until(applied_everywhere(group, 20), 'the learner caught up')
        assert (await leader.change_membership('promote', 4))['index'] > added['index']
        await leader.write(write_request(20))
        await until(applied_everywhere(group, 21), 'the new voter applies new writes')
        assert group.machines[4].applied == [b'doc-%d' % i for i in range(21)]
        for replica in group.replicas.values():
            assert replica.status()['voters'] == [1, 2, 3, 4]
        await group.close()
    asyncio.run(main())


def test_removing_the_leader_commits_and_the_others_carry_on(tmp_path):
    async def main() -> None:
        group = LocalGroup(tmp_path)
        leader = await group.start_all()
        await leader.write(write_request(0))
        removed = leader.node_id
        assert 'index' in await leader.change_membership('remove', removed)
        await until(lambda: leader.node.role.value != 'leader', 'the removed leader stepped down')
        rest = {i: r for i, r in group.replicas.items() if i != removed}
        survivor = rest[min(rest)]
        await survivor.write(write_request(1))  # the two others elect a leader and commit
        await until(lambda: all(len(group.machines[i].applied) == 2 for i in rest),
                    'the remaining voters applied the next write')
        assert all(r.status()['voters'] == sorted(rest) for r in rest.values())
        await group.close()
    asyncio.run(main())


def test_a_change_carrying_no_address_is_a_counted_drop_not_a_dead_driver(tmp_path):
    async def main() -> None:
        group = LocalGroup(tmp_path)
        leader = await group.start_all()
        await leader.write(write_request(0))
        # What a faulty member could have put in the log: bytes that are no address.
        leader.node.propose_conf_change(ConfChange(ConfOp.ADD_LEARNER, 9, b'\xff\xfe'))
        leader._wake.set()
        await until(lambda: all(r.drops.counts['bad_address'] >= 1
                                for r in group.replicas.values()), 'every member refused it')
        await leader.write(write_request(1))  # every driver still runs
        await until(applied_everywhere(group, 2), 'the next write applied everywhere')
        assert all(r.failure is None for r in group.replicas.values())
        await group.close()
    asyncio.run(main())
