"""The gateway process: `python -m nborch.runtime.gateway --topology FILE`.

It owns the topology: for each request it walks the executor DAG from the `gateway` node,
sends each executor's input to ANY one shard or ALL shards (polling), and reduces where
several results meet (shards of one executor, or predecessors of a join). Docs bytes are
forwarded untouched unless a reduce needs them decoded.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import logging
import os
import time

import grpc

from nborch.errors import MessageTooLargeError
from nborch.protos import nborch_pb2 as pb
from nborch.protos import nborch_pb2_grpc as pb_grpc
from nborch.runtime import auth, child, tls
from nborch.runtime.codec import decode_docs, encode_docs
from nborch.runtime.grpc_options import bind, server_options
from nborch.runtime.health import serve_until_stopped
from nborch.runtime.limits import bounded_reply, error_reply
from nborch.runtime.mux import serve_stream
from nborch.runtime.polling import Polling, PollingTable, choose_shards
from nborch.runtime.reduce import concat_docs, reduce_docs
from nborch.runtime.router import CallPolicy, ReplicaPool
from nborch.runtime.resolve import resolve_replicas
from nborch.runtime.topology import GATEWAY, ExecutorTopology, Topology, order_dag

RECENT_ROUTES = 32
log = logging.getLogger('nborch.gateway')


def _limit_of(parameters: bytes) -> int | None:
    try:
        limit = json.loads(parameters).get('limit') if parameters else None
    except ValueError:
        return None
    return limit if isinstance(limit, int) and limit > 0 else None


def merge_responses(responses: list[pb.DataResponse], reduce: bool = True) -> pb.DataResponse:
    """Several results for the same request as one: docs merged by id, or with
    `reduce=False` (an executor's `no_reduce=True`) concatenated in order."""
    if len(responses) == 1:
        return responses[0]
    first = responses[0]
    results = [decode_docs(r.docs) for r in responses]
    docs = reduce_docs(results, limit=_limit_of(first.parameters)) if reduce else \
        concat_docs(results)
    merged = pb.DataResponse(docs=encode_docs(docs), parameters=first.parameters)
    for r in responses:
        merged.route.extend(r.route)
        merged.failed_shards.extend(r.failed_shards)
        if r.HasField('error') and not merged.HasField('error'):
            merged.error.CopyFrom(r.error)
    return merged


def merge_shards(executor: str, outcomes: list[tuple[int, pb.DataResponse | BaseException]],
                 reduce: bool = True) -> pb.DataResponse:
    """One executor's reply from the (shard, reply or exception) of each shard it polled.

    The shards that returned results are merged; each shard whose executor raised, or that
    no replica of could serve, is named in `failed_shards` (as the reference system's head
    keeps the successful shards' results). Only when no shard returned results does the
    request fail: with the first executor error, else a ConnectionError naming every shard.
    """
    served: list[pb.DataResponse] = []
    raised: list[pb.DataResponse] = []
    failed: list[str] = []
    for shard, outcome in outcomes:
        if not isinstance(outcome, pb.DataResponse):
            failed.append(f'{executor}/shard-{shard}: {type(outcome).__name__}: {outcome}')
        elif outcome.HasField('error'):
            raised.append(outcome)
            failed.append(f'{executor}/shard-{shard}: {outcome.error.type}: '
                          f'{outcome.error.message}')
        else:
            served.append(outcome)
    if not served and not raised:
        raise ConnectionError(f'executor {executor!r}: every shard failed: ' + '; '.join(failed))
    # With results, the failed shards' docs (their inputs) are left out; without, the
    # first shard's error reply (the request's input docs) is the reply.
    merged = merge_responses(served, reduce) if served else raised[0]
    # Where the request went, in shard order, failed shards included (a list first:
    # `merged` may be one of the outcomes).
    hops = [h for _, o in outcomes if isinstance(o, pb.DataResponse) for h in o.route]
    del merged.route[:]
    merged.route.extend(hops)
    merged.failed_shards.extend(failed)
    return merged


# Replicas containers start over tens of seconds after a deploy: a count below the deployed
# one that holds this long is a scale-down, not a deploy in progress.
READY_SETTLE_S = 30.0


class ExecutorNode:
    """One executor in the gateway: its shards' replica pools and its polling table."""

    def __init__(self, spec: ExecutorTopology, link_auth: auth.LinkAuth | None,
                 internal_tls: tls.TlsFiles | None):
        self.name = spec.name
        self.needs = list(spec.needs)
        self.stateful = spec.stateful
        self.external = spec.external
        self.reduce = not spec.no_reduce  # of its shards' results and of its predecessors'
        self.polling = PollingTable.parse(spec.polling)
        policy = CallPolicy.from_timeout_send(spec.timeout_send, endpoints=spec.endpoints,
                                              stateful=spec.stateful,
                                              election_s=spec.election_ms / 1000)
        # External executors are not this deployment's: they do not hold its secret.
        self.pools = [ReplicaPool(spec.name, addresses, discover=spec.discover, policy=policy,
                                  auth=None if spec.external else link_auth,
                                  tls=None if spec.external else internal_tls,
                                  max_message_size=spec.max_message_size)
                      for addresses in spec.shards]
        self.expected_replicas = spec.replicas
        self._found_since: dict[int, tuple[int, float]] = {}  # shard → (replicas found, since)
        self._rotation = 0

    async def unresolved(self) -> list[str]:
        """Its shards whose replicas the gateway cannot all name yet: a discovered name with
        fewer records than the replicas it was deployed with, or a fixed name that does not
        resolve (a container not started yet)."""
        missing = []
        for shard, pool in enumerate(self.pools):
            if pool.discover:
                expected = self.expected_replicas or 1
                if len(pool.replicas) < expected:
                    await pool.refresh(force=True)
                found = len(pool.replicas)
                if found < expected and not self._settled(shard, found):
                    missing.append(f'{self.name}/shard-{shard}: {found} of {expected} '
                                   f'replicas found at {", ".join(pool.names)}')
            else:
                for name in pool.names:
                    if await resolve_replicas(name) is None:
                        missing.append(f'{self.name}/shard-{shard}: {name} does not resolve')
        return missing

    def _settled(self, shard: int, found: int) -> bool:
        """Fewer replicas than deployed, unchanged for READY_SETTLE_S: scaled down before
        this gateway started (a restarted gateway must not wait for replicas that went)."""
        now = time.monotonic()
        count, since = self._found_since.get(shard, (None, now))
        if count != found:
            self._found_since[shard] = (found, now)
            return False
        return found > 0 and now - since >= READY_SETTLE_S

    def shards_for(self, endpoint: str) -> tuple[Polling, tuple[int, ...]]:
        polling = self.polling.for_endpoint(endpoint)
        shards = choose_shards(polling, len(self.pools), self._rotation)
        self._rotation += 1
        return polling, shards

    async def process(self, request: pb.DataRequest, shards: tuple[int, ...]) -> pb.DataResponse:
        if len(shards) == 1:
            return await self._call_shard(shards[0], request)
        outcomes = await asyncio.gather(*(self._call_shard(s, request) for s in shards),
                                        return_exceptions=True)
        merged = merge_shards(self.name, list(zip(shards, outcomes)), reduce=self.reduce)
        n_failed = sum(not isinstance(o, pb.DataResponse) or o.HasField('error')
                       for o in outcomes)
        if n_failed and not merged.HasField('error'):  # a partial result: say so here too
            log.warning('%s on %s: %d of %d shards failed, the reply has the others\' '
                        'results: %s', self.name, request.endpoint, n_failed, len(shards),
                        '; '.join(merged.failed_shards[-n_failed:]))
        return merged

    async def _call_shard(self, shard: int, request: pb.DataRequest) -> pb.DataResponse:
        served = await self.pools[shard].call(request)
        response = served.response
        response.route.append(pb.Hop(executor=self.name, shard=shard, replica=served.replica))
        return response

    async def set_pools(self, shards: list[list[str]], drain_s: float,
                        endpoints: dict[str, bool] | None = None) -> dict:
        """The owner's new replica addresses per shard (and {path: is a write} table, when
        the executor's class changed); removed replicas are drained."""
        if len(shards) != len(self.pools):
            raise ValueError(f'executor {self.name!r} has {len(self.pools)} shard(s); the '
                             f'update names {len(shards)}: shards cannot change while it runs')
        if any(not addresses for addresses in shards):
            raise ValueError(f'executor {self.name!r}: every shard needs a replica')
        if endpoints is not None:
            if not isinstance(endpoints, dict) or \
                    not all(isinstance(p, str) and isinstance(w, bool) for p, w in endpoints.items()):
                raise ValueError('endpoints must map paths to true (a write) or false')
            policy = dataclasses.replace(self.pools[0].policy, endpoints=dict(endpoints))
            for pool in self.pools:
                pool.policy = policy
        before = [set(pool.addresses) for pool in self.pools]
        removed = [pool.set_addresses(addresses) for pool, addresses in zip(self.pools, shards)]
        added = sum(len(set(a) - b) for a, b in zip(shards, before))
        undrained = await asyncio.gather(*(ReplicaPool.drain(r, drain_s) for r in removed))
        return {'added': added, 'removed': sum(map(len, removed)),
                'undrained': sum(undrained)}

    async def status(self, raft: bool = True) -> dict:
        """Routing counters per replica; for a stateful executor (unless `raft=False`)
        joined with each replica's Raft state (a replica that does not answer in time
        reports none). Counters alone cost no round trip: widgets poll this ten times a
        second."""
        for pool in self.pools:
            await pool.refresh()
        shards = [list(pool.replicas) for pool in self.pools]  # membership may change below
        now = time.monotonic()
        reports = iter(await asyncio.gather(*(ReplicaPool.status(r, timeout=1.0)
                                              for replicas in shards for r in replicas))
                       if self.stateful and raft else ())
        return {'name': self.name, 'needs': self.needs, 'shards': [
            {'replicas': [{'address': r.address, 'outstanding': r.outstanding,
                           'served': r.served, 'failures': r.failures,
                           'deadline_misses': r.deadline_misses, 'ejections': r.ejections,
                           'ejected': r.ejected(now),
                           'raft': (next(reports, None) or {}).get('raft')}
                          for r in replicas]}
            for replicas in shards]}


class Gateway:
    """Runs one request through the executor DAG. Pure asyncio: the gateway process's
    servicer wraps it, and the owner runs one of its own for `Deployment.post`.

    `link_auth` and `internal_tls` are how it dials the deployment's own replicas; by
    default this process's installed ones (the gateway process installs them at start)."""

    def __init__(self, topology: Topology, *, link_auth: auth.LinkAuth | None = None,
                 internal_tls: tls.TlsFiles | None = None):
        link_auth = link_auth or auth.installed()
        internal_tls = internal_tls or tls.internal()
        self.nodes = {e.name: ExecutorNode(e, link_auth, internal_tls)
                      for e in topology.executors}
        needed = {p for node in self.nodes.values() for p in node.needs}
        self.sinks = [name for name in self.nodes if name not in needed] or list(self.nodes)[-1:]
        self.order = order_dag({name: node.needs for name, node in self.nodes.items()})
        self.requests = 0
        self._resolved = False  # once every replica was found; scaling down later is no fault
        self.recent: collections.deque[dict] = collections.deque(maxlen=RECENT_ROUTES)

    async def process(self, request: pb.DataRequest) -> pb.DataResponse:
        self.requests += 1
        if not self.nodes:
            return pb.DataResponse(docs=request.docs, parameters=request.parameters)
        if len(self.order) == 1:  # one executor (a Deployment): no DAG to walk, no task
            return await self._run(self.nodes[self.order[0]], request, pb.DataResponse(
                docs=request.docs, parameters=request.parameters))
        entry = asyncio.get_running_loop().create_future()
        entry.set_result(pb.DataResponse(docs=request.docs, parameters=request.parameters))
        # One task per executor, created after those it needs, awaiting their tasks. Tasks
        # refer only to their predecessors' (a DAG, no cycle), so this request's messages
        # are freed when it ends: closures that call each other would form a reference
        # cycle that keeps every message until the next full garbage collection.
        outputs: dict[str, asyncio.Future] = {GATEWAY: entry}
        for name in self.order:
            node = self.nodes[name]
            outputs[name] = asyncio.ensure_future(
                self._after(node, request, [outputs[p] for p in node.needs]))
        try:
            return merge_responses(list(await asyncio.gather(*(outputs[s] for s in self.sinks))))
        finally:
            for future in outputs.values():
                future.cancel()

    async def _after(self, node: 'ExecutorNode', request: pb.DataRequest,
                     inputs: list[asyncio.Future]) -> pb.DataResponse:
        """One executor's step of `request`: merge what its predecessors returned, send it."""
        merged = merge_responses(list(await asyncio.gather(*inputs)), reduce=node.reduce)
        return await self._run(node, request, merged)

    async def _run(self, node: 'ExecutorNode', request: pb.DataRequest,
                   merged: pb.DataResponse) -> pb.DataResponse:
        """Send `merged` (its predecessors' result, or the request's own docs) to `node`."""
        if merged.HasField('error'):
            return merged  # an executor failed upstream: skip the rest of this path
        if request.target_executor and request.target_executor != node.name:
            return merged
        polling, shards = node.shards_for(request.endpoint)
        forwarded = pb.DataRequest(endpoint=request.endpoint, docs=merged.docs,
                                   parameters=merged.parameters, write_id=request.write_id)
        response = await node.process(forwarded, shards)
        self.recent.append({'endpoint': request.endpoint, 'executor': node.name,
                            'polling': polling.name, 'shards': list(shards),
                            'replicas': [h.replica for h in response.route
                                         if h.executor == node.name],
                            'time': time.time()})
        if merged.route:  # keep the hops upstream of this executor, in order
            hops = [*merged.route, *response.route]
            del response.route[:]
            response.route.extend(hops)
        if merged.failed_shards:  # a partial result upstream stays reported downstream
            failed = [*merged.failed_shards, *response.failed_shards]
            del response.failed_shards[:]
            response.failed_shards.extend(failed)
        return response

    async def answer(self, request: pb.DataRequest, max_message_size: int) -> pb.DataResponse:
        """`process`, with what cannot be served as the reply that says so: no replica
        reachable (`connection_error`), a message over a limit, a reply over
        `max_message_size`."""
        try:
            reply = await self.process(request)
        except ConnectionError as exc:
            return pb.DataResponse(connection_error=str(exc))
        except MessageTooLargeError as exc:  # too large for an executor: nothing was sent
            return error_reply(exc, GATEWAY)
        return bounded_reply(reply, max_message_size, 'the gateway')

    async def unresolved(self) -> list[str]:
        """What keeps the gateway from serving its whole topology; empty once it has found
        every executor's replicas (then for good: a later scale-down is followed, not a
        reason to be restarted)."""
        if self._resolved:
            return []
        missing = [m for node in self.nodes.values() if not node.external
                   for m in await node.unresolved()]
        self._resolved = not missing
        return missing

    async def status(self) -> dict:
        return {'role': 'gateway', 'pid': os.getpid(), 'requests': self.requests,
                'unresolved': await self.unresolved(),
                'auth_refused': auth.refused_count(),
                'executors': list(await asyncio.gather(*(n.status() for n in self.nodes.values()))),
                'recent_routes': list(self.recent)}

    async def counters(self) -> dict:
        """The routing part of `status`: requests, each replica's counters (no Raft round
        trips) and the recent routes."""
        return {'requests': self.requests,
                'executors': list(await asyncio.gather(*(n.status(raft=False)
                                                         for n in self.nodes.values()))),
                'recent_routes': list(self.recent)}

    async def close(self) -> None:
        for node in self.nodes.values():
            for pool in node.pools:
                await pool.close()


class GatewayServicer(pb_grpc.ExecutorServicer):
    """Serves the same `Executor` service as a worker, so a gateway can be an external executor."""

    def __init__(self, gateway: Gateway, max_message_size: int):
        self.gateway = gateway
        self.max_message_size = max_message_size

    async def Process(self, request, context):
        return await self.handle(request)

    async def Stream(self, request_iterator, context):
        await serve_stream(context, self.handle, 'gateway', packed=False,
                           max_message_size=self.max_message_size)

    async def StreamBatches(self, request_iterator, context):
        await serve_stream(context, self.handle, 'gateway', max_message_size=self.max_message_size)

    async def handle(self, request: pb.DataRequest) -> pb.DataResponse:
        return await self.gateway.answer(request, self.max_message_size)

    async def Status(self, request, context):
        return pb.StatusReply(json=json.dumps(await self.gateway.status()).encode())


class GatewayControlServicer(pb_grpc.GatewayServicer):
    """The owner's edits of the running topology. The caller must prove the deployment
    secret even where the public port is open to callers without it."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    async def SetPools(self, request, context):
        if auth.installed() is None or auth.CALLER_KEY not in dict(context.invocation_metadata()):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                'only the owner (with the deployment secret) changes the pools')
        try:
            update = json.loads(request.json)
            node = self.gateway.nodes.get(update['executor'])
            if node is None:
                raise ValueError(f'no executor named {update["executor"]!r}')
            shards = [[str(a) for a in addresses] for addresses in update['shards']]
            result = await node.set_pools(shards, float(update.get('drain_s', 30.0)),
                                          update.get('endpoints'))
        except (ValueError, KeyError, TypeError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f'pools update refused: {exc}')
        log.info('%s: pools set to %s (%s)', update['executor'], shards, result)
        return pb.StatusReply(json=json.dumps(result).encode())


async def serve(topology: Topology, ready_fd: int | None) -> None:
    if topology.internal_tls:  # before the replica pools make their channels
        tls.install(tls.TlsFiles(**topology.internal_tls))
    gateway = Gateway(topology)
    # The public port: open unless the topology asks for the secret (docs/security.md).
    # Without 'grpc' among the protocols the gRPC server still serves the owner (status,
    # health) on a loopback port that always asks for the secret.
    public_grpc = 'grpc' in topology.protocols
    guard = auth.guard_of(auth.installed(), required=topology.require_secret or not public_grpc)
    server = grpc.aio.server(options=server_options(topology.max_message_size),
                             interceptors=auth.interceptors(guard))
    pb_grpc.add_ExecutorServicer_to_server(GatewayServicer(gateway, topology.max_message_size),
                                           server)
    pb_grpc.add_GatewayServicer_to_server(GatewayControlServicer(gateway), server)
    public = tls.TlsFiles(**topology.tls) if topology.tls else None
    port = bind(server, topology.host if public_grpc else '127.0.0.1', topology.port,
                guard=guard, credentials=public.server_credentials() if public else None)
    http = None
    if 'http' in topology.protocols:
        from nborch.runtime import http_gateway  # the web stack only where it serves
        sock = http_gateway.listen(topology.host, topology.http_port)
        http = await http_gateway.start_http(http_gateway.build_app(gateway, topology), sock,
                                             topology.tls,
                                             (topology.http_options or {}).get('uvicorn_kwargs'))
    try:
        await serve_until_stopped(server, ready_fd, port=port,
                                  http_port=topology.http_port if http else None)
    finally:
        if http is not None:
            await http_gateway.stop_http(*http)
    await gateway.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m nborch.runtime.gateway')
    parser.add_argument('--topology', required=True, help='a JSON file or a JSON string')
    parser.add_argument('--port', type=int, default=None,
                        help="overrides the topology's (gRPC) port")
    parser.add_argument('--http-port', type=int, default=None,
                        help="overrides the topology's HTTP port")
    child.add_process_arguments(parser)
    args = parser.parse_args(argv)
    child.enter_role(args)
    child.configure_logging()
    topology = Topology.load(args.topology)
    if args.port is not None:
        topology.port = args.port
    if args.http_port is not None:
        topology.http_port = args.http_port
    asyncio.run(serve(topology, args.ready_fd))


if __name__ == '__main__':
    main()
