"""Encode/decode cost of nborch's columnar docs codec against docarray's protobuf.

Two payloads, both measured in this one run on this machine:

* ``100 TextDoc``: 100 TextDocs with a short text and a 128-d float32 embedding;
* ``QueryDoc+100``: 1 QueryDoc whose ``matches`` holds 100 such TextDocs.

For each, the median over many repeats of one call (ms per batch):

* ``docarray``: ``DocList.to_protobuf().SerializeToString()`` and
  ``DocList[T].from_protobuf(DocListProto.FromString(data))``;
* ``nborch``: ``encode_docs(docs)`` and ``decode_docs(data, T)``;
* ``nborch untyped``: ``decode_docs(data)`` (the class rebuilt from the batch, as the gateway does).

Usage: ``python benchmarks/codec_bench.py [--repeats N] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Callable

import numpy as np
from docarray import DocList
from docarray.documents import TextDoc
from docarray.proto import DocListProto

from nborch.runtime.codec import decode_docs, encode_docs


class QueryDoc(TextDoc):
    matches: DocList[TextDoc] = DocList[TextDoc]()


def make_text_docs(n: int, dim: int, rng: np.random.Generator) -> DocList[TextDoc]:
    return DocList[TextDoc](
        TextDoc(text=f"document number {i}", embedding=rng.random(dim, dtype=np.float32))
        for i in range(n)
    )


def time_interleaved(
    ops: dict[str, tuple[Callable[[], object], int]], rounds: int
) -> dict[str, float]:
    """Median wall time in ms of one call of each op, timed in interleaved rounds.

    ``ops`` maps a name to ``(fn, calls)``: ``calls`` timed calls per op in all. Each round
    times a slice of every op in turn, so load that comes and goes on a shared machine
    falls on all codecs alike instead of on whichever ran at the wrong moment.
    """
    times: dict[str, list[int]] = {name: [] for name in ops}
    for fn, _calls in ops.values():  # warm-up: caches, dynamic classes, allocator
        for _ in range(5):
            fn()
    for _ in range(rounds):
        for name, (fn, calls) in ops.items():
            for _ in range(max(1, calls // rounds)):
                start = time.perf_counter_ns()
                fn()
                times[name].append(time.perf_counter_ns() - start)
    return {name: statistics.median(t) / 1e6 for name, t in times.items()}


def bench_payload(name: str, docs: DocList, doc_type: type, repeats: int) -> list[dict]:
    """Time encode and decode of ``docs`` with each codec; one table row per codec."""
    pb_bytes = docs.to_protobuf().SerializeToString()
    our_bytes = encode_docs(docs)
    _check_round_trip(docs, decode_docs(our_bytes, doc_type))
    _check_round_trip(docs, decode_docs(our_bytes))
    pb_calls = max(20, repeats // 10)  # protobuf is ~50x slower: fewer calls suffice
    ms = time_interleaved(
        {
            "pb_encode": (lambda: docs.to_protobuf().SerializeToString(), pb_calls),
            "pb_decode": (
                lambda: DocList[doc_type].from_protobuf(DocListProto.FromString(pb_bytes)),
                pb_calls,
            ),
            "encode": (lambda: encode_docs(docs), repeats),
            "decode": (lambda: decode_docs(our_bytes, doc_type), repeats),
            "decode_untyped": (lambda: decode_docs(our_bytes), repeats),
        },
        rounds=10,
    )
    row = {"payload": name}
    return [
        row | {"codec": "docarray protobuf", "encode_ms": ms["pb_encode"],
               "decode_ms": ms["pb_decode"], "bytes": len(pb_bytes)},
        row | {"codec": "nborch columnar", "encode_ms": ms["encode"],
               "decode_ms": ms["decode"], "bytes": len(our_bytes)},
        row | {"codec": "nborch untyped", "encode_ms": None,
               "decode_ms": ms["decode_untyped"], "bytes": len(our_bytes)},
    ]


def _check_round_trip(original: DocList, decoded: DocList) -> None:
    # A benchmark of a codec that loses data would measure nothing. (BaseDoc.__eq__ wants
    # the same field names, not the same class, so rebuilt classes compare too.)
    assert [d.id for d in decoded] == [d.id for d in original]
    assert all(a == b for a, b in zip(decoded, original))


def print_table(rows: list[dict]) -> None:
    header = f"{'payload':<14} {'codec':<18} {'encode ms':>10} {'decode ms':>10} {'bytes':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        enc = "-" if row["encode_ms"] is None else f"{row['encode_ms']:.3f}"
        dec = f"{row['decode_ms']:.3f}"
        print(f"{row['payload']:<14} {row['codec']:<18} {enc:>10} {dec:>10} {row['bytes']:>8}")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1000, help="calls timed per codec (median)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    text_docs = make_text_docs(100, 128, rng)
    query = DocList[QueryDoc]([QueryDoc(text="query", matches=make_text_docs(100, 128, rng))])
    rows = bench_payload("100 TextDoc", text_docs, TextDoc, args.repeats)
    rows += bench_payload("QueryDoc+100", query, QueryDoc, args.repeats)
    print_table(rows)
    if args.json:
        meta = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "repeats": args.repeats,
        }
        with open(args.json, "w") as out:
            json.dump({**meta, "rows": rows}, out, indent=2)
    return rows


if __name__ == "__main__":
    main()
