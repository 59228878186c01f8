"""Membership changes in the core: what a leader refuses, and how a log's membership is read."""

from __future__ import annotations

import pytest

from nborch.runtime.consensus.core import (AppendEntries, AppendEntriesResponse, ConfChange,
                                           ConfChangeError, ConfOp, ConfState, Entry,
                                           EntryKind, MemoryStorage, RaftConfig, RaftError,
                                           RaftNode, Role)

from .test_paper import Peer


@pytest.mark.parametrize("op, node, message", [
    (ConfOp.ADD_LEARNER, 2, "already a member"),
    (ConfOp.ADD_LEARNER, 4, "already a member"),
    (ConfOp.PROMOTE, 3, "not a learner"),
    (ConfOp.REMOVE, 9, "not a member"),
])
def test_a_change_that_does_not_apply_is_refused_by_name(op, node, message) -> None:
    conf = ConfState((1, 2, 3), (4,))
    with pytest.raises(ConfChangeError, match=message):
        conf.apply(ConfChange(op, node))


def test_the_last_voter_cannot_be_removed_but_a_learner_can() -> None:
    assert ConfState((1,), (2,)).apply(ConfChange(ConfOp.REMOVE, 2)) == ConfState((1,))
    with pytest.raises(ConfChangeError, match="last voter"):
        ConfState((1,), (2,)).apply(ConfChange(ConfOp.REMOVE, 1))


def test_a_change_round_trips_with_its_context() -> None:
    change = ConfChange(ConfOp.ADD_LEARNER, 7, b"127.0.0.1:4242")
    assert ConfChange.decode(change.encode()) == change
    with pytest.raises(ConfChangeError, match="truncated"):
        ConfChange.decode(b"\x01")
    with pytest.raises(ConfChangeError, match="node 0"):
        ConfChange.decode(ConfChange(ConfOp.REMOVE, 1).encode()[:1] + bytes(8))


def _leader_of_three() -> Peer:
    p = Peer(id=1, peers=(1, 2, 3))
    p.become_leader()
    return p


def test_a_new_leader_changes_nothing_before_an_entry_of_its_term_commits() -> None:
    p = _leader_of_three()
    with pytest.raises(ConfChangeError, match="has not committed an entry of term 1"):
        p.node.propose_conf_change(ConfChange(ConfOp.ADD_LEARNER, 4))
    p.msgs()
    for peer in (2, 3):
        p.node.step(AppendEntriesResponse(dst=1, src=peer, term=1, index=1))
    p.node.propose_conf_change(ConfChange(ConfOp.ADD_LEARNER, 4))
    assert p.node.conf_state() == ConfState((1, 2, 3), (4,))  # in force once appended


def test_a_learner_is_promoted_only_once_it_holds_the_committed_log() -> None:
    p = _leader_of_three()
    p.msgs()
    for peer in (2, 3):
        p.node.step(AppendEntriesResponse(dst=1, src=peer, term=1, index=1))
    p.node.propose_conf_change(ConfChange(ConfOp.ADD_LEARNER, 4))
    p.msgs()
    for peer in (2, 3):
        p.node.step(AppendEntriesResponse(dst=1, src=peer, term=1, index=2))
    with pytest.raises(ConfChangeError, match="learner 4 holds the log up to 0, the group has "
                                              "committed 2"):
        p.node.propose_conf_change(ConfChange(ConfOp.PROMOTE, 4))
    p.node.step(AppendEntriesResponse(dst=1, src=4, term=1, index=2))
    p.node.propose_conf_change(ConfChange(ConfOp.PROMOTE, 4))
    assert p.node.conf_state() == ConfState((1, 2, 3, 4))


def test_a_learner_never_campaigns_and_a_voter_list_without_it_is_refused() -> None:
    node = RaftNode(RaftConfig(id=4, peers=(1, 2, 3), learners=(4,), pre_vote=False),
                    MemoryStorage())
    for _ in range(100):
        node.tick()
    assert node.role is Role.FOLLOWER and not node.has_ready()
    with pytest.raises(ValueError, match="not among the peers"):
        RaftConfig(id=5, peers=(1, 2, 3), learners=(4,))
    with pytest.raises(ValueError, match="distinct"):
        RaftConfig(id=4, peers=(1, 4), learners=(4,))


def test_the_log_remembers_the_membership_at_each_index_and_forgets_overwritten_changes():
    p = Peer(id=2, peers=(1, 2, 3))
    add = Entry(1, 2, ConfChange(ConfOp.ADD_LEARNER, 4).encode(), EntryKind.CONF_CHANGE)
    p.node.step(AppendEntries(dst=2, src=1, term=1, prev_index=0, prev_term=0, commit=0,
                              entries=(Entry(1, 1), add)))
    assert p.node.conf_state() == ConfState((1, 2, 3), (4,))
    assert p.node.conf_at(1) == ConfState((1, 2, 3))
    # A leader of term 2 never had the change: its entry at 2 overwrites it.
    p.node.step(AppendEntries(dst=2, src=3, term=2, prev_index=1, prev_term=1, commit=0,
                              entries=(Entry(2, 2, b"x"),)))
    assert p.node.conf_state() == ConfState((1, 2, 3))


def test_a_stored_membership_change_that_cannot_be_read_stops_the_start() -> None:
    storage = MemoryStorage()
    storage.append([Entry(1, 1, b"\x09" + bytes(8), EntryKind.CONF_CHANGE)])
    with pytest.raises(RaftError, match="membership change at 1/1: unknown membership change 9"):
        RaftNode(RaftConfig(id=1, peers=(1,)), storage)
