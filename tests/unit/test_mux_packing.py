"""Packed stream messages: `Outbox` (pure asyncio) and a real grpc.aio stream in-process."""
import asyncio

import grpc
import pytest

from nborch.protos import nborch_pb2 as pb
from nborch.protos import nborch_pb2_grpc as pb_grpc
from nborch.runtime.grpc_options import channel_options, server_options
from nborch.runtime.limits import PACK_OVERHEAD
from nborch.runtime.mux import Outbox, StreamError, StreamMux, serve_stream


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


class Wire:
    """A write function that records each message; `gate` holds writes until set."""

    def __init__(self):
        self.messages: list[list] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.error: Exception | None = None

    async def write(self, items: list) -> None:
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        self.messages.append(list(items))


def test_an_idle_outbox_writes_at_once_in_the_callers_task():
    async def scenario():
        wire = Wire()
        outbox = Outbox(1000, wire.write)
        pack = await outbox.send('a', 10)
        assert pack.written.done() and pack.written.exception() is None
        assert wire.messages == [['a']]
    run(scenario())


def test_what_is_queued_during_a_write_goes_in_the_next_message():
    async def scenario():
        wire = Wire()
        outbox = Outbox(1000, wire.write)
        wire.gate.clear()
        first = asyncio.ensure_future(outbox.send('a', 10))
        await asyncio.sleep(0)  # 'a' is being written
        others = [await outbox.send(x, 10) for x in 'bcd']  # queued: they return at once
        assert not any(p.written.done() for p in others) and others[0] is others[2]
        wire.gate.set()
        await first  # it wrote its own message, and handed the rest to the writer task
        await outbox.flushed()
        assert wire.messages == [['a'], ['b', 'c', 'd']]
        assert all(p.written.done() for p in others)
    run(scenario())


def test_packs_stay_within_the_limit_and_an_item_alone_always_fits():
    async def scenario():
        wire = Wire()
        limit = 100
        outbox = Outbox(limit, wire.write)
        wire.gate.clear()
        first = asyncio.ensure_future(outbox.send('big', limit))  # at the limit: alone
        await asyncio.sleep(0)
        for x in 'bcdef':
            await outbox.send(x, 30)
        wire.gate.set()
        await first
        await outbox.flushed()
        assert wire.messages == [['big'], ['b', 'c'], ['d', 'e'], ['f']]
        # 2 * (30 + PACK_OVERHEAD) fits the limit's allowance, 3 do not
        assert 2 * (30 + PACK_OVERHEAD) <= limit + PACK_OVERHEAD < 3 * (30 + PACK_OVERHEAD)
    run(scenario())


def test_a_write_error_fails_that_pack_and_the_queued_ones_and_the_next_send_writes_again():
    async def scenario():
        wire = Wire()
        outbox = Outbox(1000, wire.write)
        wire.gate.clear()
        wire.error = ConnectionError('gone')
        first = asyncio.ensure_future(outbox.send('a', 10))
        await asyncio.sleep(0)
        queued = await outbox.send('b', 10)
        wire.gate.set()
        failed = await first
        assert isinstance(failed.written.exception(), ConnectionError)
        assert isinstance(queued.written.exception(), ConnectionError)
        wire.error = None
        assert (await outbox.send('c', 10)).written.exception() is None
        assert wire.messages == [['c']]
    run(scenario())


def test_a_writer_cancelled_mid_write_counts_its_pack_sent_and_fails_the_queued_ones():
    async def scenario():
        wire = Wire()
        outbox = Outbox(1000, wire.write)
        wire.gate.clear()
        writer = asyncio.ensure_future(outbox.send('a', 10))
        await asyncio.sleep(0)
        queued = await outbox.send('b', 10)
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
        assert isinstance(queued.written.exception(), StreamError)
        wire.gate.set()
        assert (await outbox.send('c', 10)).written.exception() is None  # not stuck writing
    run(scenario())


class _Echo(pb_grpc.ExecutorServicer):
    def __init__(self, max_message_size: int):
        self.max_message_size = max_message_size
        self.messages = 0
        self.requests = 0

    async def StreamBatches(self, request_iterator, context):
        servicer = self

        class Counting:  # the call, with each message read counted
            async def read(self):
                message = await context.read()
                if message is not grpc.aio.EOF:
                    servicer.messages += 1
                    servicer.requests += len(message.requests)
                return message

            async def write(self, message):
                await context.write(message)

        async def handle(request):
            await asyncio.sleep(0.001)
            return pb.DataResponse(docs=request.docs)

        await serve_stream(Counting(), handle, 'echo', max_message_size=self.max_message_size)


async def _concurrent_echoes(n: int, payload: int, max_message_size: int) -> _Echo:
    servicer = _Echo(max_message_size)
    server = grpc.aio.server(options=server_options(max_message_size))
    pb_grpc.add_ExecutorServicer_to_server(servicer, server)
    port = server.add_insecure_port('127.0.0.1:0')
    await server.start()
    channel = grpc.aio.insecure_channel(f'127.0.0.1:{port}',
                                        options=channel_options(max_message_size))
    mux = StreamMux(channel, target=f'127.0.0.1:{port}', max_message_size=max_message_size)
    try:
        requests = [pb.DataRequest(endpoint='/', docs=bytes([i % 256]) * payload)
                    for i in range(n)]
        replies = await asyncio.gather(*(mux.call(r) for r in requests))
        assert [r.docs for r in replies] == [r.docs for r in requests]  # each its own reply
    finally:
        await mux.close()
        await channel.close()
        await server.stop(None)
    return servicer


def test_concurrent_requests_travel_packed_and_each_gets_its_own_reply():
    servicer = run(_concurrent_echoes(200, 100, 1 << 20))
    assert servicer.requests == 200
    assert servicer.messages < 200 / 4  # under load one message carries many


def test_packs_of_requests_near_the_limit_never_exceed_it():
    limit = 10_000
    # each request is ~4 KB: two fit a message, three would break the stream
    servicer = run(_concurrent_echoes(50, 4_000, limit))
    assert servicer.requests == 50 and servicer.messages >= 25


def test_the_caller_that_writes_does_not_wait_on_writes_for_others():
    async def scenario():
        let_a, let_b, messages = asyncio.Event(), asyncio.Event(), []

        async def write(items):
            await (let_a if items == ['a'] else let_b).wait()
            messages.append(items)

        outbox = Outbox(1000, write)
        first = asyncio.ensure_future(outbox.send('a', 10))
        await asyncio.sleep(0)
        queued = await outbox.send('b', 10)
        let_a.set()
        await first  # returns though 'b' is still being written
        assert messages == [['a']] and not queued.written.done()
        let_b.set()
        await outbox.flushed()
        assert messages == [['a'], ['b']] and queued.written.done()
    run(scenario())
