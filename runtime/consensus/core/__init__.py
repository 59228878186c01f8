"""The Raft protocol as a pure, deterministic state machine (no I/O, no clock).

Modelled on etcd-io/raft's ``RawNode``: feed a :class:`RaftNode` with ``tick()``,
``step(message)``, ``propose(data)`` and ``read_index(context)``; drain it with
``ready()`` → persist, send, apply → ``advance(ready)`` (the contract is on :class:`Ready`).
"""

from .conf import ConfChange, ConfChangeError, ConfOp, ConfState
from .config import RaftConfig
from .errors import (CompactedError, NotLeaderError, ProposalDroppedError, RaftError,
                     ReadyNotAdvancedError, SnapshotOutOfDateError, UnavailableError)
from .memory import MemoryStorage, StorageView
from .messages import (MESSAGE_TYPES, AppendEntries, AppendEntriesResponse, Heartbeat,
                       HeartbeatResponse, InstallSnapshot, InstallSnapshotResponse, Message,
                       MessageDecodeError, ReadIndexRequest, ReadIndexResponse, RequestVote,
                       RequestVoteResponse)
from .node import PeerStatus, RaftNode, Ready, Status
from .progress import ProgressState
from .types import (NONE, Entry, EntryId, EntryKind, HardState, ReadState, Role, Snapshot,
                    SnapshotMeta, SoftState, checksum)

__all__ = [
    "NONE",
    "MESSAGE_TYPES",
    "AppendEntries",
    "AppendEntriesResponse",
    "CompactedError",
    "ConfChange",
    "ConfChangeError",
    "ConfOp",
    "ConfState",
    "Entry",
    "EntryId",
    "EntryKind",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "MemoryStorage",
    "Message",
    "MessageDecodeError",
    "NotLeaderError",
    "PeerStatus",
    "ProgressState",
    "ProposalDroppedError",
    "RaftConfig",
    "RaftError",
    "RaftNode",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "ReadState",
    "Ready",
    "ReadyNotAdvancedError",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SnapshotOutOfDateError",
    "SoftState",
    "Status",
    "StorageView",
    "UnavailableError",
    "checksum",
]
