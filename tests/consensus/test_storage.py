"""DiskStorage: durability, recovery from torn writes, truncation, snapshots, compaction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nborch.runtime.consensus import storage as storage_mod
from nborch.runtime.consensus.core import (Entry, HardState, MemoryStorage, Snapshot,
                                           SnapshotMeta, SnapshotOutOfDateError)
from nborch.runtime.consensus.storage import (DiskStorage, HardStateCorruptError,
                                              SnapshotCorruptError, StorageError,
                                              WALCorruptError)


def ents(first: int, last: int, term: int = 1, tag: str = "v") -> list[Entry]:
    return [Entry(term, i, f"{tag}{i}".encode()) for i in range(first, last + 1)]


def log_of(s) -> list[Entry]:
    first, last = s.first_index(), s.last_index()
    return s.entries(first, last + 1) if last >= first else []


def segments(path: Path) -> list[Path]:
    return sorted((path / "wal").glob("*.wal"))


def test_append_and_reopen_round_trip(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as s:
        s.append(ents(1, 3))
        s.append(ents(4, 5, term=2))
        s.set_hard_state(HardState(term=2, vote=3, commit=4))
    with DiskStorage.open(tmp_path) as s:
        assert log_of(s) == ents(1, 3) + ents(4, 5, term=2)
        assert s.initial_state() == HardState(2, 3, 4)
        assert (s.first_index(), s.last_index(), s.term(5)) == (1, 5, 2)


def test_append_fsyncs_before_returning(tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(storage_mod.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    with DiskStorage.open(tmp_path) as s:
        calls.clear()
        s.append(ents(1, 2))
        assert len(calls) == 1  # one fsync of the segment per append batch
        calls.clear()
        s.set_hard_state(HardState(1, 1, 0))
        assert len(calls) == 2  # the temp file, then the directory after the rename
        calls.clear()
        s.set_hard_state(HardState(1, 1, 2), durable=False)  # commit only: deferred
        assert calls == []
    assert DiskStorage.open(tmp_path).initial_state() == HardState(1, 1, 2)  # close flushed


def test_torn_last_record_is_dropped(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as s:
        s.append(ents(1, 3))
    seg = segments(tmp_path)[-1]
    size = seg.stat().st_size
    os.truncate(seg, size - 3)  # the last record lost its tail in a crash
    with DiskStorage.open(tmp_path) as s:
        assert log_of(s) == ents(1, 2)
        s.append(ents(3, 4, term=2))  # appends continue after the last good record
    with DiskStorage.open(tmp_path) as s:
        assert log_of(s) == ents(1, 2) + ents(3, 4, term=2)


@pytest.mark.parametrize("tail", [b"\x00" * 40, b"\x07\x00\x00\x00garbage-ish"])
def test_zero_filled_or_garbled_tail_is_dropped(tmp_path: Path, tail: bytes) -> None:
    with DiskStorage.open(tmp_path) as s:
        s.append(ents(1, 2))
    with open(segments(tmp_path)[-1], "ab") as f:
        f.write(tail)
    with DiskStorage.open(tmp_path) as s:
        assert log_of(s) == ents(1, 2)


def test_checksum_failure_at_the_very_end_is_a_torn_write(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as s:
        s.append(ents(1, 3))
    seg = segments(tmp_path)[-1]
    raw = bytearray(seg.read_bytes())
    raw[-1] ^= 0xFF  # the last record is complete but its bytes are wrong
    seg.write_bytes(bytes(raw))
    with DiskStorage.open(tmp_path) as s:
        assert log_of(s) == ents(1, 2)


def test_corrupt_record_in_the_middle_raises(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as s:
        s.append(ents(1, 5))
    seg = segments(tmp_path)[-1]
    raw = bytearray(seg.read_bytes())
    raw[len(storage_mod.SEGMENT_MAGIC) + 12] ^= 0xFF  # inside the first record's payload
    seg.write_bytes(bytes(raw))
    with pytest.raises(WALCorruptError) as err:
        DiskStorage.open(tmp_path)
    assert err.value.offset == len(storage_mod.SEGMENT_MAGIC)
    assert err.value.path == seg


def test_torn_record_in_an_older_segment_raises(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path, segment_bytes=64) as s:
        for i in range(1, 8):
            s.append(ents(i, i))
    segs = segments(tmp_path)
    assert len(segs) > 2
    os.truncate(segs[0], segs[0].stat().st_size - 2)  # only the last segment may be torn
    with pytest.raises(WALCorruptError):
        DiskStorage.open(tmp_path)


def test_leader_overwrite_truncates_conflicting_suffix(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path, segment_bytes=80) as s:
        s.append(ents(1, 6))
        s.append(ents(4, 5, term=2, tag="w"))  # §5.3: entries 4.. conflict, replaced
        assert log_of(s) == ents(1, 3) + ents(4, 5, term=2, tag="w")
        s.append(ents(6, 6, term=2, tag="w"))
    with DiskStorage.open(tmp_path) as s:
        assert log_of(s) == ents(1, 3) + ents(4, 6, term=2, tag="w")


def test_append_leaving_a_gap_is_refused(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as s:
        s.append(ents(1, 2))
        with pytest.raises(StorageError):
            s.append(ents(4, 4))


def test_hard_state_is_replaced_atomically(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as s:
        s.set_hard_state(HardState(3, 2, 0))
    # A crash while writing the next one leaves only the temp file: the old state stands.
    (tmp_path / "hardstate.tmp").write_bytes(b"partial")
    with DiskStorage.open(tmp_path) as s:
        assert s.initial_state() == HardState(3, 2, 0)
    assert not (tmp_path / "hardstate.tmp").exists()


def test_corrupt_hard_state_raises(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as s:
        s.set_hard_state(HardState(3, 2, 0))
    raw = bytearray((tmp_path / "hardstate").read_bytes())
    raw[5] ^= 1
    (tmp_path / "hardstate").write_bytes(bytes(raw))
    with pytest.raises(HardStateCorruptError):
        DiskStorage.open(tmp_path)


def test_snapshot_compaction_and_reopen(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path, segment_bytes=64) as s:
        for i in range(1, 11):
            s.append(ents(i, i))
        s.set_hard_state(HardState(1, 1, 10))
        before = len(segments(tmp_path))
        snap = s.create_snapshot(8, b"state@8", voters=(1, 2, 3))
        assert snap.meta == SnapshotMeta(8, 1, (1, 2, 3))
        s.compact(8)
        assert s.first_index() == 9
        assert len(segments(tmp_path)) < before  # segments holding only entries <= 8 are gone
        assert s.snapshot_data_path().read_bytes() == b"state@8"
        with pytest.raises(SnapshotOutOfDateError):
            s.create_snapshot(8, b"again")
        with pytest.raises(ValueError):
            s.compact(10)  # entries 9..10 are not in the snapshot
    with DiskStorage.open(tmp_path) as s:
        assert s.snapshot() == Snapshot(SnapshotMeta(8, 1, (1, 2, 3)), b"state@8")
        assert s.first_index() == 9
        assert log_of(s) == ents(9, 10)
        assert s.initial_state().commit == 10


def test_snapshot_without_compaction_still_bounds_the_log_on_reopen(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as s:
        s.append(ents(1, 5))
        s.create_snapshot(3, b"s3")
    with DiskStorage.open(tmp_path) as s:
        assert (s.first_index(), s.last_index()) == (4, 5)
        assert s.initial_state().commit == 3  # a snapshot is committed state


def test_apply_snapshot_from_leader_replaces_the_log(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path, segment_bytes=64) as s:
        s.append(ents(1, 6))
        s.apply_snapshot(Snapshot(SnapshotMeta(20, 3, (1, 2, 3)), b"leader-state"))
        assert (s.first_index(), s.last_index()) == (21, 20)
        assert len(segments(tmp_path)) == 1  # older segments describe a replaced log
        s.append([Entry(3, 21, b"x")])
        s.set_hard_state(HardState(3, 2, 21))
    with DiskStorage.open(tmp_path) as s:
        assert s.snapshot().data == b"leader-state"
        assert log_of(s) == [Entry(3, 21, b"x")]
        with pytest.raises(SnapshotOutOfDateError):
            s.apply_snapshot(Snapshot(SnapshotMeta(20, 3), b"old"))


@pytest.mark.parametrize("matching", [True, False])
def test_crash_between_snapshot_file_and_reset_record(tmp_path: Path, matching: bool) -> None:
    """§7: a log that holds the snapshot's last entry keeps what follows; otherwise the
    whole log is discarded — also when we crashed before recording the reset."""
    with DiskStorage.open(tmp_path) as s:
        s.append(ents(1, 6))
        snap_term = 1 if matching else 2
        s._write_snapshot(Snapshot(SnapshotMeta(4, snap_term), b"s"))  # then "crash"
    with DiskStorage.open(tmp_path) as s:
        assert s.snapshot().meta.index == 4
        assert log_of(s) == (ents(5, 6) if matching else [])


def test_corrupt_snapshot_data_raises(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as s:
        s.append(ents(1, 2))
        s.create_snapshot(2, b"precious")
        path = s.snapshot_data_path()
    path.write_bytes(b"precioUs")
    with pytest.raises(SnapshotCorruptError):
        DiskStorage.open(tmp_path)


def test_a_directory_is_opened_by_one_owner(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path):
        with pytest.raises(StorageError, match="in use"):
            DiskStorage.open(tmp_path)
    DiskStorage.open(tmp_path).close()  # released on close


# -- model-based: the files always reload to what the in-memory model holds -------------------

op = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 4), st.integers(1, 4)),  # (back, count)
    st.tuples(st.just("compact"), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("reopen"), st.just(0), st.just(0)),
    st.tuples(st.just("hard"), st.integers(0, 5), st.just(0)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(op, max_size=25))
def test_reopen_always_matches_an_in_memory_model(tmp_path_factory, ops) -> None:
    path = tmp_path_factory.mktemp("wal")
    model = MemoryStorage()
    disk = DiskStorage.open(path, segment_bytes=96)
    term = 1
    try:
        for kind, a, b in ops:
            if kind == "append":
                start = max(model.first_index(), model.last_index() + 1 - a)
                term += 1
                batch = ents(start, start + b - 1, term=term)
                model.append(batch)
                disk.append(batch)
            elif kind == "compact" and model.last_index() >= model.first_index() + a:
                index = model.first_index() + a
                model.create_snapshot(index, b"snap%d" % index)
                disk.create_snapshot(index, b"snap%d" % index)
                model.compact(index)
                disk.compact(index)
            elif kind == "hard":
                hs = HardState(term, a, max(model.first_index() - 1, 0))
                model.set_hard_state(hs)
                disk.set_hard_state(hs)
            elif kind == "reopen":
                disk.close()
                disk = DiskStorage.open(path, segment_bytes=96)
            assert log_of(disk) == log_of(model)
            assert disk.snapshot() == model.snapshot()
        disk.close()
        disk = DiskStorage.open(path, segment_bytes=96)
        assert log_of(disk) == log_of(model)
        assert disk.snapshot() == model.snapshot()
        assert (disk.initial_state().term, disk.initial_state().vote) == (
            model.initial_state().term, model.initial_state().vote)
    finally:
        disk.close()
