"""The reference page's scale-out experiment on nborch, plus the floors to compare with.

    python benchmarks/scale_out.py            # default size (10 000 docs, 200 queries)
    python benchmarks/scale_out.py --full     # the page's size (100 000 docs, 1 000 queries)
    python benchmarks/scale_out.py --json out.json

Measures, in one run: indexing N docs (TextDoc, 128-d random embedding, request_size=100)
then Q single-doc searches (limit=100) through a Deployment at replicas=1 and replicas=3, for
the page's docarray InMemoryExactNNIndex executor and a numpy-matrix executor; the plain-numpy
floor for the same searches in this process; and the gateway's overhead (p50/p99 of
sequential 1-doc posts to an echo executor, through the gateway and straight to the worker).
Stateless replicas index the share of docs routed to them, so replicas=3 searches a third
of the data each (wrong results, shown for speed only); `stateful` replicas=3 replicate every
@write through Raft, so each replica searches all the data — the page's consensus run.
shards=3 partitions the index (ANY for /index) and searches every shard (ALL for /search),
reducing the matches to the global top-100 at the gateway: the same results as shards=1.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from docarray import DocList
from docarray.documents import TextDoc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _workloads import (LIMIT, make_docs, percentile,  # noqa: E402,F401
                        sequential_latencies, top1_by_query)
from nborch import Client, Deployment  # noqa: E402
from nborch.examples import Echo, ExactNNSearch, NumpySearch, QueryDoc  # noqa: E402

PAGE = {'index_s_replicas1': 18.93, 'search_s_replicas1': 385.97, 'index_s_consensus3': 35.07,
        'search_s_consensus3': 202.08, 'docs': 100_000, 'queries': 1_000}
PEER_GATEWAY_P50_MS = 10.3  # the reference system on this kind of machine (peer-figures.md)


def gateway_overhead(posts: int, warmup: int = 100) -> dict:
    doc = DocList[TextDoc]([TextDoc(text='hello')])
    out = {}
    with Deployment(name='echo', uses=Echo, quiet=True) as dep:
        worker_port = dep.status()['executors'][0]['shards'][0]['replicas'][0]['port']
        direct = Client(port=worker_port, secret=dep.secret)  # workers refuse strangers
        try:
            for path, client in (('post', dep), ('gateway', dep.client), ('worker', direct)):
                out[path] = sequential_latencies(lambda i: client.post('/', doc), posts, warmup)
        finally:
            direct.close()
    return out


def run_setup(executor, index_docs, queries, replicas: int = 1, shards: int = 1,
              stateful: bool = False, top1: int = 0, settle_s: float = 0) -> dict:
    """Index then search through one Deployment; `top1`: also return the best match of the
    first `top1` queries (to compare results across systems); `settle_s`: pause (untimed)
    between indexing and searching, as the page's client does for a stateful deployment."""
    workspace = tempfile.mkdtemp(prefix='nborch-bench-') if stateful else None
    extra = {'stateful': True, 'workspace': workspace} if stateful else {}
    start = time.perf_counter()
    with Deployment(name='indexer', uses=executor, replicas=replicas, shards=shards,
                    quiet=True, **extra) as dep:
        start_s = time.perf_counter() - start
        start = time.perf_counter()
        dep.post('/index', index_docs, request_size=100)
        index_s = time.perf_counter() - start
        time.sleep(settle_s)
        start = time.perf_counter()
        results = dep.post('/search', queries, request_size=1, parameters={'limit': LIMIT},
                           return_type=DocList[QueryDoc])
        search_s = time.perf_counter() - start
    if workspace:
        shutil.rmtree(workspace, ignore_errors=True)
    assert len(results) == len(queries) and all(len(r.matches) > 0 for r in results)
    extra = {'top1': top1_by_query(results, top1)} if top1 else {}
    return {**extra, 'executor': executor.__name__, 'replicas': replicas, 'shards': shards,
            'stateful': stateful, 'start_s': start_s,
            'index_s': index_s, 'index_docs_per_s': len(index_docs) / index_s,
            'search_s': search_s, 'ms_per_query': search_s / len(queries) * 1000,
            'qps': len(queries) / search_s, 'matches_per_query': len(results[0].matches)}


FLOOR = """
import sys, time, numpy as np
sys.path.insert(0, {root!r})
from nborch.examples import top_k
rng = np.random.default_rng(0)
matrix = rng.random(({docs}, 128)).astype(np.float32)
queries = np.random.default_rng(1).random(({queries}, 128)).astype(np.float32)
top_k(matrix, queries[0], {limit})
start = time.perf_counter()
for q in queries:
    top_k(matrix, q, {limit})
print(time.perf_counter() - start)
"""


def numpy_floor(docs: int, queries: int) -> dict:
    """Plain numpy in one process, the same exact top-100 searches: the fastest of a
    one-thread and a default BLAS pool (each in a fresh process, as the env var must be
    set before numpy loads)."""
    code = FLOOR.format(root=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        docs=docs, queries=queries, limit=LIMIT)
    timings = {}
    for label, threads in (('1 thread', '1'), ('default threads', None)):
        env = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS',
                                                                  'OPENBLAS_NUM_THREADS')}
        if threads:
            env.update(OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                             text=True, check=True).stdout
        timings[label] = float(out.split()[-1])
    label = min(timings, key=timings.get)
    elapsed = timings[label]
    return {'search_s': elapsed, 'ms_per_query': elapsed / queries * 1000,
            'qps': queries / elapsed, 'blas': label, 'all': timings}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--docs', type=int, default=10_000)
    parser.add_argument('--queries', type=int, default=200)
    parser.add_argument('--full', action='store_true', help="the page's 100 000 docs / 1 000 queries")
    parser.add_argument('--echo-posts', type=int, default=2_000)
    parser.add_argument('--skip-docarray', action='store_true',
                        help='only the numpy executor (the docarray index is slow)')
    parser.add_argument('--writes', type=int, default=2_000, help='1-doc consensus writes')
    parser.add_argument('--json', metavar='PATH')
    args = parser.parse_args(argv)
    if args.full:
        args.docs, args.queries = PAGE['docs'], PAGE['queries']

    print(f'nborch scale-out benchmark: {args.docs} docs, {args.queries} queries, '
          f'{os.cpu_count()} cores', flush=True)
    index_docs, _ = make_docs(args.docs, seed=0)
    query_list, _ = make_docs(args.queries, seed=1)
    queries = DocList[QueryDoc]([QueryDoc(text=d.text, embedding=d.embedding) for d in query_list])

    report = {'docs': args.docs, 'queries': args.queries, 'cores': os.cpu_count(), 'runs': []}
    report['gateway_overhead'] = gateway_overhead(args.echo_posts)
    report['numpy_floor'] = numpy_floor(args.docs, args.queries)
    setups = [(NumpySearch, 1, 1, False), (NumpySearch, 3, 1, False), (NumpySearch, 1, 3, False),
              (NumpySearch, 3, 1, True)]
    if not args.skip_docarray:
        setups += [(ExactNNSearch, 1, 1, False), (ExactNNSearch, 3, 1, True)]
    for executor, replicas, shards, stateful in setups:
        run = run_setup(executor, index_docs, queries, replicas=replicas, shards=shards,
                        stateful=stateful)
        report['runs'].append(run)
        print(f'  {label(run)}: Indexing {args.docs} Documents took {run["index_s"]:.2f}s, '
              f'Searching {args.queries} Queries took {run["search_s"]:.2f}s', flush=True)
    report['consensus_writes'] = consensus_writes(args.writes, sequential=300)
    report['targets'] = targets(report)
    print_table(report)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
    return report


def label(run: dict) -> str:
    consensus = ' stateful' if run.get('stateful') else ''
    return f"{run['executor']} replicas={run['replicas']}{consensus} shards={run['shards']}"


def consensus_writes(writes: int, sequential: int, warmup: int = 20) -> dict:
    """1-doc @write requests to 3 Raft replicas (every entry fsync'd before it is
    acknowledged): p50/p99 commit latency of sequential writes, and writes/s with 64 in
    flight (`writes=0`: sequential only)."""
    doc = lambda i: DocList[TextDoc]([TextDoc(text=f'w{i}', embedding=np.zeros(8))])  # noqa: E731
    workspace = tempfile.mkdtemp(prefix='nborch-bench-')
    out = {'writes': writes, 'sequential': sequential}
    try:
        with Deployment(name='writes', uses=NumpySearch, replicas=3, stateful=True,
                        workspace=workspace, quiet=True) as dep:
            seq = sequential_latencies(lambda i: dep.post('/index', doc(i)), sequential, warmup)
            out.update(commit_p50_ms=seq['p50_ms'], commit_p99_ms=seq['p99_ms'])
            if writes:
                batch = DocList[TextDoc]([TextDoc(text=f'b{i}', embedding=np.zeros(8))
                                          for i in range(writes)])
                start = time.perf_counter()
                dep.post('/index', batch, request_size=1, prefetch=64)
                out['writes_per_s'] = writes / (time.perf_counter() - start)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return out


def targets(report: dict) -> dict:
    """The serving-core issue's targets, as ratios measured in this run."""
    numpy1 = next(r for r in report['runs']
                  if r['executor'] == 'NumpySearch' and r['replicas'] == 1 and r['shards'] == 1)
    per_doc = numpy1['index_s'] / report['docs']
    consensus = next(r for r in report['runs'] if r['executor'] == 'NumpySearch' and r['stateful'])
    return {
        'consensus_index_vs_replicas1': consensus['index_s'] / numpy1['index_s'],
        'consensus_qps_vs_replicas1': consensus['qps'] / numpy1['qps'],
        'index_100k_projected_s': per_doc * PAGE['docs'],
        'index_speedup_vs_page': PAGE['index_s_replicas1'] / (per_doc * PAGE['docs']),
        'post_p50_ms': report['gateway_overhead']['post']['p50_ms'],
        'gateway_p50_ms': report['gateway_overhead']['gateway']['p50_ms'],
        'gateway_p50_vs_peer': PEER_GATEWAY_P50_MS / report['gateway_overhead']['gateway']['p50_ms'],
        'search_vs_numpy_floor': numpy1['ms_per_query'] / report['numpy_floor']['ms_per_query'],
    }


def print_table(report: dict) -> None:
    g = report['gateway_overhead']
    print()
    print(f"{'setup':<40}{'index s':>9}{'docs/s':>9}{'search s':>10}{'ms/query':>10}{'QPS':>8}")
    for r in report['runs']:
        print(f"{label(r):<40}{r['index_s']:>9.2f}{r['index_docs_per_s']:>9.0f}"
              f"{r['search_s']:>10.2f}{r['ms_per_query']:>10.2f}{r['qps']:>8.1f}")
    f = report['numpy_floor']
    print(f"{'numpy floor (one process, ' + f['blas'] + ')':<40}{'':>9}{'':>9}{f['search_s']:>10.2f}"
          f"{f['ms_per_query']:>10.2f}{f['qps']:>8.1f}")
    print()
    print(f"{'1-doc echo, sequential':<34}{'p50 ms':>9}{'p99 ms':>10}{'req/s':>10}")
    for path, title in (('post', 'Deployment.post (owner routes)'),
                        ('gateway', 'Client on the gateway port'),
                        ('worker', 'Client on the worker port')):
        print(f"{title:<34}{g[path]['p50_ms']:>9.3f}{g[path]['p99_ms']:>10.3f}"
              f"{g[path]['req_per_s']:>10.0f}")
    t = report['targets']
    print()
    print(f"index 100k (projected from this run's rate): {t['index_100k_projected_s']:.2f}s = "
          f"{t['index_speedup_vs_page']:.1f}x faster than the page's 18.9s (target >= 5x)")
    print(f"Deployment.post p50 {t['post_p50_ms']:.3f} ms, gateway p50 {t['gateway_p50_ms']:.3f} "
          f"ms (target <= 1 ms; the reference system: "
          f"{PEER_GATEWAY_P50_MS} ms here, {t['gateway_p50_vs_peer']:.0f}x slower)")
    print(f"numpy executor search at replicas=1: {t['search_vs_numpy_floor']:.2f}x the numpy "
          f'floor per query (target <= 2x)')
    c = report['consensus_writes']
    print(f"consensus (3 replicas, NumpySearch): indexing {t['consensus_index_vs_replicas1']:.2f}x "
          f"the replicas=1 time (target <= 1.5x; the page: 1.85x), search QPS "
          f"{t['consensus_qps_vs_replicas1']:.2f}x replicas=1 (target >= 1x; the page: 2x)")
    print(f"consensus 1-doc writes: commit p50 {c['commit_p50_ms']:.2f} ms, p99 "
          f"{c['commit_p99_ms']:.2f} ms (sequential); {c['writes_per_s']:.0f} writes/s with 64 "
          f'in flight (fsync on)')


if __name__ == '__main__':
    main()
