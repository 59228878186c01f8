"""`StreamMux`: many concurrent requests over one bidirectional `Executor.StreamBatches` call.

Replies come back in completion order and are matched to their requests by `request_id`.
On this kind of machine a message on an open stream costs ~0.34 ms round trip against
~0.59 ms for a unary call, and ~0.3 ms of CPU at each end however many are in flight
(grpc's Python stack is CPU-bound here; docs/architecture.md). So each side packs what it
queued while its previous message was being written into one message: one request alone
goes at once, and under load one message carries many.
A broken stream fails every request in flight on it with `StreamError` (nothing was
answered; whether a request already ran is unknown) and the next call opens a new stream.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import traceback
from typing import Awaitable, Callable

import grpc

from nborch.protos import nborch_pb2 as pb
from nborch.protos import nborch_pb2_grpc as pb_grpc
from nborch.runtime.auth import STREAM_BATCHES_METHOD, AuthError, Handshake, LinkAuth
from nborch.runtime.health import draining
from nborch.runtime.limits import DEFAULT_MAX_MESSAGE_SIZE, PACK_OVERHEAD, check_request_size


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


class Pack:
    """Requests (or replies) that travel in one message, and the future of its write."""

    __slots__ = ('items', 'size', 'written')

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.items: list = []
        self.size = 0
        self.written = loop.create_future()

    def settle(self, error: BaseException | None = None) -> None:
        if self.written.done():
            return
        if error is None:
            self.written.set_result(None)
        else:
            self.written.set_exception(error)
            self.written.exception()  # retrieved: its waiters (if any) re-raise it


class Outbox:
    """One stream's outgoing messages, packed.

    `send(item)` queues an item. When no write is in progress the caller writes at once, in
    its own task (no hand-off on an idle stream); what others queue meanwhile goes to a
    writer task, one pack per message (at most `limit` bytes, counting what packing adds; an
    item alone always makes one), so no caller waits on writes for others. A pack being
    written takes no more. A write error fails the pack and every queued one
    (`Pack.written`): none was sent. A writer cancelled in the middle of a write (grpc then
    cancels the whole call) counts its pack as sent, since it may have been — the broken
    call fails its waiters' replies — and fails the queued ones as not sent."""

    def __init__(self, limit: int, write: Callable[[list], Awaitable[None]]):
        self.limit = limit + PACK_OVERHEAD
        self.packs: collections.deque[Pack] = collections.deque()
        self._write = write
        self._writing = False
        self._writer: asyncio.Task | None = None

    async def send(self, item, size: int) -> Pack:
        size += PACK_OVERHEAD
        pack = self.packs[-1] if self.packs else None
        if pack is None or pack.size + size > self.limit:
            pack = Pack(asyncio.get_running_loop())
            self.packs.append(pack)
        pack.items.append(item)
        pack.size += size
        if not self._writing:
            self._writing = True
            handed = False
            try:
                if await self._write_next() and self.packs:
                    self._writer = asyncio.ensure_future(self._write_all())
                    handed = True
            finally:
                if not handed:
                    self._writing = False
        return pack

    async def _write_all(self) -> None:
        try:
            while self.packs and await self._write_next():
                pass
        finally:
            self._writing = False

    async def _write_next(self) -> bool:
        """Write the first pack; False (and every pack failed) on a write error."""
        pack = self.packs.popleft()
        try:
            await self._write(pack.items)
        except asyncio.CancelledError:
            pack.settle()
            self._fail_queued(StreamError('the stream was closed', grpc.StatusCode.CANCELLED))
            raise
        except Exception as exc:
            pack.settle(exc)
            self._fail_queued(exc)
            return False
        pack.settle()
        return True

    def _fail_queued(self, error: Exception) -> None:
        for pack in self.packs:
            pack.settle(error)
        self.packs.clear()

    async def flushed(self) -> None:
        """Return once the writer task (if any) has written what was queued."""
        if self._writer is not None and not self._writer.done():
            await asyncio.wait((self._writer,))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()


class _OpenStream:
    def __init__(self, stub: pb_grpc.ExecutorStub, handshake: Handshake | None, limit: int):
        self.call = stub.StreamBatches(metadata=handshake.metadata) if handshake else \
            stub.StreamBatches()
        self.pending: dict[str, asyncio.Future] = {}
        self.wake_at: dict[str, float] = {}  # request id → when its waiter wants a word
        self.outbox = Outbox(limit, self._write)
        self.broken: StreamError | None = None
        # Nothing is written to, or read from, a server before it proved the secret.
        self.trusted = asyncio.get_running_loop().create_future()
        self.reader = asyncio.ensure_future(self._read(handshake))

    async def _write(self, requests: list) -> None:
        await self.call.write(pb.DataRequests(requests=requests))

    async def put(self, request: pb.DataRequest, size: int) -> None:
        """Send `request` (`size` bytes) in the next message; return once that message is
        written. StreamError: it was not (the stream broke first)."""
        if self.broken is not None:
            raise self.broken
        pack = await self.outbox.send(request, size)
        try:
            await asyncio.shield(pack.written)  # one waiter's cancellation is not the pack's
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            raise self.broken or StreamError(f'cannot send: {exc}') from None

    async def _read(self, handshake: Handshake | None) -> None:
        try:
            if handshake is not None:
                await handshake.verify(self.call)
            self.trusted.set_result(None)
            while True:
                # Handed on without a local name: replies (maybe large) must not stay
                # referenced here while the next message is awaited.
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

    def _deliver(self, message) -> None:
        if message is grpc.aio.EOF:
            raise StreamError('the server closed the stream')
        for reply in message.responses:
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
        request_id = str(next(self._ids))
        tagged = pb.DataRequest()
        tagged.CopyFrom(request)
        tagged.request_id = request_id
        size = check_request_size(tagged, self._max_message_size, self._limit_of)
        stream = self._stream
        if stream is None or stream.broken is not None:
            stream = self._stream = _OpenStream(
                self._stub, self._auth.handshake(STREAM_BATCHES_METHOD, self._target)
                if self._auth is not None else None, self._max_message_size)
        if not stream.trusted.done():  # the first request on a new stream: the handshake
            await asyncio.shield(stream.trusted)  # bounded: the handshake has its own timeout
        future = asyncio.get_running_loop().create_future()
        stream.pending[request_id] = future
        if wake_at is not None:
            stream.wake_at[request_id] = wake_at
        try:
            await stream.put(tagged, size)
        except StreamError:
            stream.pending.pop(request_id, None)
            stream.wake_at.pop(request_id, None)
            raise
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
            stream.outbox.close()


async def serve_stream(context, handle, server_name: str, *, packed: bool = True,
                       max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
    """Server side of `Executor.StreamBatches` (`packed=False`: of `Executor.Stream`, one
    request per message): run `handle(request)` concurrently for each request and write
    each reply, tagged with its request_id, as soon as it is ready — the replies that became
    ready while the previous message was being written go together in the next one.

    When the server drains, the call stops reading, answers what it took and ends; the
    caller's requests written after that fail with StreamError and are retried elsewhere."""
    running: set[asyncio.Task] = set()

    async def write(replies: list) -> None:
        if packed:
            await context.write(pb.DataResponses(responses=replies))
        else:
            for reply in replies:
                await context.write(reply)

    outbox = Outbox(max_message_size, write)

    async def answer(request: pb.DataRequest) -> None:
        try:
            reply = await handle(request)
        except Exception as exc:  # never leave a caller waiting for a reply that cannot come
            log.exception('failed to serve a request on %s', request.endpoint)
            reply = pb.DataResponse(error=pb.ExecutorError(
                executor=server_name, type=type(exc).__name__, message=str(exc),
                traceback=''.join(traceback.format_exception(exc))))
        reply.request_id = request.request_id
        pack = await outbox.send(reply, reply.ByteSize())
        if pack.written.done() and pack.written.exception() is not None:
            raise pack.written.exception()  # the caller is gone: end the call

    def start(requests) -> None:  # a function: no name here outlives the tasks' need
        for request in requests:
            task = asyncio.ensure_future(answer(request))
            running.add(task)
            task.add_done_callback(running.discard)

    async def read_all() -> None:
        # context.read(), not `async for` over the request iterator: grpc's iterator keeps
        # the last message (maybe large) alive until the next one arrives.
        while (message := await context.read()) is not grpc.aio.EOF:
            start(message.requests if packed else (message,))
            del message  # the tasks hold their requests now

    await until_drained(read_all())
    try:
        if running:
            await asyncio.gather(*running)
        await outbox.flushed()  # the last replies are written before the call ends
    finally:
        for task in running:
            task.cancel()
        outbox.close()


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
