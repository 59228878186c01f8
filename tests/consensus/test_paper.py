"""Unit tests of the core against the rules of the Raft paper (Ongaro & Ousterhout 2014),
section by section, after etcd-io/raft's raft_paper_test.go. Each test names the section
and quotes or paraphrases the rule it checks."""

from __future__ import annotations

import random

import pytest

from nborch.runtime.consensus.core import (AppendEntries, AppendEntriesResponse, Entry,
                                           HardState, Heartbeat, MemoryStorage, RaftConfig,
                                           RaftNode, Ready, RequestVote, RequestVoteResponse,
                                           Role)

from .sim import Cluster


class Peer:
    """One node with its storage, drained by a minimal driver."""

    def __init__(self, id: int = 1, peers=(1, 2, 3), log: tuple[int, ...] = (), term: int = 0,
                 vote: int = 0, commit: int = 0, seed: int = 0, **cfg) -> None:
        self.storage = MemoryStorage()
        self.storage.append([Entry(t, i + 1, b"e%d" % (i + 1)) for i, t in enumerate(log)])
        self.storage.set_hard_state(HardState(term, vote, commit))
        cfg.setdefault("pre_vote", False)
        cfg.setdefault("check_quorum", False)
        self.node = RaftNode(RaftConfig(id=id, peers=peers, **cfg), self.storage,
                             random.Random(seed or id))

    def ready(self) -> Ready:
        rd = self.node.ready()
        if rd.snapshot is not None:
            self.storage.apply_snapshot(rd.snapshot)
        self.storage.append(rd.entries)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
        self.node.advance(rd)
        return rd

    def msgs(self):
        return list(self.ready().messages) if self.node.has_ready() else []

    @property
    def raft(self):
        return self.node.raft

    def become_leader(self) -> None:
        """Win an election at the next term with votes from every peer."""
        self.node.campaign()
        term = self.node.term
        for p in self.raft.tracker.voters:
            if p != self.raft.id:
                self.node.step(RequestVoteResponse(dst=self.raft.id, src=p, term=term))
        assert self.node.role is Role.LEADER
        self.msgs()


def app(dst, src, term, prev_index=0, prev_term=0, commit=0, entries=()):
    return AppendEntries(dst=dst, src=src, term=term, prev_index=prev_index,
                         prev_term=prev_term, commit=commit, entries=tuple(entries))


# -- §5.1 Raft basics --------------------------------------------------------------------------

@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE, Role.LEADER])
def test_5_1_update_term_from_message(role) -> None:
    """§5.1: "If a server's current term is smaller than the other's, it updates its current
    term to the larger value. If a candidate or leader discovers that its term is out of
    date, it immediately reverts to follower state." """
    p = Peer(term=1)
    if role is Role.CANDIDATE:
        p.node.campaign()
    elif role is Role.LEADER:
        p.become_leader()
    p.node.step(app(1, 2, term=5))
    assert (p.node.role, p.node.term, p.node.leader) == (Role.FOLLOWER, 5, 2)


def test_5_1_reject_stale_term_message() -> None:
    """§5.1: "If a server receives a request with a stale term number, it rejects the
    request" — and the reply carries its term so the sender can update."""
    p = Peer(term=3, log=(1, 2))
    p.node.step(app(1, 2, term=2, prev_index=2, prev_term=2, entries=[Entry(2, 3, b"x")]))
    assert p.raft.log.last_index() == 2
    (resp,) = p.msgs()
    assert isinstance(resp, AppendEntriesResponse) and resp.term == 3


def test_5_1_state_is_persisted_before_replies() -> None:
    """§5.1/Figure 2: currentTerm and votedFor are "updated on stable storage before
    responding to RPCs": a vote's Ready carries the hard state to persist first."""
    p = Peer(id=2)
    p.node.step(RequestVote(dst=2, src=1, term=1))
    rd = p.node.ready()
    assert rd.hard_state == HardState(1, 1, 0) and rd.must_sync
    assert [type(m) for m in rd.messages] == [RequestVoteResponse]


# -- §5.2 Leader election ----------------------------------------------------------------------

def test_5_2_start_as_follower() -> None:
    """§5.2: "When servers start up, they begin as followers." """
    assert Peer().node.role is Role.FOLLOWER


def test_5_2_leader_sends_heartbeats() -> None:
    """§5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log
    entries) to all followers in order to maintain their authority." """
    p = Peer(heartbeat_ticks=2)
    p.become_leader()
    p.node.tick()
    assert p.msgs() == []
    p.node.tick()
    beats = p.msgs()
    assert sorted(m.dst for m in beats) == [2, 3]
    assert all(isinstance(m, Heartbeat) and m.term == 1 for m in beats)


@pytest.mark.parametrize("start_as_candidate", [False, True])
def test_5_2_election_timeout_starts_an_election(start_as_candidate: bool) -> None:
    """§5.2: "If a follower receives no communication over a period of time called the
    election timeout ... it increments its current term and transitions to candidate
    state. It then votes for itself and issues RequestVote RPCs in parallel"; a candidate
    that times out starts a new election."""
    p = Peer(term=1)
    if start_as_candidate:
        p.node.campaign()
        p.msgs()
    term = p.node.term
    for _ in range(2 * p.raft.config.election_ticks):
        p.node.tick()
    assert p.node.role is Role.CANDIDATE and p.node.term == term + 1
    assert p.raft.vote == 1
    votes = p.msgs()
    assert sorted(m.dst for m in votes) == [2, 3]
    assert all(isinstance(m, RequestVote) and m.term == term + 1 for m in votes)


@pytest.mark.parametrize("size,votes,role", [
    (1, {}, Role.LEADER),
    (3, {2: True, 3: True}, Role.LEADER),
    (3, {2: True}, Role.LEADER),
    (5, {2: True, 3: True, 4: True, 5: True}, Role.LEADER),
    (5, {2: True, 3: True}, Role.LEADER),
    (3, {2: False, 3: False}, Role.FOLLOWER),
    (5, {2: False, 3: False, 4: False}, Role.FOLLOWER),
    (3, {}, Role.CANDIDATE),
    (5, {2: True}, Role.CANDIDATE),
    (5, {2: False, 3: False}, Role.CANDIDATE),
])
def test_5_2_candidate_wins_with_a_majority(size, votes, role) -> None:
    """§5.2: "A candidate wins an election if it receives votes from a majority of the
    servers in the full cluster for the same term"; it returns to follower once a
    majority refused."""
    p = Peer(peers=tuple(range(1, size + 1)))
    p.node.campaign()
    for voter, granted in votes.items():
        p.node.step(RequestVoteResponse(dst=1, src=voter, term=1, reject=not granted))
    assert p.node.role is role
    assert p.node.term == 1


@pytest.mark.parametrize("vote,candidate,granted", [
    (0, 2, True), (0, 3, True), (2, 2, True), (3, 3, True), (2, 3, False), (3, 2, False)])
def test_5_2_one_vote_per_term(vote, candidate, granted) -> None:
    """§5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis." """
    p = Peer(term=1, vote=vote)
    p.node.step(RequestVote(dst=1, src=candidate, term=1))
    (resp,) = p.msgs()
    assert resp.reject is (not granted)
    assert p.raft.vote == (candidate if granted else vote)


def test_5_2_candidate_falls_back_on_leader_of_its_term() -> None:
    """§5.2: "If the leader's term ... is at least as large as the candidate's current
    term, then the candidate recognizes the leader as legitimate and returns to follower
    state." """
    p = Peer()
    p.node.campaign()
    p.node.step(app(1, 2, term=1))
    assert (p.node.role, p.node.leader) == (Role.FOLLOWER, 2)


def test_5_2_election_timeouts_are_randomized() -> None:
    """§5.2: "election timeouts are chosen randomly from a fixed interval" — here
    [election_ticks, 2 * election_ticks), freshly drawn on every reset."""
    seen = set()
    for seed in range(40):
        p = Peer(seed=seed + 1, election_ticks=10)
        for _ in range(3):
            t = p.raft.randomized_election_timeout
            assert 10 <= t < 20
            seen.add(t)
            p.node.campaign()
    assert len(seen) > 5


# -- §5.3 Log replication ----------------------------------------------------------------------

def test_5_3_leader_appends_and_replicates_a_proposal() -> None:
    """§5.3: "The leader appends the command to its log as a new entry, then issues
    AppendEntries RPCs in parallel to each of the other servers." """
    p = Peer()
    p.become_leader()
    for peer in (2, 3):  # followers acknowledge the no-op
        p.node.step(AppendEntriesResponse(dst=1, src=peer, term=1, index=1))
    p.msgs()
    eid = p.node.propose(b"cmd")
    rd = p.ready()
    assert rd.entries == (Entry(1, 2, b"cmd"),) and (eid.term, eid.index) == (1, 2)
    assert sorted(m.dst for m in rd.messages) == [2, 3]
    for m in rd.messages:
        assert (m.prev_index, m.prev_term, m.commit, m.entries) == (1, 1, 1, rd.entries)


@pytest.mark.parametrize("size,acks,committed", [
    (1, [], True), (3, [], False), (3, [2], True), (3, [2, 3], True),
    (5, [], False), (5, [2], False), (5, [2, 3], True), (5, [2, 3, 4, 5], True)])
def test_5_3_entry_commits_once_on_a_majority(size, acks, committed) -> None:
    """§5.3: "A log entry is committed once the leader that created the entry has
    replicated it on a majority of the servers." """
    p = Peer(peers=tuple(range(1, size + 1)))
    p.become_leader()
    p.ready() if p.node.has_ready() else None
    for peer in acks:
        p.node.step(AppendEntriesResponse(dst=1, src=peer, term=1, index=1))
    while p.node.has_ready():
        p.ready()
    assert (p.raft.log.committed == 1) is committed


def test_5_3_commit_covers_preceding_entries_and_reaches_followers() -> None:
    """§5.3: committing an entry "also commits all preceding entries in the leader's log";
    "the leader ... includes [the commit index] in future AppendEntries RPCs"."""
    p = Peer(log=(1, 1), term=1)
    p.become_leader()  # no-op at index 3, term 2
    p.node.step(AppendEntriesResponse(dst=1, src=2, term=2, index=3))
    rd = p.ready()
    assert [e.index for e in rd.committed_entries] == [1, 2, 3]
    assert all(m.commit == 3 for m in rd.messages if isinstance(m, AppendEntries))


def test_5_3_follower_applies_up_to_the_leaders_commit() -> None:
    """§5.3: "Once a follower learns that a log entry is committed, it applies the entry
    to its local state machine (in log order)." """
    p = Peer(id=2)
    ents = [Entry(1, 1, b"a"), Entry(1, 2, b"b"), Entry(1, 3, b"c")]
    p.node.step(app(2, 1, term=1, commit=2, entries=ents))
    rd = p.ready()
    assert rd.committed_entries == tuple(ents[:2])


@pytest.mark.parametrize("prev_term,prev_index,accepted", [
    (0, 0, True), (1, 1, True), (2, 2, True), (1, 2, False), (2, 3, False), (3, 2, False)])
def test_5_3_consistency_check(prev_term, prev_index, accepted) -> None:
    """§5.3: "If the follower does not find an entry in its log with the same index and
    term [as prevLogIndex/prevLogTerm], then it refuses the new entries." """
    p = Peer(id=2, log=(1, 2), term=2)
    p.node.step(app(2, 1, term=2, prev_index=prev_index, prev_term=prev_term))
    (resp,) = p.msgs()
    assert resp.reject is (not accepted)


@pytest.mark.parametrize("prev_index,prev_term,new,expected", [
    (2, 2, [(3, 3)], (1, 2, 3)),                  # append after the match
    (1, 1, [(2, 3), (3, 4)], (1, 3, 4)),          # conflict at 2: truncate, replace
    (0, 0, [(1, 1)], (1, 2)),                     # already present: keep the suffix
    (0, 0, [(1, 1), (2, 2), (3, 3), (4, 3)], (1, 2, 3, 3)),
])
def test_5_3_follower_overwrites_conflicting_entries(prev_index, prev_term, new, expected):
    """§5.3: "If an existing entry conflicts with a new one (same index but different
    terms), delete the existing entry and all that follow it"; entries already present
    are kept (a stale AppendEntries must not truncate the log)."""
    p = Peer(id=2, log=(1, 2), term=3)
    entries = [Entry(t, i, b"n") for i, t in new]
    p.node.step(app(2, 1, term=4, prev_index=prev_index, prev_term=prev_term,
                    entries=entries))
    p.ready()
    log = p.raft.log
    assert tuple(log.term(i) for i in range(1, log.last_index() + 1)) == expected


FIGURE_7_LEADER = (1, 1, 1, 4, 4, 5, 5, 6, 6, 6)
FIGURE_7_FOLLOWERS = {
    "a": (1, 1, 1, 4, 4, 5, 5, 6, 6),
    "b": (1, 1, 1, 4),
    "c": (1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6),
    "d": (1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7),
    "e": (1, 1, 1, 4, 4, 4, 4),
    "f": (1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3),
}


@pytest.mark.parametrize("case", sorted(FIGURE_7_FOLLOWERS))
def test_5_3_leader_brings_follower_logs_into_agreement(case: str) -> None:
    """§5.3, Figure 7: whatever a follower's log (missing entries, extra uncommitted
    entries, or both), the new leader (term 8) makes it identical to its own."""
    cluster = Cluster(seed=f"fig7-{case}", codec=True)
    cluster.add_nodes(2, pre_vote=False, check_quorum=False)
    for i, terms in ((1, FIGURE_7_LEADER), (2, FIGURE_7_FOLLOWERS[case])):
        sn = cluster.nodes[i]
        sn.storage.append([Entry(t, k + 1, b"%d/%d" % (t, k + 1)) for k, t in enumerate(terms)])
        sn.storage.set_hard_state(HardState(term=7, vote=0, commit=0))
        cluster.crash(i)
        cluster.restart(i)
    leader = cluster.nodes[1].node
    leader.campaign()  # term 8; 2 grants only if 1's log is as up-to-date (not for c, d)
    cluster.drain()
    while cluster.queue:
        cluster.now += 1
        cluster.deliver_due()
        cluster.drain()
    if case in ("c", "d"):
        # 2's log is more up-to-date than the leader's: it refuses its vote (§5.4.1).
        assert leader.role is not Role.LEADER
        return
    assert leader.role is Role.LEADER
    expected = FIGURE_7_LEADER + (8,)
    for i in (1, 2):
        log = cluster.nodes[i].node.raft.log
        got = tuple(log.term(k) for k in range(1, log.last_index() + 1))
        assert got == expected, (case, i, got)


# -- §5.4 Safety -------------------------------------------------------------------------------

@pytest.mark.parametrize("log,cand_last_term,cand_last_index,granted", [
    ((1, 1), 1, 2, True), ((1, 1), 1, 3, True), ((1, 1), 1, 1, False),
    ((1, 1), 2, 1, True), ((1, 2), 1, 5, False), ((1, 2), 2, 1, False),
    ((1, 2), 2, 2, True), ((), 1, 1, True), ((1,), 0, 0, False)])
def test_5_4_1_vote_only_for_up_to_date_logs(log, cand_last_term, cand_last_index, granted):
    """§5.4.1: "the voter denies its vote if its own log is more up-to-date than that of
    the candidate": later last term wins; with equal last terms, the longer log."""
    p = Peer(id=1, log=log, term=2)
    p.node.step(RequestVote(dst=1, src=2, term=3, last_index=cand_last_index,
                            last_term=cand_last_term))
    (resp,) = p.msgs()
    assert resp.reject is (not granted)


def test_5_4_2_leader_only_commits_entries_of_its_term_by_counting() -> None:
    """§5.4.2: "Raft never commits log entries from previous terms by counting replicas.
    Only log entries from the leader's current term are committed by counting."
    A majority holding the term-1 entry is not enough; the term-3 no-op on a majority
    commits both."""
    p = Peer(log=(1, 1), term=2)
    p.become_leader()  # term 3; no-op at index 3
    p.node.step(AppendEntriesResponse(dst=1, src=2, term=3, index=2))
    while p.node.has_ready():
        p.ready()
    assert p.raft.log.committed == 0
    p.node.step(AppendEntriesResponse(dst=1, src=2, term=3, index=3))
    rd = p.ready()
    assert p.raft.log.committed == 3
    assert [e.index for e in rd.committed_entries] == [1, 2, 3]


def test_5_4_2_new_leader_appends_a_no_op_of_its_term() -> None:
    """§5.4.2 / §8: to learn which entries are committed, a new leader commits an entry
    of its own term — a blank no-op entry at the start of its term."""
    p = Peer(log=(1, 1), term=1)
    p.node.campaign()
    p.node.step(RequestVoteResponse(dst=1, src=2, term=2))
    rd = p.ready()
    assert rd.entries == (Entry(2, 3, b""),)
