"""A Raft group of `ConsensusReplica`s in one event loop, on real logs on disk.

Peer links deliver in-process on the loop's next turn (no gRPC), so a test drives the
replicas' real driver, WAL thread and storage and can cut a replica off or crash it.
"""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from nborch.protos import nborch_pb2 as pb
from nborch.runtime.consensus.core import Role
from nborch.runtime.consensus.replica import ConsensusReplica
from nborch.runtime.consensus.settings import RaftSettings


class Recorder:
    """A state machine that remembers what it applied, in order."""

    can_snapshot = False

    def __init__(self) -> None:
        self.applied: list[bytes] = []

    async def apply_many(self, requests):
        self.applied += [request.docs for request, _ in requests]
        return [pb.DataResponse(docs=request.docs) for request, _ in requests]

    async def snapshot(self) -> bytes:
        raise NotImplementedError

    async def restore(self, data: bytes) -> None:
        raise NotImplementedError


class LocalGroup:
    def __init__(self, root: Path, size: int = 3, settings: RaftSettings | None = None):
        self.root = root
        self.ids = list(range(1, size + 1))
        self.settings = settings or RaftSettings(heartbeat_ms=20, election_ms=200)
        self.replicas: dict[int, ConsensusReplica] = {}
        self.machines: dict[int, Recorder] = {}
        self.down: set[int] = set()  # replicas that neither send nor receive

    def connect(self, peer: int, address: str, on_unreachable, max_message_size: int):
        return LocalLink(self, int(address.rpartition(':')[2]))

    async def start(self, i: int, joining: bool = False) -> ConsensusReplica:
        """Start replica `i`; `joining`: a newcomer to the running group (a learner)."""
        if i not in self.ids:
            self.ids.append(i)
        self.machines[i] = Recorder()
        replica = ConsensusReplica(
            node_id=i, peers={j: address(j) for j in self.ids},
            directory=str(self.root / str(i)),
            settings=self.settings, state_machine=self.machines[i], connect=self.connect,
            joining=joining)
        await replica.start()
        self.replicas[i] = replica
        self.down.discard(i)
        return replica

    async def start_all(self) -> ConsensusReplica:
        for i in self.ids:
            await self.start(i)
        return await self.leader()

    async def leader(self, timeout: float = 10.0) -> ConsensusReplica:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, r in self.replicas.items():
                if i not in self.down and r.node.role is Role.LEADER:
                    return r
            await asyncio.sleep(0.01)
        raise TimeoutError('no leader')

    async def crash(self, i: int) -> None:
        """Stop replica `i` as a kill would: nothing more leaves it, its loop work ends."""
        self.down.add(i)
        replica = self.replicas.pop(i)
        for task in replica._tasks:
            task.cancel()
        await asyncio.gather(*replica._tasks, return_exceptions=True)
        replica.wal.close()
        replica.storage._file.close()  # the lock goes with the process in a real crash
        os.close(replica.storage._lock_fd)

    async def close(self) -> None:
        for i in list(self.replicas):
            await self.replicas.pop(i).close()


def address(i: int) -> str:
    """Replica `i`'s address in the group (`LocalGroup.connect` reads the port as its id)."""
    return f'local:{i}'


class LocalLink:
    """The `PeerLink` of `src` to `dst`, inside the process."""

    def __init__(self, group: LocalGroup, dst: int):
        self.group, self.dst = group, dst

    def send(self, data: bytes) -> None:
        asyncio.get_running_loop().call_soon(self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        replica = self.group.replicas.get(self.dst)
        if replica is not None and self.dst not in self.group.down:
            replica.receive(data)

    async def propose(self, request: pb.DataRequest, timeout: float) -> pb.ProposeReply:
        replica = self.group.replicas.get(self.dst)
        if replica is None or self.dst in self.group.down:
            raise ConnectionError(f'replica {self.dst} is down')
        return await asyncio.wait_for(replica.propose(request), timeout)

    async def close(self) -> None:
        pass


def write_request(i: int) -> pb.DataRequest:
    return pb.DataRequest(endpoint='/index', docs=b'doc-%d' % i, write_id=f'w{i}')
