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
from nborch.runtime.grpc_options import channel_options
from nborch.runtime.limits import DEFAULT_MAX_MESSAGE_SIZE
from nborch.runtime.mux import StreamError, StreamMux
from nborch.runtime.resolve import dial_target, resolve_replicas

EJECT_SECONDS = 0.5  # a failed replica is tried last for this long, then re-admitted
DISCOVERY_REFRESH_S = 5.0  # how often a discovered name is resolved again


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


def _channel(address: str, max_message_size: int) -> grpc.aio.Channel:
    """`host:port`, `grpc://host:port` or `grpcs://host:port` (TLS with system roots)."""
    options = channel_options(max_message_size)
    if address.startswith('grpcs://'):
        return grpc.aio.secure_channel(dial_target(address[len('grpcs://'):]),
                                       grpc.ssl_channel_credentials(), options=options)
    return grpc.aio.insecure_channel(dial_target(address.removeprefix('grpc://')),
                                     options=options)


@dataclass
class Served:
    response: pb.DataResponse
    replica: int


class _Replica:
    """One replica's connection and counters."""

    def __init__(self, address: str, executor: str, max_message_size: int):
        self.address = address
        self.channel = _channel(address, max_message_size)
        self.stub = pb_grpc.ExecutorStub(self.channel)
        self.stream = StreamMux(self.channel, max_message_size=max_message_size,
                                limit_of=f'executor {executor!r}')
        self.outstanding = 0
        self.served = 0
        self.failures = 0
        self.ejected_until = 0.0

    async def close(self) -> None:
        await self.stream.close()
        await self.channel.close()


class ReplicaPool:
    """The replicas of one shard of one executor, as seen from the gateway.

    Replicas are fixed addresses, or with `discover` the records a DNS name resolves to,
    refreshed every `refresh_s` (replicas come and go with the pods behind the name).
    Not thread-safe: used from the gateway's event loop only.
    """

    def __init__(self, executor: str, addresses: Sequence[str], *, discover: bool = False,
                 refresh_s: float = DISCOVERY_REFRESH_S,
                 clock: Callable[[], float] = time.monotonic,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        self.executor = executor
        self.discover = discover
        self.max_message_size = max_message_size
        self.names = list(addresses)  # what the topology says (DNS names when discovering)
        self.replicas = [] if discover else [self._replica(a) for a in addresses]
        self._refresh_s = refresh_s
        self._resolved_at: float | None = None
        self._rotation = 0
        self._clock = clock
        self._write_leader: dict[str, str] = {}  # endpoint → address of its writes' leader

    def _replica(self, address: str) -> _Replica:
        return _Replica(address, self.executor, self.max_message_size)

    @property
    def addresses(self) -> list[str]:
        return [r.address for r in self.replicas]

    async def refresh(self, force: bool = False) -> None:
        """Re-resolve a discovered name when due: new records join, vanished ones leave."""
        now = self._clock()
        if not self.discover or (not force and self._resolved_at is not None
                                 and now - self._resolved_at < self._refresh_s):
            return
        self._resolved_at = now
        found: list[str] = []
        for name in self.names:
            records = await resolve_replicas(name)
            if records is None:  # a DNS failure is not "every replica left": keep them
                return
            found += records
        if found == self.addresses:
            return
        current = {r.address: r for r in self.replicas}
        self.replicas = [current.pop(a, None) or self._replica(a) for a in found]
        for gone in current.values():  # in-flight calls on it fail over to the others
            await gone.close()

    async def call(self, request: pb.DataRequest, timeout: float | None = None) -> Served:
        """Send `request` to one replica, retrying on others; ConnectionError if all fail."""
        if self.discover:  # fixed pools skip this: it is on every request's path
            await self.refresh(force=not self.replicas)
        tried: list[_Replica] = []
        errors: list[str] = []
        while True:
            replicas = self.replicas
            now = self._clock()
            leader = self._write_leader.get(request.endpoint)
            i = choose_replica([r.outstanding for r in replicas], self._rotation,
                               tried=[j for j, r in enumerate(replicas) if r in tried],
                               ejected=[j for j, r in enumerate(replicas) if r.ejected_until > now],
                               preferred=next((j for j, r in enumerate(replicas)
                                               if r.address == leader), None))
            if i is None:
                what = '; '.join(f'{r.address} ({e})' for r, e in zip(tried, errors)) if tried \
                    else f'no replica found at {", ".join(self.names)}'
                raise ConnectionError(
                    f'executor {self.executor!r}: no replica could serve the request; tried {what}')
            replica = replicas[i]
            self._rotation = i + 1
            tried.append(replica)
            replica.outstanding += 1
            try:
                response = await replica.stream.call(request, timeout=timeout)
            except (StreamError, asyncio.TimeoutError) as exc:
                if self._write_leader.get(request.endpoint) == replica.address:
                    del self._write_leader[request.endpoint]  # learn the next leader anew
                replica.failures += 1
                replica.ejected_until = self._clock() + EJECT_SECONDS
                errors.append(str(exc) or type(exc).__name__)
                continue
            finally:
                replica.outstanding -= 1
            replica.served += 1
            replica.ejected_until = 0.0
            # Raft node ids are replica ids + 1, in the order the topology lists the replicas.
            if response.leader_hint and response.leader_hint <= len(self.replicas):
                self._write_leader[request.endpoint] = \
                    self.replicas[response.leader_hint - 1].address
            return Served(response, self.replicas.index(replica)
                          if replica in self.replicas else i)

    @staticmethod
    async def status(replica: _Replica, timeout: float = 2.0) -> dict | None:
        """The replica's own status report, or None when it does not answer."""
        try:
            reply = await replica.stub.Status(pb.StatusRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return None
        return json.loads(reply.json)

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.close()
        self.replicas = []
