"""What a replica returns for a write, on real logs: the writer gets its own apply result,
through the leader or forwarded by a follower, and a leader keeps no copy of the results it
handed over (a large write's reply would otherwise stay in memory for thousands of writes)."""
from __future__ import annotations

import asyncio

from tests.consensus.local_group import LocalGroup, write_request


def test_writers_get_their_results_and_the_leader_keeps_no_copy(tmp_path):
    async def main() -> None:
        group = LocalGroup(tmp_path)
        leader = await group.start_all()
        follower = next(r for r in group.replicas.values() if r is not leader)
        try:
            through_leader = await asyncio.gather(*(leader.write(write_request(i))
                                                    for i in range(20)))
            forwarded = await asyncio.gather(*(follower.write(write_request(i))
                                               for i in range(20, 30)))
            assert [r.docs for r in through_leader] == [b'doc-%d' % i for i in range(20)]
            assert [r.docs for r in forwarded] == [b'doc-%d' % i for i in range(20, 30)]
            kept = [i for i, (_, response) in leader._recent.items()
                    if response is not None and response.docs.startswith(b'doc-')
                    and int(response.docs[4:]) < 20]
            assert kept == []
        finally:
            await group.close()

    asyncio.run(main())
