"""Peer traffic of one Raft group over gRPC: one client stream per peer, fire and forget.

Raft tolerates lost, duplicated and reordered messages, so a link that breaks drops what
it held, tells the node the peer is unreachable, and reconnects on the next message.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable

import grpc

from nborch.protos import nborch_pb2 as pb
from nborch.protos import nborch_pb2_grpc as pb_grpc
from nborch.runtime import auth, tls
from nborch.runtime.grpc_options import channel_options, secure_channel
from nborch.runtime.limits import DEFAULT_MAX_MESSAGE_SIZE, RAFT_ENVELOPE
from nborch.runtime.mux import until_drained
from nborch.runtime.resolve import dial_target

QUEUE_LIMIT = 10_000  # messages held for a slow peer before new ones are dropped
RECONNECT_S = 0.05

log = logging.getLogger('nborch.raft')


class PeerLink:
    """Outgoing messages to one peer, written in order on one `Raft.Send` stream."""

    def __init__(self, peer: int, address: str, on_unreachable: Callable[[int], None],
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        self.peer = peer
        self.address = address
        self.target = dial_target(address)
        self.auth = auth.installed()  # peers prove the deployment secret, and so must we
        files = tls.internal()
        # A Raft message carries a whole write request of up to max_message_size.
        options = channel_options(max_message_size + RAFT_ENVELOPE)
        self.channel = secure_channel(self.target, files, options) if files is not None else \
            grpc.aio.insecure_channel(self.target, options=options)
        self.stub = pb_grpc.RaftStub(self.channel)
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_LIMIT)
        self._on_unreachable = on_unreachable
        self._task = asyncio.ensure_future(self._pump())

    def send(self, data: bytes) -> None:
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            pass  # the peer is far behind; Raft resends what matters

    async def _pump(self) -> None:
        while True:
            data = await self._queue.get()
            handshake = self.auth.handshake(auth.SEND_METHOD, self.target) if self.auth else None
            call = self.stub.Send(metadata=handshake.metadata if handshake else None)
            try:
                if handshake is not None:  # no Raft message goes to an impostor
                    await handshake.verify(call)
                await call.write(pb.RaftMessage(data=data))
                while True:
                    data = await self._queue.get()
                    await call.write(pb.RaftMessage(data=data))
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, auth.AuthError) as exc:
                log.debug('link to peer %d (%s) broke: %s', self.peer, self.address, exc)
                call.cancel()
                while not self._queue.empty():  # stale by the time the peer is back
                    self._queue.get_nowait()
                self._on_unreachable(self.peer)
                await asyncio.sleep(RECONNECT_S)

    async def propose(self, request: pb.DataRequest, timeout: float) -> pb.ProposeReply:
        return await auth.call_unary(self.auth, auth.PROPOSE_METHOD, self.target, self.stub.Propose,
                                     request, timeout=timeout)

    async def close(self) -> None:
        self._task.cancel()
        await self.channel.close()


class RaftServicer(pb_grpc.RaftServicer):
    """Incoming peer traffic for one replica's `ConsensusReplica`."""

    def __init__(self, replica):
        self.replica = replica

    async def Send(self, request_iterator, context):
        async def receive_all() -> None:
            async for message in request_iterator:
                self.replica.receive(message.data)

        await until_drained(receive_all())
        return pb.RaftAck()

    async def Propose(self, request, context):
        return await self.replica.propose(request)

    async def ChangeMembership(self, request, context):
        try:
            change = json.loads(request.json)
            op, node, address = change['op'], int(change['node']), str(change.get('address', ''))
        except (ValueError, KeyError, TypeError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f'a membership change is JSON {{"op", "node", "address"}}: {exc}')
        reply = await self.replica.change_membership(op, node, address)
        return pb.StatusReply(json=json.dumps(reply).encode())
