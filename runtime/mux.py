"""`StreamMux`: many concurrent requests over one bidirectional `Executor.Stream` call.

Replies come back in completion order and are matched to their requests by `request_id`.
On this kind of machine a message on an open stream costs ~0.34 ms round trip against
~0.59 ms for a unary call (grpc's Python stack is CPU-bound here; docs/architecture.md).
A broken stream fails every request in flight on it with `StreamError` (nothing was
answered; whether a request already ran is unknown) and the next call opens a new stream.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import traceback

import grpc

from nborch.protos import nborch_pb2 as pb
from nborch.protos import nborch_pb2_grpc as pb_grpc
from nborch.runtime.auth import STREAM_METHOD, AuthError, Handshake, LinkAuth
from nborch.runtime.health import draining
from nborch.runtime.limits import DEFAULT_MAX_MESSAGE_SIZE, check_request_size


log = logging.getLogger('nborch.stream')


class StreamError(ConnectionError):
    """The stream carrying a request broke before its reply came."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE):
        super().__init__(message)
        self.code = code


class Overdue(Exception):
    """Raised into a waiter whose reply is late (`StreamMux.wake_overdue`): it may check on
    the replica, then await `reply`, which the reply (if it ever comes) will complete."""

    def __init__(self, reply: asyncio.Future):
        self.reply = reply


class _OpenStream:
    def __init__(self, stub: pb_grpc.ExecutorStub, handshake: Handshake | None):
        self.call = stub.Stream(metadata=handshake.metadata) if handshake else stub.Stream()
        self.pending: dict[str, asyncio.Future] = {}
        self.wake_at: dict[str, float] = {}  # request id → when its waiter wants a word
        self.write_lock = asyncio.Lock()
        self.broken: StreamError | None = None
        # Nothing is written to, or read from, a server before it proved the secret.
        self.trusted = asyncio.get_running_loop().create_future()
        self.reader = asyncio.ensure_future(self._read(handshake))

    async def _read(self, handshake: Handshake | None) -> None:
        try:
            if handshake is not None:
                await handshake.verify(self.call)
            self.trusted.set_result(None)
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
        except AuthError as exc:
            self.call.cancel()
            self.fail(StreamError(str(exc), grpc.StatusCode.UNAUTHENTICATED))

    def _deliver(self, reply) -> None:
        if reply is grpc.aio.EOF:
            raise StreamError('the server closed the stream')
        future = self.pending.pop(reply.request_id, None)
        if self.wake_at:
            self.wake_at.pop(reply.request_id, None)
        if future is not None and not future.done():
            future.set_result(reply)

    def fail(self, error: StreamError) -> None:
        self.broken = error
        if not self.trusted.done():
            self.trusted.set_exception(error)
            self.trusted.exception()  # retrieved: a stream nobody wrote to must not warn
        pending, self.pending = self.pending, {}
        self.wake_at = {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)


class StreamMux:
    """Requests to one address over one stream at a time. Use from one event loop only.

    With `auth`, each new stream first proves the deployment secret to `target` (host:port
    as dialed) and waits for the server's proof (runtime/auth.py); then messages flow as
    without it."""

    def __init__(self, channel: grpc.aio.Channel, *, auth: LinkAuth | None = None,
                 target: str = '', max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 limit_of: str = 'the receiver'):
        self._stub = pb_grpc.ExecutorStub(channel)
        self._auth, self._target = auth, target
        self._max_message_size = max_message_size  # the channel's: larger breaks the stream
        self._limit_of = limit_of  # whose limit it is, for the error message
        self._stream: _OpenStream | None = None
        self._ids = itertools.count()

    async def call(self, request: pb.DataRequest, timeout: float | None = None) -> pb.DataResponse:
        """Send a copy of `request` tagged with this stream's next id; wait for its reply."""
        request_id, reply = await self.send(request)
        try:
            return await asyncio.wait_for(reply, timeout) if timeout else await reply
        finally:
            self.forget(request_id)

    async def send(self, request: pb.DataRequest,
                   wake_at: float | None = None) -> tuple[str, asyncio.Future]:
        """Send a copy of `request` tagged with this stream's next id; return the id and the
        future of its reply. StreamError here means the request was not sent. The caller
        `forget`s the id once it stops waiting (a late reply is then dropped). With
        `wake_at` (loop time), `wake_overdue` raises `Overdue` into the reply from then on.

        The caller's message is not touched: the same request may go to several streams at
        once (ALL polling), each with its own ids. A request over the size limit raises
        `MessageTooLargeError` before anything is sent.
        """
        check_request_size(request, self._max_message_size, self._limit_of)
        stream = self._stream
        if stream is None or stream.broken is not None:
            stream = self._stream = _OpenStream(
                self._stub, self._auth.handshake(STREAM_METHOD, self._target)
                if self._auth is not None else None)
        if not stream.trusted.done():  # the first request on a new stream: the handshake
            await asyncio.shield(stream.trusted)  # bounded: the handshake has its own timeout
        request_id = str(next(self._ids))
        tagged = pb.DataRequest()
        tagged.CopyFrom(request)
        tagged.request_id = request_id
        future = asyncio.get_running_loop().create_future()
        stream.pending[request_id] = future
        if wake_at is not None:
            stream.wake_at[request_id] = wake_at
        try:
            async with stream.write_lock:
                await stream.call.write(tagged)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            stream.pending.pop(request_id, None)
            stream.wake_at.pop(request_id, None)
            if stream.broken is not None:
                raise stream.broken from None
            raise StreamError(f'cannot send: {exc}') from None
        return request_id, future

    def forget(self, request_id: str) -> None:
        stream = self._stream
        if stream is not None:
            stream.pending.pop(request_id, None)
            stream.wake_at.pop(request_id, None)

    def wake_later(self, request_id: str, wake_at: float) -> None:
        stream = self._stream
        if stream is not None and request_id in stream.pending:
            stream.wake_at[request_id] = wake_at

    def wake_overdue(self, now: float) -> None:
        """Raise `Overdue` into each waiter whose `wake_at` has come (once per wake_at); a
        fresh future takes its place in `pending`, so a reply arriving later still lands."""
        stream = self._stream
        if stream is None or not stream.wake_at:
            return
        due = [rid for rid, when in stream.wake_at.items() if when <= now]
        for request_id in due:
            del stream.wake_at[request_id]
            waiting = stream.pending.get(request_id)
            if waiting is None or waiting.done():
                continue
            reply = stream.pending[request_id] = waiting.get_loop().create_future()
            waiting.set_exception(Overdue(reply))

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.call.cancel()
            stream.reader.cancel()


async def serve_stream(request_iterator, context, handle, server_name: str) -> None:
    """Server side of `Executor.Stream`: run `handle(request)` concurrently for each request
    and write each reply (tagged with its request_id) as soon as it is ready.

    When the server drains, the call stops reading, answers what it took and ends; the
    caller's requests written after that fail with StreamError and are retried elsewhere."""
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

    async def read_all() -> None:
        # context.read(), not `async for` over request_iterator: grpc's iterator keeps the
        # last request (maybe large) alive until the next one arrives.
        while (request := await context.read()) is not grpc.aio.EOF:
            task = asyncio.ensure_future(answer(request))
            running.add(task)
            task.add_done_callback(running.discard)
            del request  # the task holds it now

    await until_drained(read_all())
    try:
        if running:
            await asyncio.gather(*running)
    finally:
        for task in running:
            task.cancel()


async def until_drained(reading) -> None:
    """Run a stream handler's read loop until the caller ends it or the server drains."""
    reader = asyncio.ensure_future(reading)
    stop = asyncio.ensure_future(draining().wait())
    try:
        await asyncio.wait((reader, stop), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not reader.done():
            reader.cancel()
            await asyncio.wait((reader,))
    if not reader.cancelled() and reader.exception() is not None:
        raise reader.exception()
