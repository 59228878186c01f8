"""How far the bare numpy search scales across processes on this machine: the ceiling for
any replicas speed-up of a search executor, before orchestration.

    python benchmarks/floor_scaling.py            # 10k and 100k docs, 1-3 processes (~20 s)
    (writes benchmarks/results/floor_scaling.json; --json elsewhere)

Each process holds its own float32 matrix (128-d, as on the page) and runs
`nborch.examples.top_k` (limit 100) for a fixed time, all processes at once, one BLAS thread
each (as the sweep's workers). At 100 000 docs a search reads a 51 MB matrix, so processes on
cores that share the memory bus get less than one core's worth each.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import _one_blas_thread  # noqa: E402,F401  (before numpy)

from _workloads import DIM, LIMIT, write_report  # noqa: E402


def _search_for(docs: int, seconds: float, start: multiprocessing.Event, out) -> None:
    import numpy as np
    from nborch.examples import top_k
    rng = np.random.default_rng(os.getpid())
    matrix = rng.random((docs, DIM), dtype=np.float32)
    query = rng.random(DIM, dtype=np.float32)
    for _ in range(10):  # warm: pages touched, caches filled
        top_k(matrix, query, LIMIT)
    out.put('ready')
    start.wait()
    began, done = time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        top_k(matrix, query, LIMIT)
        done += 1
    out.put(done / (time.perf_counter() - began))


def searches_per_s(docs: int, processes: int, seconds: float) -> float:
    """Searches per second summed over `processes` running at once."""
    start, out = multiprocessing.Event(), multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_search_for, args=(docs, seconds, start, out))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            out.get(timeout=120)  # 'ready'
        start.set()
        return sum(out.get(timeout=seconds + 60) for _ in workers)
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--docs', type=int, nargs='+', default=[10_000, 100_000])
    parser.add_argument('--processes', type=int, default=3, help='1 to this many at once')
    parser.add_argument('--seconds', type=float, default=3.0)
    parser.add_argument('--json', default=os.path.join(HERE, 'results', 'floor_scaling.json'))
    args = parser.parse_args(argv)
    rows = []
    print(f'bare numpy top-{LIMIT} searches/s, processes at once ({os.cpu_count()} cores)')
    print(f'{"docs":>8} {"processes":>9} {"searches/s":>11} {"vs one":>7}')
    for docs in args.docs:
        one = None
        for processes in range(1, args.processes + 1):
            rate = searches_per_s(docs, processes, args.seconds)
            one = one or rate
            rows.append({'docs': docs, 'processes': processes, 'searches_per_s': rate,
                         'vs_one': rate / one})
            print(f'{docs:>8} {processes:>9} {rate:>11.0f} {rate / one:>6.2f}x', flush=True)
    report = {'cores': os.cpu_count(), 'seconds': args.seconds, 'rows': rows,
              'load_average': os.getloadavg()}
    write_report(args.json, report)
    return report


if __name__ == '__main__':
    main()
