"""What the engine tests send through the gateway's published port, from this machine."""
from __future__ import annotations

import threading
import time

from docarray import DocList
from docarray.documents import TextDoc

from nborch import AsyncClient, Client
from tests.engine.engine import wait_until
from tests.faults.workload import Workload

HOST = '127.0.0.1'  # the published port, from this machine only


def client(port: int) -> Client:
    return Client(host=HOST, port=port)


def gateway_status(port: int) -> dict:
    c = client(port)
    try:
        return c.status(timeout=10)
    finally:
        c.close()


def wait_ready(port: int, timeout: float = 240) -> dict:
    """Until the gateway answers and has found every replica (what its health check asks)."""
    return wait_until(f'the gateway on {HOST}:{port} ready',
                      lambda: (lambda s: s if not s['unresolved'] else None)(gateway_status(port)),
                      timeout=timeout, every=1)


def served(status: dict, executor: str) -> dict[str, int]:
    """Requests served per replica address of `executor` (shard 0)."""
    (node,) = [e for e in status['executors'] if e['name'] == executor]
    return {r['address']: r['served'] for r in node['shards'][0]['replicas']}


class Posts:
    """Posts one doc after another from a thread until stopped; counts what failed."""

    def __init__(self, port: int):
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> 'Posts':
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        c = client(self.port)
        try:
            while not self._stop.is_set():
                try:
                    c.post('/', DocList[TextDoc]([TextDoc(text='x')]), timeout=20)
                    self.ok += 1
                except Exception as exc:  # noqa: BLE001 -- every failure is counted
                    self.failures.append(f'{type(exc).__name__}: {exc}')
                    time.sleep(0.2)
                time.sleep(0.02)
        finally:
            c.close()


class Writes(Workload):
    """The fault campaign's writers (each write's interval and outcome recorded for the
    history checker), through the published port on 127.0.0.1."""

    def __init__(self, port: int, executor: str, prefix: str, writers: int = 3):
        super().__init__(port, executor=executor, prefix=prefix, writers=writers, readers=0)

    async def _main(self) -> None:
        import asyncio
        c = AsyncClient(host=HOST, port=self.port)
        try:
            await asyncio.gather(*[self._writer(c, w) for w in range(self.writers)])
        finally:
            await c.close()

    def wait_acked(self, n: int, timeout: float) -> None:
        wait_until(f'{n} acknowledged writes', lambda: self.acked() >= n, timeout, every=0.2)
