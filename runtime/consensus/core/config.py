"""Configuration of one Raft node; validated at construction, passed down, never global."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RaftConfig:
    """Settings of one node in one Raft group.

    Times are in ticks (the driver decides how long a tick is). The election timeout of a
    follower is drawn uniformly from ``[election_ticks, 2 * election_ticks)`` each time it is
    reset (§5.2), from the ``random.Random`` given to the node.
    """

    id: int
    peers: tuple[int, ...]
    """Every voter of the group when it started (this node included, unless it joins as a
    learner). Membership changes in the log or a snapshot's membership supersede it."""
    learners: tuple[int, ...] = ()
    """Non-voting members when it started: a node joining a running group starts as one."""
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_append_entries: int = 64
    """Most entries in one AppendEntries (batching)."""
    max_append_bytes: int = 1 << 20
    """Most entry bytes in one AppendEntries (at least one entry is always sent)."""
    max_inflight: int = 256
    """Most unacknowledged AppendEntries per follower while replicating (pipelining)."""
    max_inflight_bytes: int = 0
    """Most unacknowledged entry bytes per follower; 0 means no limit."""
    snapshot_chunk_size: int = 1 << 20
    """Bytes of snapshot data per InstallSnapshot chunk."""
    max_inflight_snapshot_chunks: int = 4
    """Chunks sent ahead of the follower's acknowledgement."""
    max_apply_bytes: int = 64 << 20
    """Most entry bytes in one Ready's committed_entries (at least one entry)."""
    pre_vote: bool = True
    """Run a PreVote round before a real election (thesis §9.6)."""
    check_quorum: bool = True
    """A leader steps down when it has not heard from a quorum in an election timeout, and
    nodes ignore vote requests while they have a live leader (the leader lease)."""
    applied: int = 0
    """Index the application has already applied when the node starts. The default (0)
    means "the storage's snapshot index": the application restores the snapshot, then
    applies the committed entries the first Readys hand it."""
    rejoin_commit: int | None = None
    """Set when this node lost its log (its storage was quarantined as corrupt) and rejoins
    with an empty one: the highest index it may have acknowledged before the loss. Until a
    leader has caught it up (see ``Raft.rejoining``) it grants no vote or pre-vote (but in a
    group of two) and never campaigns: acknowledgements it can no longer back may have
    counted for commits."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "peers", tuple(sorted(int(p) for p in self.peers)))
        object.__setattr__(self, "learners", tuple(sorted(int(p) for p in self.learners)))
        if self.id <= 0:
            raise ValueError(f"node id must be > 0, got {self.id}")
        members = self.peers + self.learners
        if any(p <= 0 for p in members) or len(set(members)) != len(members):
            raise ValueError(f"peer and learner ids must be distinct and > 0, got {self.peers} "
                             f"and {self.learners}")
        if not self.peers:
            raise ValueError("a group needs at least one voter")
        if self.id not in members:
            raise ValueError(f"node {self.id} is not among the peers {self.peers} or learners "
                             f"{self.learners}")
        if self.heartbeat_ticks <= 0:
            raise ValueError("heartbeat_ticks must be > 0")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("election_ticks must be greater than heartbeat_ticks")
        for name in ("max_append_entries", "max_append_bytes", "max_inflight",
                     "snapshot_chunk_size", "max_inflight_snapshot_chunks", "max_apply_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_inflight_bytes < 0 or self.applied < 0:
            raise ValueError("max_inflight_bytes and applied must be >= 0")
        if self.rejoin_commit is not None and self.rejoin_commit < 0:
            raise ValueError("rejoin_commit must be >= 0")
