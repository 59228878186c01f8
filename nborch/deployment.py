"""`Deployment`: one executor with replicas (and shards) behind a gateway (SPEC §2–3)."""
from __future__ import annotations

import signal
import threading
from typing import Any

from docarray import DocList

from nborch.client import Client
from nborch.orchestrator import ExecutorPlan, Orchestrator
from nborch.runtime.topology import GATEWAY
from nborch.spec import DeploymentSpec


class Deployment:
    """Runs `uses` as `replicas` × `shards` worker processes behind one gateway on `port`.

    All arguments are validated here, before any process starts; `start()` (or `with`)
    starts them and returns once every one is ready.
    """

    def __init__(self, *, name: str | None = None, uses: Any = None, **kwargs):
        self.spec = DeploymentSpec.from_kwargs(name=name, uses=uses, **kwargs)
        self._orchestrator = Orchestrator(
            self.spec.name, [ExecutorPlan(self.spec, [GATEWAY])], host=self.spec.host,
            port=self.spec.port, ready_timeout=self.spec.ready_seconds, quiet=self.spec.quiet)
        self._client: Client | None = None

    # -- identity --------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def host(self) -> str:
        return self.spec.host

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def address(self) -> str:
        return f'{self.host}:{self.port}'

    def __repr__(self) -> str:
        s = self.spec
        state = 'running' if self._orchestrator.running else 'stopped'
        return (f'Deployment(name={s.name!r}, uses={s.executor_class.__name__}, '
                f'replicas={s.replicas}, shards={s.shards}, {state})')

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> 'Deployment':
        self._orchestrator.start()
        return self

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._orchestrator.stop()

    stop = close

    def __enter__(self) -> 'Deployment':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def block(self, stop_event: threading.Event | None = None) -> None:
        """Serve until `stop_event` is set, Ctrl-C, or SIGTERM (the caller then closes)."""
        event = stop_event or threading.Event()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: event.set())
        try:
            while not event.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def needs_all(self) -> 'Deployment':
        """A no-op the reference page calls on a Deployment; returns the deployment."""
        return self

    # -- requests --------------------------------------------------------------------------
    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(host=self.host, port=self.port)
        return self._client

    def post(self, on: str, inputs=None, **kwargs) -> DocList:
        """Same as `Client(port=self.port).post(...)`."""
        return self.client.post(on, inputs, **kwargs)

    def status(self) -> dict:
        """Processes (pids, states, restarts) joined with the gateway's routing counters."""
        processes = self._orchestrator.process_status()
        routed = self.client.status() if self._orchestrator.running else {}
        counters = {e['name']: e for e in routed.get('executors', [])}
        executors = []
        for name, shards in processes['executors'].items():
            routing = counters.get(name, {}).get('shards', [])
            for s, replicas in enumerate(shards):
                for r, replica in enumerate(replicas):
                    if s < len(routing) and r < len(routing[s]['replicas']):
                        replica.update(routing[s]['replicas'][r])
            executors.append({'name': name, 'shards': [{'shard': s, 'replicas': replicas}
                                                         for s, replicas in enumerate(shards)]})
        return {'name': self.name, 'address': self.address,
                'running': self._orchestrator.running, 'gateway': processes['gateway'],
                'requests': routed.get('requests', 0), 'executors': executors,
                'recent_routes': routed.get('recent_routes', [])}

    def logs(self, shard: int = 0, replica: int = 0) -> str:
        """The last lines a replica printed."""
        return self._orchestrator.logs(self.name, shard, replica)
