"""`AsyncClient` and `Client`: post documents to a gateway (or a single worker).

The async client is the implementation; `Client` runs the same coroutines on nborch's loop
thread (nborch._loop), so nothing is written twice and nothing nests an event loop.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import json
import logging
import random
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator

import grpc
from docarray import BaseDoc, DocList
from docarray.base_doc import AnyDoc

from nborch._loop import run_sync
from nborch.addresses import parse_address
from nborch.compat import take_reference_arguments
from nborch.errors import (ExecutorError, IncompletePostError, MessageTooLargeError,
                           UnavailableError)
from nborch.executor import doc_type_of
from nborch.protos import nborch_pb2 as pb
from nborch.protos import nborch_pb2_grpc as pb_grpc
from nborch.runtime.auth import (CHANGE_MEMBERSHIP_METHOD, PROCESS_METHOD, SET_POOLS_METHOD,
                                 STATUS_METHOD, AuthError,
                                 LinkAuth, call_unary)
from nborch.runtime.codec import decode_docs, encode_docs
from nborch.runtime.grpc_options import channel_options
from nborch.runtime.limits import (DEFAULT_MAX_MESSAGE_SIZE, GRPC_MAX_MESSAGE_SIZE, RAISE_IT,
                                   check_limit, check_request_size, raise_if_too_large)
from nborch.runtime.mux import StreamError, StreamMux
from nborch.runtime.tls import TlsFiles

DEFAULT_PREFETCH = 100
log = logging.getLogger('nborch.client')


@dataclass
class Response:
    """One request's outcome, handed to `on_done` / `on_error` / `on_always`."""

    docs: DocList
    parameters: dict
    route: list[tuple[str, int, int]] = field(default_factory=list)  # (executor, shard, replica)
    # ALL polling: '<executor>/shard-<i>: <error type>: <message>' for each shard that raised
    # or could not be reached; the docs are then the other shards' results
    failed_shards: list[str] = field(default_factory=list)
    # ExecutorError when an endpoint raised; ConnectionError / TimeoutError when the request
    # got no answer (its `docs` are then the request's input docs)
    error: Exception | None = None


def _doc_type_of(return_type) -> type[BaseDoc] | None:
    """The schema to decode replies into; None keeps the schema the batch carries."""
    doc_type = doc_type_of(return_type)
    return None if doc_type is AnyDoc else doc_type


def _batches(inputs, request_size: int) -> Iterator[list]:
    """Split `inputs` (a doc, a sequence, an iterable or a callable giving one) lazily."""
    if callable(inputs) and not isinstance(inputs, BaseDoc):
        inputs = inputs()
    if inputs is None:
        yield []
        return
    if isinstance(inputs, BaseDoc):
        inputs = [inputs]
    if request_size <= 0:
        yield list(inputs)
        return
    iterator = iter(inputs)
    while batch := list(itertools.islice(iterator, request_size)):
        yield batch


class AsyncClient:
    """Talks to one gateway (or worker) over gRPC. Channels are made per event loop.

    `max_message_size` (bytes) bounds each request sent and reply received; a request over
    it raises `MessageTooLargeError` before it is sent. Match the server's.
    """

    _LIMIT_OF = 'this client'

    def __init__(self, host: str = 'localhost', port: int | str | None = None, *,
                 protocol='grpc', secret: bytes | None = None, tls=False,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 prefetch: int | None = None, **kwargs):
        """`protocol`: 'grpc', or 'http' for a gateway's HTTP port (also an `http://` or
        `https://` host). `secret`: the deployment secret (`Deployment.secret`, a `nborch
        executor`'s --secret-file): over gRPC the server must prove it holds it too; over
        HTTP it is sent as `Authorization: Bearer <secret>`.
        `tls=True` (or a `grpcs://`/`https://` host): TLS with the system's roots; a dict
        {'ca', 'cert', 'key'}: these roots, and this certificate for mutual TLS.
        `prefetch`: the default of `post(prefetch=...)`."""
        _refuse_unknown('Client', take_reference_arguments(kwargs, 'Client'))
        self.prefetch = _check_prefetch(prefetch)
        from nborch.spec import check_protocol
        if isinstance(host, str) and host.startswith(('http://', 'https://')):
            scheme, _, host = host.partition('://')
            protocol, tls = 'http', tls or scheme == 'https'
        protocols = check_protocol(protocol)
        if len(protocols) != 1:
            raise ValueError(f'protocol={protocol!r}: a client speaks one protocol')
        self.protocol = protocols[0]
        self.host, self.port, scheme_tls = parse_address(host, port)
        self._tls = tls if isinstance(tls, TlsFiles) else \
            TlsFiles.parse(tls or scheme_tls, server=False)
        self.tls = self._tls is not None
        self._auth = LinkAuth(secret) if secret is not None else None
        self.max_message_size = check_limit('max_message_size', max_message_size,
                                            GRPC_MAX_MESSAGE_SIZE)
        self._stubs: dict[int, tuple[pb_grpc.ExecutorStub, StreamMux]] = {}
        self._channels: list[tuple[asyncio.AbstractEventLoop, grpc.aio.Channel]] = []
        self._http = None
        self._router = None
        if self.protocol == 'http':
            from nborch._http_client import HttpTransport
            self._http = HttpTransport(self.host, self.port, tls=self._tls, secret=secret,
                                       max_message_size=self.max_message_size,
                                       limit_of=self._LIMIT_OF)

    @property
    def address(self) -> str:
        return f'{self.host}:{self.port}'

    def route_through(self, router) -> 'AsyncClient':
        """Send posts through `router` (an `OwnerRouter`: the owner's own routing, on
        nborch's loop) instead of the network; status and the rest still go to the
        address. Returns the client."""
        self._router = router
        return self

    def _stub(self) -> tuple[pb_grpc.ExecutorStub, StreamMux]:
        """The unary stub and the stream multiplexer for the running loop's channel."""
        loop = asyncio.get_running_loop()
        pair = self._stubs.get(id(loop))
        if pair is None:
            options = channel_options(self.max_message_size)
            if self._tls is not None:
                channel = grpc.aio.secure_channel(self.address, self._tls.channel_credentials(),
                                                  options=options)
            else:
                channel = grpc.aio.insecure_channel(self.address, options=options)
            self._channels.append((loop, channel))
            mux = StreamMux(channel, auth=self._auth, target=self.address,
                            max_message_size=self.max_message_size, limit_of=self._LIMIT_OF)
            pair = self._stubs[id(loop)] = (pb_grpc.ExecutorStub(channel), mux)
        return pair

    async def _send(self, request: pb.DataRequest, stream: bool,
                    timeout: float | None) -> pb.DataResponse:
        if self._router is not None:
            check_request_size(request, self.max_message_size, self._LIMIT_OF)
            try:
                reply = await asyncio.wait_for(self._router.send(request), timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f'{self.address} did not answer in {timeout} s') from None
            return _answered(reply)
        if self._http is not None:
            reply = await self._http.send(request, timeout)
            raise_if_too_large(reply)
            return reply
        stub, mux = self._stub()
        try:
            if stream:
                reply = await mux.call(request, timeout)
            else:
                check_request_size(request, self.max_message_size, self._LIMIT_OF)
                reply = await call_unary(self._auth, PROCESS_METHOD, self.address, stub.Process,
                                         request, timeout=timeout)
        except AuthError as exc:
            raise ConnectionError(f'cannot reach {self.address}: {exc}') from None
        except StreamError as exc:
            if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise self._over_grpc_limit(str(exc)) from None
            error = UnavailableError if exc.code == grpc.StatusCode.UNAVAILABLE else ConnectionError
            raise error(f'cannot reach {self.address}: {exc}') from None
        except asyncio.TimeoutError:
            raise TimeoutError(f'{self.address} did not answer in {timeout} s') from None
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise self._over_grpc_limit(exc.details()) from None
            raise _transport_error(exc, self.address) from None
        return _answered(reply)

    def _over_grpc_limit(self, details: str) -> MessageTooLargeError:
        """gRPC refused a message (the two sides' limits differ, or a reply is too large)."""
        return MessageTooLargeError(
            f'{self.address}: a message was over a gRPC size limit ({details}); this '
            f"client's max_message_size is {self.max_message_size} bytes; raise {RAISE_IT}")

    async def post(self, on: str, inputs=None, on_done: Callable | None = None,
                   on_error: Callable | None = None, on_always: Callable | None = None,
                   parameters: dict | None = None, target_executor: str | None = None,
                   request_size: int = 100, show_progress: bool = False,
                   continue_on_error: bool = False, return_type=DocList, prefetch: int | None = None,
                   results_in_order: bool = False, stream: bool = True,
                   timeout: float | None = None, return_responses: bool = False,
                   max_attempts: int = 1, initial_backoff: float = 0.5, max_backoff: float = 2,
                   backoff_multiplier: float = 1.5, **kwargs):
        """Send `inputs` to endpoint `on` in requests of `request_size` docs; return all docs.

        At most `prefetch` requests are in flight. The returned DocList is in input order;
        callbacks fire as responses arrive, or in input order with `results_in_order=True`.
        `timeout` (seconds) limits each request. With `stream=True` requests travel on one
        bidirectional gRPC stream, else as unary calls. `return_type` a doc class (not a
        DocList) and one doc back: that doc is returned. `return_responses=True`: the list of
        `Response`s, in input order, instead of the docs.

        A request that gets no answer (the server unreachable, the connection broken, the
        gateway finding no replica, `timeout`) is sent again up to `max_attempts` times in
        all, after `initial_backoff` seconds, then after a random wait of up to
        `initial_backoff * backoff_multiplier ** (attempt - 1)` seconds, at most
        `max_backoff`. A retried write is applied once (it keeps its write id).

        Every input doc is accounted for: it comes back, or it is in the `docs` of a failed
        request's `Response` (`error` set: `ExecutorError` when an endpoint raised,
        `ConnectionError`/`TimeoutError` when no answer came). Failed requests go to
        `on_error` when given, and the post returns what came back. Without `on_error`, the
        first failure raises it and stops sending; with `continue_on_error=True` every
        request is sent and the post ends with `IncompletePostError`, whose `docs` are what
        came back and whose `failed` are the failed requests' Responses.

        With ALL polling, a request some of whose shards failed (the executor raised, or no
        replica could serve) is not a failed request, as in the reference system: its docs
        are the other shards' results, its `Response.failed_shards` names each failed shard
        and its error, and a warning is logged (logger `nborch.client`).
        """
        _refuse_unknown('Client.post', take_reference_arguments(kwargs, 'Client.post'))
        retry = RetryPolicy.checked(max_attempts, initial_backoff, max_backoff,
                                    backoff_multiplier)
        doc_type = _doc_type_of(return_type)
        params = json.dumps(parameters or {}).encode()
        window = asyncio.Semaphore(_check_prefetch(prefetch) or self.prefetch or DEFAULT_PREFETCH)
        responses: dict[int, Response] = {}
        results: dict[int, DocList] = {}
        failures: dict[int, Response] = {}
        pending_callbacks: dict[int, Response] = {}
        next_callback = 0
        progress = _progress(inputs, request_size) if show_progress else None
        failed = asyncio.Event()  # set by the first request that raises: stop sending more
        takes_failures = on_error is not None or continue_on_error

        def deliver(i: int, response: Response) -> None:
            nonlocal next_callback
            pending_callbacks[i] = response
            ready = [i] if not results_in_order else []
            if results_in_order:
                while next_callback in pending_callbacks:
                    ready.append(next_callback)
                    next_callback += 1
            for j in ready:
                _run_callbacks(pending_callbacks.pop(j), on_done, on_error, on_always,
                               continue_on_error)

        async def send(i: int, batch: list) -> None:
            try:
                request = pb.DataRequest(endpoint=on, docs=encode_docs(batch), parameters=params,
                                         write_id=uuid.uuid4().hex,
                                         target_executor=target_executor or '')
                try:
                    reply = await retry.run(lambda: self._send(request, stream, timeout))
                    response = _to_response(reply, doc_type, batch)
                except (ConnectionError, TimeoutError, RuntimeError) as exc:
                    if not takes_failures:
                        raise
                    response = Response(docs=_as_doclist(batch, doc_type),
                                        parameters=parameters or {}, error=exc)
                if response.error is None:
                    results[i] = response.docs
                    if response.failed_shards:  # a partial result is kept, never silent
                        log.warning('%s: request %d has the results of only some shards; '
                                    'failed: %s', on, i, '; '.join(response.failed_shards))
                else:
                    failures[i] = response
                if return_responses:
                    responses[i] = response
                deliver(i, response)
                if progress is not None:
                    progress.update(1)
            except BaseException:
                failed.set()
                raise
            finally:
                window.release()

        tasks: list[asyncio.Task] = []
        try:
            batches = _batches(inputs, request_size)
            first = next(batches, None)
            second = next(batches, None) if first is not None else None
            if second is None:  # at most one request: sent from this task, none of its own
                if first is not None:
                    await window.acquire()
                    await send(0, first)
            else:
                for i, batch in enumerate(itertools.chain((first, second), batches)):
                    await window.acquire()
                    if failed.is_set():
                        break
                    tasks.append(asyncio.ensure_future(send(i, batch)))
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            if progress is not None:
                progress.close()
        docs = _concat([results[i] for i in sorted(results)], doc_type)
        if failures and on_error is None:
            raise IncompletePostError(docs, [failures[i] for i in sorted(failures)])
        if return_responses:
            return [responses[i] for i in sorted(responses)]
        if _is_doc_class(return_type) and len(docs) == 1:
            return docs[0]  # as the reference system: a doc class asked for, one doc back
        return docs

    async def index(self, inputs=None, **kwargs) -> DocList:
        return await self.post('/index', inputs, **kwargs)

    async def search(self, inputs=None, **kwargs) -> DocList:
        return await self.post('/search', inputs, **kwargs)

    async def update(self, inputs=None, **kwargs) -> DocList:
        return await self.post('/update', inputs, **kwargs)

    async def delete(self, inputs=None, **kwargs) -> DocList:
        return await self.post('/delete', inputs, **kwargs)

    async def status(self, timeout: float = 5.0) -> dict:
        """The gateway's (or worker's) status report."""
        if self._http is not None:
            return await self._http.status(timeout)
        try:
            reply = await call_unary(self._auth, STATUS_METHOD, self.address,
                                     self._stub()[0].Status, pb.StatusRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _transport_error(exc, self.address) from None
        except AuthError as exc:
            raise ConnectionError(str(exc)) from None
        return json.loads(reply.json)

    async def set_pools(self, executor: str, shards: list[list[str]], *, drain_s: float,
                        endpoints: dict[str, bool] | None = None,
                        timeout: float | None = None) -> dict:
        """The owner's edit of a running gateway (needs the deployment secret): `executor`'s
        replicas per shard become `shards`; returns once removed replicas have answered what
        they held (at most `drain_s`): {'added', 'removed', 'undrained'}. `endpoints`: its
        new {path: is a write} table (a rolling update changed its class)."""
        update = {'executor': executor, 'shards': shards, 'drain_s': drain_s,
                  'endpoints': endpoints}
        return await self._owner_call('set_pools', SET_POOLS_METHOD,
                                      lambda channel: pb_grpc.GatewayStub(channel).SetPools,
                                      pb.PoolsUpdate(json=json.dumps(update).encode()), timeout)

    async def change_membership(self, op: str, node: int, address: str = '', *,
                                timeout: float | None = None) -> dict:
        """The owner's membership change of the Raft group this client's worker belongs to
        (needs the deployment secret): {'index': n} once it committed, or {'error', 'leader'}
        when it could not be made here (see the Raft service's ChangeMembership)."""
        change = {'op': op, 'node': node, 'address': address}
        return await self._owner_call(
            'change_membership', CHANGE_MEMBERSHIP_METHOD,
            lambda channel: pb_grpc.RaftStub(channel).ChangeMembership,
            pb.MembershipChange(json=json.dumps(change).encode()), timeout)

    async def _owner_call(self, name: str, method: str, stub_method, request,
                          timeout: float | None) -> dict:
        """A unary call only the owner makes (it proves the deployment secret); its reply is
        JSON. A request the server calls malformed is a ValueError."""
        if self._http is not None or self._auth is None:
            raise ValueError(f'{name} needs a gRPC client with the deployment secret')
        loop = asyncio.get_running_loop()
        self._stub()  # this loop's channel
        channel = [c for owner, c in self._channels if owner is loop][-1]
        try:
            reply = await call_unary(self._auth, method, self.address, stub_method(channel),
                                     request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise ValueError(exc.details()) from None
            raise _transport_error(exc, self.address) from None
        except AuthError as exc:
            raise ConnectionError(str(exc)) from None
        return json.loads(reply.json)

    async def is_ready(self, timeout: float = 2.0) -> bool:
        try:
            await self.status(timeout=timeout)
        except ConnectionError:
            return False
        return True

    async def close(self) -> None:
        """Close the channels made on the running loop."""
        if self._http is not None:
            await self._http.close()
        loop = asyncio.get_running_loop()
        pair = self._stubs.pop(id(loop), None)
        if pair is not None:
            await pair[1].close()
        for owner, channel in [c for c in self._channels if c[0] is loop]:
            await channel.close()
        self._channels = [c for c in self._channels if c[0] is not loop]


@dataclass(frozen=True)
class RetryPolicy:
    """How often a request that got no answer is sent again, and the waits in between (the
    reference system's client's schedule: the first wait is `initial_backoff`, later ones
    random up to the exponential bound, as gRPC's retry policy does)."""

    max_attempts: int = 1
    initial_backoff: float = 0.5
    max_backoff: float = 2.0
    backoff_multiplier: float = 1.5

    @classmethod
    def checked(cls, max_attempts, initial_backoff, max_backoff, backoff_multiplier):
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f'max_attempts={max_attempts!r}: an integer >= 1 (1: no retry)')
        for name, value in (('initial_backoff', initial_backoff), ('max_backoff', max_backoff),
                            ('backoff_multiplier', backoff_multiplier)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f'{name}={value!r}: a number of seconds >= 0')
        return cls(max_attempts, float(initial_backoff), float(max_backoff),
                   float(backoff_multiplier))

    def wait(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if attempt == 1:
            return min(self.initial_backoff, self.max_backoff)
        bound = min(self.initial_backoff * self.backoff_multiplier ** (attempt - 1),
                    self.max_backoff)
        return random.uniform(0, bound)

    async def run(self, send: Callable):
        """`await send()`, again after each ConnectionError/TimeoutError while attempts are
        left; the last attempt's error is raised."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await send()
            except (ConnectionError, TimeoutError):
                if attempt == self.max_attempts:
                    raise
            await asyncio.sleep(self.wait(attempt))


def _check_prefetch(prefetch):
    if prefetch is not None and (isinstance(prefetch, bool) or not isinstance(prefetch, int)
                                 or prefetch < 0):
        raise ValueError(f'prefetch={prefetch!r}: requests in flight, an integer >= 1 '
                         '(0 or None: the default)')
    return prefetch


def _refuse_unknown(where: str, kwargs: dict) -> None:
    if kwargs:
        raise TypeError(f'{where}() got unknown argument(s) {", ".join(sorted(kwargs))} '
                        '(docs/compatibility.md lists what nborch takes)')


def _is_doc_class(return_type) -> bool:
    return inspect.isclass(return_type) and issubclass(return_type, BaseDoc)


def _progress(inputs, request_size: int):
    from tqdm.auto import tqdm
    total = None
    if hasattr(inputs, '__len__') and not isinstance(inputs, BaseDoc):
        total = -(-len(inputs) // request_size) if request_size > 0 else 1
    return tqdm(total=total, unit='req', desc='posting')


def _answered(reply: pb.DataResponse) -> pb.DataResponse:
    """A gateway's reply, or the error it carries: no replica could serve, or a limit."""
    if reply.connection_error:
        raise ConnectionError(reply.connection_error)
    raise_if_too_large(reply)
    return reply


def _transport_error(exc: grpc.aio.AioRpcError, address: str) -> Exception:
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return UnavailableError(f'cannot reach {address}: {exc.details()}')
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TimeoutError(f'{address} did not answer in time')
    return RuntimeError(f'{address} failed: {exc.code().name}: {exc.details()}')


def _to_response(reply: pb.DataResponse, doc_type, batch: list | None = None) -> Response:
    error = None
    if reply.HasField('error'):
        e = reply.error
        error = ExecutorError(e.executor, e.type, e.message, e.traceback)
    if error is None:
        docs = decode_docs(reply.docs, doc_type)
    elif batch is not None:
        # A failed request's Response carries its input docs as sent: they need not fit
        # `return_type` (an output-only required field), and the executor's error, not a
        # decoding error, is what the caller must see.
        docs = _as_doclist(batch, doc_type)
    else:  # an error reply may carry no docs at all (a failure before any were made)
        docs = DocList[doc_type]() if doc_type is not None else DocList()
    return Response(
        docs=docs,
        parameters=json.loads(reply.parameters) if reply.parameters else {},
        route=[(h.executor, h.shard, h.replica) for h in reply.route],
        failed_shards=list(reply.failed_shards),
        error=error,
    )


def _run_callbacks(response: Response, on_done, on_error, on_always, continue_on_error) -> None:
    if response.error is not None:
        if on_error is not None:
            on_error(response)
        elif not continue_on_error:
            raise response.error
    elif on_done is not None:
        on_done(response)
    if on_always is not None:
        on_always(response)


def _as_doclist(batch: list, doc_type) -> DocList:
    """A request's input docs, as its failure Response carries them."""
    kind = type(batch[0]) if batch else doc_type
    return DocList[kind](batch) if kind is not None else DocList([])


def _concat(parts: list[DocList], doc_type) -> DocList:
    """One DocList of every part's docs; the docs were built by the codec, so skip
    re-validating each one (that costs as much as decoding them)."""
    if doc_type is None:
        doc_type = next((p.doc_type for p in parts if len(p)), None)
    if doc_type is None:
        return DocList([])
    docs = [doc for part in parts for doc in part]
    return DocList[doc_type](docs, validate_input_docs=False)


def _blocking(name: str):
    coroutine_function = getattr(AsyncClient, name)

    @functools.wraps(coroutine_function)
    def method(self, *args, **kwargs):
        return run_sync(getattr(self._async, name)(*args, **kwargs))

    return method


class Client:
    """The blocking face of `AsyncClient`: same methods, run on nborch's loop thread."""

    def __new__(cls, host: str = 'localhost', port: int | str | None = None, *,
                asyncio: bool = False, **kwargs):
        # Client(asyncio=True) is the AsyncClient, as in the reference system.
        if asyncio:
            return AsyncClient(host, port, **kwargs)
        return super().__new__(cls)

    def __init__(self, host: str = 'localhost', port: int | str | None = None, *,
                 asyncio: bool = False, **kwargs):
        self._async = AsyncClient(host, port, **kwargs)  # max_message_size=..., see there

    @property
    def host(self) -> str:
        return self._async.host

    @property
    def port(self) -> int:
        return self._async.port

    @property
    def protocol(self) -> str:
        return self._async.protocol

    def route_through(self, router) -> 'Client':
        """See `AsyncClient.route_through`."""
        self._async.route_through(router)
        return self

    post = _blocking('post')
    index = _blocking('index')
    search = _blocking('search')
    update = _blocking('update')
    delete = _blocking('delete')
    status = _blocking('status')
    is_ready = _blocking('is_ready')
    set_pools = _blocking('set_pools')
    change_membership = _blocking('change_membership')
    close = _blocking('close')
