"""Fewer messages per round: a commit-only append that another append in the same Ready
already carries is dropped.

Once a batch commits, the leader tells every follower with an AppendEntries that carries no
entries; under load the next batch's append to that follower is in the same Ready. The
follower would apply both the same way — it commits min(commit, last index of the run)
(§5.3 rule 5) — so the empty one only costs a send, a step and an acknowledgement.
"""
from __future__ import annotations

from nborch.runtime.consensus.core.messages import AppendEntries, Message


def drop_redundant_appends(messages: tuple[Message, ...]) -> list[Message]:
    """`messages` less every empty AppendEntries subsumed by another to the same follower:
    one that starts where the empty one does (sent later, it carries a commit index at
    least as high), or one that ends where it starts (it takes over the higher commit)."""
    runs: dict[int, list[AppendEntries]] = {}
    for m in messages:
        if type(m) is AppendEntries and m.entries:
            runs.setdefault(m.dst, []).append(m)
    if not runs:
        return list(messages)
    kept = []
    for m in messages:
        if type(m) is AppendEntries and not m.entries and _absorbed(m, runs.get(m.dst, ())):
            continue
        kept.append(m)
    return kept


def _absorbed(empty: AppendEntries, runs) -> bool:
    for run in runs:
        if run.term != empty.term:
            continue
        if run.prev_index == empty.prev_index and run.commit >= empty.commit:
            return True
        if run.prev_index + len(run.entries) == empty.prev_index:
            run.commit = max(run.commit, empty.commit)
            return True
    return False
