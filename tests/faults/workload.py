"""The campaign's client side: concurrent writers and linearizable readers against a
`LogLedger` Deployment, each operation recorded (interval and outcome) for the checker."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

from docarray import DocList
from docarray.documents import TextDoc

from nborch import AsyncClient, requests, write
from nborch._loop import get_loop
from tests.faults.history import ACKED, INDETERMINATE, Op
from tests.integration.helpers import Ledger

LINEARIZABLE = {'read_consistency': 'linearizable'}


class LogLedger(Ledger):
    """`Ledger` (every applied write in its workspace history file, in apply order) that
    also answers `/read` with the whole log it applied, for linearizability checks."""

    @requests(on='/read')
    def read(self, docs, **kwargs):
        return {'ids': list(self.ids), 'replica': self.runtime_args.replica_id}


class Workload:
    """Runs `writers` + `readers` loops on nborch's own event loop (a second loop in the
    process would leave grpc's poller calling into it once closed).

    Each write posts one doc whose id is the write's unique value; it is acknowledged when
    the post returns it, and indeterminate on any error or timeout (a write the gateway or a
    replica gave up on may still commit). Reads that fail are dropped (a read has no effect).
    With `router` (a Deployment's `_orchestrator.router`) posts are routed from this process
    as `Deployment.post` routes them, else they go through the gateway on `port`.
    """

    def __init__(self, port: int, *, executor: str, prefix: str, writers: int = 3,
                 readers: int = 2, timeout: float = 8.0, router=None):
        self.port, self.executor, self.prefix, self.router = port, executor, prefix, router
        self.writers, self.readers, self.timeout = writers, readers, timeout
        self.ops: list[Op] = []
        self.errors: dict[str, int] = {}
        self._stop = threading.Event()
        self._running: concurrent.futures.Future | None = None

    def __enter__(self) -> 'Workload':
        self._running = asyncio.run_coroutine_threadsafe(self._main(), get_loop())
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sending; returns once every operation in flight has an outcome."""
        self._stop.set()
        try:
            self._running.result(timeout=self.timeout * 3 + 30)
        except concurrent.futures.TimeoutError:
            self._running.cancel()
            raise AssertionError('the workload did not stop: a client call outlived its '
                                 'timeout') from None

    def acked(self) -> int:
        return sum(op.kind == 'write' and op.outcome == ACKED for op in list(self.ops))

    async def _main(self) -> None:
        client = AsyncClient(port=self.port)
        if self.router is not None:
            client.route_through(self.router)
        try:
            await asyncio.gather(*[self._writer(client, w) for w in range(self.writers)],
                                 *[self._reader(client, r) for r in range(self.readers)])
        finally:
            await client.close()

    def _count(self, exc: BaseException) -> None:
        key = type(exc).__name__
        self.errors[key] = self.errors.get(key, 0) + 1

    async def _writer(self, client: AsyncClient, w: int) -> None:
        name, k = f'writer-{w}', 0
        while not self._stop.is_set():
            value = f'{self.prefix}-{w}-{k}'
            k += 1
            invoked = time.monotonic()
            try:
                out = await client.post('/index', DocList[TextDoc]([TextDoc(id=value)]),
                                        request_size=1, timeout=self.timeout)
                ok = [d.id for d in out] == [value]
            except Exception as exc:  # noqa: BLE001 -- every failure is an outcome to record
                self._count(exc)
                ok = False
            completed = time.monotonic()
            self.ops.append(Op.write(value, invoked, completed,
                                     ACKED if ok else INDETERMINATE, client=name))
            if not ok:
                await asyncio.sleep(0.2)  # the group is failing over: don't spin

    async def _reader(self, client: AsyncClient, r: int) -> None:
        name = f'reader-{r}'
        while not self._stop.is_set():
            seen = []
            invoked = time.monotonic()
            try:
                await client.post('/read', None, parameters=LINEARIZABLE, timeout=self.timeout,
                                  on_done=lambda resp: seen.append(
                                      resp.parameters['__results__'][self.executor]))
            except Exception as exc:  # noqa: BLE001
                self._count(exc)
            completed = time.monotonic()
            if seen:
                self.ops.append(Op.read(tuple(seen[0]['ids']), invoked, completed,
                                        client=f'{name} via replica {seen[0]["replica"]}'))
            else:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.02)  # reads return the whole log: leave room for writes


class BrokenLedger(LogLedger):
    """A canary the campaign must catch: its reads return half the log, and replica 2
    never records each writer's fourth write."""

    @requests(on='/index')
    @write
    def index(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        if self.runtime_args.replica_id == 2:
            docs = DocList[TextDoc]([d for d in docs if not d.id.endswith('-3')])
        super().index(docs, **kwargs)

    @requests(on='/read')
    def read(self, docs, **kwargs):
        answer = super().read(docs, **kwargs)
        return {**answer, 'ids': answer['ids'][:len(answer['ids']) // 2]}
