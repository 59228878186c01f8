"""Wire format of peer messages: explicit, versioned, round-trips exactly, rejects junk."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nborch.runtime.consensus.core import (MESSAGE_TYPES, AppendEntries,
                                           AppendEntriesResponse, ConfChange, ConfOp, Entry,
                                           EntryKind, Heartbeat,
                                           InstallSnapshot, Message, MessageDecodeError,
                                           RequestVote)
from nborch.runtime.consensus.core.messages import MAX_COUNTER, WIRE_VERSION

counter = st.integers(0, MAX_COUNTER)
node_id = st.integers(1, MAX_COUNTER)
ids = st.lists(node_id, max_size=7, unique=True).map(tuple)

_KIND = {"u64": counter, "flag": st.booleans(), "blob": st.binary(max_size=200), "ids": ids}


def entry(term: int, index: int):
    """A command, a no-op or a membership change (the kinds a leader appends)."""
    change = st.builds(ConfChange, st.sampled_from(list(ConfOp)), node_id,
                       st.binary(max_size=32))
    return st.one_of(
        st.builds(Entry, st.just(term), st.just(index), st.binary(max_size=64)),
        change.map(lambda c: Entry(term, index, c.encode(), EntryKind.CONF_CHANGE)))


@st.composite
def append_entries(draw) -> AppendEntries:
    """What a leader sends: entries follow prev_index, terms climb to at most the leader's."""
    term = draw(counter)
    prev_term = draw(st.integers(0, term))
    n = draw(st.integers(0, 5))
    prev_index = draw(st.integers(0, MAX_COUNTER - n))
    terms = sorted(draw(st.lists(st.integers(prev_term, term), min_size=n, max_size=n)))
    entries = tuple(draw(entry(t, prev_index + 1 + i)) for i, t in enumerate(terms))
    return AppendEntries(dst=draw(node_id), src=draw(node_id), term=term, prev_index=prev_index,
                         prev_term=prev_term, commit=draw(counter), entries=entries)


@st.composite
def install_snapshot(draw) -> InstallSnapshot:
    term = draw(counter)
    data = draw(st.binary(max_size=200))
    offset = draw(st.integers(0, 1 << 40))
    voters = draw(ids)
    learners = tuple(i for i in draw(ids) if i not in voters)
    return InstallSnapshot(dst=draw(node_id), src=draw(node_id), term=term,
                           snap_index=draw(node_id), snap_term=draw(st.integers(0, term)),
                           voters=voters, learners=learners, offset=offset,
                           total_size=offset + len(data) + draw(st.integers(0, 1 << 40)),
                           checksum=draw(st.integers(0, 2**32 - 1)), data=data)


def message_strategy(cls):
    if cls is AppendEntries:
        return append_entries()
    if cls is InstallSnapshot:
        return install_snapshot()
    fields = {"dst": node_id, "src": node_id, "term": counter}
    fields.update({name: _KIND[kind] for name, kind in cls.WIRE})
    # The remaining cross-field rules (a vote's last_term, a reject's hint) hold often enough
    # for a filter.
    return st.builds(cls, **fields).filter(lambda m: m._check() is None)


any_message = st.one_of(*[message_strategy(cls) for cls in MESSAGE_TYPES])


@given(any_message)
def test_every_message_round_trips(m: Message) -> None:
    data = m.to_bytes()
    assert Message.from_bytes(data) == m
    assert Message.from_bytes(memoryview(data)) == m


@given(any_message, st.data())
def test_truncated_messages_are_rejected(m: Message, data) -> None:
    raw = m.to_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(MessageDecodeError):
        Message.from_bytes(raw[:cut])


def test_entries_of_unknown_kind_or_malformed_membership_changes_are_rejected() -> None:
    change = Entry(1, 1, ConfChange(ConfOp.ADD_LEARNER, 4, b"host:1").encode(),
                   EntryKind.CONF_CHANGE)
    raw = AppendEntries(dst=1, src=2, term=1, entries=(change,)).to_bytes()
    assert Message.from_bytes(raw).entries == (change,)
    kind_at = raw.index(change.data) - 5  # the kind byte precedes the u32 length
    with pytest.raises(MessageDecodeError, match="unknown kind 9"):
        Message.from_bytes(raw[:kind_at] + b"\x09" + raw[kind_at + 1:])
    bad_op = raw.replace(change.data, b"\x07" + change.data[1:])
    with pytest.raises(MessageDecodeError, match="unknown membership change 7"):
        Message.from_bytes(bad_op)
    short = AppendEntries(dst=1, src=2, term=1, entries=(
        Entry(1, 1, b"\x01", EntryKind.CONF_CHANGE),)).to_bytes()
    with pytest.raises(MessageDecodeError, match="truncated"):
        Message.from_bytes(short)


def test_trailing_bytes_unknown_tags_and_versions_are_rejected() -> None:
    raw = AppendEntries(dst=1, src=2, term=3).to_bytes()
    with pytest.raises(MessageDecodeError, match="trailing"):
        Message.from_bytes(raw + b"\x00")
    with pytest.raises(MessageDecodeError, match="version"):
        Message.from_bytes(b"\x09" + raw[1:])
    with pytest.raises(MessageDecodeError, match="tag"):
        Message.from_bytes(raw[:1] + b"\xee" + raw[2:])


def test_the_framing_is_not_pickle() -> None:
    m = InstallSnapshot(dst=1, src=2, term=3, snap_index=4, snap_term=3, voters=(1, 2),
                        offset=0, total_size=3, checksum=7, data=b"abc")
    raw = m.to_bytes()
    assert raw[0] == WIRE_VERSION and raw[1] == InstallSnapshot.TAG
    with pytest.raises(Exception):
        pickle.loads(raw)
    # Pickled bytes are not accepted as a message either.
    with pytest.raises(MessageDecodeError):
        Message.from_bytes(pickle.dumps(m))


def test_describe_is_one_readable_line() -> None:
    m = AppendEntries(dst=2, src=1, term=3, prev_index=4, prev_term=2, commit=4,
                      entries=(Entry(3, 5, b"x"), Entry(3, 6, b"\x00")))
    assert m.describe() == ('1->2 AppendEntries term=3 prev=2/4 commit=4 '
                            'entries=[3/5 "x", 3/6 0x00]')


# -- values no honest peer sends ----------------------------------------------------------------

def test_the_forged_heartbeat_of_the_report_is_rejected() -> None:
    forged = Heartbeat(dst=2, src=1, term=2**64 - 1).to_bytes()
    with pytest.raises(MessageDecodeError, match=r"Heartbeat.term=18446744073709551615 is beyond"):
        Message.from_bytes(forged)
    assert Message.from_bytes(Heartbeat(dst=2, src=1, term=MAX_COUNTER).to_bytes()).term == \
        MAX_COUNTER


@given(st.sampled_from(MESSAGE_TYPES), st.data())
def test_any_number_beyond_the_bound_is_rejected(cls, data) -> None:
    m = data.draw(message_strategy(cls))
    numbers = ["term"] + [name for name, kind in cls.WIRE if kind == "u64"]
    name = data.draw(st.sampled_from(numbers))
    setattr(m, name, data.draw(st.integers(MAX_COUNTER + 1, 2**64 - 1)))
    with pytest.raises(MessageDecodeError, match="beyond"):
        Message.from_bytes(m.to_bytes())


@pytest.mark.parametrize("dst, src", [(0, 1), (1, 0), (2**64 - 1, 1), (1, MAX_COUNTER + 1)])
def test_node_ids_out_of_range_are_rejected(dst, src) -> None:
    with pytest.raises(MessageDecodeError, match="node id"):
        Message.from_bytes(Heartbeat(dst=dst, src=src, term=1).to_bytes())


@pytest.mark.parametrize("message, problem", [
    (AppendEntries(dst=2, src=1, term=3, prev_index=2**40, prev_term=3,
                   entries=(Entry(3, 2**40 + 1),)), None),
    (AppendEntries(dst=2, src=1, term=3, prev_index=MAX_COUNTER + 1), "beyond"),
    (AppendEntries(dst=2, src=1, term=3, prev_index=4, prev_term=2,
                   entries=(Entry(2, 5), Entry(3, 7))), "7 does not follow 5"),
    (AppendEntries(dst=2, src=1, term=3, prev_index=4, prev_term=2,
                   entries=(Entry(3, 5), Entry(2, 6))), r"term 2 outside \[3, 3\]"),
    (AppendEntries(dst=2, src=1, term=3, entries=(Entry(4, 1),)), r"term 4 outside \[0, 3\]"),
    (AppendEntries(dst=2, src=1, term=3, prev_term=5), "prev_term 5 is newer"),
    (AppendEntries(dst=2, src=1, term=3, entries=(Entry(2**64 - 1, 1),)), "beyond"),
    (AppendEntriesResponse(dst=1, src=2, term=3, index=4, reject=True, reject_hint=9),
     "hint 0/9 for index 4"),
    (AppendEntriesResponse(dst=1, src=2, term=3, index=4, reject=True, reject_hint=2,
                           rejoining=True), None),
    (AppendEntriesResponse(dst=1, src=2, term=3, index=4, rejoining=True), "rejoining on"),
    (AppendEntriesResponse(dst=1, src=2, term=3, index=4, reject=True, reject_hint=2,
                           hint_term=1, rejoining=True), "with a hint term"),
    (RequestVote(dst=1, src=2, term=3, last_term=4), "last_term 4 is newer"),
    (InstallSnapshot(dst=2, src=1, term=3, snap_index=0, snap_term=1, total_size=1, data=b"x"),
     "snapshot 1/0"),
    (InstallSnapshot(dst=2, src=1, term=3, snap_index=5, snap_term=1, offset=2, total_size=3,
                     data=b"xy"), r"bytes \[2, 4\) past 3"),
    (InstallSnapshot(dst=2, src=1, term=3, snap_index=5, snap_term=1, total_size=0,
                     checksum=2**32), "not a CRC-32"),
    (InstallSnapshot(dst=2, src=1, term=3, snap_index=5, snap_term=1, voters=(1, 1)),
     r"voters \(1, 1\)"),
])
def test_fields_that_contradict_each_other_are_rejected(message, problem) -> None:
    raw = message.to_bytes()
    if problem is None:
        assert Message.from_bytes(raw) == message
        return
    with pytest.raises(MessageDecodeError, match=problem):
        Message.from_bytes(raw)


def test_counts_past_the_buffer_are_rejected_before_reading_items() -> None:
    raw = bytearray(AppendEntries(dst=2, src=1, term=3, entries=(Entry(3, 1, b"a"),)).to_bytes())
    count_at = 2 + 3 * 8 + 3 * 8  # header, then prev_index, prev_term, commit
    raw[count_at:count_at + 4] = (2**32 - 1).to_bytes(4, "little")
    with pytest.raises(MessageDecodeError, match="count 4294967295 does not fit"):
        Message.from_bytes(bytes(raw))
    raw = InstallSnapshot(dst=2, src=1, term=3, snap_index=1, voters=(1, 2)).to_bytes()
    count_at = 2 + 3 * 8 + 2 * 8
    forged = raw[:count_at] + (10**6).to_bytes(4, "little") + raw[count_at + 4:]
    with pytest.raises(MessageDecodeError, match="count 1000000 does not fit"):
        Message.from_bytes(forged)
