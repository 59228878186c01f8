"""Keeping processes alive: `ProcessHandle` (one child: a replica via `WorkerHandle`, or the
gateway) and `Supervisor` (restarts).

A child that dies is restarted on the same port, so clients and the gateway's channels
reconnect to it without a topology change; meanwhile the router sends requests to the other
replicas (and clients of a restarting gateway get UNAVAILABLE, which they may retry).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Sequence

from nborch.runtime.child import exit_reason
from nborch.runtime.process import ChildHandle, ChildStartError

BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0
STABLE_AFTER = 10.0  # a child up this long has its back-off reset


def restart_delay(consecutive_failures: int) -> float:
    """Exponential back-off: 0.2 s, 0.4 s, 0.8 s, ... capped at 5 s."""
    return min(BACKOFF_FIRST * 2 ** consecutive_failures, BACKOFF_MAX)


@dataclass(frozen=True)
class ReplicaId:
    executor: str
    shard: int
    replica: int

    def __str__(self) -> str:
        return f'{self.executor}/shard-{self.shard}/rep-{self.replica}'


class ProcessHandle:
    """One supervised child: `python -m module args`, its port once bound, its process.

    The module takes `--port` (a restart keeps the port its first start bound)."""

    def __init__(self, ident: Hashable, module: str, args: Sequence[str], *,
                 env: Mapping[str, str] | None, log_path: str,
                 echo: Callable[[str], None] | None, secret: bytes | None = None):
        self.id = ident
        self.module = module
        self.args = list(args)
        self.env = dict(env) if env is not None else None
        self.secret = secret
        self.log_path = log_path
        self.echo = echo
        self.port: int | None = None
        self.info: dict = {}
        self.restarts = 0
        self.consecutive_failures = 0
        self.state = 'new'
        self.child: ChildHandle | None = None
        self.last_exit: dict | None = None  # {'code', 'reason'} of the last unexpected end
        self.retired = False  # taken out of service for good: never restarted again

    def note_exit(self) -> None:
        """Record how the process ended (its status, and the reason it gave, if any)."""
        self.child.stop()  # reaps it, closes its pipes, reads its output to the end
        self.last_exit = {'code': self.child.returncode, 'reason': exit_reason(self.child.tail)}

    def spawn(self) -> None:
        args = list(self.args)
        if self.port is not None:  # a restart keeps its address
            args += ['--port', str(self.port)]
        self.child = ChildHandle(str(self.id), self.module, args, env=self.env,
                                 log_path=self.log_path, echo=self.echo, secret=self.secret)
        self.state = 'starting'
        self.child.spawn()

    def wait_ready(self, timeout: float) -> None:
        self.info = self.child.wait_ready(timeout)
        self.port = self.info['port']
        self.state = 'ready'

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.alive

    @property
    def up(self) -> bool:
        """Alive and ready (not starting, restarting or stopped)."""
        return self.state == 'ready' and self.alive

    def retire(self, state: str) -> None:
        """Out of service for good (scaled away or replaced); `state` says what it does now
        ('draining': finishing what it holds, then 'stopping')."""
        self.retired = True
        self.state = state

    def terminate(self) -> None:
        self.state = 'stopped'
        if self.child is not None:
            self.child.terminate()

    def stop(self, grace: float = 3.0) -> None:
        self.state = 'stopped'
        if self.child is not None:
            self.child.stop(grace)


class WorkerHandle(ProcessHandle):
    """One replica: its spec file and the worker process serving it."""

    def __init__(self, rid: ReplicaId, spec_path: str, *, env: Mapping[str, str], log_path: str,
                 echo: Callable[[str], None] | None, secret: bytes | None = None):
        super().__init__(rid, 'nborch.runtime.worker', ['--spec', spec_path], env=env,
                         log_path=log_path, echo=echo, secret=secret)
        self.spec_path = spec_path

    @property
    def seen_devices(self) -> str | None:
        """CUDA_VISIBLE_DEVICES as the process reported it."""
        return self.info.get('cuda_visible_devices')


class Supervisor:
    """Watches children on one thread and restarts the dead ones with back-off.

    `children` is called on each round: the set it keeps alive may change while it runs."""

    def __init__(self, children: Callable[[], list[ProcessHandle]], ready_timeout: float,
                 poll: float = 0.1):
        self.children = children
        self.ready_timeout = ready_timeout
        self.poll = poll
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name='nborch-supervisor', daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (returns once no restart is in progress)."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        next_try: dict[ReplicaId, float] = {}
        while not self._stopping.wait(self.poll):
            now = time.monotonic()
            for worker in self.children():
                if worker.alive or worker.state == 'stopped' or worker.retired:
                    continue
                if worker.id not in next_try:
                    worker.note_exit()
                    if worker.child and now - worker.child.started_at > STABLE_AFTER:
                        worker.consecutive_failures = 0
                    worker.state = 'restarting'
                    next_try[worker.id] = now + restart_delay(worker.consecutive_failures)
                if now >= next_try[worker.id] and not self._stopping.is_set():
                    del next_try[worker.id]
                    self._restart(worker)

    def _restart(self, worker: ProcessHandle) -> None:
        worker.restarts += 1
        try:
            worker.spawn()
            worker.wait_ready(self.ready_timeout)
        except (ChildStartError, OSError):
            worker.consecutive_failures += 1
            worker.state = 'restarting'
        if worker.retired:  # taken out of service while it restarted: it stops here
            worker.stop()
