"""ReadIndex bookkeeping on the leader (thesis §6.4).

A read request is recorded with the leader's commit index at the time it arrived. The leader
then sends a heartbeat round tagged with the request's context; once a quorum has answered a
heartbeat carrying that context (or a later one), no newer leader can have existed when the
request arrived, so the recorded index is safe to read at. Requests are released in arrival
order: an ack for a later context confirms every earlier request too.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class PendingRead:
    index: int
    requester: int
    context: bytes
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    def __init__(self) -> None:
        self._pending: dict[bytes, PendingRead] = {}
        self._queue: list[bytes] = []

    def add_request(self, index: int, requester: int, context: bytes) -> bool:
        """Record a request; False when its context is already pending (a duplicate)."""
        if context in self._pending:
            return False
        self._pending[context] = PendingRead(index, requester, context)
        self._queue.append(context)
        return True

    def recv_ack(self, voter: int, context: bytes) -> int:
        """A heartbeat response carried ``context``; returns the acks now recorded (0 if the
        context is not pending)."""
        req = self._pending.get(context)
        if req is None:
            return 0
        req.acks.add(voter)
        return len(req.acks)

    def advance(self, context: bytes) -> list[PendingRead]:
        """Release every request up to and including ``context``, oldest first."""
        if context not in self._pending:
            return []
        at = self._queue.index(context) + 1
        released = [self._pending.pop(c) for c in self._queue[:at]]
        del self._queue[:at]
        return released

    def last_pending_context(self) -> bytes:
        return self._queue[-1] if self._queue else b""

    def __len__(self) -> int:
        return len(self._queue)
