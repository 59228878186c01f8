"""Workload helpers shared by the benchmarks and by both sides of vs_reference.py.

Only the standard library, numpy and docarray: this module is imported by nborch's
benchmarks and by the reference system's driver, which runs in the reference system's own
virtual environment (docarray 0.40 there too, with pydantic 1).
"""
from __future__ import annotations

import json
import os
import statistics
import time
from typing import Callable

import numpy as np
from docarray import DocList
from docarray.documents import TextDoc

LIMIT = 100  # matches per search, as on the page
DIM = 128


def doc_text(i: int) -> str:
    return f'I am document {i}'


def make_embeddings(n: int, seed: int) -> np.ndarray:
    """The page's random 128-d embeddings (float64); the same seed gives the same rows."""
    return np.random.default_rng(seed).random((n, DIM))


def make_docs(n: int, seed: int, doc_cls=TextDoc) -> tuple[DocList, np.ndarray]:
    """The page's docs, `I am document {i}` with a random 128-d embedding; the same seed gives
    the same embeddings on both sides."""
    embeddings = make_embeddings(n, seed)
    docs = DocList[doc_cls]([doc_cls(text=doc_text(i), embedding=embeddings[i])
                             for i in range(n)])
    return docs, embeddings


def make_queries(n: int, query_cls, seed: int = 1) -> DocList:
    """`n` single-doc searches, `query {i}` with a random embedding (seed 1)."""
    _, embeddings = make_docs(n, seed=seed)
    return DocList[query_cls]([query_cls(text=f'query {i}', embedding=embeddings[i])
                               for i in range(n)])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def sequential_latencies(call: Callable[[int], object], n: int, warmup: int = 0) -> dict:
    """Run `call(i)` `warmup` times, then `n` times one after the other, timing each:
    p50/p99 in milliseconds and the rate the sequence achieved."""
    for i in range(warmup):
        call(i)
    times = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - start) * 1000)
    return {'p50_ms': statistics.median(times), 'p99_ms': percentile(times, 99),
            'req_per_s': 1000 / statistics.mean(times), 'n': n}


def top1_by_query(results, n: int) -> dict[str, str]:
    """The best match's text of queries `query 0` .. `query {n-1}`, keyed by the query's text
    (order-free: the reference system's client returns results in arrival order by default)."""
    wanted = {f'query {i}' for i in range(n)}
    return {q.text: (q.matches[0].text if len(q.matches) else None)
            for q in results if q.text in wanted}


def first_line(exc: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message`; for a gRPC error, its status code and details
    (its str() starts with a line that says neither)."""
    text = str(exc).strip()
    code, details = getattr(exc, 'code', None), getattr(exc, 'details', None)
    if callable(code) and callable(details):
        try:
            text = f'{getattr(code(), "name", code())}: {details()}'
        except Exception:
            pass
    line = text.splitlines()[0] if text else ''
    line = f'{type(exc).__name__}: {line}' if line else type(exc).__name__
    return line if len(line) <= limit else line[:limit - 3] + '...'


class Recorder:
    """A driver's result, rewritten (atomically) to `path` whenever it grows, so that the
    parent reads what was measured even when the driver then hangs or is killed. `final` is
    set once the workload succeeded (`ok: true`) or failed (`ok: false`, `error`: the error's
    first line, `failed_at`: the step)."""

    def __init__(self, path: str, system: str):
        self.path = path
        self.result: dict = {'system': system, 'ok': None, 'final': False, 'phase': 'import'}

    def _write(self) -> None:
        import json
        import os
        tmp = f'{self.path}.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.result, f)
        os.replace(tmp, self.path)

    def update(self, values: dict) -> None:
        self.result.update(values)
        self._write()

    def phase(self, name: str) -> None:
        self.update({'phase': name})

    def fail(self, step: str, exc: BaseException) -> None:
        self.update({'ok': False, 'final': True, 'failed_at': step, 'error': first_line(exc)})

    def guard(self, step: str):
        import contextlib

        @contextlib.contextmanager
        def guarded():
            self.phase(step)
            try:
                yield
            except BaseException as exc:
                if not self.result['final']:
                    self.fail(step, exc)
                raise
        return guarded()

    @classmethod
    def main(cls, workloads: dict, system: str) -> None:
        """`driver.py SPEC_JSON RESULT_PATH`: run `workloads[spec['workload']](spec, recorder)`."""
        import json
        import sys
        import traceback
        spec = json.loads(sys.argv[1])
        rec = cls(sys.argv[2], system)
        rec.update({'spec': spec})
        try:
            workloads[spec['workload']](spec, rec)
        except BaseException as exc:
            if not rec.result['final']:
                rec.fail(rec.result.get('phase', '?'), exc)
            traceback.print_exc()
            sys.exit(1)
        rec.update({'ok': True, 'final': True, 'phase': 'done'})


def write_report(path: str, report: dict) -> None:
    """`report` as JSON at `path` (its folder made if missing), and where it went."""
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'JSON: {path}')
