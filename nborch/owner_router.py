"""`OwnerRouter`: `Deployment.post` and `Flow.post` routed from the owner's own process.

The owner holds the topology it gives its gateway process, so it can route a request the
way that gateway does — the same `Gateway` object: polling, reduce, retries, Raft leaders,
ejection of silent replicas — and send it straight to a replica: one gRPC hop instead of
two (the hop through the gateway costs ~1 ms of a 1-doc request's ~2.5 ms here). The
gateway process still serves everyone else (a `Client`, HTTP, other processes). Each has
its own in-flight counts; both follow every change of the pools (`Orchestrator._route`),
and `status()` reports their counters summed.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nborch._loop import run_sync
from nborch.protos import nborch_pb2 as pb
from nborch.runtime.auth import LinkAuth
from nborch.runtime.router import caller_cancelled
from nborch.runtime.tls import TlsFiles
from nborch.runtime.topology import Topology

if TYPE_CHECKING:
    from nborch.runtime.gateway import Gateway

# nborch.runtime.gateway is imported where used, not here: every runtime process imports
# nborch (and so this module) before `python -m nborch.runtime.gateway` runs that module as
# __main__, and importing it here would load a second copy into the gateway process.

CLOSE_TIMEOUT_S = 5.0
_SUMMED = ('outstanding', 'served', 'failures', 'deadline_misses', 'ejections')


class OwnerRouter:
    """A `Gateway` on nborch's loop thread (where its channels live), for one orchestration's
    whole life: `open` at each start (a restart gets the new topology), `close` at each stop;
    a post in between fails with ConnectionError, as one to a stopped gateway would. Its
    blocking methods are for the owner's threads; `send` is awaited on that loop (by
    `AsyncClient`)."""

    def __init__(self) -> None:
        self._topology: Topology | None = None  # None: not running
        self._auth: LinkAuth | None = None
        self._tls: TlsFiles | None = None
        self._gateway: Gateway | None = None  # made on the loop, at first use
        self._final_counters: dict = {}  # what the last run routed, kept once it closed

    def open(self, topology: Topology, secret: bytes) -> None:
        async def set_up() -> None:
            await self._shut()
            self._topology, self._auth = topology, LinkAuth(secret)
            self._tls = TlsFiles(**topology.internal_tls) if topology.internal_tls else None
        run_sync(set_up())

    def _on_loop(self) -> Gateway:
        if self._topology is None:
            raise ConnectionError('the deployment is not running: start() it first (or use '
                                  'it in a `with` block)')
        if self._gateway is None:
            from nborch.runtime.gateway import Gateway
            self._gateway = Gateway(self._topology, link_auth=self._auth,
                                    internal_tls=self._tls)
        return self._gateway

    async def send(self, request: pb.DataRequest) -> pb.DataResponse:
        """The reply the gateway process would give (`Gateway.answer`)."""
        gateway = self._on_loop()
        try:
            return await gateway.answer(request, self._topology.max_message_size)
        except asyncio.CancelledError:
            if caller_cancelled() or self._gateway is gateway:
                raise  # the caller's own cancellation
            # Stopped (or restarted) under the request: a failure to reach the deployment,
            # as from a gateway process that stops; never the caller's task cancelled.
            raise ConnectionError('the deployment stopped while the request was in '
                                  'flight') from None

    def set_pools(self, executor: str, shards: list[list[str]], drain_s: float,
                  endpoints: dict[str, bool] | None) -> dict:
        """As the gateway's `SetPools`: returns {'added', 'removed', 'undrained'} once the
        removed replicas hold none of this process's requests (at most `drain_s`)."""
        async def apply() -> dict:
            return await self._on_loop().nodes[executor].set_pools(shards, drain_s, endpoints)
        return run_sync(apply())

    def counters(self) -> dict:
        """`Gateway.counters` of this process's routing; once closed, those of the run that
        closed last (a status taken while the orchestration stops still counts its posts)."""
        async def read() -> dict:
            if self._topology is None:
                return self._final_counters
            return await self._on_loop().counters()
        return run_sync(read())

    async def _shut(self) -> None:
        self._topology = None
        gateway, self._gateway = self._gateway, None
        self._final_counters = {}
        if gateway is not None:
            try:  # fixed pools answer at once; one found by DNS may resolve first
                self._final_counters = await asyncio.wait_for(gateway.counters(),
                                                              CLOSE_TIMEOUT_S)
            except (asyncio.TimeoutError, OSError):
                pass  # a status of the stopped deployment then lacks this process's share
            await asyncio.wait_for(gateway.close(), CLOSE_TIMEOUT_S)

    def close(self) -> None:
        try:
            run_sync(self._shut())
        except (asyncio.TimeoutError, TimeoutError):
            pass  # its channels go with the process; nothing else holds them


def add_counters(routed: dict, local: dict) -> dict:
    """The gateway process's status report `routed` with the owner's routing counters
    `local` added: requests and each replica's counters summed (replicas matched by
    address), recent routes merged in time order. `routed`'s Raft reports are kept."""
    from nborch.runtime.gateway import RECENT_ROUTES
    merged = dict(routed)
    merged['requests'] = routed.get('requests', 0) + local.get('requests', 0)
    ours = {(e['name'], r['address']): r for e in local.get('executors', [])
            for shard in e['shards'] for r in shard['replicas']}
    executors = []
    for executor in routed.get('executors', []):
        shards = []
        for shard in executor['shards']:
            replicas = []
            for replica in shard['replicas']:
                mine = ours.get((executor['name'], replica['address']))
                if mine is not None:
                    replica = {**replica, **{k: replica.get(k, 0) + mine.get(k, 0)
                                             for k in _SUMMED},
                               'ejected': bool(replica.get('ejected') or mine.get('ejected'))}
                replicas.append(replica)
            shards.append({**shard, 'replicas': replicas})
        executors.append({**executor, 'shards': shards})
    merged['executors'] = executors
    routes = [*routed.get('recent_routes', []), *local.get('recent_routes', [])]
    merged['recent_routes'] = sorted(routes, key=lambda r: r.get('time', 0))[-RECENT_ROUTES:]
    return merged
