"""Exceptions raised by the Raft core and its in-memory storage view."""

from __future__ import annotations

from .types import NONE


class RaftError(Exception):
    """Base class of every consensus error."""


class NotLeaderError(RaftError):
    """A proposal or read was made on a node that is not the leader.

    ``leader`` is the leader this node knows of (``0`` when none is known): the driver forwards
    the request there, or retries later when there is none.
    """

    def __init__(self, leader: int, term: int) -> None:
        self.leader = leader
        self.term = term
        where = f"leader is {leader}" if leader != NONE else "no leader known"
        super().__init__(f"not the leader at term {term} ({where})")


class ProposalDroppedError(RaftError):
    """A proposal was refused for a reason other than leadership (e.g. empty data)."""


class CompactedError(RaftError):
    """The requested index lies before the first index kept in the log (it is in a snapshot)."""


class UnavailableError(RaftError):
    """The requested index lies after the last index of the log."""


class SnapshotOutOfDateError(RaftError):
    """A snapshot older than (or equal to) the one already held was offered."""


class ReadyNotAdvancedError(RaftError):
    """``ready()`` was called again before ``advance()`` acknowledged the previous Ready."""
