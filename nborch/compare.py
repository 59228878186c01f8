"""`compare()`: the reference page's scale-out experiment at notebook size, setup by setup.

For each setup a fresh `Deployment` indexes `docs` random 128-d `TextDoc`s (request_size=100)
and then answers `queries` single-doc searches (`limit=100`), as on the page. The figures
(index seconds, search seconds, QPS) fill a `QpsChart` while they are measured, with a
progress bar, and come back as a `CompareResult` whose `text/plain` is a table.

Setups are strings: ``'replicas=N'``, ``'shards=N'``, both (``'replicas=2 shards=2'``), and
``'stateful'`` (``'replicas=3 stateful'``), which passes ``stateful=True``, a temporary
``workspace`` and free ``peer_ports`` to `Deployment`.

Each result also says how many searches found the exact nearest neighbour (`top1`), computed
here with numpy for the two example executors. Stateless replicas each index only the
documents routed to them, so their searches see a part of the data; shards searched with
ALL polling, and replicas kept identical by consensus, see all of it.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from html import escape
from typing import Any

import numpy as np
from docarray import DocList
from docarray.documents import TextDoc

from nborch.deployment import Deployment
from nborch.examples import ExactNNSearch, NumpySearch, QueryDoc, top_k

LIMIT = 100
REQUEST_SIZE = 100
DIM = 128
_TOKEN = re.compile(r'^(replicas|shards)=([1-9][0-9]*)$')


@dataclass(frozen=True)
class Setup:
    """One parsed setup string."""

    label: str
    replicas: int = 1
    shards: int = 1
    stateful: bool = False

    @classmethod
    def parse(cls, text: str) -> 'Setup':
        values: dict[str, Any] = {}
        for token in str(text).replace(',', ' ').split():
            match = _TOKEN.match(token)
            if match:
                values[match.group(1)] = int(match.group(2))
            elif token == 'stateful':
                values['stateful'] = True
            else:
                raise ValueError(f'setup {text!r}: cannot read {token!r}; write e.g. '
                                 "'replicas=3', 'shards=2', 'replicas=3 stateful'")
        return cls(label=str(text).strip(), **values)


@dataclass
class SetupResult:
    """One setup's figures."""

    setup: str
    replicas: int
    shards: int
    stateful: bool
    index_s: float | None = None
    search_s: float | None = None
    qps: float | None = None
    top1: float | None = None   # share of searches whose best match is the exact nearest doc

    @property
    def ok(self) -> bool:
        """Every figure measured."""
        return None not in (self.index_s, self.search_s, self.qps)


@dataclass
class CompareResult:
    executor: str
    docs: int
    queries: int
    limit: int
    results: list[SetupResult]
    chart: Any = field(default=None, repr=False)

    def __getitem__(self, setup: str) -> SetupResult:
        for result in self.results:
            if result.setup == setup:
                return result
        raise KeyError(setup)

    def as_dicts(self) -> list[dict]:
        return [asdict(r) for r in self.results]

    def _header(self) -> str:
        return (f'{self.executor}: {self.docs} docs indexed (request_size={REQUEST_SIZE}), '
                f'{self.queries} single-doc searches (limit={self.limit})')

    def __repr__(self) -> str:
        rows = [('setup', 'index s', 'search s', 'QPS', 'exact top-1')]
        for r in self.results:
            rows.append((r.setup, f'{r.index_s:.2f}', f'{r.search_s:.2f}', f'{r.qps:.1f}',
                         '-' if r.top1 is None else f'{r.top1:.0%}'))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [self._header()]
        for row in rows:
            lines.append('  '.join([row[0].ljust(widths[0])]
                                   + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))
        return '\n'.join(lines)

    def _repr_html_(self) -> str:
        head = ''.join(f'<th style="padding:2px 10px">{h}</th>'
                       for h in ('setup', 'index s', 'search s', 'QPS', 'exact top-1'))
        body = []
        for r in self.results:
            top1 = '-' if r.top1 is None else f'{r.top1:.0%}'
            body.append(f'<tr><td style="text-align:left">{escape(r.setup)}</td>' + ''.join(
                f'<td style="padding:2px 10px; text-align:right">{v}</td>' for v in
                (f'{r.index_s:.2f}', f'{r.search_s:.2f}', f'{r.qps:.1f}', top1)) + '</tr>')
        return (f'<div><div>{escape(self._header())}</div><table><tr>{head}</tr>'
                + ''.join(body) + '</table></div>')


def _free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together while picking, so none repeats)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            s = stack.enter_context(socket.socket())
            s.bind(('127.0.0.1', 0))
            ports.append(s.getsockname()[1])
        return ports


def _stateful_kwargs(setup: Setup, workspace: str) -> dict:
    ports = _free_ports(setup.replicas * setup.shards)
    if setup.shards == 1:
        peer_ports: Any = ports
    else:
        peer_ports = {s: ports[s * setup.replicas:(s + 1) * setup.replicas]
                      for s in range(setup.shards)}
    return {'stateful': True, 'workspace': workspace, 'peer_ports': peer_ports}


def _truth(executor: type, index: np.ndarray, queries: np.ndarray) -> np.ndarray | None:
    """Row of the exact best match per query, for the executors whose metric is known."""
    if issubclass(executor, NumpySearch):
        matrix = index.astype(np.float32)
        return np.array([top_k(matrix, q.astype(np.float32), 1)[0][0] for q in queries])
    if issubclass(executor, ExactNNSearch):  # docarray's in-memory index: cosine similarity
        unit = index / np.linalg.norm(index, axis=1, keepdims=True)
        return np.argmax(queries @ unit.T, axis=1)
    return None


def _display_in_kernel(widget) -> None:
    """Show a chart compare() made itself, when running in a notebook kernel."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and getattr(shell, 'kernel', None) is not None:
        display(widget)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, unit='req', desc='compare')


def compare(docs: int = 2000, queries: int = 50, setups=('replicas=1', 'replicas=3'),
            executor: type = NumpySearch, chart=None, *, limit: int = LIMIT, seed: int = 0,
            progress: bool = True, timeout_ready: int = 60_000) -> CompareResult:
    """Run the experiment for each setup in turn and return the figures.

    `chart`: a `nborch.widgets.QpsChart` to fill (one is made when None; pass False for
    none). Setup strings are checked before anything starts. Errors other than a Deployment
    that does not take the stateful arguments propagate (after the deployment is closed).
    """
    parsed = [Setup.parse(s) for s in ([setups] if isinstance(setups, str) else setups)]
    if chart is False:
        chart = None
    elif chart is None:
        from nborch.widgets import QpsChart
        chart = QpsChart(f'{executor.__name__}: search QPS and index time, {docs} docs, '
                         f'{queries} queries', setups=tuple(s.label for s in parsed))
        _display_in_kernel(chart)
    else:
        for s in parsed:
            chart.set(s.label)
    rng = np.random.default_rng(seed)
    index_embeddings = rng.random((docs, DIM))
    query_embeddings = rng.random((queries, DIM))
    index_docs = DocList[TextDoc]([TextDoc(text=f'I am document {i}', embedding=e)
                                   for i, e in enumerate(index_embeddings)])
    search_docs = DocList[QueryDoc]([QueryDoc(text=f'I am query {i}', embedding=e)
                                     for i, e in enumerate(query_embeddings)])
    truth = _truth(executor, index_embeddings, query_embeddings)
    requests_per_setup = -(-docs // REQUEST_SIZE) + queries
    bar = _progress(requests_per_setup * len(parsed), progress)
    results = []
    try:
        for setup in parsed:
            if bar is not None:
                bar.set_description(setup.label)
            result = _run_setup(setup, executor, index_docs, search_docs, truth, limit,
                                chart, bar, timeout_ready)
            results.append(result)
    finally:
        if bar is not None:
            bar.close()
        if chart is not None:
            chart.flush()
    return CompareResult(executor=executor.__name__, docs=docs, queries=queries, limit=limit,
                         results=results, chart=chart)


def _run_setup(setup: Setup, executor: type, index_docs, search_docs, truth, limit: int,
               chart, bar, timeout_ready: int) -> SetupResult:
    result = SetupResult(setup.label, setup.replicas, setup.shards, setup.stateful)
    workspace = tempfile.mkdtemp(prefix='nborch-compare-') if setup.stateful else None
    try:
        extra = _stateful_kwargs(setup, workspace) if setup.stateful else {}
        dep = Deployment(name='indexer', uses=executor, replicas=setup.replicas,
                         shards=setup.shards, quiet=True, timeout_ready=timeout_ready, **extra)

        def tick(_response=None) -> None:
            if bar is not None:
                bar.update(1)

        with dep:
            start = time.perf_counter()
            dep.post('/index', index_docs, request_size=REQUEST_SIZE, on_done=tick)
            result.index_s = time.perf_counter() - start
            if chart is not None:
                chart.set(setup.label, index_s=result.index_s)
            answered = 0
            start = time.perf_counter()

            def searched(response) -> None:
                nonlocal answered
                answered += len(response.docs)
                tick()
                if chart is not None:
                    elapsed = time.perf_counter() - start
                    chart.set(setup.label, qps=answered / elapsed if elapsed > 0 else None)

            found = dep.post('/search', search_docs, request_size=1, parameters={'limit': limit},
                             return_type=DocList[QueryDoc], on_done=searched)
            result.search_s = time.perf_counter() - start
        result.qps = len(search_docs) / result.search_s
        if len(found) != len(search_docs):
            raise RuntimeError(f'{setup.label}: {len(found)} answers to {len(search_docs)} searches')
        if truth is not None:
            rows = {doc_id: i for i, doc_id in enumerate(index_docs.id)}
            hits = sum(1 for query, best in zip(found, truth)
                       if len(query.matches) and rows.get(query.matches[0].id) == best)
            result.top1 = hits / len(search_docs)
        if chart is not None:
            chart.set(setup.label, index_s=result.index_s, search_s=result.search_s,
                      qps=result.qps, done=True)
        return result
    finally:
        if workspace is not None:
            shutil.rmtree(workspace, ignore_errors=True)
