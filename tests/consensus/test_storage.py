"""DiskStorage: durability, torn writes told from corruption (nothing valid is ever cut),
quarantine and rejoin, truncation, snapshots, compaction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nborch.runtime.consensus import quarantine
from nborch.runtime.consensus import storage as storage_mod
from nborch.runtime.consensus.core import (ConfChange, ConfOp, Entry, EntryKind, HardState,
                                           MemoryStorage, Snapshot, SnapshotMeta,
                                           SnapshotOutOfDateError)
from nborch.runtime.consensus.storage import (DiskStorage, HardStateCorruptError,
                                              SnapshotCorruptError, StorageCorruptError,
                                              StorageError, WALCorruptError,
                                              quarantine_corrupt)
from nborch.runtime.consensus.wal_format import RECORD_HEAD, read_records


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


def test_membership_changes_and_snapshot_learners_survive_a_reopen(tmp_path: Path) -> None:
    change = Entry(1, 3, ConfChange(ConfOp.ADD_LEARNER, 4, b"10.0.0.4:1").encode(),
                   EntryKind.CONF_CHANGE)
    with DiskStorage.open(tmp_path) as s:
        s.append(ents(1, 2) + [change])
        s.create_snapshot(2, b"state", (1, 2, 3), (5,))
    with DiskStorage.open(tmp_path) as s:
        assert log_of(s) == [change]  # the snapshot bounds the log on reopen
        assert s.snapshot().meta == SnapshotMeta(2, 1, (1, 2, 3), (5,))


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


# -- recovery never destroys a valid record (torn tail vs corruption) ------------------------

def record_offsets(seg: Path) -> list[int]:
    records, bad = read_records(seg.read_bytes())
    assert bad is None
    return [r.offset for r in records]


def ten_entries_committed(path: Path, commit: int = 10) -> Path:
    s = DiskStorage.open(path)
    s.append([Entry(1, i, b"w%d" % i) for i in range(1, 11)])
    s.set_hard_state(HardState(1, 1, commit))
    s.close()
    return segments(path)[-1]


def kept_files(path: Path) -> list[Path]:
    folder = path / quarantine.QUARANTINE
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_a_corrupt_length_in_the_middle_raises_and_keeps_every_byte(tmp_path: Path) -> None:
    """The issue's reproduction: the length of record 5 now runs past the end of the file.
    Records 6..10 follow it intact, so this is corruption, not a torn write."""
    seg = ten_entries_committed(tmp_path)
    before = seg.read_bytes()
    fifth = record_offsets(seg)[4]
    raw = bytearray(before)
    raw[fifth:fifth + 4] = (0x7FFFFFF0).to_bytes(4, "little")
    seg.write_bytes(bytes(raw))
    with pytest.raises(WALCorruptError) as err:
        DiskStorage.open(tmp_path)
    assert (err.value.path, err.value.offset) == (seg, fifth)
    assert "runs past the end" in str(err.value) and "a valid record follows" in str(err.value)
    assert seg.read_bytes() == bytes(raw)  # nothing truncated
    assert kept_files(tmp_path) == []


@pytest.mark.parametrize("change", ["grow", "shrink", "payload"])
def test_mid_file_corruption_raises_and_changes_nothing(tmp_path: Path, change: str) -> None:
    seg = ten_entries_committed(tmp_path)
    third = record_offsets(seg)[2]
    raw = bytearray(seg.read_bytes())
    length = int.from_bytes(raw[third:third + 4], "little")
    if change == "grow":  # still inside the file: the CRC covers the wrong bytes
        raw[third:third + 4] = (length + 30).to_bytes(4, "little")
    elif change == "shrink":
        raw[third:third + 4] = (length - 3).to_bytes(4, "little")
    else:
        raw[third + RECORD_HEAD.size + 2] ^= 0x40
    seg.write_bytes(bytes(raw))
    with pytest.raises(WALCorruptError) as err:
        DiskStorage.open(tmp_path)
    assert err.value.offset == third
    assert seg.read_bytes() == bytes(raw)
    assert not (tmp_path / "hardstate.tmp").exists() and kept_files(tmp_path) == []


def _short_header(raw: bytes, last: int) -> tuple[bytes, int]:
    return raw + raw[last:last + 5], len(raw)  # a new record's header cut short


def _short_payload(raw: bytes, last: int) -> tuple[bytes, int]:
    return raw[:-4], last


def _zero_filled(raw: bytes, last: int) -> tuple[bytes, int]:
    return raw[:last] + bytes(len(raw) - last), last  # the last record's sectors never landed


def _crc_at_eof(raw: bytes, last: int) -> tuple[bytes, int]:
    return raw[:-1] + bytes([raw[-1] ^ 0xFF]), last


@pytest.mark.parametrize("tear", [_short_header, _short_payload, _zero_filled, _crc_at_eof],
                         ids=["short-header", "short-payload", "zero-filled", "crc-at-eof"])
def test_a_torn_tail_is_kept_in_quarantine_then_cut(tmp_path: Path, tear) -> None:
    seg = ten_entries_committed(tmp_path, commit=9)  # the torn append was never acknowledged
    raw = seg.read_bytes()
    torn, cut_at = tear(raw, record_offsets(seg)[-1])
    seg.write_bytes(torn)
    with DiskStorage.open(tmp_path) as s:
        assert s.last_index() == (10 if cut_at == len(raw) else 9)
        report = s.report
    assert seg.read_bytes() == torn[:cut_at]
    [kept] = kept_files(tmp_path)
    assert kept.read_bytes() == torn[cut_at:]  # every dropped byte is still on disk
    assert kept.name.endswith(f"-{seg.name}-torn-at-{cut_at}")
    assert (report.torn_bytes, report.torn_kept) == (len(torn) - cut_at, (str(kept),))
    assert "torn tail" in report.summary() and str(kept) in report.summary()
    with DiskStorage.open(tmp_path) as s:  # repaired once: the next open finds nothing
        assert s.report.torn_bytes == 0 and len(kept_files(tmp_path)) == 1
        assert s.report.quarantine == (kept.name,)  # but says what is set aside
        assert "holds 1 item(s) set aside" in s.report.summary()


def test_the_open_report_describes_the_log(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path, segment_bytes=64) as s:
        s.append(ents(1, 6))
        s.set_hard_state(HardState(2, 1, 5))
        s.create_snapshot(3, b"s3")
        s.compact(2)
    with DiskStorage.open(tmp_path) as s:
        r = s.report
    assert (r.entries, r.first_index, r.last_index, r.snapshot_index, r.commit) == (3, 4, 6, 3, 5)
    assert r.segments == len(segments(tmp_path)) and r.torn_bytes == 0 and r.rejoin is None
    assert r.as_dict()["quarantined"] is None
    assert r.summary().startswith(f"{tmp_path}: {r.segments} segment(s), 3 entries [4..6]")


def test_a_torn_tail_is_not_cut_when_another_file_is_corrupt(tmp_path: Path) -> None:
    seg = ten_entries_committed(tmp_path, commit=9)
    torn = seg.read_bytes()[:-3]
    seg.write_bytes(torn)
    raw = bytearray((tmp_path / "hardstate").read_bytes())
    raw[6] ^= 1
    (tmp_path / "hardstate").write_bytes(bytes(raw))
    with pytest.raises(HardStateCorruptError):
        DiskStorage.open(tmp_path)
    assert seg.read_bytes() == torn and kept_files(tmp_path) == []


def test_garbage_after_a_bad_record_is_not_a_torn_tail(tmp_path: Path) -> None:
    seg = ten_entries_committed(tmp_path, commit=9)
    raw = bytearray(seg.read_bytes())
    last = record_offsets(seg)[-1]
    raw[last + RECORD_HEAD.size + 1] ^= 0x10  # CRC fails, and it is not the end of the file
    raw += b"not zeros, not a record"
    seg.write_bytes(bytes(raw))
    with pytest.raises(WALCorruptError):
        DiskStorage.open(tmp_path)
    assert seg.read_bytes() == bytes(raw)


def test_log_that_lost_committed_entries_is_corrupt(tmp_path: Path) -> None:
    seg = ten_entries_committed(tmp_path)
    os.truncate(seg, record_offsets(seg)[-1] + 3)  # entry 10 torn, yet commit 10 is recorded
    with pytest.raises(StorageCorruptError, match="commit 10 is past the last entry 9"):
        DiskStorage.open(tmp_path)


# -- a corrupt replica's files are set aside, and it rejoins empty ---------------------------

def corrupt_middle(path: Path) -> Path:
    seg = ten_entries_committed(path)
    raw = bytearray(seg.read_bytes())
    raw[record_offsets(seg)[4] + RECORD_HEAD.size + 3] ^= 0x01
    seg.write_bytes(bytes(raw))
    return seg


def test_quarantine_keeps_the_corrupt_files_and_the_replica_restarts_empty(tmp_path) -> None:
    seg = corrupt_middle(tmp_path)
    corrupt = seg.read_bytes()
    with DiskStorage.open(tmp_path / "unrelated"):
        pass
    with pytest.raises(WALCorruptError) as err:
        DiskStorage.open(tmp_path)
    rejoin = quarantine_corrupt(tmp_path, err.value)
    folder = Path(rejoin.quarantined)
    assert folder.parent == tmp_path / quarantine.QUARANTINE and folder.name.endswith("-corrupt")
    assert (folder / "wal" / seg.name).read_bytes() == corrupt  # kept byte for byte
    assert (folder / "hardstate").exists()
    # term 1 and vote 1 came from the hard state; 10 is the highest index it may have acked
    assert (rejoin.term, rejoin.vote, rejoin.until_commit) == (1, 1, 10)
    with DiskStorage.open(tmp_path) as s:
        assert (s.first_index(), s.last_index()) == (1, 0)
        assert s.initial_state() == HardState(1, 1, 0)  # no second vote in term 1
        assert s.rejoin == s.report.rejoin == rejoin
        assert s.report.as_dict()["quarantined"] == str(folder)
        s.append(ents(1, 2, term=3))
        s.set_hard_state(HardState(3, 0, 2))
    with DiskStorage.open(tmp_path) as s:
        assert s.rejoin is not None  # until the core says it is caught up
        s.finish_rejoin()
        assert s.rejoin is None
    with DiskStorage.open(tmp_path) as s:
        assert s.rejoin is None and log_of(s) == ents(1, 2, term=3)
        assert s.initial_state() == HardState(3, 0, 2)
    assert (folder / "wal" / seg.name).read_bytes() == corrupt


def test_an_interrupted_quarantine_is_finished_by_the_next_open(tmp_path: Path) -> None:
    corrupt_middle(tmp_path)
    marker = quarantine.Rejoin(quarantined=str(tmp_path / "quarantine" / "x-corrupt"),
                               reason="test", term=4, vote=2, until_commit=10, moved=False)
    quarantine.write_rejoin(tmp_path, marker)
    (tmp_path / "quarantine" / "x-corrupt").mkdir(parents=True)
    os.rename(tmp_path / "hardstate", tmp_path / "quarantine" / "x-corrupt" / "hardstate")
    # "crash": wal/ and snap/ were not moved yet
    with DiskStorage.open(tmp_path) as s:
        assert s.last_index() == 0 and s.initial_state() == HardState(4, 2, 0)
        assert s.rejoin.moved
    assert {p.name for p in (tmp_path / "quarantine" / "x-corrupt").iterdir()} == {
        "hardstate", "wal", "snap"}


def test_salvage_reads_past_the_damage(tmp_path: Path) -> None:
    """With the hard state unreadable too, the term and index come from the records that
    still pass their checks, on both sides of the damage."""
    seg = corrupt_middle(tmp_path)
    (tmp_path / "hardstate").write_bytes(b"junk")
    assert seg.exists()
    rejoin = quarantine_corrupt(tmp_path, StorageCorruptError(tmp_path, "test"))
    assert (rejoin.term, rejoin.vote, rejoin.until_commit) == (1, 0, 10)


def test_the_rejoin_names_where_the_corrupt_file_is_kept(tmp_path: Path) -> None:
    seg = corrupt_middle(tmp_path)
    with pytest.raises(WALCorruptError) as err:
        DiskStorage.open(tmp_path)
    rejoin = quarantine_corrupt(tmp_path, err.value)
    assert rejoin.corrupt_file == str(Path(rejoin.quarantined) / "wal" / seg.name)
    assert Path(rejoin.corrupt_file).is_file()


def test_an_overwrite_reaching_before_the_oldest_segment_survives_reopen(tmp_path) -> None:
    """Found by the model test: the oldest segment left after compaction starts at entry 5;
    the leader then overwrote from entry 4. Replay used to keep the replaced entry 5."""
    with DiskStorage.open(tmp_path, segment_bytes=96) as s:
        s.append(ents(1, 1, term=2))
        s.append(ents(2, 4, term=3))
        s.create_snapshot(3, b"s3")
        s.compact(3)
        s.append(ents(5, 5, term=4))
        s.append(ents(4, 4, term=5))  # replaces 4 and 5
        s.create_snapshot(4, b"s4")
        s.compact(4)
    with DiskStorage.open(tmp_path, segment_bytes=96) as s:
        assert (s.first_index(), s.last_index()) == (5, 4) and log_of(s) == []


def test_a_replica_that_loses_its_log_again_while_rejoining_keeps_the_first_promises(tmp_path):
    corrupt_middle(tmp_path)
    with pytest.raises(WALCorruptError) as err:
        DiskStorage.open(tmp_path)
    first = quarantine_corrupt(tmp_path, err.value)
    with DiskStorage.open(tmp_path) as s:
        s.append(ents(1, 3))
    seg = segments(tmp_path)[-1]
    raw = bytearray(seg.read_bytes())
    raw[record_offsets(seg)[0] + RECORD_HEAD.size + 1] ^= 0x02
    seg.write_bytes(bytes(raw))
    with pytest.raises(WALCorruptError) as err:
        DiskStorage.open(tmp_path)
    second = quarantine_corrupt(tmp_path, err.value)
    assert second.quarantined != first.quarantined
    assert (second.term, second.vote, second.until_commit) == (1, 1, 10)
    assert Path(first.quarantined, "wal").is_dir() and Path(second.quarantined, "wal").is_dir()


def test_compaction_keeps_a_segment_whose_overwrite_an_older_kept_one_needs(tmp_path) -> None:
    """Found by the model test: the segment holding the overwrite of entry 3 went, the older
    one holding the replaced entry 3 stayed, and the reopened log lost entry 4."""
    with DiskStorage.open(tmp_path, segment_bytes=96) as s:
        s.append(ents(1, 1, term=2))
        s.append(ents(2, 4, term=3))
        s.append(ents(3, 3, term=4))  # replaces 3 and 4, in the next segment
        s.create_snapshot(3, b"s3")
        s.compact(3)
        s.append(ents(4, 4, term=5))
    with DiskStorage.open(tmp_path, segment_bytes=96) as s:
        assert log_of(s) == ents(4, 4, term=5)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(2, 8), which=st.integers(0, 7), where=st.integers(0, 40),
       flip=st.integers(1, 255), cut=st.booleans())
def test_damage_anywhere_never_loses_a_record_before_it(tmp_path_factory, n, which, where,
                                                        flip, cut) -> None:
    """One damaged byte in record ``which``, or the file cut there (a crash mid-append): the
    open either raises and changes nothing, or keeps the dropped bytes in quarantine and
    every record before them. A damaged record followed by intact ones always raises."""
    path = tmp_path_factory.mktemp("damage")
    seg = ten_entries_committed(path, commit=0)
    records = read_records(seg.read_bytes())[0][:n]
    os.truncate(seg, records[-1].stop)  # n records
    k = min(which, n - 1)
    at = min(records[k].offset + where, records[k].stop - 1)
    raw = bytearray(seg.read_bytes())
    if cut:
        raw = raw[:at]
    else:
        raw[at] ^= flip
    seg.write_bytes(bytes(raw))
    try:
        s = DiskStorage.open(path)
    except WALCorruptError as err:
        assert not cut and err.offset <= records[k].offset and seg.read_bytes() == bytes(raw)
        return
    with s:
        assert cut or k == n - 1, "a damaged record before intact ones was repaired away"
        assert log_of(s) == [Entry(1, i, b"w%d" % i) for i in range(1, k + 1)]
    dropped = bytes(raw[records[k].offset:])
    assert [p.read_bytes() for p in kept_files(path)] == ([dropped] if dropped else [])
