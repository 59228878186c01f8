"""Routing: which replica serves a request (policy, pure) and calling it (mechanism).

Policy is `choose_replica`, a pure function tested without sockets. Mechanism is
`ReplicaPool`, the one place that owns channels, in-flight counts, retries and ejection of
failed replicas. Shard choice (polling) sits one level up, in the gateway's executor node,
and calls one `ReplicaPool` per shard.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Callable, Collection, Sequence

import grpc

from nborch.protos import nborch_pb2 as pb
from nborch.protos import nborch_pb2_grpc as pb_grpc
from nborch.runtime.grpc_options import CHANNEL_OPTIONS
from nborch.runtime.mux import StreamError, StreamMux

EJECT_SECONDS = 0.5  # a failed replica is tried last for this long, then re-admitted


def choose_replica(outstanding: Sequence[int], start: int, *, tried: Collection[int] = (),
                   ejected: Collection[int] = (), preferred: int | None = None) -> int | None:
    """The replica to send the next request to, or None when every replica was tried.

    Least outstanding requests wins (the idle replica gets the request first); ties go to
    the first replica at or after `start`, so equal replicas take turns. Replicas in `tried`
    are never chosen; replicas in `ejected` only when no healthy untried one is left.
    A `preferred` replica (the Raft leader, for writes) wins while it is untried and healthy:
    any replica would forward the write to it anyway.
    """
    if preferred is not None and preferred not in tried and preferred not in ejected:
        return preferred
    n = len(outstanding)
    best, best_key = None, None
    for offset in range(n):
        i = (start + offset) % n
        if i in tried:
            continue
        key = (i in ejected, outstanding[i])
        if best_key is None or key < best_key:
            best, best_key = i, key
    return best


def _channel(address: str) -> grpc.aio.Channel:
    """`host:port`, `grpc://host:port` or `grpcs://host:port` (TLS with system roots)."""
    if address.startswith('grpcs://'):
        return grpc.aio.secure_channel(address[len('grpcs://'):], grpc.ssl_channel_credentials(),
                                       options=CHANNEL_OPTIONS)
    return grpc.aio.insecure_channel(address.removeprefix('grpc://'), options=CHANNEL_OPTIONS)


@dataclass
class Served:
    response: pb.DataResponse
    replica: int


class ReplicaPool:
    """The replicas of one shard of one executor, as seen from the gateway.

    Not thread-safe: used from the gateway's event loop only.
    """

    def __init__(self, executor: str, addresses: Sequence[str], *,
                 clock: Callable[[], float] = time.monotonic):
        self.executor = executor
        self.addresses = list(addresses)
        self._channels = [_channel(a) for a in addresses]
        self._stubs = [pb_grpc.ExecutorStub(c) for c in self._channels]
        self._streams = [StreamMux(c) for c in self._channels]
        self.outstanding = [0] * len(addresses)
        self.served = [0] * len(addresses)
        self.failures = [0] * len(addresses)
        self._ejected_until = [0.0] * len(addresses)
        self._rotation = 0
        self._clock = clock
        self._write_leader: dict[str, int] = {}  # endpoint → replica that leads its writes

    async def call(self, request: pb.DataRequest, timeout: float | None = None) -> Served:
        """Send `request` to one replica, retrying on others; ConnectionError if all fail."""
        tried: list[int] = []
        errors: list[str] = []
        while True:
            now = self._clock()
            ejected = [i for i, t in enumerate(self._ejected_until) if t > now]
            i = choose_replica(self.outstanding, self._rotation, tried=tried, ejected=ejected,
                               preferred=self._write_leader.get(request.endpoint))
            if i is None:
                raise ConnectionError(
                    f'executor {self.executor!r}: no replica could serve the request; tried '
                    + '; '.join(f'{self.addresses[j]} ({e})' for j, e in zip(tried, errors)))
            self._rotation = i + 1
            tried.append(i)
            self.outstanding[i] += 1
            try:
                response = await self._streams[i].call(request, timeout=timeout)
            except (StreamError, asyncio.TimeoutError) as exc:
                if self._write_leader.get(request.endpoint) == i:
                    del self._write_leader[request.endpoint]  # learn the next leader anew
                self.failures[i] += 1
                self._ejected_until[i] = self._clock() + EJECT_SECONDS
                errors.append(str(exc) or type(exc).__name__)
                continue
            finally:
                self.outstanding[i] -= 1
            self.served[i] += 1
            self._ejected_until[i] = 0.0
            if response.leader_hint and response.leader_hint <= len(self.addresses):
                self._write_leader[request.endpoint] = response.leader_hint - 1
            return Served(response, i)

    async def status(self, i: int, timeout: float = 2.0) -> dict | None:
        """The replica's own status report, or None when it does not answer."""
        try:
            reply = await self._stubs[i].Status(pb.StatusRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return None
        return json.loads(reply.json)

    async def close(self) -> None:
        for stream in self._streams:
            await stream.close()
        for channel in self._channels:
            await channel.close()
