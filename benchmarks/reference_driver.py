"""One workload of vs_reference.py on the reference system (Jina 3.34), in its own venv.

    <reference venv>/bin/python benchmarks/reference_driver.py '<spec JSON>' RESULT_PATH

vs_reference.py runs this file; it imports jina, so it never runs under nborch's venv. The
spec names the workload (`echo`, `search` or `writes`) and its sizes; the result (a JSON
object) is written to RESULT_PATH as figures arrive and finally with `final: true`, so a
failure (an error, or the deployment hanging on exit) still leaves what was measured and the
error's first line. nborch_driver.py is the same on nborch. (No `from __future__ import
annotations` here: the reference system reads the executors' annotations as types.)
"""

import os
import socket
import sys
import tempfile
import threading
import time
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from docarray import DocList  # noqa: E402
from docarray.documents import TextDoc  # noqa: E402
from jina import Client, Deployment, Executor, requests  # noqa: E402
from jina.serve.executors.decorators import write  # noqa: E402

from _workloads import (LIMIT, Recorder, first_line, make_docs,  # noqa: E402
                        make_queries, sequential_latencies, top1_by_query)

DEFAULT_LIMIT = 100


# The executors of nborch.examples, written for the reference system (same bodies).
class Match(TextDoc):
    score: Optional[float] = None


class QueryDoc(TextDoc):
    matches: DocList[Match] = DocList[Match]()


class Echo(Executor):
    @requests
    def echo(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        return docs


class ExactNNSearch(Executor):
    """The page's executor: docarray's in-memory exact nearest-neighbour index."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from docarray.index.backends.in_memory import InMemoryExactNNIndex
        self._index = InMemoryExactNNIndex[TextDoc]()

    @requests(on=['/index'])
    @write
    def index(self, docs: DocList[TextDoc], **kwargs) -> None:
        self._index.index(docs)

    @requests(on=['/search'])
    def search(self, docs: DocList[QueryDoc], parameters: dict, **kwargs) -> DocList[QueryDoc]:
        limit = int(parameters.get('limit', DEFAULT_LIMIT))
        for query in docs:
            found, scores = self._index.find(query, search_field='embedding', limit=limit)
            query.matches = DocList[Match](
                [Match(id=d.id, text=d.text, score=float(s)) for d, s in zip(found, scores)])
        return docs

    @requests(on=['/count'])
    def count(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        for doc in docs:
            doc.text = str(len(self._index))
        return docs


class NumpySearch(Executor):
    """Exact top-`limit` by dot product over one float32 matrix, grown in chunks."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._chunks: list = []
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._ids: list = []
        self._texts: list = []

    @requests(on=['/index'])
    @write
    def index(self, docs: DocList[TextDoc], **kwargs) -> None:
        self._chunks.append(np.stack([np.asarray(d.embedding, dtype=np.float32) for d in docs]))
        self._ids.extend(docs.id)
        self._texts.extend(docs.text)

    def matrix(self) -> np.ndarray:
        if self._chunks:
            parts = [self._matrix] if self._matrix.size else []
            self._matrix = np.concatenate(parts + self._chunks)
            self._chunks = []
        return self._matrix

    @requests(on=['/search'])
    def search(self, docs: DocList[QueryDoc], parameters: dict, **kwargs) -> DocList[QueryDoc]:
        limit = int(parameters.get('limit', DEFAULT_LIMIT))
        matrix = self.matrix()
        for query in docs:
            top, scores = top_k(matrix, np.asarray(query.embedding, dtype=np.float32), limit)
            query.matches = DocList[Match](
                [Match(id=self._ids[i], text=self._texts[i], score=float(s))
                 for i, s in zip(top, scores)])
        return docs

    @requests(on=['/count'])
    def count(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        for doc in docs:
            doc.text = str(len(self._ids))
        return docs


def top_k(matrix: np.ndarray, query: np.ndarray, k: int):
    """nborch.examples.top_k: indices and scores of the k largest dot products, best first."""
    if matrix.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    scores = matrix @ query
    k = min(k, scores.shape[0])
    part = np.argpartition(-scores, k - 1)[:k]
    order = part[np.argsort(-scores[part], kind='stable')]
    return order, scores[order]


EXECUTORS = {'Echo': Echo, 'NumpySearch': NumpySearch, 'ExactNNSearch': ExactNNSearch}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def deployment(uses, replicas: int = 1, stateful: bool = False, **kwargs):
    port = free_port()
    if stateful:
        kwargs.update(stateful=True, workspace=tempfile.mkdtemp(prefix='vsref-jina-'),
                      peer_ports=[free_port() for _ in range(replicas)])
    dep = Deployment(name=uses.__name__.lower(), uses=uses, port=port, host='127.0.0.1',
                     replicas=replicas, quiet=True, **kwargs)
    return dep, port


class Errors:
    """The client's on_error callback: the first lines of the errors it reports."""

    def __init__(self):
        self.seen: list[str] = []

    def __call__(self, response) -> None:
        status = response.header.status
        text = status.description or (status.exception.name + ': ' + ' '.join(status.exception.args))
        self.seen.append(text.strip().splitlines()[0] if text.strip() else 'error')

    def check(self, what: str) -> None:
        if self.seen:
            raise RuntimeError(f'{what}: {len(self.seen)} request(s) failed, first: {self.seen[0]}')


def count(client) -> int:
    return int(client.post('/count', DocList[TextDoc]([TextDoc()]),
                           return_type=DocList[TextDoc])[0].text)


class Stall(threading.Thread):
    """While the page's index post runs on a stateful deployment, ask the deployment every `every` s how many docs
    it holds (a read, from a second client, in a thread of its own); when that has not grown
    for `stall_s` (a read that does not come back counts as no growth), record the run as
    failed, with how far it got. The post itself is left as it is (the driver is then stopped
    from outside): a Raft group that cannot replicate leaves its client waiting."""

    def __init__(self, port: int, total: int, rec: Recorder, stall_s: float, every: float = 5):
        super().__init__(daemon=True)
        self.port, self.total, self.rec, self.stall_s, self.every = port, total, rec, stall_s, every
        self.done = threading.Event()
        self.best, self.since = -1, time.monotonic()

    def probe(self) -> None:
        client = Client(host='127.0.0.1', port=self.port)
        while not self.done.wait(self.every):
            try:
                held = count(client)
            except Exception:
                continue
            if held > self.best:
                self.best, self.since = held, time.monotonic()

    def run(self) -> None:
        threading.Thread(target=self.probe, daemon=True).start()
        while not self.done.wait(1):
            if time.monotonic() - self.since >= self.stall_s:
                if self.best >= 0:
                    what = f'held {self.best} of {self.total} docs for {self.stall_s:.0f} s'
                else:
                    what = (f'answered no doc count for {self.stall_s:.0f} s while indexing '
                            f'{self.total} docs')
                self.rec.fail('index', RuntimeError(f'stalled: the deployment {what}'))
                return


def echo(spec: dict, rec: Recorder) -> None:
    doc = DocList[TextDoc]([TextDoc(text='hello')])
    for path, extra in (('gateway', {}), ('worker', {'include_gateway': False})):
        dep, port = deployment(Echo, **extra)
        rec.phase(f'start {path}')
        with dep:
            with rec.guard(path):
                client = Client(host='127.0.0.1', port=port)  # one client, reused
                rec.update({path: sequential_latencies(
                    lambda i: client.post('/', doc, return_type=DocList[TextDoc]),
                    spec['posts'], spec['warmup'])})
            rec.phase(f'stop {path}')


def search(spec: dict, rec: Recorder) -> None:
    index_docs, _ = make_docs(spec['docs'], seed=0)
    queries = make_queries(spec['queries'], QueryDoc)
    replicas, stateful = spec['replicas'], spec['stateful']
    rec.phase('start')
    start = time.perf_counter()
    dep, port = deployment(EXECUTORS[spec['executor']], replicas=replicas, stateful=stateful)
    with dep:
        rec.update({'start_s': time.perf_counter() - start})
        with rec.guard('index'):
            client = Client(host='127.0.0.1', port=port)
            errors = Errors()
            stall = Stall(port, len(index_docs), rec, spec.get('stall_s', 120))
            if stateful:
                stall.start()
            start = time.perf_counter()
            try:
                client.post('/index', index_docs, request_size=100, on_error=errors)
            except Exception as exc:
                if stall.best >= 0:  # how far it got
                    raise RuntimeError(f'{first_line(exc)} (at the last count the deployment '
                                       f'held {stall.best} of {len(index_docs)} docs)') from exc
                raise
            finally:
                stall.done.set()
            index_s = time.perf_counter() - start
            if rec.result['final']:  # the watchdog called it stalled first
                raise RuntimeError(rec.result['error'])
            errors.check('index')
            rec.update({'index_s': index_s, 'index_docs_per_s': len(index_docs) / index_s})
        if stateful:
            time.sleep(2)  # the page's pause "to let the data be replicated" (not timed)
        with rec.guard('count'):
            counts = [count(client) for _ in range(replicas)]
            rec.update({'counts': counts})
            if min(counts) != len(index_docs):
                raise RuntimeError(f'index incomplete: replicas answered {counts} docs of '
                                   f'{len(index_docs)}')
        with rec.guard('search'):
            errors = Errors()
            start = time.perf_counter()
            results = client.post('/search', queries, request_size=1,
                                  parameters={'limit': LIMIT}, return_type=DocList[QueryDoc],
                                  on_error=errors)
            search_s = time.perf_counter() - start
            errors.check('search')
            if len(results) != len(queries) or not all(len(r.matches) for r in results):
                raise RuntimeError(f'search returned {len(results)} of {len(queries)} queries')
            rec.update({'search_s': search_s, 'ms_per_query': search_s / len(queries) * 1000,
                        'qps': len(queries) / search_s,
                        'matches_per_query': len(results[0].matches),
                        'top1': top1_by_query(results, spec['top1'])})
        rec.phase('stop')


def writes(spec: dict, rec: Recorder) -> None:
    doc = lambda i: DocList[TextDoc]([TextDoc(text=f'w{i}', embedding=np.zeros(8))])  # noqa: E731
    rec.phase('start')
    dep, port = deployment(NumpySearch, replicas=3, stateful=True)
    with dep:
        with rec.guard('writes'):
            client = Client(host='127.0.0.1', port=port)
            errors = Errors()
            seq = sequential_latencies(lambda i: client.post('/index', doc(i), on_error=errors),
                                       spec['writes'], spec['warmup'])
            errors.check('writes')
            rec.update({'commit_p50_ms': seq['p50_ms'], 'commit_p99_ms': seq['p99_ms'],
                        'sequential': seq['n']})
        rec.phase('stop')


if __name__ == '__main__':
    import jina
    Recorder.main({'echo': echo, 'search': search, 'writes': writes},
                  system=f'jina {jina.__version__}')
