"""A node that lost its log rejoins empty without endangering committed entries.

The rule (``RaftConfig.rejoin_commit``): until a leader has caught it up, it grants no vote,
never campaigns, and fences leaders that may still count its lost acknowledgements.
"""

from __future__ import annotations

import dataclasses

import pytest

from nborch.runtime.consensus.core import HardState, MemoryStorage, Role

from .sim import Cluster, SafetyViolation

VALUES = [b"v%d" % i for i in range(5)]


def committed_on_1_and_3() -> Cluster:
    """Node 1 leads; node 2 is cut off while five values commit on nodes 1 and 3."""
    c = Cluster(seed="rejoin")
    c.add_nodes(3)
    c.nodes[1].node.campaign()
    assert c.run_until(lambda: c.leader() == 1, 200)
    c.isolate(2)
    for value in VALUES:
        c.nodes[1].node.propose(value)
    assert c.run_until(lambda: c.nodes[3].app.values == VALUES, 200)
    return c


def lose_the_log(c: Cluster, i: int, *, rule: bool) -> None:
    """Node ``i`` restarts on empty storage, as after its log was quarantined."""
    sn = c.nodes[i]
    old = sn.storage
    last = old.last_index()
    c.crash(i)
    sn.storage = MemoryStorage()
    hs = old.initial_state() if hasattr(old, "initial_state") else HardState()
    sn.storage.set_hard_state(HardState(hs.term, hs.vote, 0))  # the marker's term and vote
    sn.config = dataclasses.replace(sn.config, rejoin_commit=last if rule else None)
    c.restart(i)


def test_without_the_rule_an_empty_voter_elects_a_leader_that_lacks_committed_entries():
    """What the rule prevents: node 3 lost entries it helped commit; node 1 is down; node 2
    (which never had them) asks node 3 for its vote and wins — committed entries are gone."""
    c = committed_on_1_and_3()
    lose_the_log(c, 3, rule=False)
    c.crash(1)
    c.heal()
    with pytest.raises(SafetyViolation):
        c.run_until(lambda: c.leader() == 2, 2000)


def test_a_rejoining_node_refuses_the_unsafe_election_then_is_caught_up():
    c = committed_on_1_and_3()
    lose_the_log(c, 3, rule=True)
    c.crash(1)
    c.heal()
    assert not c.run_until(lambda: c.leader() is not None, 1000)  # no vote for node 2
    assert c.nodes[3].node.rejoining and c.nodes[3].node.role is Role.FOLLOWER
    c.restart(1)  # the node that holds the entries comes back and is elected
    assert c.run_until(lambda: not c.nodes[3].node.rejoining
                       and c.nodes[3].app.values == VALUES, 2000)
    c.nodes[c.leader()].node.propose(b"after")
    assert c.run_until(lambda: all(sn.app.values == VALUES + [b"after"]
                                   for sn in c.nodes.values()), 500)
    assert c.nodes[3].node.status().rejoining is False


def test_a_leader_counting_the_lost_acknowledgements_is_fenced():
    """Leader 1 stays up and still believes node 3 holds entries 1..6: node 3 makes it step
    down, and the next leader rebuilds node 3 from nothing (no crash on a heartbeat that
    names a commit past node 3's empty log)."""
    c = committed_on_1_and_3()
    c.heal()
    assert c.run_until(lambda: c.nodes[2].app.values == VALUES, 500)
    term = c.nodes[1].node.term
    lose_the_log(c, 3, rule=True)
    assert c.run_until(lambda: not c.nodes[3].node.rejoining
                       and c.nodes[3].app.values == VALUES, 2000)
    assert c.nodes[c.leader()].node.term > term + 1  # a new leader after the fence


def test_a_rejoining_node_never_campaigns():
    c = Cluster(seed="alone")
    c.add_nodes(3, rejoin_commit=0)
    assert not c.run_until(lambda: c.leader() is not None, 500)
    assert all(sn.node.term == 0 for sn in c.nodes.values())


def test_in_a_group_of_two_the_rejoining_node_votes_for_the_other():
    """Every commit of a two-node group needed both nodes, so the other node holds every
    committed entry: the rejoining node's vote is safe, and without it nobody is elected."""
    c = Cluster(seed="pair")
    c.add_nodes(2)
    c.nodes[1].node.campaign()
    assert c.run_until(lambda: c.leader() == 1, 200)
    for value in VALUES:
        c.nodes[1].node.propose(value)
    assert c.run_until(lambda: c.nodes[2].app.values == VALUES, 200)
    c.crash(1)
    lose_the_log(c, 2, rule=True)
    c.restart(1)
    assert c.run_until(lambda: c.leader() == 1 and not c.nodes[2].node.rejoining
                       and c.nodes[2].app.values == VALUES, 2000)
