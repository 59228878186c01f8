"""``RaftNode``: the application's handle on the core, and ``Ready``, everything it must do.

The shape is etcd's ``RawNode``: the application feeds the node (``tick``, ``step``,
``propose``, ``read_index``, ``campaign``), then drains it::

    while node.has_ready():
        rd = node.ready()
        storage.apply_snapshot(rd.snapshot)   # if any        } persist, durably,
        storage.append(rd.entries)                            } in this order
        storage.set_hard_state(rd.hard_state) # if any        }
        transport.send(rd.messages)           # only after the writes above are durable
        app.restore(rd.snapshot); app.apply(rd.committed_entries); serve rd.read_states
        node.advance(rd)

Crashing anywhere in that loop is safe. On restart: reopen the storage, restore the
application from ``storage.snapshot()`` (if any), and build a new ``RaftNode`` on the same
storage; the committed entries after the snapshot come back in the first Readys.

Compaction is the application's call, between rounds: ``storage.create_snapshot(i, data)``
with ``i`` <= the applied index and ``data`` its state at exactly ``i``, then
``storage.compact(j)`` for some ``j`` <= ``i`` (keeping ``i - j`` entries spares slightly
lagging followers a snapshot transfer).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .conf import ConfChange, ConfState
from .config import RaftConfig
from .errors import ReadyNotAdvancedError
from .memory import StorageView
from .messages import Message
from .progress import ProgressState
from .raft import Raft
from .types import EntryId, Entry, HardState, ReadState, Role, Snapshot, SoftState


@dataclass(frozen=True)
class Ready:
    """Everything one round of the driver loop must do, in this order.

    1. **Persist** — durably (fsync) before anything else: ``snapshot`` (if not None) first,
       then ``entries`` (which may overwrite a conflicting suffix of the stored log), then
       ``hard_state`` (if not None). ``must_sync`` says whether this round changed anything
       that must be fsynced; when it is False only the commit index moved, which may be
       written lazily.
    2. **Send** ``messages`` — only *after* step 1 is durable: a vote or an acknowledgement
       promises that the sender's term, vote and log are on disk (§5.1: "updated on stable
       storage before responding to RPCs"). Delivery may fail, reorder or duplicate; Raft
       tolerates that. A peer known unreachable may be reported with
       ``RaftNode.report_unreachable``.
    3. **Apply** — ``snapshot`` (restore the state machine from its data) and then
       ``committed_entries`` in index order, skipping those that are not commands
       (``Entry.is_command``: the no-op each new leader appends, membership changes, which
       the core has applied itself). They are already persisted (step 1 wrote any that were in
       ``entries``). Then serve each of ``read_states`` once the applied index reaches its
       ``index``.
    4. **Advance** — ``RaftNode.advance(ready)``. Until then ``ready()`` may not be called
       again; ``step``/``tick``/``propose`` may, and their effects go to the next Ready.
    """

    soft_state: SoftState | None = None
    """New role/leader, if changed (volatile; not persisted)."""
    hard_state: HardState | None = None
    """New (term, vote, commit) to persist, if changed."""
    entries: tuple[Entry, ...] = ()
    """Entries to append to stable storage."""
    snapshot: Snapshot | None = None
    """A snapshot received from the leader: persist it (it replaces the whole log) and
    restore the state machine from it."""
    committed_entries: tuple[Entry, ...] = ()
    """Entries to apply, in order."""
    messages: tuple[Message, ...] = ()
    """Messages to send after persisting."""
    read_states: tuple[ReadState, ...] = ()
    """Answers to ``read_index`` calls."""
    must_sync: bool = False

    def is_empty(self) -> bool:
        return not (self.soft_state or self.hard_state or self.entries or self.snapshot
                    or self.committed_entries or self.messages or self.read_states)


@dataclass(frozen=True)
class PeerStatus:
    match: int
    next: int
    state: ProgressState
    recent_active: bool
    inflight: int
    snapshot_progress: tuple[int, int] | None = None  # (bytes acknowledged, total)


@dataclass(frozen=True)
class Status:
    """A point-in-time summary for status displays (widgets, logs)."""

    id: int
    term: int
    vote: int
    commit: int
    applied: int
    role: Role
    leader: int
    first_index: int
    last_index: int
    progress: dict[int, PeerStatus] = field(default_factory=dict)  # on the leader only
    rejoining: bool = False  # lost its log; kept out of elections until caught up
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


class RaftNode:
    """One member of a Raft group, driven by a single owner (see the module docstring).

    ``storage`` is read, never written, by the node (a ``MemoryStorage``, or a
    ``DiskStorage`` which offers the same reads). ``rng`` draws election timeouts; pass a
    ``random.Random()`` in production (the default, seeded with the node id, keeps tests and
    simulations reproducible).
    """

    def __init__(self, config: RaftConfig, storage: StorageView,
                 rng: random.Random | None = None) -> None:
        self._raft = Raft(config, storage, rng if rng is not None else random.Random(config.id))
        self._prev_soft = self._raft.soft_state()
        self._prev_hard = self._raft.hard_state()
        self._pending: Ready | None = None

    # -- inputs ------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick (election and heartbeat timers)."""
        self._raft.tick()

    def campaign(self) -> None:
        """Start an election now (a PreVote round first when enabled)."""
        self._raft.campaign()

    def propose(self, data: bytes) -> EntryId:
        """Append ``data`` to the log (leader only).

        Raises ``NotLeaderError`` (with ``.leader``, the leader to forward to, 0 if unknown)
        on a non-leader, and ``ProposalDroppedError`` for empty data. The returned
        (term, index) identifies the entry: it committed iff the entry applied at ``index``
        has this ``term``; another term there means the proposal was lost.
        """
        return self._raft.propose(data)

    def propose_many(self, datas: list[bytes]) -> list[EntryId]:
        """``propose`` for each of ``datas``, in order, sent to the followers together."""
        return self._raft.propose_many(datas)

    def propose_conf_change(self, change: ConfChange) -> EntryId:
        """Propose one membership change (leader only): add a learner, promote a caught-up
        learner, or remove a member. Raises ``NotLeaderError`` on a non-leader and
        ``ConfChangeError`` when the change does not apply or one is still in progress. The
        change takes effect as soon as it is in the log; it is durable once committed (the
        returned id is matched like a proposal's)."""
        return self._raft.propose_conf_change(change)

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point (thesis §6.4); the answer arrives as a
        ``ReadState(index, context)`` in a later Ready. Followers forward to the leader.
        ``context`` must be unique per request. Raises ``NotLeaderError`` when no leader is
        known. A request may be lost (leader change, message loss): time out and retry."""
        self._raft.read_index(context)

    def step(self, message: Message) -> None:
        """Feed a message received from a peer."""
        if message.dst != self._raft.id:
            raise ValueError(f"message for {message.dst} stepped on node {self._raft.id}")
        self._raft.step(message)

    def report_unreachable(self, peer: int) -> None:
        self._raft.report_unreachable(peer)

    # -- outputs -----------------------------------------------------------------------------

    def has_ready(self) -> bool:
        if self._pending is not None:
            return False
        r = self._raft
        log = r.log
        return bool(
            r.soft_state() != self._prev_soft
            or r.hard_state() != self._prev_hard
            or r.msgs
            or r.read_states
            or log.unstable.next_entries()
            or log.unstable.next_snapshot() is not None
            or log.has_next_committed_entries())

    def ready(self) -> Ready:
        """What to persist, send and apply now; hand it back with :meth:`advance`."""
        if self._pending is not None:
            raise ReadyNotAdvancedError("advance() the previous Ready first")
        r = self._raft
        log = r.log
        soft, hard = r.soft_state(), r.hard_state()
        entries = tuple(log.unstable.next_entries())
        snapshot = log.unstable.next_snapshot()
        hard_changed = hard != self._prev_hard
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard_changed else None,
            entries=entries,
            snapshot=snapshot,
            committed_entries=tuple(log.next_committed_entries()),
            messages=tuple(r.msgs),
            read_states=tuple(r.read_states),
            must_sync=bool(entries or snapshot is not None or (
                hard_changed and (hard.term, hard.vote) != (self._prev_hard.term,
                                                            self._prev_hard.vote))),
        )
        # Accept: what is handed out now is not handed out again.
        self._prev_soft, self._prev_hard = soft, hard
        log.unstable.accept_in_progress()
        if rd.committed_entries:
            log.accept_applying(rd.committed_entries[-1].index)
        r.msgs = []
        r.read_states = []
        self._pending = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied ``rd``."""
        if rd is not self._pending:
            raise ValueError("advance() takes the Ready last returned by ready()")
        r = self._raft
        if rd.snapshot is not None:
            r.log.stable_snap_to(rd.snapshot.meta.index)
            r.log.applied_to(rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            r.on_persisted(last.index, last.term)
        if rd.committed_entries:
            r.log.applied_to(rd.committed_entries[-1].index)
        self._pending = None

    # -- introspection -----------------------------------------------------------------------

    @property
    def id(self) -> int:
        return self._raft.id

    @property
    def term(self) -> int:
        return self._raft.term

    @property
    def role(self) -> Role:
        return self._raft.role

    @property
    def leader(self) -> int:
        return self._raft.lead

    @property
    def rejoining(self) -> bool:
        """Whether this node, rejoining after its log was lost, still waits for a leader to
        catch it up (``RaftConfig.rejoin_commit``); meanwhile it neither votes nor campaigns."""
        return self._raft.rejoining

    def conf_state(self) -> ConfState:
        """The membership this node uses now (the latest in its log)."""
        return self._raft.log.conf_state()

    def conf_at(self, index: int) -> ConfState:
        """The membership in force at ``index``; a snapshot taken there records it."""
        return self._raft.log.conf_at(index)

    @property
    def raft(self) -> Raft:
        """The protocol state, for tests and status displays. Do not mutate."""
        return self._raft

    def status(self) -> Status:
        r = self._raft
        progress: dict[int, PeerStatus] = {}
        if r.role is Role.LEADER:
            for peer, pr in r.tracker.progress.items():
                snap = (pr.snap.acked, pr.snap.size) if pr.snap is not None else None
                progress[peer] = PeerStatus(pr.match, pr.next, pr.state, pr.recent_active,
                                            len(pr.inflights), snap)
        return Status(r.id, r.term, r.vote, r.log.committed, r.log.applied, r.role, r.lead,
                      r.log.first_index(), r.log.last_index(), progress, r.rejoining,
                      r.tracker.voters, r.tracker.learners)
