"""Single-doc posts to a slow encoder, with and without @dynamic_batching, in one run.

    python benchmarks/dynamic_batching.py            # 1 000 posts per setup
    python benchmarks/dynamic_batching.py --quick    # 200 posts (a few seconds)
    python benchmarks/dynamic_batching.py --json out.json
    python benchmarks/dynamic_batching.py --jina-python /path/to/jina-venv/bin/python

The encoder costs a fixed 20 ms per call plus 0.5 ms per doc (a model's launch overhead
plus its per-item work), as the reference page's `slow_encoder`. Every post carries one doc
(request_size=1) with `--in-flight` posts outstanding; one replica serves them. Unbatched,
each post is one call; batched, the replica gathers up to `--batch` docs (or waits at most
`TIMEOUT_MS`) per call. Prints QPS for both and their ratio; with `--jina-python`, the same
workload on the reference system (an interpreter with jina installed) in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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


# The same encoders and client calls on the reference system (`jina` for `nborch`).
JINA = """
import json, sys, time
from docarray import DocList
from docarray.documents import TextDoc
from jina import Deployment, Executor, dynamic_batching, requests

def encode(docs):
    time.sleep({call_s} + {per_doc_s} * len(docs))
    for doc in docs:
        doc.text = f'{{doc.text}}|{{len(docs)}}'

class SlowEncoder(Executor):
    @requests
    def encode(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        encode(docs)

class BatchedSlowEncoder(Executor):
    @requests
    @dynamic_batching(preferred_batch_size={batch}, timeout={timeout_ms})
    def encode(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        encode(docs)

for executor in (SlowEncoder, BatchedSlowEncoder):
    docs = DocList[TextDoc]([TextDoc(text=f'doc-{{i}}') for i in range({posts})])
    with Deployment(name='slow_encoder', uses=executor, quiet=True) as dep:
        dep.post('/', docs[:{in_flight}], request_size=1, prefetch={in_flight},
                 return_type=DocList[TextDoc])
        start = time.perf_counter()
        out = dep.post('/', docs, request_size=1, prefetch={in_flight},
                       return_type=DocList[TextDoc])
        elapsed = time.perf_counter() - start
    calls = round(sum(1 / int(d.text.split('|')[1]) for d in out))
    print('RESULT ' + json.dumps({{'executor': executor.__name__, 'seconds': elapsed,
                                   'qps': {posts} / elapsed, 'calls': calls,
                                   'docs_per_call': {posts} / calls}}), flush=True)
"""


def run_reference(python: str, posts: int, in_flight: int) -> list[dict]:
    code = JINA.format(call_s=CALL_S, per_doc_s=PER_DOC_S, batch=BATCH, timeout_ms=TIMEOUT_MS,
                       posts=posts, in_flight=in_flight)
    out = subprocess.run([python, '-c', code], capture_output=True, text=True, timeout=600,
                         cwd=tempfile.gettempdir())
    runs = [json.loads(line[len('RESULT '):]) for line in out.stdout.splitlines()
            if line.startswith('RESULT ')]
    if len(runs) != 2:
        raise RuntimeError(f'the reference run failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}')
    return runs


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--posts', type=int, default=1_000)
    parser.add_argument('--in-flight', type=int, default=64)
    parser.add_argument('--quick', action='store_true', help='200 posts per setup')
    parser.add_argument('--json', metavar='PATH')
    parser.add_argument('--jina-python', metavar='PYTHON',
                        help='also run the workload on the reference system with this interpreter')
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
    if args.jina_python:
        reference = report['reference'] = run_reference(args.jina_python, args.posts,
                                                         args.in_flight)
        report['reference_batched_vs_unbatched_qps'] = reference[1]['qps'] / reference[0]['qps']
        report['batched_qps_vs_reference'] = runs[1]['qps'] / reference[1]['qps']
        for r in reference:
            print(f"{'jina ' + r['executor']:<22}{r['seconds']:>9.2f}{r['qps']:>9.1f}"
                  f"{r['calls']:>8}{r['docs_per_call']:>11.1f}")
        print(f"the reference system: {report['reference_batched_vs_unbatched_qps']:.1f}x with "
              f"batching; nborch batched: {report['batched_qps_vs_reference']:.1f}x its QPS")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == '__main__':
    main()
