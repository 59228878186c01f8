"""One workload of vs_reference.py on nborch: reference_driver.py's counterpart.

    python benchmarks/nborch_driver.py '<spec JSON>' RESULT_PATH

The measurements are scale_out.py's own (gateway_overhead, run_setup, consensus_writes);
this file only maps a spec onto them and records the result as reference_driver.py does.
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _workloads import Recorder, make_docs, make_queries  # noqa: E402
from scale_out import consensus_writes, gateway_overhead, run_setup  # noqa: E402

from nborch.examples import ExactNNSearch, NumpySearch, QueryDoc  # noqa: E402

EXECUTORS = {'NumpySearch': NumpySearch, 'ExactNNSearch': ExactNNSearch}


def echo(spec: dict, rec: Recorder) -> None:
    with rec.guard('echo'):
        rec.update(gateway_overhead(spec['posts'], warmup=spec['warmup']))


def search(spec: dict, rec: Recorder) -> None:
    index_docs, _ = make_docs(spec['docs'], seed=0)
    queries = make_queries(spec['queries'], QueryDoc)
    with rec.guard('search'):
        run = run_setup(EXECUTORS[spec['executor']], index_docs, queries,
                        replicas=spec['replicas'], stateful=spec['stateful'], top1=spec['top1'],
                        settle_s=2 if spec['stateful'] else 0)  # the page's pause (untimed)
        rec.update(run)


def writes(spec: dict, rec: Recorder) -> None:
    with rec.guard('writes'):
        rec.update(consensus_writes(0, sequential=spec['writes'], warmup=spec['warmup']))


if __name__ == '__main__':
    import nborch
    Recorder.main({'echo': echo, 'search': search, 'writes': writes},
                  system=f"nborch {getattr(nborch, '__version__', '')}".strip())
