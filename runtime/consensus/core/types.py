"""Plain value types shared by the Raft core, its storage and its driver.

Everything here is an immutable value: entries, hard state, snapshots, the soft state and the
results of ReadIndex. Node ids are positive integers; ``NONE`` (0) means "no node".
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass, field

NONE = 0
"""The node id that means "nobody" (no vote cast, no leader known)."""

ENTRY_OVERHEAD = 20
"""Bytes an entry costs on the wire besides its data (term, index, length); used for batching."""


class EntryKind(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1
    """A membership change (``conf.ConfChange`` encoded); the core applies it itself."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data == b""`` marks the no-op a new leader appends (§5.4.2); the
    application skips those, and membership changes (see ``is_command``), when applying."""

    term: int
    index: int
    data: bytes = b""
    kind: EntryKind = EntryKind.NORMAL

    @property
    def is_command(self) -> bool:
        """Whether the application applies this entry (not a no-op, not a membership change)."""
        return self.kind == EntryKind.NORMAL and bool(self.data)

    @property
    def size(self) -> int:
        return len(self.data) + ENTRY_OVERHEAD


@dataclass(frozen=True, slots=True)
class EntryId:
    """Where a proposal landed: the driver matches it against the applied entry at ``index``;
    if the applied entry there has another term, the proposal was lost (leader change)."""

    term: int
    index: int


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on stable storage before any message that depends on it is sent (§5.1:
    currentTerm, votedFor; plus the commit index so a restart does not re-apply from zero)."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Last included index and term (§7) and the membership at that point (no voters: a
    snapshot taken before membership was recorded; the node's configured peers stand)."""

    index: int = 0
    term: int = 0
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image covering the log up to ``meta.index`` inclusive."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.meta.index == 0

    @property
    def checksum(self) -> int:
        return checksum(self.data)


EMPTY_SNAPSHOT = Snapshot()


def checksum(data: bytes) -> int:
    """CRC-32 (zlib) of ``data``; used for snapshot transfer and storage records."""
    return zlib.crc32(data) & 0xFFFFFFFF


class Role(str, enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the application may show (not persisted)."""

    role: Role = Role.FOLLOWER
    leader: int = NONE


@dataclass(frozen=True, slots=True)
class ReadState:
    """Result of ``read_index(context)``: once the local applied index reaches ``index``, a read
    served from the local state machine is linearizable (thesis §6.4)."""

    index: int
    context: bytes
