"""The Raft log as the core sees it: what storage holds, plus what is not yet persisted.

``RaftLog`` = a read-only :class:`StorageView` (persisted entries and snapshot) + ``Unstable``
(entries and possibly a snapshot that a Ready has not yet had persisted) + the commit and
apply cursors. Invariants: ``applied <= applying <= committed <= last_index()``.

It also knows the group's membership at every index it holds: the snapshot's (or the
configured one) plus each membership change entry after it. Every change to the log goes
through ``append`` and ``restore``, which keep that record in step, so a truncated change is
forgotten with the entry that carried it.
"""

from __future__ import annotations

from .conf import ConfChange, ConfChangeError, ConfState
from .errors import CompactedError, RaftError, UnavailableError
from .memory import StorageView, limit_size
from .types import Entry, EntryKind, Snapshot


class Unstable:
    """Entries ``[offset, ...)`` and a snapshot not yet on stable storage.

    ``offset_in_progress`` / ``snapshot_in_progress`` mark what a Ready already handed to the
    driver for persisting, so the next Ready does not hand it out twice.
    """

    __slots__ = ("snapshot", "entries", "offset", "offset_in_progress", "snapshot_in_progress")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset
        self.offset_in_progress = offset
        self.snapshot_in_progress = False

    def maybe_first_index(self) -> int | None:
        return self.snapshot.meta.index + 1 if self.snapshot is not None else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.meta.index == index:
                return self.snapshot.meta.term
            return None
        last = self.maybe_last_index()
        if last is None or index > last:
            return None
        if not self.entries:  # only the snapshot; index == its index was handled above
            return None
        return self.entries[index - self.offset].term

    def next_entries(self) -> list[Entry]:
        return self.entries[self.offset_in_progress - self.offset:]

    def next_snapshot(self) -> Snapshot | None:
        if self.snapshot is None or self.snapshot_in_progress:
            return None
        return self.snapshot

    def accept_in_progress(self) -> None:
        if self.entries:
            self.offset_in_progress = self.offset + len(self.entries)
        if self.snapshot is not None:
            self.snapshot_in_progress = True

    def stable_to(self, index: int, term: int) -> bool:
        """Entries up to (index, term) are persisted. Ignored (False) when the entry was
        replaced meanwhile (a conflicting append between ready() and advance())."""
        if index < self.offset or self.maybe_term(index) != term:
            return False
        del self.entries[:index + 1 - self.offset]
        self.offset = index + 1
        self.offset_in_progress = max(self.offset_in_progress, self.offset)
        return True

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == index:
            self.snapshot = None
            self.snapshot_in_progress = False

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.meta.index + 1
        self.offset_in_progress = self.offset
        self.entries = []
        self.snapshot = snap
        self.snapshot_in_progress = False

    def truncate_and_append(self, ents: list[Entry]) -> None:
        start = ents[0].index
        if start == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif start <= self.offset:
            # Replaces everything unstable; storage's conflicting suffix is overwritten when
            # these entries are persisted.
            self.entries = list(ents)
            self.offset = start
            self.offset_in_progress = start
        else:
            del self.entries[start - self.offset:]
            self.entries.extend(ents)
            self.offset_in_progress = min(self.offset_in_progress, start)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset:hi - self.offset]


class RaftLog:
    """The log plus commit/apply cursors. Only the Raft state machine mutates it."""

    def __init__(self, storage: StorageView, max_apply_bytes: int | None = None,
                 initial_conf: ConfState | None = None) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applying = first - 1
        self.applied = first - 1
        self.max_apply_bytes = max_apply_bytes
        self._initial_conf = initial_conf or ConfState(())
        snapshot = storage.snapshot()
        self._base_conf = self._conf_of(snapshot)
        self._confs: list[tuple[int, ConfState]] = []  # (index, membership from there on)
        # Entries kept before the snapshot's index (trailing logs) are in its membership.
        after = max(first, snapshot.meta.index + 1)
        if last >= after:
            self._confs = self._confs_after([], storage.entries(after, last + 1))

    # -- membership ------------------------------------------------------------------------

    def _conf_of(self, snap: Snapshot) -> ConfState:
        if snap.meta.voters:
            return ConfState(snap.meta.voters, snap.meta.learners)
        return self._initial_conf

    def _confs_after(self, kept: list[tuple[int, ConfState]],
                     ents) -> list[tuple[int, ConfState]]:
        """``kept`` followed by the membership changes among ``ents``; RaftError (before
        anything changed) when one of them cannot be read."""
        out = list(kept)
        for e in ents:
            if e.kind == EntryKind.CONF_CHANGE:
                conf = out[-1][1] if out else self._base_conf
                try:
                    out.append((e.index, conf.after(ConfChange.decode(e.data))))
                except ConfChangeError as exc:
                    raise RaftError(f"membership change at {e.term}/{e.index}: {exc}") from None
        return out

    def conf_state(self) -> ConfState:
        """The membership this node uses now: that of the latest change in its log."""
        return self._confs[-1][1] if self._confs else self._base_conf

    def conf_index(self) -> int:
        """Index of the latest membership change in the log (0: none since the snapshot)."""
        return self._confs[-1][0] if self._confs else 0

    def conf_at(self, index: int) -> ConfState:
        """The membership in force at ``index`` (for a snapshot taken there)."""
        conf = self._base_conf
        for at, c in self._confs:
            if at > index:
                break
            conf = c
        return conf

    # -- shape -----------------------------------------------------------------------------

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, index: int) -> int | None:
        """Term of ``index`` or None when it is compacted (before first_index()-1) or past
        the end. ``term(first_index()-1)`` is the snapshot's term."""
        t = self.unstable.maybe_term(index)
        if t is not None:
            return t
        if index < self.first_index() - 1 or index > self.last_index():
            return None
        try:
            return self.storage.term(index)
        except (CompactedError, UnavailableError):
            return None

    def last_term(self) -> int:
        t = self.term(self.last_index())
        assert t is not None
        return t

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up-to-date as ours."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def last_stable_index(self) -> int:
        """The last index known to be on stable storage (or covered by a pending snapshot)."""
        return self.unstable.offset - 1

    # -- appending -------------------------------------------------------------------------

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        if ents[0].index - 1 < self.committed:
            raise RaftError(f"append at {ents[0].index} would overwrite committed "
                            f"index {self.committed}")
        start = ents[0].index
        # A change carried by an entry that these overwrite is forgotten with it. Computed
        # before anything changes (a change that cannot be read raises first); the common
        # append, no change among the entries and none overwritten, skips it.
        overwrites = bool(self._confs) and self._confs[-1][0] >= start
        if overwrites or any(e.kind == EntryKind.CONF_CHANGE for e in ents):
            confs = self._confs_after([c for c in self._confs if c[0] < start], ents)
        else:
            confs = self._confs
        self.unstable.truncate_and_append(ents)
        self._confs = confs
        return self.last_index()

    def find_conflict(self, ents: tuple[Entry, ...] | list[Entry]) -> int:
        """Index of the first entry whose term differs from ours (or which we lack); 0 if none."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (index', term') with index' <= index and term' <= term in our log; an
        index we cannot read (compacted) is returned with term 0 ("maybe a match")."""
        while index > 0:
            t = self.term(index)
            if t is None:
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    def maybe_append(self, prev_index: int, prev_term: int, commit: int,
                     ents: tuple[Entry, ...]) -> int | None:
        """§5.3 receiver rules 2-5. Returns the last index of the appended run, or None when
        (prev_index, prev_term) does not match our log."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(ents)
        conflict = self.find_conflict(ents)
        if conflict:
            if conflict <= self.committed:
                raise RaftError(f"entry {conflict} conflicts with committed entry "
                                f"(committed {self.committed})")
            self.append(list(ents[conflict - prev_index - 1:]))
        self.commit_to(min(commit, last_new))
        return last_new

    # -- reading ---------------------------------------------------------------------------

    def entries(self, lo: int, max_bytes: int | None = None,
                max_count: int | None = None) -> list[Entry]:
        """Entries from ``lo`` to the end (bounded); raises CompactedError below the log."""
        last = self.last_index()
        if lo > last:
            return []
        hi = last + 1 if max_count is None else min(last + 1, lo + max_count)
        return self.slice(lo, hi, max_bytes)

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        if lo >= hi:
            return []
        first = self.first_index()
        if lo < first:
            raise CompactedError(f"index {lo} is compacted (first index {first})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"slice [{lo}, {hi}) past last index {self.last_index()}")
        off = self.unstable.offset
        ents: list[Entry] = []
        if lo < off:
            stored = self.storage.entries(lo, min(hi, off), max_bytes)
            if len(stored) < min(hi, off) - lo:  # cut by size: stop here
                return stored
            ents = stored
        if hi > off:
            ents = ents + self.unstable.slice(max(lo, off), hi)
        return limit_size(ents, max_bytes)

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    # -- commit / apply --------------------------------------------------------------------

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise RaftError(f"commit {index} is past the last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """§5.4.2: advance the commit index only to an entry of the current ``term``."""
        if index > self.committed and self.term(index) == term:
            self.commit_to(index)
            return True
        return False

    def has_next_committed_entries(self) -> bool:
        if self.unstable.snapshot is not None:
            return False
        return self.applying < self.committed

    def next_committed_entries(self) -> list[Entry]:
        if not self.has_next_committed_entries():
            return []
        return self.slice(self.applying + 1, self.committed + 1, self.max_apply_bytes)

    def accept_applying(self, index: int) -> None:
        self.applying = max(self.applying, index)

    def applied_to(self, index: int) -> None:
        if index > self.committed:
            raise RaftError(f"applied {index} is past the commit index {self.committed}")
        self.applied = max(self.applied, index)
        self.applying = max(self.applying, self.applied)

    # -- snapshots -------------------------------------------------------------------------

    def restore(self, snap: Snapshot) -> None:
        """Replace the log by a snapshot received from the leader (§7)."""
        self.committed = snap.meta.index
        self.unstable.restore(snap)
        self._base_conf = self._conf_of(snap)
        self._confs = []

    def stable_to(self, index: int, term: int) -> bool:
        return self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        self.unstable.stable_snap_to(index)
