"""The standard gRPC health service (`grpc.health.v1.Health`) on every nborch server, so
Kubernetes gRPC probes, `grpc_health_probe` and load balancers can ask a worker or a gateway
whether it serves, without knowing nborch's own service.
"""
from __future__ import annotations

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

EXECUTOR_SERVICE = 'nborch.Executor'


def add_health(server) -> health.aio.HealthServicer:
    """Register the health service; it answers NOT_SERVING until `serving` is called."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


async def serving(servicer: health.aio.HealthServicer) -> None:
    for name in (health.OVERALL_HEALTH, EXECUTOR_SERVICE):
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
