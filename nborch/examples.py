"""Executors from the reference page's experiment, used by the benchmark and the tutorials.

`ExactNNSearch` is the page's own (docarray's InMemoryExactNNIndex); `NumpySearch` keeps the
embeddings in one float32 matrix, which is what a fast exact search looks like in Python.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from docarray import DocList
from docarray.documents import TextDoc

from nborch.executor import Executor, requests, write

DEFAULT_LIMIT = 100


class Match(TextDoc):
    score: Optional[float] = None


class QueryDoc(TextDoc):
    matches: DocList[Match] = DocList[Match]()


class Echo(Executor):
    """Returns the docs it gets (gateway-overhead measurements)."""

    @requests
    def echo(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        return docs


class ExactNNSearch(Executor):
    """The reference page's executor: docarray's in-memory exact nearest-neighbour index."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
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


class NumpySearch(Executor):
    """Exact top-`limit` by dot product over one float32 matrix, grown in chunks."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._chunks: list[np.ndarray] = []
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._ids: list[str] = []
        self._texts: list[str] = []

    @requests(on=['/index'])
    @write
    def index(self, docs: DocList[TextDoc], **kwargs) -> None:
        self._chunks.append(np.stack([np.asarray(d.embedding, dtype=np.float32) for d in docs]))
        self._ids.extend(docs.id)
        self._texts.extend(docs.text)

    def matrix(self) -> np.ndarray:
        if self._chunks:  # concatenate once per burst of indexing, not per query
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
    def count(self, **kwargs) -> dict:
        return {'docs': len(self._ids)}


def top_k(matrix: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k largest dot products, best first."""
    if matrix.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    scores = matrix @ query
    k = min(k, scores.shape[0])
    part = np.argpartition(-scores, k - 1)[:k]
    order = part[np.argsort(-scores[part], kind='stable')]
    return order, scores[order]
