"""The WAL segment format, and how a segment's bytes are read back (no I/O here).

A segment is ``SEGMENT_MAGIC`` then records ``u32 length | u32 crc32(payload) | payload``; the
payload is an ENTRY (``u8 1 | u64 term | u64 index | data``) or a RESET
(``u8 2 | u64 index | u64 term``).

Reading stops at the first record that fails its checks; :func:`classify_bad_record` then
tells a torn tail (bytes of the last append, cut short by a crash before its fsync) from
corruption (anything else), which :mod:`.storage` must never repair away.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from .core.types import checksum

SEGMENT_MAGIC = b"NBRAFTW1"
RECORD_HEAD = struct.Struct("<II")  # length, crc32
ENTRY_HEAD = struct.Struct("<BQQ")  # kind, term, index
RESET = struct.Struct("<BQQ")  # kind, index, term
KIND_ENTRY = 1
KIND_RESET = 2
KIND_CONF_ENTRY = 3  # an entry holding a membership change; laid out as KIND_ENTRY
ENTRY_KINDS = (KIND_ENTRY, KIND_CONF_ENTRY)

# A candidate record start is found by its kind byte, which sits right after the header.
_KIND_BYTE = re.compile(rb"[\x01-\x03]")


@dataclass(frozen=True, slots=True)
class Record:
    kind: int
    a: int  # ENTRY: term; RESET: index
    b: int  # ENTRY: index; RESET: term
    data: bytes
    offset: int
    stop: int  # offset just past the record


@dataclass(frozen=True, slots=True)
class BadRecord:
    """The first record of a segment that failed its checks."""

    offset: int
    reason: str
    stop: int | None  # where the record would end by its length field (None: no header)


def record_header(payload: bytes) -> bytes:
    return RECORD_HEAD.pack(len(payload), checksum(payload))


def parse_record(buf: bytes | memoryview, pos: int) -> Record | BadRecord:
    end = len(buf)
    if pos + RECORD_HEAD.size > end:
        return BadRecord(pos, "truncated record header", None)
    length, crc = RECORD_HEAD.unpack_from(buf, pos)
    start = pos + RECORD_HEAD.size
    stop = start + length
    if stop > end:
        return BadRecord(pos, f"record length {length} runs past the end of the file", stop)
    payload = memoryview(buf)[start:stop]
    if checksum(payload) != crc:
        return BadRecord(pos, "checksum mismatch", stop)
    if length < ENTRY_HEAD.size or payload[0] not in (KIND_ENTRY, KIND_RESET, KIND_CONF_ENTRY):
        return BadRecord(pos, "malformed payload", stop)
    kind, a, b = ENTRY_HEAD.unpack_from(payload, 0)
    return Record(kind, a, b, bytes(payload[ENTRY_HEAD.size:]), pos, stop)


def read_records(buf: bytes) -> tuple[list[Record], BadRecord | None]:
    """The records of a segment (after its magic) up to the first bad one."""
    records: list[Record] = []
    pos = len(SEGMENT_MAGIC)
    while pos < len(buf):
        rec = parse_record(buf, pos)
        if isinstance(rec, BadRecord):
            return records, rec
        records.append(rec)
        pos = rec.stop
    return records, None


def next_valid_record(buf: bytes, after: int) -> Record | None:
    """The first record starting past byte ``after`` that passes its framing and CRC.

    This is how a bad record that merely *looks* like a torn write (say, a length field that
    now runs past the end of the file) is told from corruption: records an fsync made
    durable follow it. Every byte offset is a candidate, so a valid record is found wherever
    the damage left it. The odds of a false find in bytes that hold no record are those of a
    random CRC-32 match, 2**-32 per candidate, and only offsets whose kind byte is 1, 2 or 3 and
    whose length fits in the file are candidates: below one in a million for a torn tail of
    several MiB. A false find only makes the open refuse to repair (the safe side: data is
    kept, the replica is rebuilt from its peers), never drop a record. The same holds for
    genuine records found inside a torn region (an interrupted multi-record append whose
    middle never reached the disk): refused, not dropped.
    """
    for match in _KIND_BYTE.finditer(buf, after + 1 + RECORD_HEAD.size):
        rec = parse_record(buf, match.start() - RECORD_HEAD.size)
        if isinstance(rec, Record):
            return rec
    return None


def classify_bad_record(buf: bytes, bad: BadRecord, *, is_last: bool) -> str | None:
    """None when ``bad`` starts a torn tail that may be dropped; else why it is corruption.

    A torn tail is what a crash during the last append leaves (etcd's WAL repairs only this
    "unexpected EOF at the end"): in the last segment, with no valid record after it, and
    short (the header or the payload runs past the end of the file), zero-filled from the
    record or from its end on, or complete but failing its CRC exactly at the end of the file.
    """
    following = next_valid_record(buf, bad.offset)
    if following is not None:
        return f"{bad.reason}; a valid record follows at byte {following.offset}"
    if not is_last:
        return f"{bad.reason} in a segment that later segments follow"
    view = memoryview(buf)
    if bad.stop is None or bad.stop > len(buf):  # short header or short payload
        return None
    if not any(view[bad.offset:]):  # zero-filled from the record on
        return None
    if bad.reason == "checksum mismatch" and (bad.stop == len(buf) or not any(view[bad.stop:])):
        return None  # complete but wrong at the very end, or followed only by zeros
    return bad.reason


def survey(buf: bytes) -> list[Record]:
    """Every valid record of a segment, skipping over damage (for what a corrupt log held)."""
    found: list[Record] = []
    pos = len(SEGMENT_MAGIC)
    while pos < len(buf):
        rec = parse_record(buf, pos)
        if isinstance(rec, BadRecord):
            rec = next_valid_record(buf, pos)
            if rec is None:
                break
        found.append(rec)
        pos = rec.stop
    return found
