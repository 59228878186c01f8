"""Durable storage of one Raft replica: write-ahead log, hard state and snapshots.

Layout under the replica's directory (``<workspace>/raft/[<shard>/]<replica>/``)::

    LOCK                       flock'ed while open: one process per directory
    hardstate                  term, vote, commit + CRC; replaced atomically
    wal/<seq:016x>.wal         segments: 8-byte magic, then records
    snap/<index:016x>-<term:016x>.data   the application's snapshot bytes
    snap/<index:016x>-<term:016x>.meta   JSON {index, term, voters, size, crc32}

A WAL record is ``u32 length | u32 crc32(payload) | payload``; the payload is an ENTRY
(``u8 1 | u64 term | u64 index | data``) or a RESET (``u8 2 | u64 index | u64 term``: the log
was replaced by a snapshot received from the leader). The log is append-only: an entry whose
index is at or below the current last index overwrites the suffix from there (the leader
replaced a conflicting suffix, §5.3) — replay applies the same rule, so no file is ever
rewritten in place. Compaction deletes whole segments that a snapshot covers.

Durability: ``append`` and ``set_hard_state`` fsync before returning; files that appear or
are renamed are followed by an fsync of their directory. Recovery on open: a torn last record
of the last segment (short, zero-filled, or failing its CRC at the very end of the file) is
dropped and the file truncated; any other bad record raises :class:`WALCorruptError`.

:class:`DiskStorage` offers the core's read interface (``StorageView``) by delegating to an
in-memory :class:`MemoryStorage` it keeps in step with the files; ``DiskStorage.open``
rebuilds that view from disk.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .core.memory import MemoryStorage
from .core.messages import MAX_COUNTER
from .core.types import EMPTY_SNAPSHOT, Entry, HardState, Snapshot, SnapshotMeta, checksum

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DiskStorage",
    "HardStateCorruptError",
    "SnapshotCorruptError",
    "StorageError",
    "WALCorruptError",
]

SEGMENT_MAGIC = b"NBRAFTW1"
_RECORD_HEAD = struct.Struct("<II")  # length, crc32
_ENTRY_HEAD = struct.Struct("<BQQ")  # kind, term, index
_RESET = struct.Struct("<BQQ")  # kind, index, term
_KIND_ENTRY = 1
_KIND_RESET = 2
_HARD_STATE = struct.Struct("<4sQQQ")
_HARD_STATE_MAGIC = b"NBHS"
DEFAULT_SEGMENT_BYTES = 64 << 20


class StorageError(Exception):
    """Base class of storage failures."""


class WALCorruptError(StorageError):
    """A WAL record that is not a torn tail failed its checks: the log cannot be trusted."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        super().__init__(f"{path}: corrupt WAL record at byte {offset}: {reason}")


class HardStateCorruptError(StorageError):
    """The hard state file fails its checksum."""


class SnapshotCorruptError(StorageError):
    """A snapshot's metadata or data fails its checks."""


@dataclass
class _Segment:
    path: Path
    seq: int
    max_index: int = 0  # highest entry (or RESET) index written into it


class DiskStorage:
    """A replica's durable Raft state. Not thread-safe: the driver loop owns it."""

    def __init__(self, path: Path, memory: MemoryStorage, segments: list[_Segment],
                 segment_bytes: int, lock_fd: int | None) -> None:
        self.path = path
        self.memory = memory
        self._segments = segments
        self._segment_bytes = segment_bytes
        self._lock_fd = lock_fd
        self._hard_dirty = False
        self._file = open(segments[-1].path, "ab", buffering=0)

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *,
             segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> "DiskStorage":
        """Open (or create) the storage under ``path`` and rebuild the in-memory view."""
        root = Path(path)
        for sub in (root, root / "wal", root / "snap"):
            if not sub.is_dir():
                sub.mkdir(parents=True, exist_ok=True)
                _fsync_dir(sub.parent)
        lock_fd = _lock(root / "LOCK")
        try:
            hs = _read_hard_state(root / "hardstate")
            snap = _load_snapshot(root / "snap")
            segments, entries = _replay_wal(root / "wal")
            mem = _build_view(snap, entries, hs)
            if not segments:
                segments = [_create_segment(root / "wal", 1)]
            return cls(root, mem, segments, segment_bytes, lock_fd)
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

    # -- writes ------------------------------------------------------------------------------

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Durably append ``entries`` (overwriting a conflicting suffix), fsync, then update
        the view. Entries the snapshot already covers are skipped."""
        if not entries:
            return
        first = self.memory.first_index()
        entries = [e for e in entries if e.index >= first]
        if not entries:
            return
        if entries[0].index > self.memory.last_index() + 1:
            raise StorageError(f"append at {entries[0].index} leaves a gap after "
                               f"{self.memory.last_index()}")
        self._maybe_rotate()
        parts = []
        for e in entries:
            payload = _ENTRY_HEAD.pack(_KIND_ENTRY, e.term, e.index) + e.data
            parts.append(_RECORD_HEAD.pack(len(payload), checksum(payload)))
            parts.append(payload)
        self._write_durably(b"".join(parts))
        seg = self._segments[-1]
        seg.max_index = max(seg.max_index, entries[-1].index)
        self.memory.append(entries)

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
        payload = _RESET.pack(_KIND_RESET, snap.meta.index, snap.meta.term)
        self._write_durably(_RECORD_HEAD.pack(len(payload), checksum(payload)) + payload)
        self._segments[-1].max_index = snap.meta.index
        for seg in self._segments[:-1]:
            seg.path.unlink(missing_ok=True)
        del self._segments[:-1]
        _fsync_dir(self.path / "wal")
        self.memory.apply_snapshot(snap)
        self._remove_older_snapshots(snap.meta)

    def create_snapshot(self, index: int, data: bytes,
                        voters: tuple[int, ...] = ()) -> Snapshot:
        """Durably record the application's snapshot taken at applied ``index``."""
        mem_snap = self.memory.snapshot().meta.index
        if index <= mem_snap or index > self.memory.last_index():
            self.memory.create_snapshot(index, data, voters)  # raises the precise error
        snap = Snapshot(SnapshotMeta(index, self.memory.term(index), tuple(voters)), bytes(data))
        self._write_snapshot(snap)
        self.memory.create_snapshot(index, data, voters)
        self._remove_older_snapshots(snap.meta)
        return snap

    def compact(self, index: int) -> None:
        """Drop log entries up to ``index`` (<= the snapshot index) and delete the WAL
        segments that only hold such entries."""
        self.memory.compact(index)
        if self._segments[-1].max_index <= index:
            self._rotate()
        keep = [s for s in self._segments[:-1] if s.max_index > index] + [self._segments[-1]]
        dropped = [s for s in self._segments if s not in keep]
        for seg in dropped:
            seg.path.unlink(missing_ok=True)
        if dropped:
            _fsync_dir(self.path / "wal")
        self._segments = keep

    # -- internals ---------------------------------------------------------------------------

    def _write_durably(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._file.write(view)
            view = view[n:]
        os.fsync(self._file.fileno())

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
        _atomic_write(self.path / "hardstate", body + struct.pack("<I", checksum(body)))
        self._hard_dirty = False

    def _write_snapshot(self, snap: Snapshot) -> None:
        base = self.path / "snap" / _snap_name(snap.meta.index, snap.meta.term)
        _atomic_write(base.with_suffix(".data"), snap.data, sync_dir=False)
        meta = {"index": snap.meta.index, "term": snap.meta.term,
                "voters": list(snap.meta.voters), "size": len(snap.data),
                "crc32": checksum(snap.data)}
        # The meta file appears only once the data is durable: it marks a complete snapshot.
        _atomic_write(base.with_suffix(".meta"), json.dumps(meta).encode())

    def _remove_older_snapshots(self, keep: SnapshotMeta) -> None:
        keep_name = _snap_name(keep.index, keep.term)
        removed = False
        for p in (self.path / "snap").iterdir():
            if p.stem != keep_name:
                p.unlink(missing_ok=True)
                removed = True
        if removed:
            _fsync_dir(self.path / "snap")


# -- file helpers -------------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync_dir:
        _fsync_dir(path.parent)


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
    _fsync_dir(wal)
    return _Segment(path, seq)


def _read_hard_state(path: Path) -> HardState:
    for leftover in path.parent.glob("hardstate.tmp"):
        leftover.unlink()
    if not path.exists():
        return HardState()
    raw = path.read_bytes()
    if len(raw) != _HARD_STATE.size + 4:
        raise HardStateCorruptError(f"{path}: {len(raw)} bytes")
    body, (crc,) = raw[:-4], struct.unpack("<I", raw[-4:])
    magic, term, vote, commit = _HARD_STATE.unpack(body)
    if magic != _HARD_STATE_MAGIC or checksum(body) != crc:
        raise HardStateCorruptError(f"{path}: bad magic or checksum")
    if term > MAX_COUNTER or commit > MAX_COUNTER:  # older versions took forged terms
        raise HardStateCorruptError(
            f"{path}: term {term} / commit {commit} is beyond {MAX_COUNTER}, which no peer "
            "may send: this replica took a forged message. If its peers are sane, move this "
            "replica's folder aside and it is rebuilt from them")
    return HardState(term, vote, commit)


def _load_snapshot(snap_dir: Path) -> Snapshot:
    """The newest complete snapshot (one with a meta file); leftovers are removed."""
    for p in snap_dir.iterdir():
        if p.suffix == ".tmp" or (p.suffix == ".data" and not p.with_suffix(".meta").exists()):
            p.unlink()
    metas = sorted(snap_dir.glob("*.meta"))
    if not metas:
        return EMPTY_SNAPSHOT
    newest = metas[-1]
    try:
        meta = json.loads(newest.read_text())
        data = newest.with_suffix(".data").read_bytes()
        index, term, voters = int(meta["index"]), int(meta["term"]), tuple(meta["voters"])
        size, crc = int(meta["size"]), int(meta["crc32"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SnapshotCorruptError(f"{newest}: {exc}") from exc
    if len(data) != size or checksum(data) != crc:
        raise SnapshotCorruptError(f"{newest}: data does not match its size/checksum")
    for older in metas[:-1]:
        older.unlink()
        older.with_suffix(".data").unlink(missing_ok=True)
    return Snapshot(SnapshotMeta(index, term, voters), data)


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
            return  # covered by the snapshot a RESET installed
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


def _replay_wal(wal: Path) -> tuple[list[_Segment], _RawLog]:
    for leftover in wal.glob("*.tmp"):
        leftover.unlink()
    paths = sorted(wal.glob("*.wal"))
    raw = _RawLog()
    segments: list[_Segment] = []
    last_reset = 0
    for n, path in enumerate(paths):
        seg = _Segment(path, int(path.stem, 16))
        for kind, a, b, data, offset in _read_segment(path, is_last=n == len(paths) - 1):
            if kind == _KIND_ENTRY:
                raw.add(Entry(a, b, data), path, offset)
                seg.max_index = max(seg.max_index, b)
            else:
                raw.reset(a, b)
                seg.max_index = max(seg.max_index, a)
                last_reset = n
        segments.append(seg)
    # Segments before the last RESET describe a log the snapshot replaced.
    for seg in segments[:last_reset]:
        seg.path.unlink()
    if last_reset:
        _fsync_dir(wal)
    return segments[last_reset:], raw


def _read_segment(path: Path, *, is_last: bool):
    """Yield (kind, a, b, data, offset) per record; drop a torn tail of the last segment."""
    buf = path.read_bytes()
    if len(buf) < len(SEGMENT_MAGIC) or buf[:len(SEGMENT_MAGIC)] != SEGMENT_MAGIC:
        if is_last and SEGMENT_MAGIC.startswith(buf[:len(SEGMENT_MAGIC)]):
            _truncate(path, 0)  # crashed while creating it
            with open(path, "ab") as f:
                f.write(SEGMENT_MAGIC)
                f.flush()
                os.fsync(f.fileno())
            return
        raise WALCorruptError(path, 0, "bad segment header")
    pos = len(SEGMENT_MAGIC)
    end = len(buf)
    while pos < end:
        reason = None
        if pos + _RECORD_HEAD.size > end:
            reason = "truncated record header"
        else:
            length, crc = _RECORD_HEAD.unpack_from(buf, pos)
            stop = pos + _RECORD_HEAD.size + length
            if stop > end:
                reason = "truncated record"
            else:
                payload = buf[pos + _RECORD_HEAD.size:stop]
                if checksum(payload) != crc:
                    reason = "checksum mismatch"
                elif length < _ENTRY_HEAD.size or payload[0] not in (_KIND_ENTRY, _KIND_RESET):
                    reason = "malformed payload"
        if reason is not None:
            torn = reason.startswith("truncated") or not any(buf[pos:]) or (
                reason == "checksum mismatch" and stop == end)
            if is_last and torn:
                _truncate(path, pos)
                return
            raise WALCorruptError(path, pos, reason)
        kind, a, b = _ENTRY_HEAD.unpack_from(payload, 0)
        yield kind, a, b, bytes(payload[_ENTRY_HEAD.size:]), pos
        pos = stop


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())


def _build_view(snap: Snapshot, raw: _RawLog, hs: HardState) -> MemoryStorage:
    mem = MemoryStorage()
    s = snap.meta.index
    entries = raw.entries
    if raw.base is not None and s > 0:
        if raw.base > s:
            raise StorageError(f"the log starts at {raw.base + 1} but the snapshot ends at {s}")
        at_s = raw.term_at(s)
        if at_s == snap.meta.term or (s == raw.base and at_s is None):
            entries = entries[s - raw.base:]
        else:
            # The log does not contain the snapshot's last entry: the snapshot came from the
            # leader and replaced the log, but we crashed before the RESET record (§7).
            entries = []
    elif raw.base is not None and raw.base > 0:
        raise StorageError(f"the log starts at {raw.base + 1} but there is no snapshot")
    if s > 0:
        mem.apply_snapshot(snap)
    mem.append(entries)
    commit = max(hs.commit, s)
    if commit > mem.last_index():
        raise StorageError(f"hard state commit {hs.commit} is past the last entry "
                           f"{mem.last_index()}")
    mem.set_hard_state(HardState(hs.term, hs.vote, commit))
    return mem
