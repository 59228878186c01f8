"""An `ExportPlan` as Kubernetes objects (SPEC §9).

- a stateless shard: a `Deployment` with `replicas` and a headless `Service`; the gateway
  resolves the Service's records and routes to each pod itself (one HTTP/2 connection through
  a ClusterIP would pin all traffic to one pod);
- a stateful shard: a `StatefulSet` with a headless `Service` (pod i is
  `<set>-i.<set>.<ns>.svc`, the Raft peer names in `--peers`), started in parallel (the group
  needs a quorum before anything is ready) and a `volumeClaimTemplate` for each Raft log;
- the gateway: a `Deployment` and a `Service` with the topology in its arguments, ready
  (`nborch ping`) only once it has found every executor's replicas.

Every container gets gRPC probes on `grpc.health.v1` (open: probes carry no secret), a GPU
limit where asked for, and the deployment secret: the Secret `<name>-secret` (key `secret`),
which the export does not write — `kubectl create secret generic` makes it once, so applying
the manifests again never changes it under running pods (docs/scale-beyond-one-machine.md).
"""
from __future__ import annotations

import math

from nborch.export.plan import (EXECUTOR_PORT, RAFT_PORT, REPLICA_ID_VAR, SECRET_DIR, SECRET_FILE,
                                SECRET_KEY, WORKSPACE, ExportPlan, Workload)

PROBE_PERIOD_S = 5
PING_TIMEOUT_S = 30  # `nborch ping` starts a Python: seconds on a loaded node
# The pod-index label exists from Kubernetes 1.28 (StatefulSet pods get it from the controller).
POD_INDEX_LABEL = "metadata.labels['apps.kubernetes.io/pod-index']"
RAFT_VOLUME_SIZE = '1Gi'


def _labels(plan: ExportPlan, component: str) -> dict:
    return {'app.kubernetes.io/name': component, 'app.kubernetes.io/part-of': plan.name,
            'app.kubernetes.io/managed-by': 'nborch'}


def _probes(port: int, ready_seconds: float) -> dict:
    probe = {'grpc': {'port': port}, 'periodSeconds': PROBE_PERIOD_S}
    return {
        # Loading a model may take a while: the startup probe waits as long as timeout_ready.
        'startupProbe': {**probe, 'failureThreshold': max(1, math.ceil(
            min(ready_seconds, 3600) / PROBE_PERIOD_S))},
        'readinessProbe': {**probe, 'failureThreshold': 2},
        'livenessProbe': {**probe, 'failureThreshold': 3},
    }


def _container(image: str, args: list[str], env: dict, ports: list[dict],
               probe_port: int, ready_seconds: float, gpus: int = 0,
               mounts: list[dict] | None = None) -> dict:
    container = {'name': 'nborch', 'image': image, 'args': args, 'ports': ports}
    if env:
        container['env'] = env_list(env)
    container.update(_probes(probe_port, ready_seconds))
    if gpus:
        container['resources'] = {'limits': {'nvidia.com/gpu': gpus}}
    if mounts:
        container['volumeMounts'] = mounts
    return container


def secret_name(plan: ExportPlan) -> str:
    return f'{plan.name}-secret'


def _with_secret(plan: ExportPlan, pod: dict) -> dict:
    """Mount the deployment Secret read-only, readable by the container's user only."""
    (container,) = pod['spec']['containers']
    container.setdefault('volumeMounts', []).append(
        {'name': 'nborch-secret', 'mountPath': SECRET_DIR, 'readOnly': True})
    pod['spec'].setdefault('volumes', []).append(
        {'name': 'nborch-secret', 'secret': {'secretName': secret_name(plan), 'defaultMode': 0o400,
                                             'items': [{'key': SECRET_KEY, 'path': SECRET_KEY}]}})
    return pod


def env_list(env: dict) -> list[dict]:
    return [{'name': k, 'value': str(v)} for k, v in sorted(env.items())]


def _meta(name: str, namespace: str, labels: dict) -> dict:
    return {'name': name, 'namespace': namespace, 'labels': labels}


def _service(name: str, namespace: str, labels: dict, ports: list[dict], *,
             headless: bool, publish_not_ready: bool = False) -> dict:
    spec = {'selector': labels, 'ports': ports}
    if headless:
        spec['clusterIP'] = 'None'
    if publish_not_ready:
        spec['publishNotReadyAddresses'] = True  # Raft peers must find each other before ready
    return {'apiVersion': 'v1', 'kind': 'Service',
            'metadata': _meta(name, namespace, labels), 'spec': spec}


def _grpc_port(name: str, port: int) -> dict:
    return {'name': name, 'port': port, 'targetPort': port, 'protocol': 'TCP',
            'appProtocol': 'grpc'}


def workload_objects(plan: ExportPlan, w: Workload, namespace: str, image: str) -> list[dict]:
    labels = _labels(plan, w.name)
    ports = [{'name': 'grpc', 'containerPort': EXECUTOR_PORT}]
    service_ports = [_grpc_port('grpc', EXECUTOR_PORT)]
    mounts = [{'name': 'workspace', 'mountPath': WORKSPACE}] if w.workspace else []
    host_volumes = []
    for i, volume in enumerate(w.volumes):
        # `docker run -v` semantics: the path on the machine that runs the container.
        host_path, _, rest = volume.partition(':')
        path, _, mode = rest.partition(':')
        host_volumes.append({'name': f'volume-{i}',
                             'hostPath': {'path': host_path, 'type': 'DirectoryOrCreate'}})
        mounts.append({'name': f'volume-{i}', 'mountPath': path,
                       **({'readOnly': True} if mode == 'ro' else {})})
    if w.stateful:
        ports.append({'name': 'raft', 'containerPort': RAFT_PORT})
        service_ports.append(_grpc_port('raft', RAFT_PORT))
    container = _container(image, w.args, w.env, ports, EXECUTOR_PORT, w.ready_seconds,
                           w.gpus, mounts)
    if w.stateful:
        container.setdefault('env', []).append(
            {'name': REPLICA_ID_VAR, 'valueFrom': {'fieldRef': {'fieldPath': POD_INDEX_LABEL}}})
    pod = {'metadata': {'labels': labels}, 'spec': {'containers': [container]}}
    if w.workspace and not w.stateful:
        pod['spec']['volumes'] = [{'name': 'workspace', 'emptyDir': {}}]
    if host_volumes:
        pod['spec'].setdefault('volumes', []).extend(host_volumes)
    _with_secret(plan, pod)
    service = _service(w.name, namespace, labels, service_ports, headless=True,
                       publish_not_ready=w.stateful)
    if w.stateful:
        workload = {
            'apiVersion': 'apps/v1', 'kind': 'StatefulSet',
            'metadata': _meta(w.name, namespace, labels),
            'spec': {'serviceName': w.name, 'replicas': w.replicas,
                     'podManagementPolicy': 'Parallel', 'selector': {'matchLabels': labels},
                     'template': pod,
                     'volumeClaimTemplates': [{
                         'metadata': {'name': 'workspace'},
                         'spec': {'accessModes': ['ReadWriteOnce'],
                                  'resources': {'requests': {'storage': RAFT_VOLUME_SIZE}}}}]}}
    else:
        workload = {
            'apiVersion': 'apps/v1', 'kind': 'Deployment',
            'metadata': _meta(w.name, namespace, labels),
            'spec': {'replicas': w.replicas, 'selector': {'matchLabels': labels},
                     'template': pod}}
    return [service, workload]


def gateway_objects(plan: ExportPlan, namespace: str, image: str) -> list[dict]:
    labels = _labels(plan, 'gateway')
    port = plan.gateway_port
    container = _container(image, plan.gateway_args, {},
                           [{'name': 'grpc', 'containerPort': port}], port, 60.0)
    # Ready once it has found every executor's replicas (`nborch ping` fails until then), not
    # merely serving: traffic sent earlier would go to the first pods found only.
    container['readinessProbe'] = {
        'exec': {'command': ['nborch', 'ping', '--secret-file', SECRET_FILE, f'127.0.0.1:{port}']},
        'periodSeconds': PROBE_PERIOD_S, 'timeoutSeconds': PING_TIMEOUT_S, 'failureThreshold': 2}
    return [
        _service('gateway', namespace, labels, [_grpc_port('grpc', port)], headless=False),
        {'apiVersion': 'apps/v1', 'kind': 'Deployment',
         'metadata': _meta('gateway', namespace, labels),
         'spec': {'replicas': 1, 'selector': {'matchLabels': labels},
                  'template': _with_secret(plan, {'metadata': {'labels': labels},
                                                  'spec': {'containers': [container]}})}},
    ]


def manifests(plan: ExportPlan, namespace: str, image: str) -> dict[str, list[dict]]:
    """File name → the objects it holds, in the order `kubectl apply -f` should see them."""
    files: dict[str, list[dict]] = {}
    if namespace != 'default':
        files['00-namespace.yml'] = [{'apiVersion': 'v1', 'kind': 'Namespace',
                                      'metadata': {'name': namespace}}]
    for w in plan.workloads:
        files[f'{w.name}.yml'] = workload_objects(plan, w, namespace, image)
    files['gateway.yml'] = gateway_objects(plan, namespace, image)
    return files
