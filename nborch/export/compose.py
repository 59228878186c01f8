"""An `ExportPlan` as a Docker Compose file (SPEC §9), for `docker stack deploy` (swarm) and
`docker-compose` alike: the file format is 3.8, the newest that both Debian's Compose 1.29
and swarm accept, with no top-level `name` (both refuse it).

A stateless shard is one service with `deploy.replicas`; a stateful shard is one service per
replica, `<name>-<i>`, each with its own volume and replica id, so Raft peers have stable
names. Every executor service has `endpoint_mode: dnsrr`: its name then resolves to every
container's address on swarm too (a virtual IP would give the gateway one address, and its
one HTTP/2 connection would pin every request to one task), and nothing depends on IPVS.
The gateway publishes its port in `mode: host` for the same reason (no routing mesh).
Every container is restarted when it dies (`restart` for Compose, `deploy.restart_policy`
for swarm; each engine ignores the other's). Every service mounts the deployment secret from
the file `nborch-secret` beside the compose file (written once by the export, 0600, never
overwritten: rotating it is a deliberate act, docs/scale-beyond-one-machine.md).
"""
from __future__ import annotations

from nborch.export.plan import EXECUTOR_PORT, SECRET_FILE, WORKSPACE, ExportPlan, Workload

COMPOSE_VERSION = '3.8'
# A loaded machine can take seconds to start a Python health check: a tight timeout would
# have healthy containers killed on swarm.
HEALTH = {'interval': '5s', 'timeout': '30s', 'retries': 3, 'start_period': '120s'}
# An executor is healthy when its gRPC health service says SERVING (open: no secret). This
# imports grpc only, a tenth of what `nborch ping` costs, every few seconds per container.
EXECUTOR_HEALTH = (
    'import sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; '
    "reply = g.HealthStub(grpc.insecure_channel('127.0.0.1:{port}')).Check("
    "h.HealthCheckRequest(service='nborch.Executor'), timeout=20); "
    'sys.exit(reply.status != h.HealthCheckResponse.SERVING)')
SECRET_NAME = 'nborch-secret'  # also the file's name beside the compose file
RESTART = 'unless-stopped'
RESTART_POLICY = {'condition': 'any', 'delay': '1s'}


def _health(port: int, gateway: bool) -> list[str]:
    if gateway:  # `nborch ping` fails until the gateway has found every replica
        return ['CMD', 'nborch', 'ping', '--secret-file', SECRET_FILE, f'127.0.0.1:{port}']
    return ['CMD', 'python3', '-c', EXECUTOR_HEALTH.format(port=port)]


def _service(image: str, args: list[str], env: dict, port: int, gpus: int,
             gateway: bool = False) -> dict:
    service = {'image': image, 'command': args}
    if env:
        service['environment'] = dict(sorted(env.items()))
    service['secrets'] = [{'source': SECRET_NAME, 'target': SECRET_FILE, 'mode': 0o400}]
    service['healthcheck'] = {'test': _health(port, gateway), **HEALTH}
    service['restart'] = RESTART
    service['deploy'] = {'endpoint_mode': 'dnsrr', 'restart_policy': dict(RESTART_POLICY)}
    if gpus:
        service['deploy']['resources'] = {'reservations': {'devices': [
            {'driver': 'nvidia', 'count': gpus, 'capabilities': ['gpu']}]}}
    return service


def _workload_services(w: Workload, image: str) -> tuple[dict, dict]:
    """Services and named volumes of one workload."""
    if not w.stateful:
        service = _service(image, w.args, w.env, EXECUTOR_PORT, w.gpus)
        service['deploy']['replicas'] = w.replicas
        if w.volumes:
            service['volumes'] = list(w.volumes)  # bind mounts, as `docker run -v`
        return {w.name: service}, {}
    services, volumes = {}, {}
    for i in range(w.replicas):
        name = f'{w.name}-{i}'
        service = _service(image, w.args_for(i), w.env, EXECUTOR_PORT, w.gpus)
        service['deploy']['replicas'] = 1  # one Raft peer per name
        service['volumes'] = [f'{name}-workspace:{WORKSPACE}', *w.volumes]
        services[name] = service
        volumes[f'{name}-workspace'] = {}
    return services, volumes


def gateway_port(port: int) -> dict:
    """Published on the host's own port: swarm's routing mesh needs IPVS, which some kernels
    lack, and Compose publishes this way anyway."""
    return {'target': port, 'published': port, 'protocol': 'tcp', 'mode': 'host'}


def compose_file(plan: ExportPlan, image: str) -> dict:
    services: dict = {}
    volumes: dict = {}
    for w in plan.workloads:
        own, own_volumes = _workload_services(w, image)
        services.update(own)
        volumes.update(own_volumes)
    gateway = _service(image, plan.gateway_args, {}, plan.gateway_port, 0, gateway=True)
    gateway['deploy']['replicas'] = 1
    gateway['ports'] = [gateway_port(plan.gateway_port)]
    if services:
        gateway['depends_on'] = list(services)
    services['gateway'] = gateway
    document = {'version': COMPOSE_VERSION, 'services': services}
    if volumes:
        document['volumes'] = volumes
    document['secrets'] = {SECRET_NAME: {'file': f'./{SECRET_NAME}'}}
    return document
