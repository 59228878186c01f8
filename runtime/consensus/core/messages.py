"""Messages between Raft peers, as plain dataclasses with an explicit binary framing.

Every message carries ``dst`` (the recipient), ``src`` (the sender) and ``term`` (the sender's
term, or the campaign term for (pre-)votes). The framing is explicit and versioned, never
pickle, because these bytes cross the network (gRPC ``bytes`` fields later)::

    u8 version (=2) | u8 type tag | u64 dst | u64 src | u64 term | type-specific fields

Integers are little-endian u64 (booleans u8), byte strings and entries are u32-length-prefixed,
id tuples are a u32 count then u64s; an entry is u64 term, u64 index, u8 kind, then its data. ``from_bytes`` rejects unknown versions/tags, truncated
input and trailing bytes with :class:`MessageDecodeError`, and also values no honest peer
sends: any number above :data:`MAX_COUNTER`, node ids of 0, counts that cannot fit in the
buffer, and fields that contradict each other (see each type's ``_check``). A peer is a
network input like any other: one bad message must cost a dropped message, nothing more.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from typing import ClassVar

from .conf import ConfChange, ConfChangeError
from .types import Entry, EntryKind

WIRE_VERSION = 2  # 2: entries carry their kind; InstallSnapshot carries the learners

MAX_COUNTER = 2**53 - 1
"""The largest term, index, node id, offset or size a message may carry. Far below 2**64, so
``term + 1`` and sums of two such values never overflow the u64 encoders; and it is the
largest integer a JSON status reader in a browser (a double) shows exactly. Unreachable by
honest use: a million entries a second for 285 years, an election a millisecond for 285 000."""


class MessageDecodeError(ValueError):
    """The bytes are not a well-formed message of a known type and version."""


@dataclass(slots=True, kw_only=True)
class Message:
    """Base of all peer messages. Treat instances as immutable once handed to ``step``/sent."""

    dst: int
    src: int
    term: int

    TAG: ClassVar[int] = 0
    # (field name, kind) for the type-specific fields, in wire order.
    WIRE: ClassVar[tuple[tuple[str, str], ...]] = ()

    def to_bytes(self) -> bytes:
        w = _Writer()
        w.parts.append(_HEADER.pack(WIRE_VERSION, self.TAG, self.dst, self.src, self.term))
        for name, kind in self.WIRE:
            getattr(w, kind)(getattr(self, name))
        return w.getvalue()

    @staticmethod
    def from_bytes(buf: bytes | bytearray | memoryview) -> "Message":
        r = _Reader(buf)
        if len(r.buf) < _HEADER.size:
            raise MessageDecodeError("truncated message")
        version, tag, dst, src, term = _HEADER.unpack_from(r.buf, 0)
        if version != WIRE_VERSION:
            raise MessageDecodeError(f"unsupported message version {version}")
        cls = _BY_TAG.get(tag)
        if cls is None:
            raise MessageDecodeError(f"unknown message type tag {tag}")
        if not (0 < dst <= MAX_COUNTER and 0 < src <= MAX_COUNTER):
            raise MessageDecodeError(f"node id out of range ({src}->{dst})")
        if term > MAX_COUNTER:
            raise MessageDecodeError(f"{cls.__name__}.term={term} is beyond {MAX_COUNTER}")
        r.pos = _HEADER.size
        kwargs = {"dst": dst, "src": src, "term": term}
        for name, kind in cls.WIRE:
            value = kwargs[name] = getattr(r, kind)()
            if kind == "u64" and value > MAX_COUNTER:
                raise MessageDecodeError(f"{cls.__name__}.{name}={value} is beyond {MAX_COUNTER}")
        r.finish()
        message = cls(**kwargs)
        problem = message._check()
        if problem:
            raise MessageDecodeError(f"{cls.__name__}: {problem}")
        return message

    def _check(self) -> str | None:
        """Why these (in-range) fields cannot come from an honest peer, or None."""
        return None

    def describe(self) -> str:
        """One stable line for logs and the scenario scripts."""
        parts = [f"{self.src}->{self.dst} {type(self).__name__} term={self.term}"]
        parts.extend(self._describe_fields())
        return " ".join(parts)

    def _describe_fields(self) -> list[str]:
        return []


@dataclass(slots=True, kw_only=True)
class AppendEntries(Message):
    """§5.3 AppendEntries RPC: entries following (prev_index, prev_term), and the leader's
    commit index. An empty ``entries`` still carries the commit index and probes the log."""

    prev_index: int = 0
    prev_term: int = 0
    commit: int = 0
    entries: tuple[Entry, ...] = ()

    TAG: ClassVar[int] = 1
    WIRE: ClassVar = (("prev_index", "u64"), ("prev_term", "u64"), ("commit", "u64"),
                      ("entries", "entries"))

    def _check(self) -> str | None:
        # A leader's log: indices follow prev_index one by one, terms never decrease along
        # it and none is newer than the leader's own term.
        if self.prev_term > self.term:
            return f"prev_term {self.prev_term} is newer than term {self.term}"
        index, term = self.prev_index, self.prev_term
        for e in self.entries:
            if e.index != index + 1:
                return f"entry index {e.index} does not follow {index}"
            if not term <= e.term <= self.term:
                return f"entry {e.index} has term {e.term} outside [{term}, {self.term}]"
            index, term = e.index, e.term
        return None

    def _describe_fields(self) -> list[str]:
        out = [f"prev={self.prev_term}/{self.prev_index}", f"commit={self.commit}"]
        if self.entries:
            out.append("entries=[" + ", ".join(describe_entry(e) for e in self.entries) + "]")
        return out


@dataclass(slots=True, kw_only=True)
class AppendEntriesResponse(Message):
    """Reply to AppendEntries (and the final ack of an InstallSnapshot).

    Accepted: ``index`` is the follower's last index now matching the leader. Rejected:
    ``index`` echoes the rejected prev_index and (``reject_hint``, ``hint_term``) is the
    follower's guess of the largest matching (index, term) for fast backtracking (§5.3, the
    optimisation at the end of the section).

    ``rejoining`` (on a rejection only): the follower lost its log and is being rebuilt, so
    whatever it acknowledged before counts for nothing; ``reject_hint`` is then an index up
    to which its log is known to match the leader's, with ``hint_term`` 0.
    """

    index: int = 0
    reject: bool = False
    reject_hint: int = 0
    hint_term: int = 0
    rejoining: bool = False

    TAG: ClassVar[int] = 2
    WIRE: ClassVar = (("index", "u64"), ("reject", "flag"), ("reject_hint", "u64"),
                      ("hint_term", "u64"), ("rejoining", "flag"))

    def _check(self) -> str | None:
        # The hint is at or before the rejected index, from a log no newer than our term.
        if self.reject_hint > self.index or self.hint_term > self.term:
            return f"hint {self.hint_term}/{self.reject_hint} for index {self.index}"
        if self.rejoining and (not self.reject or self.hint_term):
            return "rejoining on an acceptance, or with a hint term"
        return None

    def _describe_fields(self) -> list[str]:
        if self.reject:
            out = [f"index={self.index}", f"rejected(hint={self.hint_term}/{self.reject_hint})"]
            return out + ["rejoining"] if self.rejoining else out
        return [f"index={self.index}"]


@dataclass(slots=True, kw_only=True)
class RequestVote(Message):
    """§5.2 RequestVote RPC; with ``pre_vote`` the PreVote of the thesis (§9.6): ``term`` is
    the term the sender *would* campaign at, and the recipient changes nothing."""

    last_index: int = 0
    last_term: int = 0
    pre_vote: bool = False

    TAG: ClassVar[int] = 3
    WIRE: ClassVar = (("last_index", "u64"), ("last_term", "u64"), ("pre_vote", "flag"))

    def _check(self) -> str | None:
        if self.last_term > self.term:  # a candidate's log holds no entry of a later term
            return f"last_term {self.last_term} is newer than term {self.term}"
        return None

    def describe(self) -> str:
        name = "PreVote" if self.pre_vote else "Vote"
        return (f"{self.src}->{self.dst} {name} term={self.term} "
                f"last={self.last_term}/{self.last_index}")


@dataclass(slots=True, kw_only=True)
class RequestVoteResponse(Message):
    reject: bool = False
    pre_vote: bool = False

    TAG: ClassVar[int] = 4
    WIRE: ClassVar = (("reject", "flag"), ("pre_vote", "flag"))

    def describe(self) -> str:
        name = "PreVoteResponse" if self.pre_vote else "VoteResponse"
        verdict = "rejected" if self.reject else "granted"
        return f"{self.src}->{self.dst} {name} term={self.term} {verdict}"


@dataclass(slots=True, kw_only=True)
class Heartbeat(Message):
    """Leader liveness (§5.2) and commit propagation; ``context`` tags a ReadIndex round."""

    commit: int = 0
    context: bytes = b""

    TAG: ClassVar[int] = 5
    WIRE: ClassVar = (("commit", "u64"), ("context", "blob"))

    def _describe_fields(self) -> list[str]:
        out = [f"commit={self.commit}"]
        if self.context:
            out.append(f"ctx={describe_data(self.context)}")
        return out


@dataclass(slots=True, kw_only=True)
class HeartbeatResponse(Message):
    context: bytes = b""

    TAG: ClassVar[int] = 6
    WIRE: ClassVar = (("context", "blob"),)

    def _describe_fields(self) -> list[str]:
        return [f"ctx={describe_data(self.context)}"] if self.context else []


@dataclass(slots=True, kw_only=True)
class InstallSnapshot(Message):
    """§7 InstallSnapshot RPC, one chunk: ``data`` holds bytes [offset, offset+len(data)) of a
    snapshot of ``total_size`` bytes whose CRC-32 is ``checksum``. The follower reassembles
    the chunks of one transfer (identified by term, sender, snapshot index/term, size and
    checksum) and applies the snapshot only once it is complete and the checksum matches."""

    snap_index: int = 0
    snap_term: int = 0
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()
    offset: int = 0
    total_size: int = 0
    checksum: int = 0
    data: bytes = b""

    TAG: ClassVar[int] = 7
    WIRE: ClassVar = (("snap_index", "u64"), ("snap_term", "u64"), ("voters", "ids"),
                      ("learners", "ids"), ("offset", "u64"), ("total_size", "u64"), ("checksum", "u64"),
                      ("data", "blob"))

    @property
    def is_last(self) -> bool:
        return self.offset + len(self.data) >= self.total_size

    def _check(self) -> str | None:
        if self.snap_index == 0 or self.snap_term > self.term:
            return f"snapshot {self.snap_term}/{self.snap_index} at term {self.term}"
        if self.offset + len(self.data) > self.total_size:
            return f"bytes [{self.offset}, {self.offset + len(self.data)}) past {self.total_size}"
        if self.checksum > 0xFFFFFFFF:
            return f"checksum {self.checksum} is not a CRC-32"
        members = self.voters + self.learners
        if len(set(members)) != len(members) or not all(0 < v <= MAX_COUNTER for v in members):
            return f"voters {self.voters} learners {self.learners}"
        return None

    def _describe_fields(self) -> list[str]:
        return [f"snap={self.snap_term}/{self.snap_index}",
                f"bytes=[{self.offset},{self.offset + len(self.data)})/{self.total_size}"]


@dataclass(slots=True, kw_only=True)
class InstallSnapshotResponse(Message):
    """Chunk acknowledgement: the follower holds ``next_offset`` bytes of the transfer of
    snapshot ``snap_index``. ``reject`` asks the leader to resend from ``next_offset`` (a gap,
    a restarted follower, or a checksum mismatch, in which case ``next_offset`` is 0)."""

    snap_index: int = 0
    next_offset: int = 0
    reject: bool = False

    TAG: ClassVar[int] = 8
    WIRE: ClassVar = (("snap_index", "u64"), ("next_offset", "u64"), ("reject", "flag"))

    def _describe_fields(self) -> list[str]:
        out = [f"snap_index={self.snap_index}", f"next_offset={self.next_offset}"]
        if self.reject:
            out.append("rejected")
        return out


@dataclass(slots=True, kw_only=True)
class ReadIndexRequest(Message):
    """A follower forwards a ReadIndex request (thesis §6.4) to its leader."""

    context: bytes = b""

    TAG: ClassVar[int] = 9
    WIRE: ClassVar = (("context", "blob"),)

    def _describe_fields(self) -> list[str]:
        return [f"ctx={describe_data(self.context)}"]


@dataclass(slots=True, kw_only=True)
class ReadIndexResponse(Message):
    index: int = 0
    context: bytes = b""

    TAG: ClassVar[int] = 10
    WIRE: ClassVar = (("index", "u64"), ("context", "blob"))

    def _describe_fields(self) -> list[str]:
        return [f"index={self.index}", f"ctx={describe_data(self.context)}"]


MESSAGE_TYPES: tuple[type[Message], ...] = (
    AppendEntries, AppendEntriesResponse, RequestVote, RequestVoteResponse, Heartbeat,
    HeartbeatResponse, InstallSnapshot, InstallSnapshotResponse, ReadIndexRequest,
    ReadIndexResponse,
)
_BY_TAG = {cls.TAG: cls for cls in MESSAGE_TYPES}
assert len(_BY_TAG) == len(MESSAGE_TYPES)
for _cls in MESSAGE_TYPES:  # the declared wire layout must cover every field exactly once
    assert [n for n, _ in _cls.WIRE] == [f.name for f in fields(_cls)][3:], _cls


def describe_data(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + data.hex()
    if text.isprintable():
        return '"' + text + '"'
    return "0x" + data.hex()


def describe_entry(e: Entry) -> str:
    if e.kind == EntryKind.CONF_CHANGE:
        try:
            return f"{e.term}/{e.index} conf-change {ConfChange.decode(e.data)}"
        except ConfChangeError:
            pass
    return f"{e.term}/{e.index} {describe_data(e.data)}"


# -- framing helpers ---------------------------------------------------------------------------

_HEADER = struct.Struct("<BBQQQ")  # version, tag, dst, src, term
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_ENTRY_HEAD = struct.Struct("<QQBI")  # term, index, kind, data length


class _Writer:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u64(self, v: int) -> None:
        self.parts.append(_U64.pack(v))

    def flag(self, v: bool) -> None:
        self.parts.append(b"\x01" if v else b"\x00")

    def blob(self, v: bytes) -> None:
        self.parts.append(_U32.pack(len(v)))
        self.parts.append(bytes(v))

    def ids(self, v: tuple[int, ...]) -> None:
        self.parts.append(_U32.pack(len(v)))
        self.parts.extend(_U64.pack(i) for i in v)

    def entries(self, v: tuple[Entry, ...]) -> None:
        self.parts.append(_U32.pack(len(v)))
        for e in v:
            self.parts.append(_ENTRY_HEAD.pack(e.term, e.index, e.kind, len(e.data)))
            self.parts.append(e.data)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview) -> None:
        self.buf = buf if isinstance(buf, bytes) else bytes(buf)
        self.pos = 0

    def _unpack(self, st: struct.Struct) -> tuple:
        end = self.pos + st.size
        if end > len(self.buf):
            raise MessageDecodeError("truncated message")
        out = st.unpack_from(self.buf, self.pos)
        self.pos = end
        return out

    def _bytes(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise MessageDecodeError("truncated message")
        out = self.buf[self.pos:end]
        self.pos = end
        return out

    def u64(self) -> int:
        return self._unpack(_U64)[0]

    def flag(self) -> bool:
        v = self._bytes(1)[0]
        if v > 1:
            raise MessageDecodeError(f"bad boolean {v}")
        return v == 1

    def blob(self) -> bytes:
        return self._bytes(self._unpack(_U32)[0])

    def _count(self, item_size: int) -> int:
        """A u32 count of items of at least ``item_size`` bytes that must fit what is left."""
        (n,) = self._unpack(_U32)
        if n * item_size > len(self.buf) - self.pos:
            raise MessageDecodeError(f"count {n} does not fit the {len(self.buf) - self.pos} "
                                     "bytes left")
        return n

    def ids(self) -> tuple[int, ...]:
        return tuple(self._unpack(_U64)[0] for _ in range(self._count(_U64.size)))

    def entries(self) -> tuple[Entry, ...]:
        out = []
        for _ in range(self._count(_ENTRY_HEAD.size)):
            term, index, kind, size = self._unpack(_ENTRY_HEAD)
            if term > MAX_COUNTER or index > MAX_COUNTER:
                raise MessageDecodeError(f"entry {term}/{index} is beyond {MAX_COUNTER}")
            try:
                kind = EntryKind(kind)
            except ValueError:
                raise MessageDecodeError(f"entry {term}/{index} of unknown kind {kind}") from None
            data = self._bytes(size)
            if kind is EntryKind.CONF_CHANGE:
                try:
                    ConfChange.decode(data)
                except ConfChangeError as exc:
                    raise MessageDecodeError(f"entry {term}/{index}: {exc}") from None
            out.append(Entry(term, index, data, kind))
        return tuple(out)

    def finish(self) -> None:
        if self.pos != len(self.buf):
            raise MessageDecodeError(f"{len(self.buf) - self.pos} trailing bytes")
