"""Durable storage of one Raft replica: write-ahead log, hard state and snapshots.

Layout under the replica's directory (``<workspace>/raft/[<shard>/]<replica>/``)::

    LOCK                       flock'ed while open: one process per directory
    hardstate                  term, vote, commit + CRC; replaced atomically
    wal/<seq:016x>.wal         segments: 8-byte magic, then records (:mod:`.wal_format`)
    snap/<index:016x>-<term:016x>.data   the application's snapshot bytes
    snap/<index:016x>-<term:016x>.meta   JSON {index, term, voters, learners, size, crc32}
    quarantine/, REJOIN        data set aside, and a replica that lost its log (:mod:`.quarantine`)

A WAL record holds an ENTRY or a RESET (the log was replaced by a snapshot received from the
leader). The log is append-only: an entry whose index is at or below the current last index
overwrites the suffix from there (the leader replaced a conflicting suffix, §5.3) — replay
applies the same rule, so no file is ever rewritten in place. Compaction deletes whole
segments that a snapshot covers.

Durability: ``append`` and ``set_hard_state`` fsync before returning; files that appear or
are renamed are followed by an fsync of their directory.

Recovery on open never destroys a record that passes its checks. Everything is read and
checked first; only then is anything repaired:

* A **torn tail** — the last record(s) of the last segment, cut short by a crash before their
  fsync (short, zero-filled, or failing its CRC at the very end of the file, with no valid
  record after it) — is copied to ``quarantine/`` and then cut off. Such records were never
  acknowledged, so dropping them loses nothing anyone was promised.
* **Corruption** — any other bad record (for instance a length field that runs past the end
  of the file while valid records follow it), a corrupt hard state or snapshot, or files that
  contradict each other — raises a :class:`StorageCorruptError` subclass naming the file
  (and the byte offset in a segment); nothing on disk is changed.

:func:`quarantine_corrupt` then lets a replica with healthy peers set the whole log aside
(kept) and rejoin empty; its peers rebuild it (see ``ConsensusReplica.start``). Every open
describes what it found in :attr:`DiskStorage.report`.

:class:`DiskStorage` offers the core's read interface (``StorageView``) by delegating to an
in-memory :class:`MemoryStorage` it keeps in step with the files; ``DiskStorage.open``
rebuilds that view from disk.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import quarantine
from .core.memory import MemoryStorage
from .core.messages import MAX_COUNTER
from .core.types import (EMPTY_SNAPSHOT, Entry, EntryKind, HardState, Snapshot, SnapshotMeta,
                         checksum)
from .durable_files import atomic_write, fsync_dir, make_dir, truncate
from .quarantine import Rejoin
from .wal_format import (ENTRY_HEAD, ENTRY_KINDS, KIND_CONF_ENTRY, KIND_ENTRY, KIND_RESET,
                         RESET, SEGMENT_MAGIC,
                         classify_bad_record, read_records, record_header, survey)

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DiskStorage",
    "HardStateCorruptError",
    "OpenReport",
    "PendingAppend",
    "Rejoin",
    "SnapshotCorruptError",
    "StorageCorruptError",
    "StorageError",
    "WALCorruptError",
    "quarantine_corrupt",
]

_HARD_STATE = struct.Struct("<4sQQQ")
_HARD_STATE_MAGIC = b"NBHS"
DEFAULT_SEGMENT_BYTES = 64 << 20


class StorageError(Exception):
    """Base class of storage failures."""


class StorageCorruptError(StorageError):
    """Data on disk failed its checks: the stored state cannot be trusted as it is."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class WALCorruptError(StorageCorruptError):
    """A WAL record that is not a torn tail failed its checks: the log cannot be trusted."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        self.offset = offset
        super().__init__(path, f"corrupt WAL record at byte {offset}: {reason}")


class HardStateCorruptError(StorageCorruptError):
    """The hard state file fails its checksum."""


class SnapshotCorruptError(StorageCorruptError):
    """A snapshot's metadata or data fails its checks."""


@dataclass(frozen=True)
class OpenReport:
    """What ``DiskStorage.open`` found (logged once at start, shown in the replica status)."""

    path: str
    segments: int
    entries: int
    first_index: int
    last_index: int
    snapshot_index: int
    commit: int
    torn_bytes: int = 0  # bytes of torn tails cut off
    torn_kept: tuple[str, ...] = ()  # the quarantine files holding them
    rejoin: Rejoin | None = None  # set while the replica rejoins after losing its log
    quarantine: tuple[str, ...] = ()  # what quarantine/ holds (kept until the user deletes it)

    def summary(self) -> str:
        text = (f"{self.path}: {self.segments} segment(s), {self.entries} entries "
                f"[{self.first_index}..{self.last_index}], snapshot {self.snapshot_index}, "
                f"commit {self.commit}")
        if self.torn_bytes:
            text += (f"; dropped a torn tail of {self.torn_bytes} bytes (kept in "
                     f"{', '.join(self.torn_kept)})")
        if self.rejoin is not None:
            text += (f"; rejoining after its log was quarantined in {self.rejoin.quarantined} "
                     f"(until commit {self.rejoin.until_commit})")
        if self.quarantine:
            text += (f"; {self.path}/{quarantine.QUARANTINE}/ holds {len(self.quarantine)} "
                     "item(s) set aside (see the docs: Raft storage)")
        return text

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("segments", "entries", "first_index", "last_index",
                                            "snapshot_index", "commit", "torn_bytes")}
        d["torn_kept"] = list(self.torn_kept)
        d["quarantined"] = self.rejoin.quarantined if self.rejoin is not None else None
        d["quarantine"] = list(self.quarantine)
        return d


@dataclass(frozen=True)
class PendingAppend:
    """A batch of entries encoded as one WAL write, between ``prepare_append`` and
    ``finish_append``."""

    entries: list[Entry]
    records: bytes


@dataclass
class _Segment:
    path: Path
    seq: int
    max_index: int = 0  # highest entry (or RESET) index written into it


@dataclass
class _Repairs:
    """Changes an open makes once everything it read passed its checks."""

    torn: list[tuple[Path, int]] = field(default_factory=list)  # (segment, cut at)
    rewrite_magic: list[Path] = field(default_factory=list)  # crashed while creating
    obsolete: list[Path] = field(default_factory=list)  # segments before the last RESET
    leftovers: list[Path] = field(default_factory=list)  # unfinished or older snapshot files


class DiskStorage:
    """A replica's durable Raft state. Not thread-safe: the driver loop owns it."""

    def __init__(self, path: Path, memory: MemoryStorage, segments: list[_Segment],
                 segment_bytes: int, lock_fd: int | None, report: OpenReport) -> None:
        self.path = path
        self.memory = memory
        self.report = report
        self._segments = segments
        self._segment_bytes = segment_bytes
        self._lock_fd = lock_fd
        self._hard_dirty = False
        self._file = open(segments[-1].path, "ab", buffering=0)
        self.wal_syncs = 0  # fsyncs of WAL records since open: one per appended batch

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *,
             segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> "DiskStorage":
        """Open (or create) the storage under ``path`` and rebuild the in-memory view.

        Raises a :class:`StorageCorruptError` (and changes nothing) when the data fails its
        checks; a torn tail is kept in ``quarantine/`` and cut off (see the module doc)."""
        root = Path(path)
        make_dir(root)
        lock_fd = _lock(root / "LOCK")
        try:
            rejoin = _read_rejoin(root)
            if rejoin is not None:
                rejoin = quarantine.finish_move(root, rejoin)  # a crash may have cut it short
            for sub in (root / "wal", root / "snap"):
                make_dir(sub)
            hs = _read_hard_state(root / "hardstate")
            if rejoin is not None and hs.term < rejoin.term:
                # What the lost log's replica had promised still binds it (no second vote).
                hs = HardState(rejoin.term, rejoin.vote, hs.commit)
            snap = _load_snapshot(root / "snap")
            segments, entries, repairs = _replay_wal(root / "wal")
            repairs.leftovers = _snapshot_leftovers(root / "snap", snap.meta)
            mem = _build_view(root, snap, entries, hs)
            torn_bytes, kept = _repair(root, repairs)
            segments = [s for s in segments if s.path not in repairs.obsolete]
            if not segments:
                segments = [_create_segment(root / "wal", 1)]
            report = OpenReport(
                str(root), len(segments), mem.last_index() - mem.first_index() + 1,
                mem.first_index(), mem.last_index(), snap.meta.index, mem.hard_state.commit,
                torn_bytes, tuple(str(p) for p in kept), rejoin, quarantine.listing(root))
            return cls(root, mem, segments, segment_bytes, lock_fd, report)
        except BaseException:
            _unlock(lock_fd)
            raise

    def close(self) -> None:
        """Flush a lazily kept hard state and release the directory."""
        if self._file.closed:
            return
        if self._hard_dirty:
            self._write_hard_state(self.memory.hard_state)
        self._file.close()
        _unlock(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> "DiskStorage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads: the core's StorageView ---------------------------------------------------------

    def initial_state(self) -> HardState:
        return self.memory.initial_state()

    @property
    def hard_state(self) -> HardState:
        return self.memory.hard_state

    def first_index(self) -> int:
        return self.memory.first_index()

    def last_index(self) -> int:
        return self.memory.last_index()

    def term(self, index: int) -> int:
        return self.memory.term(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self.memory.entries(lo, hi, max_bytes)

    def snapshot(self) -> Snapshot:
        return self.memory.snapshot()

    def snapshot_data_path(self) -> Path | None:
        """The file holding the current snapshot's data (for an executor's ``restore``)."""
        meta = self.memory.snapshot().meta
        if meta.index == 0:
            return None
        return self.path / "snap" / f"{_snap_name(meta.index, meta.term)}.data"

    @property
    def rejoin(self) -> Rejoin | None:
        """Set while this replica rejoins its group after its log was quarantined."""
        return self.report.rejoin

    def finish_rejoin(self) -> None:
        """A leader caught this replica up again: it is an ordinary member from now on."""
        if self.report.rejoin is None:
            return
        self._write_hard_state(self.memory.hard_state)  # the term floor now lives here
        quarantine.remove_rejoin(self.path)
        self.report = replace(self.report, rejoin=None)

    # -- writes ------------------------------------------------------------------------------

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Durably append ``entries`` (overwriting a conflicting suffix), fsync, then update
        the view. Entries the snapshot already covers are skipped."""
        pending = self.prepare_append(entries)
        if pending is not None:
            self.write_pending(pending)
            self.finish_append(pending)

    # ``append`` in three steps, so that a driver can run the middle one, the only one that
    # waits for the disk, on a thread of its own while its loop goes on: prepare and finish
    # run on the owner's thread, and no other write may come between them.

    def prepare_append(self, entries: list[Entry] | tuple[Entry, ...]) -> PendingAppend | None:
        """Check and encode ``entries`` as one WAL write (None: nothing to write)."""
        if not entries:
            return None
        first = self.memory.first_index()
        entries = [e for e in entries if e.index >= first]
        if not entries:
            return None
        if entries[0].index > self.memory.last_index() + 1:
            raise StorageError(f"append at {entries[0].index} leaves a gap after "
                               f"{self.memory.last_index()}")
        self._maybe_rotate()
        parts = []
        for e in entries:
            kind = KIND_CONF_ENTRY if e.kind == EntryKind.CONF_CHANGE else KIND_ENTRY
            payload = ENTRY_HEAD.pack(kind, e.term, e.index) + e.data
            parts += (record_header(payload), payload)
        return PendingAppend(entries, b"".join(parts))

    def write_pending(self, pending: PendingAppend) -> None:
        """Write the whole batch and fsync it once; may run on another thread."""
        self._write_durably(pending.records)

    def finish_append(self, pending: PendingAppend) -> None:
        """The batch is on disk: show it in the view."""
        seg = self._segments[-1]
        seg.max_index = max(seg.max_index, pending.entries[-1].index)
        self.memory.append(pending.entries)

    def set_hard_state(self, hs: HardState, *, durable: bool = True) -> None:
        """Replace the hard state atomically (temp file, fsync, rename, fsync dir).

        With ``durable=False`` and only the commit index changed, the write is deferred to
        the next durable one (or ``close``): a lost commit index is re-learned from the
        leader, so a driver may skip the fsync when ``Ready.must_sync`` is False."""
        old = self.memory.hard_state
        self.memory.set_hard_state(hs)
        if not durable and (hs.term, hs.vote) == (old.term, old.vote):
            self._hard_dirty = True
            return
        self._write_hard_state(hs)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader (§7)."""
        if snap.meta.index <= self.memory.snapshot().meta.index:
            self.memory.apply_snapshot(snap)  # raises SnapshotOutOfDateError
        self._write_snapshot(snap)
        # The RESET record opens a fresh segment, so every older segment is obsolete.
        self._rotate()
        payload = RESET.pack(KIND_RESET, snap.meta.index, snap.meta.term)
        self._write_durably(record_header(payload) + payload)
        self._segments[-1].max_index = snap.meta.index
        for seg in self._segments[:-1]:
            seg.path.unlink(missing_ok=True)
        del self._segments[:-1]
        fsync_dir(self.path / "wal")
        self.memory.apply_snapshot(snap)
        self._remove_older_snapshots(snap.meta)

    def create_snapshot(self, index: int, data: bytes, voters: tuple[int, ...] = (),
                        learners: tuple[int, ...] = ()) -> Snapshot:
        """Durably record the application's snapshot taken at applied ``index`` (with the
        membership in force there: ``RaftNode.conf_at(index)``)."""
        mem_snap = self.memory.snapshot().meta.index
        if index <= mem_snap or index > self.memory.last_index():
            self.memory.create_snapshot(index, data, voters, learners)  # the precise error
        snap = Snapshot(SnapshotMeta(index, self.memory.term(index), tuple(voters),
                                     tuple(learners)), bytes(data))
        self._write_snapshot(snap)
        self.memory.create_snapshot(index, data, voters, learners)
        self._remove_older_snapshots(snap.meta)
        return snap

    def compact(self, index: int) -> None:
        """Drop log entries up to ``index`` (<= the snapshot index) and delete the oldest WAL
        segments that only hold such entries. Only a prefix goes: a later segment may hold
        the overwrite of an entry that an older, kept one still holds, and replay needs it."""
        self.memory.compact(index)
        if self._segments[-1].max_index <= index:
            self._rotate()
        cut = 0
        while cut < len(self._segments) - 1 and self._segments[cut].max_index <= index:
            cut += 1
        dropped, keep = self._segments[:cut], self._segments[cut:]
        for seg in dropped:
            seg.path.unlink(missing_ok=True)
        if dropped:
            fsync_dir(self.path / "wal")
        self._segments = keep

    # -- internals ---------------------------------------------------------------------------

    def _write_durably(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._file.write(view)
            view = view[n:]
        self._sync_wal()

    def _sync_wal(self) -> None:
        os.fsync(self._file.fileno())
        self.wal_syncs += 1

    def _maybe_rotate(self) -> None:
        if self._file.tell() >= self._segment_bytes:
            self._rotate()

    def _rotate(self) -> None:
        seg = _create_segment(self.path / "wal", self._segments[-1].seq + 1)
        self._file.close()
        self._segments.append(seg)
        self._file = open(seg.path, "ab", buffering=0)

    def _write_hard_state(self, hs: HardState) -> None:
        body = _HARD_STATE.pack(_HARD_STATE_MAGIC, hs.term, hs.vote, hs.commit)
        atomic_write(self.path / "hardstate", body + struct.pack("<I", checksum(body)))
        self._hard_dirty = False

    def _write_snapshot(self, snap: Snapshot) -> None:
        base = self.path / "snap" / _snap_name(snap.meta.index, snap.meta.term)
        atomic_write(base.with_suffix(".data"), snap.data, sync_dir=False)
        meta = {"index": snap.meta.index, "term": snap.meta.term,
                "voters": list(snap.meta.voters), "learners": list(snap.meta.learners),
                "size": len(snap.data),
                "crc32": checksum(snap.data)}
        # The meta file appears only once the data is durable: it marks a complete snapshot.
        atomic_write(base.with_suffix(".meta"), json.dumps(meta).encode())

    def _remove_older_snapshots(self, keep: SnapshotMeta) -> None:
        keep_name = _snap_name(keep.index, keep.term)
        removed = False
        for p in (self.path / "snap").iterdir():
            if p.stem != keep_name:
                p.unlink(missing_ok=True)
                removed = True
        if removed:
            fsync_dir(self.path / "snap")


# -- file helpers -------------------------------------------------------------------------------

def _lock(path: Path) -> int | None:
    if fcntl is None:  # pragma: no cover
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"{path.parent} is in use by another process") from exc
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


def _snap_name(index: int, term: int) -> str:
    return f"{index:016x}-{term:016x}"


def _create_segment(wal: Path, seq: int) -> _Segment:
    path = wal / f"{seq:016x}.wal"
    with open(path, "wb") as f:
        f.write(SEGMENT_MAGIC)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(wal)
    return _Segment(path, seq)


def _read_rejoin(root: Path) -> Rejoin | None:
    try:
        return quarantine.read_rejoin(root)
    except ValueError as exc:
        raise StorageCorruptError(root / quarantine.REJOIN, str(exc)) from exc


def _read_hard_state(path: Path) -> HardState:
    if not path.exists():
        return HardState()
    raw = path.read_bytes()
    if len(raw) != _HARD_STATE.size + 4:
        raise HardStateCorruptError(path, f"{len(raw)} bytes, expected {_HARD_STATE.size + 4}")
    body, (crc,) = raw[:-4], struct.unpack("<I", raw[-4:])
    magic, term, vote, commit = _HARD_STATE.unpack(body)
    if magic != _HARD_STATE_MAGIC or checksum(body) != crc:
        raise HardStateCorruptError(path, "bad magic or checksum")
    if term > MAX_COUNTER or commit > MAX_COUNTER:  # older versions took forged terms
        raise HardStateCorruptError(
            path, f"term {term} / commit {commit} is beyond {MAX_COUNTER}, which no peer may "
            "send: this replica took a forged message")
    return HardState(term, vote, commit)


def _load_snapshot(snap_dir: Path) -> Snapshot:
    """The newest complete snapshot (one with a meta file)."""
    metas = sorted(snap_dir.glob("*.meta"))
    if not metas:
        return EMPTY_SNAPSHOT
    newest = metas[-1]
    try:
        meta = json.loads(newest.read_text())
        data = newest.with_suffix(".data").read_bytes()
        index, term, voters = int(meta["index"]), int(meta["term"]), tuple(meta["voters"])
        learners = tuple(meta.get("learners", ()))  # absent in snapshots before membership
        size, crc = int(meta["size"]), int(meta["crc32"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SnapshotCorruptError(newest, str(exc)) from exc
    if len(data) != size or checksum(data) != crc:
        raise SnapshotCorruptError(newest, "data does not match its size/checksum")
    return Snapshot(SnapshotMeta(index, term, voters, learners), data)


def _snapshot_leftovers(snap_dir: Path, keep: SnapshotMeta) -> list[Path]:
    """Temp files, data without its meta (an unfinished snapshot) and older snapshots."""
    keep_name = _snap_name(keep.index, keep.term) if keep.index else None
    return [p for p in snap_dir.iterdir() if p.stem != keep_name]


class _RawLog:
    """The log as the WAL records describe it, before the snapshot is taken into account."""

    def __init__(self) -> None:
        self.base: int | None = None  # index before entries[0]
        self.base_term: int | None = None  # known only after a RESET
        self.entries: list[Entry] = []

    @property
    def last(self) -> int:
        assert self.base is not None
        return self.base + len(self.entries)

    def add(self, e: Entry, path: Path, offset: int) -> None:
        if self.base is None:
            self.base = e.index - 1
        if e.index <= self.base:
            if self.base_term is not None:
                return  # covered by the snapshot a RESET installed
            # The leader overwrote the log from before the oldest entry still on disk (the
            # segments before it were compacted away): the log now ends with this entry.
            self.base, self.entries = e.index - 1, []
        if e.index > self.last + 1:
            raise WALCorruptError(path, offset, f"entry {e.index} leaves a gap after {self.last}")
        del self.entries[e.index - self.base - 1:]
        self.entries.append(e)

    def reset(self, index: int, term: int) -> None:
        self.base, self.base_term, self.entries = index, term, []

    def term_at(self, index: int) -> int | None:
        if self.base is None or index < self.base or index > self.last:
            return None
        if index == self.base:
            return self.base_term
        return self.entries[index - self.base - 1].term


def _replay_wal(wal: Path) -> tuple[list[_Segment], _RawLog, _Repairs]:
    """Read every segment (changing nothing) into the log they describe."""
    repairs = _Repairs()
    paths = sorted(wal.glob("*.wal"))
    raw = _RawLog()
    segments: list[_Segment] = []
    last_reset = 0
    for n, path in enumerate(paths):
        seg = _Segment(path, int(path.stem, 16))
        for rec in _read_segment(path, repairs, is_last=n == len(paths) - 1):
            if rec.kind in ENTRY_KINDS:
                kind = EntryKind.CONF_CHANGE if rec.kind == KIND_CONF_ENTRY else EntryKind.NORMAL
                raw.add(Entry(rec.a, rec.b, rec.data, kind), path, rec.offset)
                seg.max_index = max(seg.max_index, rec.b)
            else:
                raw.reset(rec.a, rec.b)
                seg.max_index = max(seg.max_index, rec.a)
                last_reset = n
        segments.append(seg)
    # Segments before the last RESET describe a log the snapshot replaced.
    repairs.obsolete = [seg.path for seg in segments[:last_reset]]
    return segments, raw, repairs


def _read_segment(path: Path, repairs: _Repairs, *, is_last: bool):
    buf = path.read_bytes()
    magic = SEGMENT_MAGIC
    if len(buf) < len(magic) or buf[:len(magic)] != magic:
        if is_last and magic.startswith(buf[:len(magic)]):
            repairs.rewrite_magic.append(path)  # crashed while creating it: holds no record
            return []
        raise WALCorruptError(path, 0, "bad segment header")
    records, bad = read_records(buf)
    if bad is not None:
        corruption = classify_bad_record(buf, bad, is_last=is_last)
        if corruption is not None:
            raise WALCorruptError(path, bad.offset, corruption)
        repairs.torn.append((path, bad.offset))
    return records


def _build_view(root: Path, snap: Snapshot, raw: _RawLog, hs: HardState) -> MemoryStorage:
    mem = MemoryStorage()
    s = snap.meta.index
    entries = raw.entries
    if raw.base is not None and s > 0:
        if raw.base > s:
            raise StorageCorruptError(root, f"the log starts at {raw.base + 1} but the "
                                            f"snapshot ends at {s}")
        at_s = raw.term_at(s)
        if at_s == snap.meta.term or (s == raw.base and at_s is None):
            entries = entries[s - raw.base:]
        else:
            # The log does not contain the snapshot's last entry: the snapshot came from the
            # leader and replaced the log, but we crashed before the RESET record (§7).
            entries = []
    elif raw.base is not None and raw.base > 0:
        raise StorageCorruptError(root, f"the log starts at {raw.base + 1} but there is no "
                                        "snapshot")
    if s > 0:
        mem.apply_snapshot(snap)
    mem.append(entries)
    commit = max(hs.commit, s)
    if commit > mem.last_index():
        raise StorageCorruptError(root, f"hard state commit {hs.commit} is past the last "
                                        f"entry {mem.last_index()}")
    mem.set_hard_state(HardState(hs.term, hs.vote, commit))
    return mem


def _repair(root: Path, repairs: _Repairs) -> tuple[int, list[Path]]:
    """Apply what an open found to repair; returns the torn bytes cut and where they are kept."""
    torn_bytes, kept = 0, []
    for path, offset in repairs.torn:
        tail = path.read_bytes()[offset:]
        kept.append(quarantine.keep_bytes(root, f"{path.name}-torn-at-{offset}", tail))
        truncate(path, offset)  # only once the bytes are safe elsewhere
        torn_bytes += len(tail)
    for path in repairs.rewrite_magic:
        truncate(path, 0)
        with open(path, "ab") as f:
            f.write(SEGMENT_MAGIC)
            f.flush()
            os.fsync(f.fileno())
    for path in repairs.obsolete:
        path.unlink()
    if repairs.obsolete:
        fsync_dir(root / "wal")
    for leftover in repairs.leftovers:
        leftover.unlink()
    if repairs.leftovers:
        fsync_dir(root / "snap")
    for tmp in [*(root / "wal").glob("*.tmp"), *root.glob("hardstate.tmp")]:
        tmp.unlink()  # a write that never completed
    return torn_bytes, kept


# -- a corrupt replica rejoins empty ------------------------------------------------------------

def quarantine_corrupt(path: str | os.PathLike[str], error: StorageCorruptError) -> Rejoin:
    """Move a corrupt replica's Raft files (hard state, WAL, snapshots) into
    ``quarantine/<stamp>-corrupt/`` — kept, never deleted — and mark it as rejoining: the
    next ``DiskStorage.open`` starts empty, and the Raft core keeps the replica out of
    elections until a leader has caught it up (``RaftConfig.rejoin_commit``)."""
    root = Path(path)
    lock_fd = _lock(root / "LOCK")
    try:
        prior = _read_rejoin(root)
        term, vote, until = _salvage(root)
        if prior is not None:  # lost its log again while rejoining: keep what it knew then
            if prior.term > term or (prior.term == term and not vote):
                term, vote = prior.term, prior.vote
            until = max(until, prior.until_commit)
        return quarantine.start_move(root, Rejoin(quarantined="", reason=str(error),
                                                  term=term, vote=vote, until_commit=until),
                                     Path(error.path))
    finally:
        _unlock(lock_fd)


def _salvage(root: Path) -> tuple[int, int, int]:
    """From a corrupt replica's files, as far as they can be read: the highest term it saw,
    its vote in that term, and the highest index it may have acknowledged."""
    hs_term = vote = index = 0
    try:
        hs = _read_hard_state(root / "hardstate")
        hs_term, vote, index = hs.term, hs.vote, hs.commit
    except (StorageCorruptError, OSError):
        pass
    term = hs_term
    for meta in (root / "snap").glob("*.meta"):
        try:
            snap_index, snap_term = (int(x, 16) for x in meta.stem.split("-"))
        except ValueError:
            continue
        index, term = max(index, snap_index), max(term, snap_term)
    for segment in (root / "wal").glob("*.wal"):
        try:
            records = survey(segment.read_bytes())
        except OSError:
            continue
        for rec in records:
            rec_term, rec_index = (rec.a, rec.b) if rec.kind in ENTRY_KINDS else (rec.b, rec.a)
            index, term = max(index, rec_index), max(term, rec_term)
    if term != hs_term:
        vote = 0  # the vote we know of was cast in an older term than the highest seen
    return term, vote, index
