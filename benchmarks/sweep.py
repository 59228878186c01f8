"""How nborch's cost grows with the work: docs, replicas, shards and payload, next to the floor.

    python benchmarks/sweep.py --quick     # 10k and 100k docs, few queries (a few minutes)
    python benchmarks/sweep.py             # 10k and 100k docs, more queries per point
    python benchmarks/sweep.py --full      # also 1M docs
    (writes benchmarks/results/sweep.json and docs/img/sweep.png; --json / --png elsewhere)

Every point is measured three ways in the same run, interleaved round by round so that load
from other work on the machine falls on all of them alike:

* nborch: `Deployment.post` on a Deployment of `PreloadedSearch` (benchmarks/_preloaded.py:
  nborch.examples.NumpySearch holding the page's docs from its start), one query per request,
  limit=100; `seq` posts one query after the other (latency), `pipelined` posts them all in
  one call with `IN_FLIGHT` requests outstanding (throughput);
* in-process: the same executor's `search` called in this process (`Match` docs built, no
  codec, no process hop);
* floor: the bare numpy `top_k` of the same query on the same float32 matrix.

Sweeps: docs (10k, 100k; 1M with --full) at replicas=1 and 3; replicas 1..4 and shards 1..3
at `SWEEP_DOCS`; queries per request 1..1000 at 10k docs; and echo payloads of 1..1000 docs
per request (`Deployment.post`, which routes from this process straight to the worker, a
`Client` on the worker's port, and the codec's own cost). For the
pipelined runs, the CPU each process spent per query (/proc) says where the cores went.

BLAS runs one thread in every process (OMP/OPENBLAS/MKL_NUM_THREADS=1 unless set): replicas,
not a BLAS pool, are the parallelism, and the in-process and floor figures use the same one
thread as each worker. Absolute figures move with the machine's load; compare within a run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import _one_blas_thread  # noqa: E402,F401  (before numpy)
import numpy as np  # noqa: E402
from docarray import DocList  # noqa: E402
from docarray.documents import TextDoc  # noqa: E402

from _preloaded import PreloadedSearch  # noqa: E402
from _proc_cpu import CpuMeter  # noqa: E402
from _workloads import DIM, LIMIT, make_queries  # noqa: E402
from nborch import Client, Deployment  # noqa: E402
from nborch.examples import Echo, QueryDoc, top_k  # noqa: E402
from nborch.runtime.codec import decode_docs, encode_docs  # noqa: E402

SWEEP_DOCS = 100_000      # the replicas and shards sweeps
PAYLOAD_DOCS = 10_000     # the queries-per-request sweep
IN_FLIGHT = 16            # requests outstanding in a pipelined run
BATCHES = (1, 10, 100, 1000)
PARAMS = {'limit': LIMIT}
MODES = {  # queries per probe per round, rounds
    'quick': {'queries': 40, 'rounds': 3, 'docs': (10_000, 100_000)},
    'default': {'queries': 60, 'rounds': 8, 'docs': (10_000, 100_000)},
    'full': {'queries': 60, 'rounds': 8, 'docs': (10_000, 100_000, 1_000_000)},
}


# -- measuring --------------------------------------------------------------------------------
Probe = Callable[[], list[float]]  # one round: ms per unit (query / request), one or more samples


def interleave(probes: dict[str, Probe], rounds: int) -> dict[str, float]:
    """Median ms per unit of each probe over `rounds` rounds, every probe once per round."""
    for probe in probes.values():  # warm-up: connections, caches, dynamic classes
        probe()
    samples: dict[str, list[float]] = {name: [] for name in probes}
    for _ in range(rounds):
        for name, probe in probes.items():
            samples[name].extend(probe())
    return {name: statistics.median(values) for name, values in samples.items()}


def each_call(fn: Callable[[int], object], n: int, meter: CpuMeter | None = None) -> Probe:
    """A probe timing `fn(i)` for i < n, one sample per call (ms); CPU metered if given."""
    def probe() -> list[float]:
        times = []
        if meter:
            meter.start()
        for i in range(n):
            start = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - start) * 1000)
        if meter:
            meter.stop()
        return times
    return probe


def whole_run(fn: Callable[[], object], units: int, meter: CpuMeter | None = None) -> Probe:
    """A probe timing `fn()` as a whole: one sample, ms per unit; CPU metered if given."""
    def probe() -> list[float]:
        if meter:
            meter.start()
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        if meter:
            meter.stop()
        return [elapsed * 1000 / units]
    return probe


def one_query_lists(n: int) -> tuple[list, list]:
    """Two copies of `n` single-query DocLists: the in-process executor writes `matches`
    into its inputs, so nborch's are never handed to it (they would travel with them)."""
    queries = make_queries(n, QueryDoc)
    copy = lambda q: DocList[QueryDoc]([QueryDoc(text=q.text, embedding=q.embedding)])  # noqa: E731
    return [copy(q) for q in queries], [copy(q) for q in queries]


# -- deployments ------------------------------------------------------------------------------
def search_deployment(docs: int, replicas: int = 1, shards: int = 1) -> Deployment:
    return Deployment(name=f'search-r{replicas}-s{shards}', uses=PreloadedSearch,
                      uses_with={'docs': docs}, replicas=replicas, shards=shards,
                      polling={'/search': 'ALL'} if shards > 1 else 'ANY', quiet=True)


def roles(dep: Deployment) -> dict[str, list[int]]:
    """Process ids by role: this client, the gateway, the workers."""
    status = dep.status()
    workers = [r['pid'] for s in status['executors'][0]['shards'] for r in s['replicas']]
    return {'client': [os.getpid()], 'gateway': [status['gateway']['pid']], 'workers': workers}


def search_setups(docs: int) -> list[tuple[int, int]]:
    """(replicas, shards) measured at `docs`: replicas 1 and 3 everywhere; the whole
    replicas and shards sweeps at SWEEP_DOCS."""
    setups = [(1, 1), (3, 1)]
    if docs == SWEEP_DOCS:
        setups += [(2, 1), (4, 1), (1, 2), (1, 3)]
    return setups


def measure_docs(docs: int, queries: int, rounds: int, batches: tuple[int, ...]) -> dict:
    """Every search setup at `docs`, with the in-process executor and the floor, interleaved;
    with `batches`, the queries-per-request sweep too."""
    local = PreloadedSearch(docs=docs)
    matrix = local.matrix()
    remote_q, local_q = one_query_lists(max(queries, max(batches, default=1)))
    vectors = [np.asarray(q[0].embedding, dtype=np.float32) for q in remote_q]
    probes: dict[str, Probe] = {
        'floor': each_call(lambda i: top_k(matrix, vectors[i], LIMIT), queries),
    }
    reply = local.search(docs=local_q[0], parameters=PARAMS)
    wire = encode_docs(reply)
    probes['codec'] = each_call(lambda i: decode_docs(encode_docs(reply), QueryDoc), queries)
    pipelined_q = DocList[QueryDoc]([q[0] for q in remote_q[:queries]])
    in_process_cpu = CpuMeter({'in-process': [os.getpid()]})
    probes['in-process'] = each_call(
        lambda i: local.search(docs=local_q[i], parameters=PARAMS), queries, in_process_cpu)
    meters: dict[str, CpuMeter] = {}
    seq_meters: dict[str, CpuMeter] = {}
    setups = search_setups(docs)
    with contextlib.ExitStack() as stack:
        for replicas, shards in setups:
            dep = stack.enter_context(search_deployment(docs, replicas, shards))
            key = f'r{replicas}s{shards}'
            meters[key], seq_meters[key] = CpuMeter(roles(dep)), CpuMeter(roles(dep))
            probes[f'seq {key}'] = each_call(
                lambda i, d=dep: d.post('/search', remote_q[i], parameters=PARAMS,
                                        return_type=DocList[QueryDoc]), queries, seq_meters[key])
            probes[f'pipelined {key}'] = whole_run(
                lambda d=dep: d.post('/search', pipelined_q, request_size=1, parameters=PARAMS,
                                     prefetch=IN_FLIGHT, return_type=DocList[QueryDoc]),
                queries, meters[key])
            if key == 'r1s1':
                for b in batches:
                    batch_remote = DocList[QueryDoc]([q[0] for q in remote_q[:b]])
                    batch_local = DocList[QueryDoc]([q[0] for q in local_q[:b]])
                    probes[f'batch {b} nborch'] = whole_run(
                        lambda d=dep, q=batch_remote: d.post(
                            '/search', q, request_size=len(q), parameters=PARAMS,
                            return_type=DocList[QueryDoc]), b)
                    probes[f'batch {b} in-process'] = whole_run(
                        lambda q=batch_local: local.search(docs=q, parameters=PARAMS), b)
                    probes[f'batch {b} floor'] = whole_run(
                        lambda b=b: [top_k(matrix, v, LIMIT) for v in vectors[:b]], b)
        print(f'  {docs} docs: {len(setups)} deployments up, measuring {len(probes)} probes '
              f'x {rounds} rounds', flush=True)
        ms = interleave(probes, rounds)
        per_query = lambda m: {role: spent * 1000 / (queries * (rounds + 1))  # noqa: E731
                               for role, spent in m.spent.items()}
        cpu = {key: per_query(meter) for key, meter in meters.items()}
        seq_cpu = {key: per_query(meter) for key, meter in seq_meters.items()}
    return {'docs': docs, 'ms': ms, 'cpu_ms_per_query': cpu, 'seq_cpu_ms_per_query': seq_cpu,
            'in_process_cpu_ms': per_query(in_process_cpu)['in-process'],
            'reply_bytes': len(wire), 'setups': [list(s) for s in setups],
            'load_average': os.getloadavg()}


def measure_echo(rounds: int, posts: int) -> dict:
    """Echo of 1..1000 TextDocs (128-d) per request: `Deployment.post`, a Client straight on
    the worker, and the codec's encode+decode of the same docs (what one hop must pay)."""
    rng = np.random.default_rng(2)
    payloads = {b: DocList[TextDoc]([TextDoc(text=f'doc {i}', embedding=rng.random(DIM,
                                             dtype=np.float32)) for i in range(b)])
                for b in BATCHES}
    probes: dict[str, Probe] = {}
    with Deployment(name='echo', uses=Echo, quiet=True) as dep:
        worker_port = dep.status()['executors'][0]['shards'][0]['replicas'][0]['port']
        direct = Client(port=worker_port, secret=dep.secret)
        try:
            for b, docs in payloads.items():
                n = max(3, posts // max(1, b // 10))
                probes[f'echo {b} post'] = each_call(
                    lambda i, d=docs: dep.post('/', d, request_size=len(d)), n)
                probes[f'echo {b} worker'] = each_call(
                    lambda i, d=docs: direct.post('/', d, request_size=len(d)), n)
                probes[f'echo {b} codec'] = each_call(
                    lambda i, d=docs: decode_docs(encode_docs(d), TextDoc), n)
            print(f'  echo: measuring {len(probes)} probes x {rounds} rounds', flush=True)
            ms = interleave(probes, rounds)
        finally:
            direct.close()
    return {'ms': ms}


# -- reporting --------------------------------------------------------------------------------
def summarize(report: dict) -> dict:
    """The sweep's rows (what the table prints and the plot draws)."""
    by_docs = {g['docs']: g for g in report['groups']}
    rows = {'docs': [], 'replicas': [], 'shards': [], 'batch': [], 'echo': []}
    for docs, g in sorted(by_docs.items()):
        ms = g['ms']
        for replicas in (1, 3):
            key = f'r{replicas}s1'
            rows['docs'].append({
                'docs': docs, 'replicas': replicas, 'floor_ms': ms['floor'],
                'in_process_ms': ms['in-process'], 'codec_ms': ms['codec'],
                'nborch_seq_ms': ms[f'seq {key}'], 'nborch_pipelined_ms': ms[f'pipelined {key}'],
                'seq_vs_in_process': ms[f'seq {key}'] / ms['in-process'],
                'pipelined_vs_in_process': ms[f'pipelined {key}'] / ms['in-process'],
                'in_process_vs_floor': ms['in-process'] / ms['floor'],
                'in_process_cpu_ms': g['in_process_cpu_ms'],
                'seq_cpu_ms_per_query': g['seq_cpu_ms_per_query'][key],
                'seq_cpu_vs_in_process': sum(g['seq_cpu_ms_per_query'][key].values())
                / g['in_process_cpu_ms'],
                'cpu_ms_per_query': g['cpu_ms_per_query'][key]})
        if docs == SWEEP_DOCS:
            base_qps = 1000 / ms['pipelined r1s1']
            for replicas in (1, 2, 3, 4):
                key = f'r{replicas}s1'
                qps = 1000 / ms[f'pipelined {key}']
                rows['replicas'].append({
                    'docs': docs, 'replicas': replicas, 'qps': qps, 'vs_replicas1': qps / base_qps,
                    'in_process_qps': 1000 / ms['in-process'],
                    'nborch_seq_ms': ms[f'seq {key}'],
                    'cpu_ms_per_query': g['cpu_ms_per_query'][key]})
            for shards in (1, 2, 3):
                key = f'r1s{shards}'
                rows['shards'].append({
                    'docs': docs, 'shards': shards, 'nborch_seq_ms': ms[f'seq {key}'],
                    'nborch_pipelined_ms': ms[f'pipelined {key}'],
                    'in_process_ms': ms['in-process'], 'floor_ms': ms['floor'],
                    'seq_vs_in_process': ms[f'seq {key}'] / ms['in-process'],
                    'cpu_ms_per_query': g['cpu_ms_per_query'][key]})
        for b in BATCHES:
            if f'batch {b} nborch' in ms:
                rows['batch'].append({
                    'docs': docs, 'queries_per_request': b,
                    'nborch_ms_per_query': ms[f'batch {b} nborch'],
                    'in_process_ms_per_query': ms[f'batch {b} in-process'],
                    'floor_ms_per_query': ms[f'batch {b} floor'],
                    'vs_in_process': ms[f'batch {b} nborch'] / ms[f'batch {b} in-process']})
    echo = report['echo']['ms']
    for b in BATCHES:
        rows['echo'].append({'docs_per_request': b, 'post_ms': echo[f'echo {b} post'],
                             'worker_ms': echo[f'echo {b} worker'],
                             'codec_ms': echo[f'echo {b} codec'],
                             'post_us_per_doc': echo[f'echo {b} post'] * 1000 / b})
    return rows


def print_table(rows: dict) -> None:
    print('\nsearch, one query per request, limit=100 (ms per query; ratios within this run)')
    print(f"{'docs':>9}{'repl':>5}{'floor':>8}{'in-proc':>9}{'codec':>7}{'nb seq':>8}"
          f"{'nb pipe':>9}{'seq/in':>8}{'pipe/in':>8}{'  seq CPU ms/query client+gw+workers':>37}"
          f"{'CPU/in':>8}")
    for r in rows['docs']:
        c = r['seq_cpu_ms_per_query']
        print(f"{r['docs']:>9}{r['replicas']:>5}{r['floor_ms']:>8.3f}{r['in_process_ms']:>9.3f}"
              f"{r['codec_ms']:>7.3f}{r['nborch_seq_ms']:>8.3f}{r['nborch_pipelined_ms']:>9.3f}"
              f"{r['seq_vs_in_process']:>8.2f}{r['pipelined_vs_in_process']:>8.2f}"
              f"{c['client']:>15.2f} +{c['gateway']:>5.2f} +{c['workers']:>5.2f}"
              f"{r['seq_cpu_vs_in_process']:>8.2f}")
    if rows['replicas']:
        print(f"\nreplicas, {rows['replicas'][0]['docs']} docs, {IN_FLIGHT} in flight "
              f'(search QPS; in-process QPS is one core)')
        print(f"{'replicas':>9}{'QPS':>8}{'vs r=1':>8}{'in-proc QPS':>13}"
              f"{'   CPU ms/query client+gw+workers':>36}")
        for r in rows['replicas']:
            c = r['cpu_ms_per_query']
            print(f"{r['replicas']:>9}{r['qps']:>8.0f}{r['vs_replicas1']:>8.2f}"
                  f"{r['in_process_qps']:>13.0f}{c['client']:>14.2f} +{c['gateway']:>5.2f} "
                  f"+{c['workers']:>5.2f}")
    if rows['shards']:
        print(f"\nshards, {rows['shards'][0]['docs']} docs, ALL search reduced to the top 100 "
              '(ms per query)')
        print(f"{'shards':>9}{'nb seq':>8}{'nb pipe':>9}{'in-proc':>9}{'floor':>8}{'seq/in':>8}")
        for r in rows['shards']:
            print(f"{r['shards']:>9}{r['nborch_seq_ms']:>8.3f}{r['nborch_pipelined_ms']:>9.3f}"
                  f"{r['in_process_ms']:>9.3f}{r['floor_ms']:>8.3f}{r['seq_vs_in_process']:>8.2f}")
    if rows['batch']:
        print(f"\nqueries per request, {rows['batch'][0]['docs']} docs (ms per query)")
        print(f"{'queries':>9}{'nborch':>9}{'in-proc':>9}{'floor':>8}{'nb/in':>8}")
        for r in rows['batch']:
            print(f"{r['queries_per_request']:>9}{r['nborch_ms_per_query']:>9.3f}"
                  f"{r['in_process_ms_per_query']:>9.3f}{r['floor_ms_per_query']:>8.3f}"
                  f"{r['vs_in_process']:>8.2f}")
    print('\necho, TextDoc with a 128-d embedding (ms per request, sequential)')
    print(f"{'docs':>9}{'post':>9}{'worker':>8}{'codec':>8}{'us/doc':>11}")
    for r in rows['echo']:
        print(f"{r['docs_per_request']:>9}{r['post_ms']:>9.3f}{r['worker_ms']:>8.3f}"
              f"{r['codec_ms']:>8.3f}{r['post_us_per_doc']:>11.1f}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='fewer queries and rounds')
    parser.add_argument('--full', action='store_true', help='also 1M docs')
    parser.add_argument('--json', default=os.path.join(HERE, 'results', 'sweep.json'))
    parser.add_argument('--png', default=os.path.join(ROOT, 'docs', 'img', 'sweep.png'))
    args = parser.parse_args(argv)
    mode = 'full' if args.full else 'quick' if args.quick else 'default'
    cfg = MODES[mode]
    skipped = [] if args.full else ['1M docs (run with --full)']
    print(f'nborch sweep ({mode}): docs {cfg["docs"]}, {cfg["queries"]} queries x '
          f'{cfg["rounds"]} rounds per probe, {os.cpu_count()} cores'
          + (f'; skipped: {", ".join(skipped)}' if skipped else ''), flush=True)
    started = time.perf_counter()
    report = {'mode': mode, 'cores': os.cpu_count(), 'skipped': skipped, 'in_flight': IN_FLIGHT,
              'load_average_at_start': os.getloadavg(),
              'blas_threads': os.environ['OPENBLAS_NUM_THREADS'], 'config': cfg, 'groups': []}
    for docs in cfg['docs']:
        batches = BATCHES if docs == PAYLOAD_DOCS else ()
        report['groups'].append(measure_docs(docs, cfg['queries'], cfg['rounds'], batches))
    report['echo'] = measure_echo(cfg['rounds'], cfg['queries'])
    report['rows'] = summarize(report)
    report['elapsed_s'] = time.perf_counter() - started
    print_table(report['rows'])
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, 'w') as f:
        json.dump(report, f, indent=2)
    from _sweep_plot import plot
    plot(report['rows'], args.png, title=f'nborch sweep ({mode}, {os.cpu_count()} cores)')
    print(f'\nwrote {args.json} and {args.png} in {report["elapsed_s"]:.0f} s')
    return report


if __name__ == '__main__':
    main()
