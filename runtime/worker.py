"""One executor replica: `python -m nborch.runtime.worker --spec FILE` serves `Executor.Process`.

Sync endpoints run on one dedicated thread (executors need not be thread-safe, and the gRPC
loop stays free for status calls); async endpoints run on the loop. Decoding and encoding
happen on the same thread as the endpoint, except for `@dynamic_batching` endpoints: their
requests are decoded and answered on the loop, so that they join the batch queue while the
executor's thread is busy with the previous batch.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import json
import logging
import os
import sys
import tempfile
import traceback

import grpc
from docarray import DocList

from nborch.protos import nborch_pb2 as pb
from nborch.protos import nborch_pb2_grpc as pb_grpc
from nborch.errors import MembershipError
from nborch.executor import DEFAULT_ENDPOINT, batching_table, refuse_batched_writes
from nborch.runtime import auth, child, tls
from nborch.runtime.batching import BatchQueue
from nborch.runtime.codec import batch_length, decode_docs, encode_docs
from nborch.runtime.consensus import membership
from nborch.runtime.consensus.replica import ConsensusReplica
from nborch.runtime.consensus.settings import RaftSettings
from nborch.runtime.consensus.storage import StorageError
from nborch.runtime.consensus.transport import RaftServicer
from nborch.runtime.grpc_options import bind, server_options
from nborch.runtime.health import draining, serve_until_stopped
from nborch.runtime.limits import (DEFAULT_MAX_REQUEST_DOCS, RAFT_ENVELOPE, bounded_reply,
                                   too_many_docs)
from nborch.runtime.mux import serve_stream
from nborch.runtime.resolve import dial_target
from nborch.runtime.worker_spec import WorkerSpec, raft_node_id, replica_of_node


def _pass_through(request: pb.DataRequest) -> pb.DataResponse:
    """Unknown endpoint with no `/default` (or another executor's request): docs unchanged."""
    return pb.DataResponse(docs=request.docs, parameters=request.parameters)


class ExecutorRunner:
    """Turns one `DataRequest` into one `DataResponse` by calling the executor (no I/O)."""

    def __init__(self, executor, name: str, max_request_docs: int = DEFAULT_MAX_REQUEST_DOCS):
        self.executor = executor
        self.name = name
        self.max_request_docs = max_request_docs
        self.requests_served = 0

    def prepare(self, request: pb.DataRequest):
        """Return (endpoint, kwargs) for `request`, or (None, None) to pass it through."""
        endpoint, docs, parameters = self.decode(request)
        if endpoint is None:
            return None, None
        return endpoint, self.call_kwargs(endpoint, docs, parameters)

    def decode(self, request: pb.DataRequest):
        """(endpoint, docs, parameters) of `request`, or (None, None, None) to pass it through."""
        endpoint = self.executor.endpoint_for(request.endpoint)
        if endpoint is None or (request.target_executor and request.target_executor != self.name):
            return None, None, None
        n_docs = batch_length(request.docs)  # from the batch's prefix: nothing decoded yet
        if n_docs > self.max_request_docs:
            raise too_many_docs(n_docs, self.max_request_docs, f'executor {self.name!r}')
        docs = decode_docs(request.docs, endpoint.input_type)
        parameters = json.loads(request.parameters) if request.parameters else {}
        own = parameters.get(self.name)
        call_parameters = {**parameters, **own} if isinstance(own, dict) else dict(parameters)
        call_parameters.pop('__results__', None)
        return endpoint, docs, call_parameters

    @staticmethod
    def call_kwargs(endpoint, docs, parameters: dict) -> dict:
        kwargs = {'docs': docs, 'parameters': parameters, 'docs_matrix': None,
                  'tracing_context': None}
        if endpoint.accepted_kwargs is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in endpoint.accepted_kwargs}
        return kwargs

    def respond(self, request: pb.DataRequest, docs, returned, reply: bool = True) -> pb.DataResponse:
        self.requests_served += 1
        if not reply:
            return pb.DataResponse(parameters=request.parameters)
        parameters = request.parameters
        if isinstance(returned, dict):
            merged = json.loads(parameters) if parameters else {}
            merged.setdefault('__results__', {})[self.name] = returned
            parameters = json.dumps(merged).encode()
        out = returned if returned is not None and not isinstance(returned, dict) else docs
        return pb.DataResponse(docs=encode_docs(out), parameters=parameters)

    def fail(self, request: pb.DataRequest, exc: BaseException) -> pb.DataResponse:
        self.requests_served += 1
        self.executor.logger.error('%s on %s: %s', type(exc).__name__, request.endpoint, exc)
        error = pb.ExecutorError(executor=self.name, type=type(exc).__name__, message=str(exc),
                                 traceback=''.join(traceback.format_exception(exc)))
        return pb.DataResponse(docs=request.docs, parameters=request.parameters, error=error)

    def handle_sync(self, request: pb.DataRequest, reply: bool = True) -> pb.DataResponse:
        """Run the endpoint; with `reply=False` (a Raft apply nobody here waits for) the
        result docs are not encoded."""
        try:
            endpoint, kwargs = self.prepare(request)
            if endpoint is None:
                return _pass_through(request)
            returned = getattr(self.executor, endpoint.method_name)(**kwargs)
            return self.respond(request, kwargs.get('docs'), returned, reply)
        except Exception as exc:
            return self.fail(request, exc)

    async def handle_async(self, request: pb.DataRequest) -> pb.DataResponse:
        try:
            endpoint, kwargs = self.prepare(request)
            if endpoint is None:
                return _pass_through(request)
            returned = await getattr(self.executor, endpoint.method_name)(**kwargs)
            return self.respond(request, kwargs.get('docs'), returned)
        except Exception as exc:
            return self.fail(request, exc)


class Batcher:
    """The `@dynamic_batching` queues of one replica, one per (endpoint path, parameters),
    made on first use; batched calls of sync endpoints run on the executor's thread."""

    def __init__(self, runner: ExecutorRunner, pool: concurrent.futures.Executor,
                 overrides: dict | None = None):
        self.runner = runner
        self.pool = pool
        self.table = batching_table(type(runner.executor), overrides)  # path → Batching
        self.queues: dict[tuple[str, str], BatchQueue] = {}

    def _path(self, request: pb.DataRequest) -> str:
        return request.endpoint if request.endpoint in self.table else DEFAULT_ENDPOINT

    def batched(self, request: pb.DataRequest) -> bool:
        """Whether `request` goes through a batch queue (one with no docs never waits)."""
        if self.table.get(self._path(request)) is None:
            return False
        try:
            return batch_length(request.docs) > 0
        except ValueError:  # not a batch: the unbatched path reports it
            return False

    async def handle(self, request: pb.DataRequest) -> pb.DataResponse:
        runner = self.runner
        try:
            endpoint, docs, parameters = runner.decode(request)
            if endpoint is None:
                return _pass_through(request)
            path = self._path(request)
            batching = self.table[path]
            key = (path, json.dumps(parameters, sort_keys=True))
            queue = self.queues.get(key)
            if queue is None:
                queue = self.queues[key] = BatchQueue(
                    functools.partial(self._call, endpoint, parameters),
                    preferred_batch_size=batching.preferred_batch_size,
                    timeout=batching.timeout / 1000, flush_all=batching.flush_all,
                    make_batch=type(docs).construct,  # DocList[input type], unvalidated
                    weight=batching.custom_metric)
            try:
                return runner.respond(request, await queue.push(docs), None)
            finally:
                if queue.idle:  # parameters seen once must not keep a queue forever
                    self.queues.pop(key, None)
        except Exception as exc:
            return runner.fail(request, exc)

    async def _call(self, endpoint, parameters: dict, docs):
        method = getattr(self.runner.executor, endpoint.method_name)
        kwargs = self.runner.call_kwargs(endpoint, docs, parameters)
        if endpoint.is_async:
            returned = await method(**kwargs)
        else:
            returned = await asyncio.get_running_loop().run_in_executor(
                self.pool, functools.partial(method, **kwargs))
        if returned is not None and not isinstance(returned, DocList):
            raise TypeError('with @dynamic_batching an endpoint returns a DocList or None, '
                            f'got {type(returned).__name__}')
        return returned

    async def close(self) -> None:
        """Run what waits now (a draining replica answers it before it stops)."""
        await asyncio.gather(*(queue.close() for queue in self.queues.values()))


class ExecutorStateMachine:
    """The executor as Raft's state machine: applies run on the executor's one thread, so
    applies and reads never touch the executor at the same time."""

    def __init__(self, runner: ExecutorRunner, pool: concurrent.futures.Executor):
        self.runner = runner
        self.pool = pool
        executor = runner.executor
        self.can_snapshot = callable(getattr(executor, 'snapshot', None)) and \
            callable(getattr(executor, 'restore', None))

    async def apply_many(self, requests: list[tuple[pb.DataRequest, bool]]) -> list[pb.DataResponse]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.pool, lambda: [self.runner.handle_sync(r, reply=w) for r, w in requests])

    async def snapshot(self) -> bytes:
        def take() -> bytes:
            with tempfile.TemporaryDirectory(prefix='nborch-snap-') as tmp:
                path = os.path.join(tmp, 'state')
                self.runner.executor.snapshot(path)
                with open(path, 'rb') as f:
                    return f.read()
        return await asyncio.get_running_loop().run_in_executor(self.pool, take)

    async def restore(self, data: bytes) -> None:
        if not self.can_snapshot:
            return
        def put() -> None:
            with tempfile.TemporaryDirectory(prefix='nborch-snap-') as tmp:
                path = os.path.join(tmp, 'state')
                with open(path, 'wb') as f:
                    f.write(data)
                self.runner.executor.restore(path)
        await asyncio.get_running_loop().run_in_executor(self.pool, put)


class WorkerServicer(pb_grpc.ExecutorServicer):
    def __init__(self, runner: ExecutorRunner, spec: WorkerSpec):
        self.runner = runner
        self.spec = spec
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='nborch-exec')
        self.batcher = Batcher(runner, self.pool, spec.uses_dynamic_batching)
        self.consensus: ConsensusReplica | None = None

    async def Process(self, request, context):
        return await self.handle(request)

    async def Stream(self, request_iterator, context):
        await serve_stream(context, self.handle, self.spec.name, packed=False,
                           max_message_size=self.spec.max_message_size)

    async def StreamBatches(self, request_iterator, context):
        await serve_stream(context, self.handle, self.spec.name,
                           max_message_size=self.spec.max_message_size)

    async def handle(self, request: pb.DataRequest) -> pb.DataResponse:
        """The reply to `request`: one too large to send is an error naming the limit, and
        a stateful replica's reply tells the gateway who leads, and in which term."""
        response = bounded_reply(await self._reply(request), self.spec.max_message_size,
                                 f'executor {self.spec.name!r}')
        if self.consensus is not None:
            leader = replica_of_node(self.consensus.node.leader)
            response.leader_hint = 0 if leader is None else leader + 1  # as the proto says
            response.leader_term = self.consensus.node.term
        return response

    async def _reply(self, request: pb.DataRequest) -> pb.DataResponse:
        endpoint = self.runner.executor.endpoint_for(request.endpoint)
        if self.consensus is not None and endpoint is not None and \
                (not request.target_executor or request.target_executor == self.spec.name):
            try:
                if endpoint.is_write:
                    return await self.consensus.write(request)
                if self._linearizable(request):
                    await self.consensus.read_barrier()
            except TimeoutError as exc:
                return self.runner.fail(request, exc)
        if endpoint is not None and self.batcher.batched(request):
            return await self.batcher.handle(request)
        if endpoint is not None and endpoint.is_async:
            return await self.runner.handle_async(request)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self.runner.handle_sync, request)

    def _linearizable(self, request: pb.DataRequest) -> bool:
        if self.spec.read_consistency == 'linearizable':
            return True
        if b'read_consistency' not in request.parameters:
            return False
        return json.loads(request.parameters).get('read_consistency') == 'linearizable'

    def _raft_status(self) -> dict | None:
        """The Raft replica's status, with its leader named as a replica too (what the
        gateway routes writes by: it knows replicas, not Raft node ids)."""
        if self.consensus is None:
            return None
        status = self.consensus.status()
        status['leader_replica'] = replica_of_node(status['leader'])
        return status

    async def Status(self, request, context):
        status = {
            'role': 'worker', 'name': self.spec.name, 'shard': self.spec.shard_id,
            'replica': self.spec.replica_id, 'pid': os.getpid(),
            'requests_served': self.runner.requests_served,
            'cuda_visible_devices': os.environ.get('CUDA_VISIBLE_DEVICES'),
            'endpoints': sorted(type(self.runner.executor).endpoints()),
            'raft': self._raft_status(),
            'auth_refused': auth.refused_count(),
        }
        return pb.StatusReply(json=json.dumps(status).encode())


async def serve(spec: WorkerSpec, ready_fd: int | None) -> str | None:
    """Serve until stopped; returns why the process must end as failed (a Raft driver that
    stopped), or None after a normal stop."""
    if spec.stateful:  # before the executor loads: a wrong group is refused at once
        membership.record(spec.raft_dir, raft_node_id(spec.replica_id),
                          tuple(range(1, len(spec.peers) + 1)), spec.raft_group,
                          label=f'{spec.name} (workspace {spec.workspace or spec.raft_dir})')
    executor = spec.build_executor()
    if spec.stateful:
        refuse_batched_writes(type(executor), spec.name, spec.uses_dynamic_batching)
    servicer = WorkerServicer(ExecutorRunner(executor, spec.name, spec.max_request_docs), spec)
    guard = auth.guard_of(auth.installed(), required=True)
    # One server for the Executor and the Raft service: Raft messages wrap whole requests.
    envelope = RAFT_ENVELOPE if spec.stateful else 0
    server = grpc.aio.server(options=server_options(spec.max_message_size + envelope),
                             interceptors=auth.interceptors(guard))
    pb_grpc.add_ExecutorServicer_to_server(servicer, server)
    internal = tls.TlsFiles(**spec.tls) if spec.tls else None
    tls.install(internal)  # the Raft links to the peers, too
    credentials = internal.server_credentials() if internal else None
    port = bind(server, spec.host, spec.port, guard=guard, credentials=credentials)
    stop = asyncio.Event()
    if spec.stateful:
        servicer.consensus = ConsensusReplica(
            node_id=raft_node_id(spec.replica_id),
            peers={i + 1: address for i, address in enumerate(spec.peers)},
            directory=spec.raft_dir, settings=RaftSettings.parse(spec.raft_configuration),
            state_machine=ExecutorStateMachine(servicer.runner, servicer.pool),
            max_message_size=spec.max_message_size, joining=spec.raft_join)
        servicer.consensus.on_failure = lambda reason: stop.set()
        pb_grpc.add_RaftServicer_to_server(RaftServicer(servicer.consensus), server)
        # Listen where the peers reach this replica (NBORCH_HOSTS may map its name locally).
        raft_address = dial_target(spec.peers[spec.replica_id])
        bind(server, spec.host, int(raft_address.rpartition(':')[2]), guard=guard,
             credentials=credentials)
        await servicer.consensus.start()
    # Requests waiting in a batch queue are run at once when the server drains: its grace
    # period is shorter than a batch timeout.
    flush_on_drain = asyncio.ensure_future(_close_when_draining(servicer.batcher))
    try:
        await serve_until_stopped(server, ready_fd, stop=stop, port=port,
                                  cuda_visible_devices=os.environ.get('CUDA_VISIBLE_DEVICES'))
    except BaseException:
        flush_on_drain.cancel()
        raise
    failure = servicer.consensus.failure if servicer.consensus is not None else None
    try:
        await flush_on_drain
        if servicer.consensus is not None:
            await servicer.consensus.close()
        servicer.pool.shutdown(wait=True)
        executor.close()
    except Exception:
        if failure is None:
            raise
        # What broke the driver may break closing too; the failure is what to report.
        logging.getLogger('nborch.worker').exception('closing after the failure failed')
    return failure


async def _close_when_draining(batcher: Batcher) -> None:
    await draining().wait()
    await batcher.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m nborch.runtime.worker')
    parser.add_argument('--spec', required=True, help='a JSON file written by WorkerSpec.dump')
    parser.add_argument('--port', type=int, default=None, help="overrides the spec's port")
    child.add_process_arguments(parser)
    args = parser.parse_args(argv)
    child.enter_role(args)
    spec = WorkerSpec.load(args.spec)
    if args.port is not None:
        spec.port = args.port
    sys.path[:0] = [p for p in spec.sys_path if p not in sys.path]
    child.configure_logging(spec.log_level)
    try:
        failure = asyncio.run(serve(spec, args.ready_fd))
    except (MembershipError, StorageError) as exc:  # this folder cannot serve as it is
        child.exit_because(str(exc))
    if failure is not None:
        child.exit_because(f'{failure}; exiting so that the replica is restarted from its log')


if __name__ == '__main__':
    main()
