"""A node that lost its log rejoins empty without endangering committed entries.

The rule (``RaftConfig.rejoin_commit``): until a leader has caught it up, it grants no vote and
never campaigns; a leader that may still count its lost acknowledgements is told to forget
them (never deposed: the rebuilt node changes no one's term).
"""

from __future__ import annotations

import dataclasses

import pytest

from nborch.runtime.consensus.core import HardState, MemoryStorage, Role
from nborch.runtime.consensus.core.messages import AppendEntriesResponse

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


def test_a_leader_counting_the_lost_acknowledgements_forgets_them_and_keeps_leading():
    """Leader 1 stays up and still believes node 3 holds entries 1..6: node 3 tells it that
    those acknowledgements are void, and leader 1 rebuilds it from nothing in the same term
    (no crash on a heartbeat that names a commit past node 3's empty log, no election)."""
    c = committed_on_1_and_3()
    c.heal()
    assert c.run_until(lambda: c.nodes[2].app.values == VALUES, 500)
    term = c.nodes[1].node.term
    lose_the_log(c, 3, rule=True)
    assert c.run_until(lambda: not c.nodes[3].node.rejoining
                       and c.nodes[3].app.values == VALUES, 2000)
    assert c.leader() == 1 and max_term(c) == term


# -- under a steady write load, the rebuilt node disturbs nobody ---------------------------

def max_term(c: Cluster) -> int:
    return max(sn.node.term for sn in c.live())


def loaded(c: Cluster, ticks: int, until=None) -> list[int]:
    """Run ``ticks`` (or until ``until()``) with a write on the leader every tick and a
    compaction every 10 (so a rebuilt node needs a snapshot and then the log); returns the
    terms the leader had, in order, without repeats."""
    terms: list[int] = []
    for _ in range(ticks):
        if until is not None and until():
            break
        lead = c.leader()
        if lead is not None:
            c.nodes[lead].node.propose(b"w%d" % c.now)
            if not terms or terms[-1] != c.nodes[lead].node.term:
                terms.append(c.nodes[lead].node.term)
        c.step_time()
        if c.now % 10 == 0:
            for i in c.nodes:
                if c.nodes[i].alive:
                    c.compact(i, keep=2)
    return terms


def caught_up(c: Cluster, i: int):
    return lambda: not c.nodes[i].node.rejoining


@pytest.mark.parametrize("n,delay", [(3, 0), (3, 2), (5, 2)])
def test_a_node_rebuilt_under_load_causes_no_election(n: int, delay: int):
    """Leader 1 takes a write every tick while node 3 loses its log and is rebuilt: leader 1
    keeps its term throughout, and node 3 ends with every value."""
    c = Cluster(seed=f"load{n}/{delay}")
    c.add_nodes(n)
    c.nodes[1].node.campaign()
    assert c.run_until(lambda: c.leader() == 1, 200)
    loaded(c, 100)
    c.max_delay = delay
    term = max_term(c)
    lose_the_log(c, 3, rule=True)
    terms = loaded(c, 2000, until=caught_up(c, 3))
    assert not c.nodes[3].node.rejoining
    assert terms == [term] and max_term(c) == term, f"elections while node 3 rejoined: {terms}"
    loaded(c, 50)
    c.max_delay = 0
    assert c.run_until(lambda: len({tuple(sn.app.values) for sn in c.nodes.values()}) == 1, 200)
    assert max_term(c) == term


def test_after_a_restart_of_the_group_the_rebuilt_node_causes_no_second_election():
    """The whole group restarts (node 3 on an empty log, as in a redeploy): the first leader
    elected is not deposed while it rebuilds node 3 under load."""
    c = Cluster(seed="restart")
    c.add_nodes(3)
    c.nodes[1].node.campaign()
    assert c.run_until(lambda: c.leader() == 1, 200)
    loaded(c, 100)
    c.crash(1)
    c.crash(2)
    lose_the_log(c, 3, rule=True)
    c.restart(1)
    c.restart(2)
    assert c.run_until(lambda: c.leader() is not None, 500)
    term = max_term(c)
    terms = loaded(c, 2000, until=caught_up(c, 3))
    assert not c.nodes[3].node.rejoining
    assert terms == [term] and max_term(c) == term, f"elections while node 3 rejoined: {terms}"


def test_an_acknowledgement_sent_before_the_loss_and_delivered_after_it_is_undone():
    """An acknowledgement node 3 sent before it lost its log arrives late, after leader 1
    has already forgotten node 3's old progress: leader 1 believes node 3 holds entries
    again; node 3 says otherwise once more, and is rebuilt without an election."""
    c = committed_on_1_and_3()
    c.heal()
    assert c.run_until(lambda: c.nodes[2].app.values == VALUES, 500)
    term = c.nodes[1].node.term
    last = c.nodes[3].node.raft.log.last_index()
    stale = AppendEntriesResponse(dst=1, src=3, term=term, index=last)
    lose_the_log(c, 3, rule=True)
    assert c.run_until(lambda: c.nodes[1].node.raft.tracker.progress[3].match == 0, 50)
    c.nodes[1].node.step(stale)
    assert c.nodes[1].node.raft.tracker.progress[3].match == last
    assert c.run_until(lambda: not c.nodes[3].node.rejoining
                       and c.nodes[3].app.values == VALUES, 2000)
    assert c.leader() == 1 and max_term(c) == term


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
