"""The storage interface the core reads from, and its in-memory implementation.

The core only *reads* storage (:class:`StorageView`); the driver *writes* it after each Ready
(``apply_snapshot`` → ``append`` → ``set_hard_state``) and when the application compacts
(``create_snapshot`` + ``compact``). :class:`MemoryStorage` is both: the durable store in
simulations, and the view that ``nborch.runtime.consensus.storage.DiskStorage`` keeps in step
with its files.

Layout (as etcd's MemoryStorage): ``_ents[0]`` is a dummy entry standing for the snapshot's
last included (index, term); real entries follow contiguously.
"""

from __future__ import annotations

from typing import Protocol

from .errors import CompactedError, SnapshotOutOfDateError, UnavailableError
from .types import EMPTY_HARD_STATE, EMPTY_SNAPSHOT, Entry, HardState, Snapshot, SnapshotMeta


class StorageView(Protocol):
    """What the Raft core reads. Indices are Raft log indices (1-based)."""

    def initial_state(self) -> HardState: ...

    def first_index(self) -> int:
        """Index of the first entry still held (snapshot index + 1)."""

    def last_index(self) -> int:
        """Index of the last entry (the snapshot index when no entry follows it)."""

    def term(self, index: int) -> int:
        """Term of entry ``index`` for first_index()-1 <= index <= last_index(); raises
        :class:`CompactedError` below and :class:`UnavailableError` above that range."""

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi); at least one if the range is not empty, then up to ``max_bytes``."""

    def snapshot(self) -> Snapshot: ...


def limit_size(ents: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``ents`` within ``max_bytes`` (always at least one entry)."""
    if max_bytes is None or not ents:
        return ents
    total = ents[0].size
    for i in range(1, len(ents)):
        total += ents[i].size
        if total > max_bytes:
            return ents[:i]
    return ents


class MemoryStorage:
    """A :class:`StorageView` held in memory, with the write methods a driver calls."""

    def __init__(self) -> None:
        self._hard_state = EMPTY_HARD_STATE
        self._snapshot = EMPTY_SNAPSHOT
        self._ents: list[Entry] = [Entry(0, 0)]

    # -- reads (StorageView) -----------------------------------------------------------------

    def initial_state(self) -> HardState:
        return self._hard_state

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise CompactedError(f"index {index} is compacted (first index {offset + 1})")
        if index - offset >= len(self._ents):
            raise UnavailableError(f"index {index} is past the last index {self.last_index()}")
        return self._ents[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (first index {offset + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1} requested, last is {self.last_index()}")
        return limit_size(self._ents[lo - offset:hi - offset], max_bytes)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes (the driver) ---------------------------------------------------------------

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append ``entries``, replacing any conflicting suffix from ``entries[0].index`` on
        (the leader overwrote it, §5.3). Entries already covered by the snapshot are skipped."""
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index:]
        at = entries[0].index - self._ents[0].index
        if at > len(self._ents):
            raise UnavailableError(
                f"missing log entries [last: {self.last_index()}, append at: {entries[0].index}]")
        del self._ents[at:]
        self._ents.extend(entries)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap`` (a snapshot received from the leader, §7)."""
        if snap.meta.index <= self._snapshot.meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot {snap.meta.index} is not newer than {self._snapshot.meta.index}")
        self._snapshot = snap
        self._ents = [Entry(snap.meta.term, snap.meta.index)]

    def create_snapshot(self, index: int, data: bytes, voters: tuple[int, ...] = (),
                        learners: tuple[int, ...] = ()) -> Snapshot:
        """Record the application's snapshot ``data`` taken at applied ``index`` (the log is
        kept; call :meth:`compact` to drop it)."""
        if index <= self._snapshot.meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot {index} is not newer than {self._snapshot.meta.index}")
        if index > self.last_index():
            raise UnavailableError(f"snapshot index {index} > last index {self.last_index()}")
        snap = Snapshot(SnapshotMeta(index, self.term(index), tuple(voters), tuple(learners)),
                        bytes(data))
        self._snapshot = snap
        return snap

    def compact(self, index: int) -> None:
        """Drop entries before ``index`` (entry ``index`` becomes the dummy). The caller
        guarantees ``index`` <= the applied index and <= the latest snapshot's index."""
        offset = self._ents[0].index
        if index <= offset:
            return
        if index > self._snapshot.meta.index:
            raise ValueError(f"compact {index} would drop entries not covered by the snapshot "
                             f"at {self._snapshot.meta.index}")
        at = index - offset
        self._ents = [Entry(self._ents[at].term, index)] + self._ents[at + 1:]
