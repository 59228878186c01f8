"""An `ExportPlan` as a Docker Compose file (SPEC §9).

A stateless shard is one service with `deploy.replicas` (Compose's DNS answers its name with
every container's address, which the gateway routes to one by one); a stateful shard is one
service per replica, `<name>-<i>`, each with its own volume and replica id, so Raft peers have
stable names. The gateway publishes its port on the host. Every service mounts the deployment
secret from the file `nborch-secret` beside the compose file (written once by the export,
0600, never overwritten: rotating it is a deliberate act, docs/scale-beyond-one-machine.md).
"""
from __future__ import annotations

from nborch.export.plan import EXECUTOR_PORT, SECRET_FILE, WORKSPACE, ExportPlan, Workload

HEALTH = {'interval': '5s', 'timeout': '3s', 'retries': 3, 'start_period': '60s'}
SECRET_NAME = 'nborch-secret'  # also the file's name beside the compose file


def _service(image: str, args: list[str], env: dict, port: int, gpus: int) -> dict:
    service = {'image': image, 'command': args}
    if env:
        service['environment'] = dict(sorted(env.items()))
    service['secrets'] = [{'source': SECRET_NAME, 'target': SECRET_FILE, 'mode': 0o400}]
    service['healthcheck'] = {'test': ['CMD', 'nborch', 'ping', '--secret-file', SECRET_FILE,
                                       f'127.0.0.1:{port}'], **HEALTH}
    if gpus:
        service['deploy'] = {'resources': {'reservations': {'devices': [
            {'driver': 'nvidia', 'count': gpus, 'capabilities': ['gpu']}]}}}
    return service


def _workload_services(w: Workload, image: str) -> tuple[dict, dict]:
    """Services and named volumes of one workload."""
    if not w.stateful:
        service = _service(image, w.args, w.env, EXECUTOR_PORT, w.gpus)
        service.setdefault('deploy', {})['replicas'] = w.replicas
        if w.volumes:
            service['volumes'] = list(w.volumes)  # bind mounts, as `docker run -v`
        return {w.name: service}, {}
    services, volumes = {}, {}
    for i in range(w.replicas):
        name = f'{w.name}-{i}'
        service = _service(image, w.args_for(i), w.env, EXECUTOR_PORT, w.gpus)
        service['volumes'] = [f'{name}-workspace:{WORKSPACE}', *w.volumes]
        services[name] = service
        volumes[f'{name}-workspace'] = {}
    return services, volumes


def compose_file(plan: ExportPlan, image: str) -> dict:
    services: dict = {}
    volumes: dict = {}
    for w in plan.workloads:
        own, own_volumes = _workload_services(w, image)
        services.update(own)
        volumes.update(own_volumes)
    gateway = _service(image, plan.gateway_args, {}, plan.gateway_port, 0)
    gateway['ports'] = [f'{plan.gateway_port}:{plan.gateway_port}']
    if services:
        gateway['depends_on'] = list(services)
    services['gateway'] = gateway
    document = {'name': plan.name, 'services': services}
    if volumes:
        document['volumes'] = volumes
    document['secrets'] = {SECRET_NAME: {'file': f'./{SECRET_NAME}'}}
    return document
