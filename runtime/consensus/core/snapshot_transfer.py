"""Follower-side reassembly of a chunked InstallSnapshot transfer (§7).

One transfer is identified by everything that makes its bytes what they are: the leader and its
term, the snapshot's index and term, its size and its checksum. A chunk of another transfer
never mixes into the buffer: it either replaces the transfer (offset 0) or is answered with
"resend from 0". Chunks must arrive in order; a gap is answered with the offset we hold, a
duplicate is acknowledged. When the last byte arrives the CRC-32 is checked, and only a
verified snapshot is handed to the log.
"""

from __future__ import annotations

from dataclasses import dataclass

from .messages import InstallSnapshot
from .types import Snapshot, SnapshotMeta, checksum


@dataclass(slots=True)
class ChunkResult:
    """What to answer: hold ``next_offset`` bytes; ``reject`` asks for a resend from there.
    ``snapshot`` is set once the transfer is complete and verified."""

    next_offset: int
    reject: bool = False
    snapshot: Snapshot | None = None


class SnapshotReceiver:
    def __init__(self) -> None:
        self._key: tuple[int, ...] | None = None
        self._members: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())
        self._buf = bytearray()

    @property
    def receiving(self) -> tuple[int, int] | None:
        """(snapshot index, bytes held) of the transfer in progress, if any."""
        if self._key is None:
            return None
        return self._key[2], len(self._buf)

    def reset(self) -> None:
        self._key = None
        self._members = ((), ())
        self._buf = bytearray()

    def receive(self, m: InstallSnapshot) -> ChunkResult | None:
        """Take one chunk; None when it belongs to an older transfer of the same leader."""
        key = (m.term, m.src, m.snap_index, m.snap_term, m.total_size, m.checksum)
        if self._key != key:
            if (self._key is not None and self._key[:2] == key[:2]
                    and m.snap_index < self._key[2]):
                return None  # a late chunk of a transfer the leader already replaced
            self.reset()
            if m.offset != 0:
                return ChunkResult(0, reject=True)
            self._key = key
            self._members = (tuple(m.voters), tuple(m.learners))
        held = len(self._buf)
        end = m.offset + len(m.data)
        if m.offset > held:
            return ChunkResult(held, reject=True)
        if end > held:
            self._buf += m.data[held - m.offset:]
        if len(self._buf) > m.total_size:
            self.reset()
            return ChunkResult(0, reject=True)
        if len(self._buf) < m.total_size:
            return ChunkResult(len(self._buf))
        data = bytes(self._buf)
        voters, learners = self._members
        self.reset()
        if checksum(data) != m.checksum:
            return ChunkResult(0, reject=True)
        return ChunkResult(len(data), snapshot=Snapshot(
            SnapshotMeta(m.snap_index, m.snap_term, voters, learners), data))
