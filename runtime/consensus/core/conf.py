"""Group membership: who votes, who only learns, and the one-at-a-time changes between them.

A change is a log entry (``EntryKind.CONF_CHANGE``) holding an encoded :class:`ConfChange`.
Each node uses the latest configuration in its log, committed or not (thesis §4.1), and a
leader proposes the next change only once the previous one committed and an entry of its own
term committed (the fix to single-server changes, Ongaro, raft-dev, 2015). Any two
configurations one change apart share a majority, so no two leaders of a term can exist.

A new node joins as a *learner* (etcd's term; thesis §4.2.1 "non-voting members"): it receives
the log, by snapshot and entries, but neither votes nor counts for commits, so a slow
newcomer cannot stall the group. Once it has caught up it is promoted to voter by another
change. Removing a member is a change too; a removed leader keeps leading until the change
commits, counting only the new voters, then steps down (thesis §4.2.2).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from .errors import RaftError


class ConfChangeError(RaftError):
    """A membership change that does not apply to the current configuration, or that the
    leader cannot propose now (another change is in progress)."""


class ConfOp(enum.IntEnum):
    ADD_LEARNER = 1
    PROMOTE = 2
    REMOVE = 3

    def __str__(self) -> str:
        return self.name.lower().replace("_", "-")


_CHANGE = struct.Struct("<BQ")  # op, node; then the context bytes


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One membership change. ``context`` is the application's (the replica's address, so
    that every member can reach the newcomer once the entry is in its log)."""

    op: ConfOp
    node: int
    context: bytes = b""

    def encode(self) -> bytes:
        return _CHANGE.pack(int(self.op), self.node) + self.context

    @classmethod
    def decode(cls, data: bytes) -> "ConfChange":
        if len(data) < _CHANGE.size:
            raise ConfChangeError(f"a membership change of {len(data)} bytes is truncated")
        op, node = _CHANGE.unpack_from(data, 0)
        try:
            kind = ConfOp(op)
        except ValueError:
            raise ConfChangeError(f"unknown membership change {op}") from None
        if node <= 0:
            raise ConfChangeError(f"membership change for node {node}")
        return cls(kind, node, bytes(data[_CHANGE.size:]))

    def __str__(self) -> str:
        return f"{self.op} {self.node}"


@dataclass(frozen=True, slots=True)
class ConfState:
    """The members of a group at one point of its log."""

    voters: tuple[int, ...]
    learners: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "voters", tuple(sorted(self.voters)))
        object.__setattr__(self, "learners", tuple(sorted(self.learners)))

    @property
    def members(self) -> tuple[int, ...]:
        return tuple(sorted(self.voters + self.learners))

    def after(self, change: ConfChange) -> "ConfState":
        """The configuration after a change found in the log: a total function, so every node
        that holds the entry agrees, whatever it started from (a newcomer starts out
        listing itself as a learner before the entry that adds it reaches it)."""
        node = change.node
        voters = tuple(n for n in self.voters if n != node)
        learners = tuple(n for n in self.learners if n != node)
        if change.op is ConfOp.ADD_LEARNER:
            return ConfState(voters, learners + (node,))
        if change.op is ConfOp.PROMOTE:
            return ConfState(voters + (node,), learners)
        return ConfState(voters, learners)

    def apply(self, change: ConfChange) -> "ConfState":
        """The configuration after ``change`` as a leader proposes it: ConfChangeError when it
        does not apply."""
        node = change.node
        if change.op is ConfOp.ADD_LEARNER:
            if node in self.voters or node in self.learners:
                raise ConfChangeError(f"node {node} is already a member of {self}")
            return ConfState(self.voters, self.learners + (node,))
        if change.op is ConfOp.PROMOTE:
            if node not in self.learners:
                raise ConfChangeError(f"node {node} is not a learner of {self}: only a learner "
                                      "is promoted")
            return ConfState(self.voters + (node,), tuple(n for n in self.learners if n != node))
        if node in self.learners:
            return ConfState(self.voters, tuple(n for n in self.learners if n != node))
        if node not in self.voters:
            raise ConfChangeError(f"node {node} is not a member of {self}")
        if len(self.voters) == 1:
            raise ConfChangeError(f"node {node} is the last voter of {self}")
        return ConfState(tuple(n for n in self.voters if n != node), self.learners)

    def __str__(self) -> str:
        learners = f" learners={list(self.learners)}" if self.learners else ""
        return f"voters={list(self.voters)}{learners}"
