"""`StreamMux`: many concurrent requests over one bidirectional `Executor.Stream` call.

Replies come back in completion order and are matched to their requests by `request_id`.
On this kind of machine a message on an open stream costs ~0.34 ms round trip against
~0.59 ms for a unary call (grpc's Python stack is CPU-bound here; docs/architecture.md).
A broken stream fails every request in flight on it with `StreamError` (retryable: nothing
was answered) and the next call opens a new stream.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import traceback

import grpc

from nborch.protos import nborch_pb2 as pb
from nborch.protos import nborch_pb2_grpc as pb_grpc
from nborch.runtime.limits import DEFAULT_MAX_MESSAGE_SIZE, check_request_size


log = logging.getLogger('nborch.stream')


class StreamError(ConnectionError):
    """The stream carrying a request broke before its reply came."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE):
        super().__init__(message)
        self.code = code


class _OpenStream:
    def __init__(self, stub: pb_grpc.ExecutorStub):
        self.call = stub.Stream()
        self.pending: dict[str, asyncio.Future] = {}
        self.write_lock = asyncio.Lock()
        self.broken: StreamError | None = None
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                # Handed on without a local name: a reply (maybe large) must not stay
                # referenced here while the next one is awaited.
                self._deliver(await self.call.read())
        except asyncio.CancelledError:
            self.fail(StreamError('the stream was closed', grpc.StatusCode.CANCELLED))
        except grpc.aio.AioRpcError as exc:
            self.fail(StreamError(f'{exc.code().name}: {exc.details()}', exc.code()))
        except StreamError as exc:
            self.fail(exc)

    def _deliver(self, reply) -> None:
        if reply is grpc.aio.EOF:
            raise StreamError('the server closed the stream')
        future = self.pending.pop(reply.request_id, None)
        if future is not None and not future.done():
            future.set_result(reply)

    def fail(self, error: StreamError) -> None:
        self.broken = error
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)


class StreamMux:
    """Requests to one address over one stream at a time. Use from one event loop only."""

    def __init__(self, channel: grpc.aio.Channel, *,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, limit_of: str = 'the receiver'):
        self._stub = pb_grpc.ExecutorStub(channel)
        self._max_message_size = max_message_size  # the channel's: larger breaks the stream
        self._limit_of = limit_of  # whose limit it is, for the error message
        self._stream: _OpenStream | None = None
        self._ids = itertools.count()

    async def call(self, request: pb.DataRequest, timeout: float | None = None) -> pb.DataResponse:
        """Send a copy of `request` tagged with this stream's next id; wait for its reply.

        The caller's message is not touched: the same request may go to several streams at
        once (ALL polling), each with its own ids. A request over the size limit raises
        `MessageTooLargeError` before anything is sent.
        """
        check_request_size(request, self._max_message_size, self._limit_of)
        stream = self._stream
        if stream is None or stream.broken is not None:
            stream = self._stream = _OpenStream(self._stub)
        request_id = str(next(self._ids))
        tagged = pb.DataRequest()
        tagged.CopyFrom(request)
        tagged.request_id = request_id
        request = tagged
        future = asyncio.get_running_loop().create_future()
        stream.pending[request_id] = future
        try:
            async with stream.write_lock:
                await stream.call.write(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            stream.pending.pop(request_id, None)
            if stream.broken is not None:
                raise stream.broken from None
            raise StreamError(f'cannot send: {exc}') from None
        try:
            return await asyncio.wait_for(future, timeout) if timeout else await future
        finally:
            stream.pending.pop(request_id, None)

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.call.cancel()
            stream.reader.cancel()


async def serve_stream(request_iterator, context, handle, server_name: str) -> None:
    """Server side of `Executor.Stream`: run `handle(request)` concurrently for each request
    and write each reply (tagged with its request_id) as soon as it is ready."""
    write_lock = asyncio.Lock()
    running: set[asyncio.Task] = set()

    async def answer(request: pb.DataRequest) -> None:
        try:
            reply = await handle(request)
        except Exception as exc:  # never leave a caller waiting for a reply that cannot come
            log.exception('failed to serve a request on %s', request.endpoint)
            reply = pb.DataResponse(error=pb.ExecutorError(
                executor=server_name, type=type(exc).__name__, message=str(exc),
                traceback=''.join(traceback.format_exception(exc))))
        reply.request_id = request.request_id
        async with write_lock:
            await context.write(reply)

    def start(request: pb.DataRequest) -> None:
        task = asyncio.ensure_future(answer(request))
        running.add(task)
        task.add_done_callback(running.discard)

    try:
        # context.read(), not `async for` over request_iterator: grpc's iterator keeps the
        # last request (maybe large) alive until the next one arrives.
        while (request := await context.read()) is not grpc.aio.EOF:
            start(request)
            del request  # the task holds it now
        if running:
            await asyncio.gather(*running)
    finally:
        for task in running:
            task.cancel()
