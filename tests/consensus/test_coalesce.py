"""A commit-only append goes only when no other append to that follower in the same Ready
carries its commit index."""
from __future__ import annotations

from nborch.runtime.consensus.coalesce import drop_redundant_appends
from nborch.runtime.consensus.core.messages import AppendEntries, Heartbeat
from nborch.runtime.consensus.core.types import Entry


def append(dst, prev, commit, n=0, term=2):
    entries = tuple(Entry(term, prev + 1 + k, b'x') for k in range(n))
    return AppendEntries(dst=dst, src=1, term=term, prev_index=prev, prev_term=term,
                         commit=commit, entries=entries)


def test_an_empty_append_after_a_run_hands_its_commit_to_the_run():
    run, empty = append(2, 10, 8, n=5), append(2, 15, 12)
    assert drop_redundant_appends((run, empty)) == [run]
    assert run.commit == 12  # the follower commits min(12, 15), as the empty one would have


def test_an_empty_append_before_a_run_from_the_same_place_is_dropped():
    empty, run = append(2, 15, 12), append(2, 15, 12, n=3)
    assert drop_redundant_appends((empty, run)) == [run]


def test_appends_to_other_followers_probes_and_other_messages_stay():
    probe = append(2, 3, 12)  # a probe elsewhere in the log: not subsumed
    other = append(3, 15, 12)
    beat = Heartbeat(dst=2, src=1, term=2, commit=12)
    run = append(2, 10, 8, n=5)
    assert drop_redundant_appends((probe, other, beat, run)) == [probe, other, beat, run]
    assert run.commit == 8


def test_a_run_of_an_older_term_absorbs_nothing():
    run, empty = append(2, 10, 8, n=5, term=1), append(2, 15, 12, term=2)
    assert drop_redundant_appends((run, empty)) == [run, empty]
