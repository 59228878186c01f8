"""A linearizable read (``ConsensusReplica.read_barrier``) outlives the loss of its question:
a read point asked of a leader that loses its leadership is asked again, elections in
between are waited for, and only a group without a leader for the whole bound fails it."""

from __future__ import annotations

import asyncio
import time

import pytest

from nborch.runtime.consensus.core import NotLeaderError
from nborch.runtime.consensus.replica import ConsensusReplica
from nborch.runtime.consensus.settings import RaftSettings


class Node:
    """Stands in for the Raft node: records each ReadIndex question, answers none."""

    def __init__(self, term: int, leader: int) -> None:
        self.term, self.leader = term, leader
        self.asked: list[bytes] = []

    def read_index(self, context: bytes) -> None:
        if not self.leader:
            raise NotLeaderError(0, self.term)
        self.asked.append(context)


def replica(node: Node) -> ConsensusReplica:
    r = ConsensusReplica(node_id=1, peers={1: "a", 2: "b", 3: "c"}, directory="unused",
                         settings=RaftSettings(heartbeat_ms=10, election_ms=100),
                         state_machine=None)
    r.node = node
    r.applied = 7
    return r


async def until(predicate, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never {what}"
        await asyncio.sleep(0.005)


def answer(r: ConsensusReplica, node: Node, index: int) -> None:
    """What the driver does with the read state a leader's answer produces."""
    r._reads[node.asked[-1]].set_result(index)


def test_a_read_asked_of_a_leader_that_is_deposed_is_asked_of_the_next_one():
    async def main() -> None:
        node = Node(term=3, leader=2)
        r = replica(node)
        read = asyncio.ensure_future(r.read_barrier(timeout=2.0))
        await until(lambda: len(node.asked) == 1, "asked")
        node.leader = 0  # leader 2 stepped down with the question: an election follows
        await asyncio.sleep(0.05)
        node.term, node.leader = 4, 3
        await until(lambda: len(node.asked) == 2, "asked again")
        assert node.asked[0] == node.asked[1]  # the same read, asked again
        answer(r, node, 7)
        await asyncio.wait_for(read, 1.0)
        assert r._reads == {}
    asyncio.run(main())


def test_a_read_left_unanswered_by_a_leader_that_stays_is_asked_again():
    async def main() -> None:
        node = Node(term=3, leader=2)
        r = replica(node)
        read = asyncio.ensure_future(r.read_barrier(timeout=2.0))
        await until(lambda: len(node.asked) == 2, "asked again")  # after 0.1 s
        answer(r, node, 5)
        await asyncio.wait_for(read, 1.0)
    asyncio.run(main())


def test_a_read_fails_only_once_the_group_had_no_leader_for_its_whole_bound():
    async def main() -> None:
        r = replica(Node(term=3, leader=0))
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no linearizable read point"):
            await r.read_barrier(timeout=0.3)
        assert time.monotonic() - started >= 0.3
        assert r._reads == {}
    asyncio.run(main())
