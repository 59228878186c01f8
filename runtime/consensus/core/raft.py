"""The Raft protocol as a deterministic state machine: no I/O, no clock, no threads.

Input arrives as ``tick()`` (time), ``step(message)`` (the network), ``propose``/``read_index``
/``campaign`` (the application). Output accumulates in ``msgs`` (to send), ``read_states`` and
the log's unstable part / commit index, which :class:`~.node.RaftNode` packs into a Ready.

Sections cited are from the Raft paper (Ongaro & Ousterhout, 2014) unless marked "thesis"
(Ongaro's dissertation, 2014).
"""

from __future__ import annotations

import random

from .conf import ConfChange, ConfChangeError, ConfOp, ConfState
from .config import RaftConfig
from .errors import CompactedError, NotLeaderError, ProposalDroppedError, RaftError
from .log import RaftLog
from .memory import StorageView
from .messages import (AppendEntries, AppendEntriesResponse, Heartbeat, HeartbeatResponse,
                       InstallSnapshot, InstallSnapshotResponse, Message, ReadIndexRequest,
                       ReadIndexResponse, RequestVote, RequestVoteResponse)
from .progress import Progress, ProgressState, ProgressTracker, SnapshotSend, VoteResult
from .read_only import ReadOnly
from .snapshot_transfer import SnapshotReceiver
from .types import (NONE, Entry, EntryId, EntryKind, HardState, ReadState, Role, Snapshot,
                    SoftState, checksum)

_LEADER_MESSAGES = (AppendEntries, Heartbeat, InstallSnapshot)


class Raft:
    """One node's protocol state. Not thread-safe; one driver owns it."""

    def __init__(self, config: RaftConfig, storage: StorageView, rng: random.Random) -> None:
        self.id = config.id
        self.config = config
        self.rng = rng
        self.log = RaftLog(storage, config.max_apply_bytes,
                           ConfState(config.peers, config.learners))
        hs = storage.initial_state()
        self.term = hs.term
        self.vote = hs.vote
        last = self.log.last_index()
        # The application restores the snapshot on start, so it has applied at least that
        # far; a snapshot is committed even if the stored commit index lags behind it.
        floor = max(storage.snapshot().meta.index, self.log.first_index() - 1)
        commit = max(hs.commit, floor)
        if commit > last:
            raise RaftError(f"stored commit {hs.commit} is past the last index {last}")
        self.log.commit_to(commit)
        applied = max(config.applied, floor)
        if applied > self.log.committed:
            raise RaftError(f"applied {applied} is past the commit index {self.log.committed}")
        self.log.applied_to(applied)

        # A node that lost its log rejoins (see "rejoining after a lost log" below).
        self.rejoining = config.rejoin_commit is not None
        self._accepted_from_leader = False
        self._lead_match = 0  # our log matches the current leader's up to here (this term)

        self._conf = self.log.conf_state()  # what the tracker was last set from
        self.tracker = ProgressTracker(self._conf.voters, self._conf.learners)
        self.read_only = ReadOnly()
        self.pending_reads: list[tuple[int, bytes]] = []  # waiting for a current-term commit
        self.snap_receiver = SnapshotReceiver()
        self._snap_checksum: tuple[int, int] = (-1, 0)  # (snapshot index, crc) cache
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.role = Role.FOLLOWER
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_ticks
        self.become_follower(self.term, NONE)

    # -- state views -----------------------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(self.role, self.lead)

    # -- role changes (§5.2) ---------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self._lead_match = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        e = self.config.election_ticks
        self.randomized_election_timeout = e + self.rng.randrange(e)
        self.tracker.reset_votes()
        last = self.log.last_index()
        self.tracker.progress = {}
        for peer in set(self.tracker.members) | {self.id}:
            self.tracker.progress[peer] = self._new_progress(peer, last)
        self.read_only = ReadOnly()
        self.pending_reads = []

    def _new_progress(self, peer: int, last: int) -> Progress:
        pr = Progress(last + 1, self.config.max_inflight, self.config.max_inflight_bytes)
        if peer == self.id:
            pr.match = self.log.last_stable_index()
        return pr

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.lead = lead

    def become_pre_candidate(self) -> None:
        # Thesis §9.6: a pre-candidate changes neither its term nor its vote.
        if self.role is Role.LEADER:
            raise RaftError("invalid transition leader -> pre-candidate")
        self.role = Role.PRE_CANDIDATE
        self.tracker.reset_votes()
        self.lead = NONE

    def become_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise RaftError("invalid transition leader -> candidate")
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def become_leader(self) -> None:
        if self.role is Role.FOLLOWER:
            raise RaftError("invalid transition follower -> leader")
        self._reset(self.term)
        self.role = Role.LEADER
        self.lead = self.id
        me = self.tracker.progress[self.id]
        me.become_replicate()
        me.recent_active = True
        # §5.4.2 / §8: an entry of the new term lets earlier entries commit by counting.
        self.log.append([Entry(self.term, self.log.last_index() + 1, b"")])

    @property
    def promotable(self) -> bool:
        """Whether this node may campaign: a voter, or a voter removed by a change that has
        not committed yet. That one may hold the only copy of the change, and others' votes
        need a log as complete as its own: it must be able to lead, outside its
        configuration, until the change commits (thesis §4.2.2). Learners never campaign."""
        if self.id in self.tracker.voters:
            return True
        index = self.log.conf_index()
        return index > self.log.committed and self.id in self.log.conf_at(index - 1).voters

    def campaign(self) -> None:
        """Start an election now (the tick does this on election timeout)."""
        if self.role is Role.LEADER or self.rejoining or not self.promotable:
            return
        self._campaign(pre_vote=self.config.pre_vote)

    def _campaign(self, pre_vote: bool) -> None:
        if pre_vote:
            self.become_pre_candidate()
            term = self.term + 1
        else:
            self.become_candidate()
            term = self.term
        self.tracker.record_vote(self.id, True)
        if self.tracker.tally_votes()[2] is VoteResult.WON:  # a group of one
            if pre_vote:
                self._campaign(pre_vote=False)
            else:
                self.become_leader()
            return
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for peer in self.tracker.voters:
            if peer != self.id:
                self._send(RequestVote(dst=peer, src=self.id, term=term, last_index=last_index,
                                       last_term=last_term, pre_vote=pre_vote))

    # -- time --------------------------------------------------------------------------------

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_heartbeat()
        else:
            self.election_elapsed += 1
            # A node that may not campaign keeps counting: the lease it grants its leader
            # (votes ignored while it hears from one) must run out when the leader goes quiet.
            if self.promotable and self.election_elapsed >= self.randomized_election_timeout:
                self.election_elapsed = 0
                self.campaign()

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum:
                if not self.tracker.quorum_active(self.id):
                    # A leader cut off from a quorum steps down (thesis §6.2).
                    self.become_follower(self.term, NONE)
                    return
                for peer, pr in self.tracker.progress.items():
                    if peer != self.id:
                        pr.recent_active = False
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(self.read_only.last_pending_context())
            for peer, pr in self.tracker.progress.items():
                if pr.snap is not None and pr.recent_active and pr.snap.on_heartbeat():
                    pr.snap.rewind(pr.snap.acked)
                    self._send_snapshot_chunks(peer, pr)

    # -- application requests ----------------------------------------------------------------

    def propose(self, data: bytes) -> EntryId:
        return self.propose_many([data])[0]

    def propose_many(self, datas: list[bytes]) -> list[EntryId]:
        """Append every proposal, then broadcast once: a batch travels in one AppendEntries
        per follower (as many as max_append_entries allows) instead of one per proposal."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.lead, self.term)
        if not all(datas):
            raise ProposalDroppedError("empty proposals are reserved for leader no-ops")
        first = self.log.last_index() + 1
        entries = [Entry(self.term, first + n, bytes(data)) for n, data in enumerate(datas)]
        if not entries:
            return []
        self._append_and_send(entries)
        return [EntryId(e.term, e.index) for e in entries]

    def _append_and_send(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        self._sync_conf()
        if self.role is not Role.LEADER:
            return
        for peer in self.tracker.members:
            if peer != self.id:
                self._send_append(peer)
                while self._maybe_send_append(peer, send_if_empty=False):
                    pass  # a batch past max_append_entries fills the pipeline at once

    def propose_conf_change(self, change: ConfChange) -> EntryId:
        """Append one membership change (see ``conf``); ConfChangeError when it does not apply
        or another change is still in progress."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.lead, self.term)
        pending = self.log.conf_index()
        if pending > self.log.committed:
            raise ConfChangeError(f"the membership change at index {pending} has not committed "
                                  "yet: one change at a time")
        if not self._committed_in_current_term():
            raise ConfChangeError(f"leader {self.id} has not committed an entry of term "
                                  f"{self.term} yet; retry once it has")
        self.log.conf_state().apply(change)  # raises when it does not apply
        if change.op is ConfOp.PROMOTE:
            match = self.tracker.progress[change.node].match
            if match < self.log.committed:
                raise ConfChangeError(
                    f"learner {change.node} holds the log up to {match}, the group has "
                    f"committed {self.log.committed}: promote it once it has caught up")
        entry = Entry(self.term, self.log.last_index() + 1, change.encode(),
                      EntryKind.CONF_CHANGE)
        self._append_and_send([entry])
        return EntryId(entry.term, entry.index)

    def _sync_conf(self) -> None:
        """Adopt the latest membership in the log, if it changed (thesis §4.1: a node uses
        the latest configuration in its log, committed or not)."""
        conf = self.log.conf_state()
        if conf is self._conf:  # the log hands out the same object until a change
            return
        self._conf = conf
        tracker = self.tracker
        tracker.set_members(conf.voters, conf.learners)
        last = self.log.last_index()
        for peer in list(tracker.progress):
            if peer not in tracker.members and peer != self.id:
                del tracker.progress[peer]
        for peer in tracker.members:
            if peer not in tracker.progress:
                pr = tracker.progress[peer] = self._new_progress(peer, last)
                pr.recent_active = True  # a newcomer has had no chance to answer yet
        if self.role is Role.LEADER:
            self._commit_and_broadcast()  # a smaller quorum may commit at once

    def read_index(self, context: bytes) -> None:
        if self.role is Role.LEADER:
            self._leader_read_index(self.id, bytes(context))
        elif self.lead != NONE:
            self._send(ReadIndexRequest(dst=self.lead, src=self.id, term=self.term,
                                        context=bytes(context)))
        else:
            raise NotLeaderError(NONE, self.term)

    def report_unreachable(self, peer: int) -> None:
        """The driver failed to deliver to ``peer``: stop optimistic pipelining to it."""
        pr = self.tracker.progress.get(peer)
        if self.role is Role.LEADER and pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    # -- the network -------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        if m.src == self.id:
            return
        # A sender our log does not list is heard too (etcd does the same): a leader leads on
        # after the entry that removes it until it commits (thesis §4.2.2), and a node whose
        # log holds a change that never committed must still accept the leader that will
        # overwrite it. Votes count only among voters, a leader steps only the peers it
        # tracks, and the transport admits only the group's own replicas.
        if m.term > self.term:
            if isinstance(m, RequestVote):
                in_lease = (self.config.check_quorum and self.lead != NONE
                            and self.election_elapsed < self.config.election_ticks)
                if in_lease:
                    # Thesis §4.2.3 / §9.6: while we hear from a leader, ignore (pre)votes
                    # from servers that may just have been partitioned; do not bump the term.
                    return
            if isinstance(m, RequestVote) and m.pre_vote:
                pass  # never change our term for a PreVote
            elif isinstance(m, RequestVoteResponse) and m.pre_vote and not m.reject:
                pass  # a granted PreVote carries the term we will campaign at
            else:
                lead = m.src if isinstance(m, _LEADER_MESSAGES) else NONE
                self.become_follower(m.term, lead)
        elif m.term < self.term:
            if isinstance(m, _LEADER_MESSAGES):
                # §5.1: reply to a stale leader with our term so it steps down. (With PreVote
                # and CheckQuorum this reply is the only way our term can reach it.)
                self._send(AppendEntriesResponse(dst=m.src, src=self.id, term=self.term))
            elif isinstance(m, RequestVote) and m.pre_vote:
                self._send(RequestVoteResponse(dst=m.src, src=self.id, term=self.term,
                                               reject=True, pre_vote=True))
            return  # §5.1: a stale term's message is otherwise ignored

        if isinstance(m, RequestVote):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_vote_request(self, m: RequestVote) -> None:
        if self.rejoining and len(self.tracker.voters) > 2:
            # Our lost log may have held committed entries the candidate lacks: a vote now
            # could elect a leader without them. (In a group of two every commit needed the
            # other voter, so it holds them all: our vote is safe, and needed.)
            self._send(RequestVoteResponse(dst=m.src, src=self.id, term=self.term, reject=True,
                                           pre_vote=m.pre_vote))
            return
        # §5.2: one vote per term, first come first served; §5.4.1: only for an up-to-date log.
        can_vote = (self.vote == m.src
                    or (self.vote == NONE and self.lead == NONE)
                    or (m.pre_vote and m.term > self.term))
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            # Answer with the request's term: for a PreVote that is our term + 1, which the
            # pre-candidate would otherwise discard as stale.
            self._send(RequestVoteResponse(dst=m.src, src=self.id, term=m.term,
                                           pre_vote=m.pre_vote))
            if not m.pre_vote:
                self.election_elapsed = 0
                self.vote = m.src
        else:
            self._send(RequestVoteResponse(dst=m.src, src=self.id, term=self.term, reject=True,
                                           pre_vote=m.pre_vote))

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, _LEADER_MESSAGES):
            self.become_follower(m.term, m.src)  # §5.2: a leader of our term exists
            self._step_follower(m)
        elif isinstance(m, RequestVoteResponse):
            if m.pre_vote != (self.role is Role.PRE_CANDIDATE):
                return  # a late answer to the other kind of campaign
            self.tracker.record_vote(m.src, not m.reject)
            result = self.tracker.tally_votes()[2]
            if result is VoteResult.WON:
                if self.role is Role.PRE_CANDIDATE:
                    self._campaign(pre_vote=False)
                else:
                    self.become_leader()
                    self._bcast_append()
            elif result is VoteResult.LOST:
                self.become_follower(self.term, NONE)
        elif isinstance(m, ReadIndexResponse):
            self.read_states.append(ReadState(m.index, m.context))

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, _LEADER_MESSAGES):
            self.election_elapsed = 0
            self.lead = m.src
            if isinstance(m, AppendEntries):
                self._handle_append_entries(m)
            elif isinstance(m, Heartbeat):
                commit = m.commit
                if self.rejoining and commit > self._known_match():
                    # The leader's record of our log predates the loss (it never claims
                    # more than we acknowledged): tell it, and commit only what we share.
                    commit = self._known_match()
                    self._send(self._rejoin_reject(m.src, m.commit))
                self.log.commit_to(commit)
                self._send(HeartbeatResponse(dst=m.src, src=self.id, term=self.term,
                                             context=m.context))
            else:
                self._handle_snapshot_chunk(m)
            if self.rejoining:
                self._maybe_end_rejoin()
        elif isinstance(m, ReadIndexResponse):
            self.read_states.append(ReadState(m.index, m.context))

    # -- follower: replication (§5.3) and snapshots (§7) ------------------------------------

    def _handle_append_entries(self, m: AppendEntries) -> None:
        if m.prev_index < self.log.committed:
            self._send(AppendEntriesResponse(dst=m.src, src=self.id, term=self.term,
                                             index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
        if last_new is not None:
            self._sync_conf()
            self._accepted_from_leader = True
            self._lead_match = max(self._lead_match, last_new)
            self._send(AppendEntriesResponse(dst=m.src, src=self.id, term=self.term,
                                             index=last_new))
            return
        if self.rejoining:
            self._send(self._rejoin_reject(m.src, m.prev_index))
            return
        # Reject with a hint: the largest (index, term) we hold with term <= prev_term, so the
        # leader can skip a whole divergent term per round trip instead of one entry.
        hint = min(m.prev_index, self.log.last_index())
        hint, hint_term = self.log.find_conflict_by_term(hint, m.prev_term)
        self._send(AppendEntriesResponse(dst=m.src, src=self.id, term=self.term,
                                         index=m.prev_index, reject=True, reject_hint=hint,
                                         hint_term=hint_term))

    def _handle_snapshot_chunk(self, m: InstallSnapshot) -> None:
        if m.snap_index <= self.log.committed:
            self.snap_receiver.reset()
            self._send(AppendEntriesResponse(dst=m.src, src=self.id, term=self.term,
                                             index=self.log.committed))
            return
        result = self.snap_receiver.receive(m)
        if result is None:
            return
        if result.snapshot is None:
            self._send(InstallSnapshotResponse(dst=m.src, src=self.id, term=self.term,
                                               snap_index=m.snap_index,
                                               next_offset=result.next_offset,
                                               reject=result.reject))
            return
        index = self.log.last_index() if self.restore(result.snapshot) else self.log.committed
        self._sync_conf()
        self._accepted_from_leader = True
        self._lead_match = max(self._lead_match, index)
        self._send(AppendEntriesResponse(dst=m.src, src=self.id, term=self.term, index=index))

    # -- rejoining after a lost log -----------------------------------------------------------
    #
    # A node whose log was lost (quarantined as corrupt) restarts empty. What it acknowledged
    # before may have counted for commits, so until it holds those entries again:
    #
    # * it grants no vote or pre-vote (§5.4.1's guarantee rests on voters keeping what they
    #   acknowledged; a group of two excepted) and never campaigns;
    # * it changes no one's term: a leader that still counts its lost acknowledgements (its
    #   progress says we hold entries it will then never resend) is not deposed but told, by
    #   a rejection marked ``rejoining``, to forget them: every rejection it sends carries
    #   the mark, and so does its answer to a heartbeat whose commit index it cannot back.
    #   (Deposing leaders instead cost elections that, with this node refusing every vote,
    #   need all the others to agree, and repeat under load.) The mark's hint is an index
    #   our log surely shares with the leader: our commit index, or what this leader sent us
    #   this term. Lowering its record of our log is always safe for the leader; a late
    #   acknowledgement from before the loss only raises it back until the next heartbeat;
    # * it is caught up once it accepted an append or snapshot from a leader and its commit
    #   index reached ``rejoin_commit``, the highest index it may have acknowledged: commit
    #   indexes are always true (a heartbeat's is capped at what we share with the leader),
    #   so it then holds every committed entry it ever acknowledged.

    def _known_match(self) -> int:
        return max(self.log.committed, self._lead_match)

    def _rejoin_reject(self, to: int, index: int) -> AppendEntriesResponse:
        known = self._known_match()
        return AppendEntriesResponse(dst=to, src=self.id, term=self.term, index=max(index, known),
                                     reject=True, reject_hint=known, rejoining=True)

    def _maybe_end_rejoin(self) -> None:
        assert self.config.rejoin_commit is not None
        if self._accepted_from_leader and self.log.committed >= self.config.rejoin_commit:
            self.rejoining = False

    def restore(self, snap: Snapshot) -> bool:
        """§7: keep our log if it already holds the snapshot's last entry, else replace it."""
        if snap.meta.index <= self.log.committed:
            return False
        if self.log.match_term(snap.meta.index, snap.meta.term):
            self.log.commit_to(snap.meta.index)
            return False
        self.log.restore(snap)
        return True

    # -- leader ------------------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        pr = self.tracker.progress.get(m.src)
        if pr is None:
            return  # not a member (any more): nothing to track
        if isinstance(m, AppendEntriesResponse):
            pr.recent_active = True
            if m.reject:
                self._handle_append_reject(m, pr)
            else:
                self._handle_append_ack(m, pr)
        elif isinstance(m, HeartbeatResponse):
            pr.recent_active = True
            pr.paused = False
            if pr.match < self.log.last_index() or pr.state is ProgressState.PROBE:
                self._send_append(m.src)
            if (m.context and m.src in self.tracker.voters
                    and self.read_only.recv_ack(m.src, m.context) >= self.tracker.quorum):
                for req in self.read_only.advance(m.context):
                    self._answer_read(req.requester, req.index, req.context)
        elif isinstance(m, InstallSnapshotResponse):
            pr.recent_active = True
            st = pr.snap
            if pr.state is not ProgressState.SNAPSHOT or st is None or m.snap_index != st.index:
                return
            if m.reject:
                st.rewind(m.next_offset)
            else:
                st.acked = max(st.acked, m.next_offset)
            self._send_snapshot_chunks(m.src, pr)
        elif isinstance(m, ReadIndexRequest):
            self._leader_read_index(m.src, m.context)

    def _handle_append_reject(self, m: AppendEntriesResponse, pr: Progress) -> None:
        if m.rejoining and pr.match > m.reject_hint:
            # It lost its log (see "rejoining after a lost log"): forget what it acknowledged
            # before, and probe from what it surely holds. A snapshot on its way goes on.
            pr.match = m.reject_hint
            pr.sent_commit = min(pr.sent_commit, pr.match)
            if pr.state is not ProgressState.SNAPSHOT:
                pr.become_probe()
                self._send_append(m.src)
            return
        next_probe = m.reject_hint
        if m.hint_term > 0:
            # Skip every index where our term is above the follower's term at the hint: a
            # match there is impossible since terms only grow along a log.
            next_probe = self.log.find_conflict_by_term(m.reject_hint, m.hint_term)[0]
        if pr.maybe_decr_to(m.index, next_probe):
            if pr.state is ProgressState.REPLICATE:
                pr.become_probe()
            self._send_append(m.src)

    def _handle_append_ack(self, m: AppendEntriesResponse, pr: Progress) -> None:
        if not (pr.maybe_update(m.index)
                or (pr.match == m.index and pr.state is ProgressState.PROBE)):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT:
            if pr.match + 1 >= self.log.first_index():
                pr.become_probe()
                pr.become_replicate()
            elif pr.snap is None or pr.match >= pr.snap.index:
                # It installed the snapshot we sent, but we compacted past it meanwhile:
                # probing again starts a transfer of the current snapshot.
                pr.become_probe()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self._commit_and_broadcast():
            if self.role is not Role.LEADER:
                return  # it removed itself and stepped down
        elif pr.sent_commit < min(self.log.committed, pr.match):
            self._send_append(m.src)  # it may not know the commit index yet
        while self._maybe_send_append(m.src, send_if_empty=False):
            pass  # fill the pipeline

    def _commit_and_broadcast(self) -> bool:
        if not self._maybe_commit():
            return False
        self._bcast_append()
        if self.id not in self.tracker.voters and self.log.committed >= self.log.conf_index():
            # Thesis §4.2.2: a leader removed from the group leads until the change commits.
            self.become_follower(self.term, NONE)
        return True

    def _maybe_commit(self) -> bool:
        if not self.log.maybe_commit(self.tracker.committed_index(), self.term):
            return False
        if self.pending_reads and self._committed_in_current_term():
            pending, self.pending_reads = self.pending_reads, []
            for requester, context in pending:
                self._leader_read_index(requester, context)
        return True

    def _committed_in_current_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def on_persisted(self, index: int, term: int) -> None:
        """Entries up to (index, term) reached stable storage (called from advance)."""
        if not self.log.stable_to(index, term):
            return
        if self.role is Role.LEADER:
            # §10.2.1 (thesis): the leader counts itself only once its own write is durable.
            if self.tracker.progress[self.id].maybe_update(index):
                self._commit_and_broadcast()

    def _leader_read_index(self, requester: int, context: bytes) -> None:
        if self.id not in self.tracker.voters:
            # Removed, leading only until that commits: it cannot count itself in a quorum,
            # so the read is dropped (the requester times out and retries elsewhere).
            return
        if len(self.tracker.voters) == 1:
            self._answer_read(requester, self.log.committed, context)
            return
        if not self._committed_in_current_term():
            # Thesis §6.4 step 1: until an entry of its term commits, a new leader does not
            # know the latest commit index.
            self.pending_reads.append((requester, context))
            return
        if self.read_only.add_request(self.log.committed, requester, context):
            self.read_only.recv_ack(self.id, context)
            self._bcast_heartbeat(context)

    def _answer_read(self, requester: int, index: int, context: bytes) -> None:
        if requester == self.id:
            self.read_states.append(ReadState(index, context))
        else:
            self._send(ReadIndexResponse(dst=requester, src=self.id, term=self.term,
                                         index=index, context=context))

    # -- leader: sending ---------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def _bcast_append(self) -> None:
        for peer in self.tracker.members:
            if peer != self.id:
                self._send_append(peer)

    def _bcast_heartbeat(self, context: bytes) -> None:
        for peer in self.tracker.members:
            if peer != self.id:
                pr = self.tracker.progress[peer]
                # Never tell a follower to commit past what it is known to hold.
                commit = min(pr.match, self.log.committed)
                self._send(Heartbeat(dst=peer, src=self.id, term=self.term, commit=commit,
                                     context=context))
                pr.sent_commit = max(pr.sent_commit, commit)

    def _send_append(self, to: int) -> None:
        self._maybe_send_append(to, send_if_empty=True)

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self.tracker.progress[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self.log.term(prev_index)
        if prev_term is None:
            return self._maybe_send_snapshot(to, pr)  # the entries it needs are compacted
        ents: list[Entry] = []
        if pr.state is not ProgressState.REPLICATE or not pr.inflights.full():
            try:
                ents = self.log.entries(pr.next, self.config.max_append_bytes,
                                        self.config.max_append_entries)
            except CompactedError:
                return self._maybe_send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        commit = self.log.committed
        self._send(AppendEntries(dst=to, src=self.id, term=self.term, prev_index=prev_index,
                                 prev_term=prev_term, commit=commit, entries=tuple(ents)))
        pr.sent_entries(len(ents), sum(e.size for e in ents))
        pr.sent_commit = max(pr.sent_commit, min(commit, prev_index + len(ents)))
        return True

    def _maybe_send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # do not stream a snapshot at a peer that may be down
        snap = self.log.snapshot()
        if snap.is_empty:
            raise RaftError(f"peer {to} needs entries before {self.log.first_index()} "
                            "but there is no snapshot")
        pr.become_snapshot(SnapshotSend(snap, self._checksum_of(snap)))
        self._send_snapshot_chunks(to, pr)
        return True

    def _checksum_of(self, snap: Snapshot) -> int:
        if self._snap_checksum[0] != snap.meta.index:
            self._snap_checksum = (snap.meta.index, checksum(snap.data))
        return self._snap_checksum[1]

    def _send_snapshot_chunks(self, to: int, pr: Progress) -> None:
        # A transfer always finishes with the snapshot it started with, even if we compact
        # again meanwhile (restarting could starve a follower whenever snapshots take longer
        # to send than the compaction interval); the follower then needs at most one more.
        st = pr.snap
        assert st is not None
        size, chunk = st.size, self.config.snapshot_chunk_size
        window = chunk * self.config.max_inflight_snapshot_chunks
        meta = st.snapshot.meta
        while not st.done_sending and st.sent - st.acked < window:
            data = st.snapshot.data[st.sent:st.sent + chunk]
            self._send(InstallSnapshot(dst=to, src=self.id, term=self.term,
                                       snap_index=meta.index, snap_term=meta.term,
                                       voters=meta.voters, learners=meta.learners,
                                       offset=st.sent, total_size=size,
                                       checksum=st.checksum, data=data))
            st.sent += len(data)
            st.done_sending = st.sent >= size
