"""`BatchQueue`: the docs of concurrent requests gathered into batched calls (pure asyncio).

One queue serves one (endpoint, parameters) of one replica. A request's docs join the
queue; the queue is due once `preferred_batch_size` docs wait, or `timeout` seconds after the
oldest waiting request arrived, and is flushed then, or when the flush before it ends. A
flush calls the endpoint on consecutive slices of at most `preferred_batch_size` docs (all
of them with `flush_all`), and each request is answered as soon as every one of its docs was
processed: with its own slice of the results, in order, or with the exception of a call
that held any of its docs.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable


@dataclass
class _Waiting:
    docs: Sequence
    reply: asyncio.Future
    start: int = 0  # offset of its first doc in the flushed batch
    weights: list | None = None
    pieces: list = field(default_factory=list)
    error: BaseException | None = None

    @property
    def end(self) -> int:
        return self.start + len(self.docs)


def check_batch_result(returned: Any, docs: Sequence) -> Sequence:
    """What a batched call returned, as docs to split: its docs changed in place (None) or a
    sequence of as many docs as it was given; TypeError/ValueError otherwise."""
    if returned is None:
        return docs
    # A DocList or a list: their slices can be joined again (`extend`).
    if not isinstance(returned, Sequence) or not hasattr(returned, 'extend'):
        raise TypeError('with @dynamic_batching an endpoint returns a DocList or None, got '
                        f'{type(returned).__name__}')
    if len(returned) != len(docs):
        raise ValueError(f'with @dynamic_batching an endpoint returns as many docs as it was '
                         f'given: got {len(docs)}, returned {len(returned)}')
    return returned


class BatchQueue:
    """Gathers requests' docs and calls `call(batch)` for each batch (one event loop only).

    `call` takes a batch built by `make_batch(list_of_docs)` and returns what the endpoint
    returned; results are cut with slicing (a DocList's slice is a DocList of its class).
    One flush runs at a time: what arrives meanwhile waits and, once due, goes whole into
    the next flush, so a busy endpoint gets full batches rather than many small ones."""

    def __init__(self, call: Callable[[Sequence], Awaitable[Any]], *, preferred_batch_size: int,
                 timeout: float, flush_all: bool = False,
                 make_batch: Callable[[list], Sequence] = list,
                 weight: Callable[[Any], float] | None = None):
        self._call = call
        self._weight = weight  # a doc's share of preferred_batch_size (default 1)
        self._size = preferred_batch_size
        self._timeout = timeout
        self._flush_all = flush_all
        self._make_batch = make_batch
        self._waiting: list[_Waiting] = []
        self._queued_docs = 0
        self._queued_weight = 0.0
        self._due = False  # enough docs wait, or the oldest waited `timeout`
        self._timer: asyncio.TimerHandle | None = None
        self._runner: asyncio.Task | None = None
        self.calls = 0  # batched calls made

    @property
    def queued(self) -> int:
        """Docs waiting for the next flush."""
        return self._queued_docs

    @property
    def idle(self) -> bool:
        """Nothing waits and no flush runs."""
        return not self._waiting and self._runner is None

    async def push(self, docs: Sequence) -> Sequence:
        """Queue `docs` (one request's) and return the results for them once processed."""
        loop = asyncio.get_running_loop()
        if not len(docs):
            return docs
        waiting = _Waiting(docs, loop.create_future())
        waiting.weights = [self._weight(d) for d in docs] if self._weight else None
        self._waiting.append(waiting)
        self._queued_docs += len(docs)
        self._queued_weight += sum(waiting.weights) if waiting.weights else len(docs)
        if self._queued_weight >= self._size:
            self.flush()
        elif self._timer is None:  # the oldest waiting request starts the clock
            self._timer = loop.call_later(self._timeout, self.flush)
        return await waiting.reply

    def flush(self) -> None:
        """Run what waits as soon as the previous flush (if any) is done."""
        if not self._waiting:
            return
        self._due = True
        if self._runner is None:
            self._runner = asyncio.ensure_future(self._run_due())

    async def close(self) -> None:
        """Flush what waits and wait until it ran."""
        self.flush()
        while self._runner is not None:
            await asyncio.wait({self._runner})

    async def _run_due(self) -> None:
        try:
            while self._due and self._waiting:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                batch, self._waiting, self._queued_docs, self._queued_weight, self._due = \
                    self._waiting, [], 0, 0.0, False
                await self._run(batch)
        finally:
            self._runner = None

    async def _run(self, batch: list[_Waiting]) -> None:
        docs: list = []
        weights: list = []
        for waiting in batch:
            waiting.start = len(docs)
            docs.extend(waiting.docs)
            weights.extend(waiting.weights or ())
        unanswered = list(batch)  # in offset order
        for start, stop in self._slices(len(docs), weights):
            involved = [w for w in unanswered if w.start < stop and w.end > start]
            try:
                chunk = self._make_batch(docs[start:stop])
                self.calls += 1
                results = check_batch_result(await self._call(chunk), chunk)
            except Exception as exc:  # every request with a doc in this call fails
                for waiting in involved:
                    waiting.error = waiting.error or exc
            else:
                for waiting in involved:
                    if waiting.error is None:
                        waiting.pieces.append(results[max(waiting.start, start) - start:
                                                      min(waiting.end, stop) - start])
            while unanswered and unanswered[0].end <= stop:  # all its docs were processed
                _answer(unanswered.pop(0))


    def _slices(self, n: int, weights: list) -> list[tuple[int, int]]:
        """[start, stop) of each call: `preferred_batch_size` docs, or docs up to the one
        whose weight reaches it; everything with `flush_all`."""
        if self._flush_all:
            return [(0, n)]
        if not weights:
            return [(start, min(start + self._size, n)) for start in range(0, n, self._size)]
        slices, start, total = [], 0, 0.0
        for i, w in enumerate(weights):
            total += w
            if total >= self._size:
                slices.append((start, i + 1))
                start, total = i + 1, 0.0
        if start < n:
            slices.append((start, n))
        return slices


def _answer(waiting: _Waiting) -> None:
    if waiting.reply.done():  # its caller stopped waiting
        return
    if waiting.error is not None:
        waiting.reply.set_exception(waiting.error)
        return
    result, *rest = waiting.pieces
    for piece in rest:
        result.extend(piece)  # a slice is a new sequence: extending it changes nothing else
    waiting.reply.set_result(result)
