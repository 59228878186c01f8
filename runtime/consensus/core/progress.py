"""What a leader knows about each follower, and the quorum arithmetic over voters.

Flow control follows etcd's tracker: a follower is in one of three states.

* ``PROBE``: we do not know where its log ends; send one AppendEntries at a time and wait for
  the answer (or a heartbeat response) before the next.
* ``REPLICATE``: its log matches ours up to ``match``; send optimistically (``next`` advances on
  send, not on ack — pipelining) as long as fewer than ``max_inflight`` messages (and bytes)
  are unacknowledged.
* ``SNAPSHOT``: it needs a snapshot; the entries it lacks are compacted. AppendEntries are
  paused while snapshot chunks flow (``SnapshotSend`` tracks the transfer).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from .types import Snapshot


class ProgressState(str, enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"

    def __str__(self) -> str:
        return self.value


class Inflights:
    """Unacknowledged AppendEntries to one follower: (last index, bytes) in send order."""

    __slots__ = ("max_count", "max_bytes", "_queue", "bytes")

    def __init__(self, max_count: int, max_bytes: int = 0) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes  # 0: no byte limit
        self._queue: deque[tuple[int, int]] = deque()
        self.bytes = 0

    def add(self, last_index: int, size: int) -> None:
        self._queue.append((last_index, size))
        self.bytes += size

    def free_le(self, index: int) -> None:
        """The follower acknowledged everything up to ``index``."""
        q = self._queue
        while q and q[0][0] <= index:
            self.bytes -= q.popleft()[1]

    def full(self) -> bool:
        return len(self._queue) >= self.max_count or (
            self.max_bytes > 0 and self.bytes >= self.max_bytes)

    def __len__(self) -> int:
        return len(self._queue)

    def reset(self) -> None:
        self._queue.clear()
        self.bytes = 0


@dataclass(slots=True)
class SnapshotSend:
    """One chunked snapshot transfer to one follower.

    ``sent`` is the next offset to send, ``acked`` the offset the follower confirmed holding;
    at most a window of chunks is outstanding. The leader checks the transfer at every
    heartbeat: after ``STALL_BEATS`` heartbeats without a new acknowledgement it assumes chunks
    were lost and rewinds ``sent`` to ``acked``.
    """

    STALL_BEATS = 2

    snapshot: Snapshot
    checksum: int
    sent: int = 0
    acked: int = 0
    done_sending: bool = False
    last_seen_ack: int = 0
    stalled_beats: int = 0

    @property
    def index(self) -> int:
        return self.snapshot.meta.index

    @property
    def size(self) -> int:
        return len(self.snapshot.data)

    def rewind(self, offset: int) -> None:
        self.sent = min(offset, self.size)
        self.acked = self.sent
        self.done_sending = False

    def on_heartbeat(self) -> bool:
        """Called once per heartbeat interval; True when the transfer should be rewound."""
        if self.acked != self.last_seen_ack:
            self.last_seen_ack = self.acked
            self.stalled_beats = 0
            return False
        self.stalled_beats += 1
        if self.stalled_beats >= self.STALL_BEATS:
            self.stalled_beats = 0
            return True
        return False


class Progress:
    """Replication progress of one peer (the leader keeps one for itself too)."""

    __slots__ = ("match", "next", "state", "paused", "pending_snapshot", "recent_active",
                 "inflights", "snap", "sent_commit")

    def __init__(self, next_index: int, max_inflight: int, max_inflight_bytes: int = 0) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.paused = False  # probe: one message in flight; replicate: inflights full
        self.pending_snapshot = 0
        self.recent_active = False
        self.inflights = Inflights(max_inflight, max_inflight_bytes)
        self.snap: SnapshotSend | None = None
        self.sent_commit = 0  # highest commit index sent to this peer

    def _reset_state(self, state: ProgressState) -> None:
        self.paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()
        self.snap = None

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1
        self.sent_commit = min(self.sent_commit, self.next - 1)

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, send: SnapshotSend) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = send.index
        self.snap = send

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement that the follower's log matches ours up to ``index``."""
        if index <= self.match:
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        self.paused = False
        return True

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of AppendEntries at prev_index ``rejected``; ``match_hint`` is where the
        logs may match. Returns False for a stale rejection."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            self.sent_commit = min(self.sent_commit, self.next - 1)
            return True
        # In probe state only the latest probe (at next-1) is meaningful.
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.sent_commit = min(self.sent_commit, self.next - 1)
        self.paused = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.SNAPSHOT:
            return True
        return self.paused

    def sent_entries(self, count: int, size: int) -> None:
        if self.state is ProgressState.REPLICATE:
            if count:
                self.next += count
                self.inflights.add(self.next - 1, size)
            self.paused = self.inflights.full()
        elif self.state is ProgressState.PROBE and count:
            self.paused = True

    def __repr__(self) -> str:
        return (f"Progress(match={self.match}, next={self.next}, state={self.state}, "
                f"paused={self.paused}, inflight={len(self.inflights)})")


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


class ProgressTracker:
    """Progress of every member (voters and learners), votes of the current campaign, and
    quorum decisions, which count voters only."""

    def __init__(self, voters: tuple[int, ...], learners: tuple[int, ...] = ()) -> None:
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.set_members(voters, learners)

    def set_members(self, voters: tuple[int, ...], learners: tuple[int, ...]) -> None:
        """Adopt a new membership; the caller adds and drops ``progress`` entries."""
        self.voters = tuple(sorted(voters))
        self.learners = tuple(sorted(learners))
        self.members = tuple(sorted(self.voters + self.learners))
        self.quorum = len(self.voters) // 2 + 1

    def committed_index(self) -> int:
        """The largest index replicated on a quorum (by ``match``)."""
        matches = sorted((self.progress[v].match for v in self.voters), reverse=True)
        return matches[self.quorum - 1]

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, voter: int, granted: bool) -> None:
        self.votes.setdefault(voter, granted)

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = sum(1 for v in self.voters if self.votes.get(v) is True)
        rejected = sum(1 for v in self.voters if self.votes.get(v) is False)
        if granted >= self.quorum:
            return granted, rejected, VoteResult.WON
        if rejected >= self.quorum or len(self.voters) - rejected < self.quorum:
            return granted, rejected, VoteResult.LOST
        return granted, rejected, VoteResult.PENDING

    def quorum_active(self, self_id: int) -> bool:
        """CheckQuorum: did a quorum (counting ourselves) talk to us recently?"""
        active = sum(1 for v in self.voters if v == self_id or self.progress[v].recent_active)
        return active >= self.quorum
