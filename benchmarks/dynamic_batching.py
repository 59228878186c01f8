"""Single-doc posts to a slow encoder, with and without @dynamic_batching, in one run.

    python benchmarks/dynamic_batching.py            # 1 000 posts per setup
    python benchmarks/dynamic_batching.py --quick    # 200 posts (a few seconds)
    python benchmarks/dynamic_batching.py --json out.json

The encoder costs a fixed 20 ms per call plus 0.5 ms per doc (a model's launch overhead
plus its per-item work), as the reference page's `slow_encoder`. Every post carries one doc
(request_size=1) with `--in-flight` posts outstanding; one replica serves them. Unbatched,
each post is one call; batched, the replica gathers up to `--batch` docs (or waits at most
`--timeout-ms`) per call. Prints QPS for both and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from docarray import DocList
from docarray.documents import TextDoc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nborch import Deployment, Executor, dynamic_batching, requests  # noqa: E402

CALL_S, PER_DOC_S = 0.020, 0.0005
BATCH, TIMEOUT_MS = 32, 10


def encode(docs) -> None:
    time.sleep(CALL_S + PER_DOC_S * len(docs))
    for doc in docs:
        doc.text = f'{doc.text}|{len(docs)}'


class SlowEncoder(Executor):
    @requests
    def encode(self, docs: DocList[TextDoc], **kwargs) -> None:
        encode(docs)


class BatchedSlowEncoder(Executor):
    @requests
    @dynamic_batching(preferred_batch_size=BATCH, timeout=TIMEOUT_MS)
    def encode(self, docs: DocList[TextDoc], **kwargs) -> None:
        encode(docs)


def run_setup(executor: type[Executor], posts: int, in_flight: int) -> dict:
    docs = DocList[TextDoc]([TextDoc(text=f'doc-{i}') for i in range(posts)])
    with Deployment(name='slow_encoder', uses=executor, quiet=True) as dep:
        dep.post('/', docs[:in_flight], request_size=1, prefetch=in_flight)  # warm up
        start = time.perf_counter()
        out = dep.post('/', docs, request_size=1, prefetch=in_flight,
                       return_type=DocList[TextDoc])
        elapsed = time.perf_counter() - start
    assert [d.text.split('|')[0] for d in out] == [f'doc-{i}' for i in range(posts)]
    calls = round(sum(1 / int(d.text.split('|')[1]) for d in out))  # a doc knows its call's size
    return {'executor': executor.__name__, 'posts': posts, 'in_flight': in_flight,
            'seconds': elapsed, 'qps': posts / elapsed, 'calls': calls,
            'docs_per_call': posts / calls}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--posts', type=int, default=1_000)
    parser.add_argument('--in-flight', type=int, default=64)
    parser.add_argument('--quick', action='store_true', help='200 posts per setup')
    parser.add_argument('--json', metavar='PATH')
    args = parser.parse_args(argv)
    if args.quick:
        args.posts = 200
    print(f'nborch dynamic batching: {args.posts} single-doc posts, {args.in_flight} in flight, '
          f'encoder {CALL_S * 1000:.0f} ms + {PER_DOC_S * 1000:.1f} ms/doc, batch <= {BATCH} '
          f'docs or {TIMEOUT_MS} ms, {os.cpu_count()} cores', flush=True)
    runs = [run_setup(executor, args.posts, args.in_flight)
            for executor in (SlowEncoder, BatchedSlowEncoder)]
    report = {'posts': args.posts, 'in_flight': args.in_flight, 'call_ms': CALL_S * 1000,
              'per_doc_ms': PER_DOC_S * 1000, 'preferred_batch_size': BATCH,
              'timeout_ms': TIMEOUT_MS, 'cores': os.cpu_count(), 'runs': runs,
              'batched_vs_unbatched_qps': runs[1]['qps'] / runs[0]['qps']}
    print()
    print(f"{'setup':<22}{'seconds':>9}{'QPS':>9}{'calls':>8}{'docs/call':>11}")
    for r in runs:
        print(f"{r['executor']:<22}{r['seconds']:>9.2f}{r['qps']:>9.1f}{r['calls']:>8}"
              f"{r['docs_per_call']:>11.1f}")
    print(f"\n@dynamic_batching: {report['batched_vs_unbatched_qps']:.1f}x the QPS of the "
          'unbatched encoder')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == '__main__':
    main()
