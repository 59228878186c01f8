"""How a runtime role's gRPC server lives: it serves the standard health service
(`grpc.health.v1.Health`, so Kubernetes gRPC probes, `grpc_health_probe` and load balancers
can ask a worker or a gateway whether it serves without knowing nborch's own service), says
READY, and drains on SIGTERM/SIGINT.
"""
from __future__ import annotations

import asyncio
import signal
import weakref

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from nborch.runtime import child

EXECUTOR_SERVICE = 'nborch.Executor'

_draining: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop → Event


def draining() -> asyncio.Event:
    """Set once this process's server starts to drain: long-lived stream handlers end their
    calls themselves then, so the server never has to cancel them when its grace runs out
    (Python 3.12+ grpc logs each such cancel as an unhandled CancelledError)."""
    loop = asyncio.get_running_loop()
    event = _draining.get(loop)
    if event is None:
        event = _draining[loop] = asyncio.Event()
    return event


async def serve_until_stopped(server, ready_fd: int | None, *, stop: asyncio.Event | None = None,
                              **ready_info) -> None:
    """Start `server` (its services and ports already added), report ready, and return once
    a stop signal came (or `stop` was set) and the server drained; the caller then closes
    what it owns."""
    servicer = health.aio.HealthServicer()  # NOT_SERVING until set below
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    await server.start()
    for name in (health.OVERALL_HEALTH, EXECUTOR_SERVICE):
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    child.report_ready(ready_fd, **ready_info)
    await stop.wait()
    draining().set()
    await servicer.enter_graceful_shutdown()  # probes see NOT_SERVING while it drains
    await server.stop(grace=1.0)
