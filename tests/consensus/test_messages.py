"""Wire format of peer messages: explicit, versioned, round-trips exactly, rejects junk."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nborch.runtime.consensus.core import (MESSAGE_TYPES, AppendEntries, Entry,
                                           InstallSnapshot, Message, MessageDecodeError)

u64 = st.integers(0, 2**64 - 1)
entries = st.lists(st.builds(Entry, u64, u64, st.binary(max_size=64)), max_size=5).map(tuple)
ids = st.lists(st.integers(1, 2**64 - 1), max_size=7).map(tuple)

_KIND = {"u64": u64, "flag": st.booleans(), "blob": st.binary(max_size=200),
         "entries": entries, "ids": ids}


def message_strategy(cls):
    fields = {"dst": u64, "src": u64, "term": u64}
    fields.update({name: _KIND[kind] for name, kind in cls.WIRE})
    return st.builds(cls, **fields)


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
    assert raw[0] == 1 and raw[1] == InstallSnapshot.TAG
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
