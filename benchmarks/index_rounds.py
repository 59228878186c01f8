"""Consensus indexing against one replica, in alternating rounds: the ratio of one run moves
by 2x on this machine, the median of many rounds much less.

    python benchmarks/index_rounds.py              # 8 rounds of 10 000 docs each way (~10 s)
    python benchmarks/index_rounds.py --rounds 20 --docs 2000
    (writes benchmarks/results/index_rounds.json; --json elsewhere)

Both Deployments (NumpySearch, replicas=1, and replicas=3 stateful) stay up for the whole run;
each round indexes the same docs into both, with the default request size of 100, which
goes first alternating. Each round's ratio is stateful / plain; the report gives each and
their median. The stateful group's log grows by `docs / 100` entries a round.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import _one_blas_thread  # noqa: E402,F401  (before numpy)

from _workloads import make_docs, write_report  # noqa: E402
from nborch import Deployment  # noqa: E402
from nborch.examples import NumpySearch  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=8)
    parser.add_argument('--docs', type=int, default=10_000)
    parser.add_argument('--json', default=os.path.join(HERE, 'results', 'index_rounds.json'))
    args = parser.parse_args(argv)
    docs, _ = make_docs(args.docs, seed=0)
    workspace = tempfile.mkdtemp(prefix='nborch-index-rounds-')
    rounds = []
    try:
        with Deployment(name='plain', uses=NumpySearch, quiet=True) as plain, \
                Deployment(name='stateful', uses=NumpySearch, replicas=3, stateful=True,
                           workspace=workspace, quiet=True) as stateful:
            for dep in (plain, stateful):  # warm: channels open, leader known
                dep.post('/index', docs[:200])
            for i in range(args.rounds):
                order = [('plain', plain), ('stateful', stateful)]
                seconds = {}
                for name, dep in order if i % 2 == 0 else order[::-1]:
                    began = time.perf_counter()
                    dep.post('/index', docs)
                    seconds[name] = time.perf_counter() - began
                ratio = seconds['stateful'] / seconds['plain']
                rounds.append({**seconds, 'ratio': ratio})
                print(f'round {i + 1}/{args.rounds}: replicas=1 {seconds["plain"]:.3f} s, '
                      f'3 stateful {seconds["stateful"]:.3f} s, {ratio:.2f}x', flush=True)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    ratios = [r['ratio'] for r in rounds]
    report = {'docs': args.docs, 'rounds': rounds, 'median_ratio': statistics.median(ratios),
              'min_ratio': min(ratios), 'max_ratio': max(ratios),
              'load_average': os.getloadavg()}
    print(f'consensus indexing, {args.docs} docs: median {report["median_ratio"]:.2f}x the '
          f'replicas=1 time ({min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} rounds; '
          'target <= 1.3x)')
    write_report(args.json, report)
    return report


if __name__ == '__main__':
    main()
