"""Exported topologies serve: each container's own command, run as a local process.

For the reference page's Flow, a sharded ALL search and a 3-replica Raft group, in both the
Kubernetes and the Compose export: what the manifests say is what runs (see exported.py for
what is mapped from a cluster onto one machine).
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from docarray import DocList
from docarray.documents import TextDoc

from nborch import Client, Deployment
from nborch.examples import QueryDoc
from tests.integration.exported import (ROOT, LocalCluster, compose_containers,
                                        kubernetes_containers)
from tests.integration.helpers import Ledger

ENGINES = ('kubernetes', 'compose')


def export(serving, engine: str, out: str) -> list:
    if engine == 'kubernetes':
        serving.to_kubernetes_yaml(out, namespace='nb-test')
        return kubernetes_containers(out)
    serving.to_docker_compose_yaml(os.path.join(out, 'docker-compose.yml'))
    return compose_containers(os.path.join(out, 'docker-compose.yml'))


def health(port: int, service: str = '') -> str:
    """What `grpc.health.v1.Health/Check` says (Kubernetes' gRPC probes ask the same)."""
    with grpc.insecure_channel(f'127.0.0.1:{port}') as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def served(status: dict, executor: str) -> list[list[int]]:
    """Requests each replica of each shard served, from the gateway's status."""
    (node,) = [e for e in status['executors'] if e['name'] == executor]
    return [[r['served'] for r in shard['replicas']] for shard in node['shards']]


@pytest.mark.parametrize('engine', ENGINES)
def test_page_flow_exported_by_the_cli_serves(engine, tmp_path):
    """`nborch export` on the page's Flow YAML; slow_encoder's 3 replicas share the load."""
    out = tmp_path / 'out'
    target = out if engine == 'kubernetes' else out / 'docker-compose.yml'
    done = subprocess.run([sys.executable, '-m', 'nborch', 'export', engine,
                           os.path.join(ROOT, 'examples', 'flow.yml'), str(target)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    containers = kubernetes_containers(str(out)) if engine == 'kubernetes' \
        else compose_containers(str(target))
    assert sorted(c.name for c in containers if not c.gateway) == [
        'fast-indexer' if engine == 'compose' else 'fast-indexer-0',
        'slow-encoder-0', 'slow-encoder-1', 'slow-encoder-2']
    with LocalCluster(containers, str(tmp_path)) as cluster:
        client = Client(port=cluster.gateway_port)
        try:
            docs = client.post('/', DocList[TextDoc]([TextDoc(text=f'd{i}') for i in range(30)]),
                               request_size=1)
            status = client.status()
            worker = next(c for c in containers if not c.gateway)
            probes = [health(cluster.gateway_port), health(cluster.gateway_port, 'nborch.Executor'),
                      health(cluster.local_port[worker.name, worker.ports[0]])]
        finally:
            client.close()
    assert probes == ['SERVING'] * 3
    assert [d.text for d in docs] == [f'd{i}' for i in range(30)]
    encoder = served(status, 'slow_encoder')
    assert len(encoder[0]) == 3 and all(n > 0 for n in encoder[0]), encoder  # DNS found all 3
    assert sum(encoder[0]) == 30
    assert served(status, 'fast_indexer') == [[30]]


@pytest.mark.parametrize('engine', ENGINES)
def test_sharded_all_search_exported_serves(engine, tmp_path):
    dep = Deployment(name='searcher', uses='nborch.examples:NumpySearch', shards=2,
                     polling={'/search': 'ALL', '*': 'ANY'}, port=5555)
    rng = np.random.default_rng(0)
    index = DocList[TextDoc]([TextDoc(id=f'doc{i}', text=f'doc {i}',
                                      embedding=rng.random(16).astype(np.float32))
                              for i in range(20)])
    with LocalCluster(export(dep, engine, str(tmp_path / 'out')), str(tmp_path)) as cluster:
        client = Client(port=cluster.gateway_port)
        try:
            client.post('/index', index, request_size=1)
            (query,) = client.post('/search', DocList[QueryDoc]([QueryDoc(
                embedding=rng.random(16).astype(np.float32))]), parameters={'limit': 20},
                return_type=DocList[QueryDoc])
            status = client.status()
        finally:
            client.close()
    shards = served(status, 'searcher')
    assert len(shards) == 2 and all(sum(s) > 1 for s in shards), shards  # index spread by ANY
    # ALL: every shard searched, matches merged: every indexed doc found once, best first
    assert sorted(m.id for m in query.matches) == sorted(d.id for d in index)
    scores = [m.score for m in query.matches]
    assert scores == sorted(scores, reverse=True)


def wait_for_leader(client: Client, executor: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (node,) = [e for e in client.status()['executors'] if e['name'] == executor]
        if any((r.get('raft') or {}).get('role') == 'leader' for r in node['shards'][0]['replicas']):
            return
        time.sleep(0.1)
    raise AssertionError(f'no Raft leader for {executor} in {timeout} s')


def histories(cluster: LocalCluster) -> dict[str, list[str]]:
    found = {}
    for c in cluster.containers:
        if c.mounts:
            (path,) = glob.glob(os.path.join(cluster.mount(c, c.mounts[0]), '**', 'history-*.log'),
                                recursive=True)
            with open(path) as f:
                found[c.name] = f.read().split()
    return found


@pytest.mark.parametrize('engine', ENGINES)
def test_stateful_raft_group_exported_replicates_writes(engine, tmp_path):
    dep = Deployment(name='ledger', uses=Ledger, replicas=3, stateful=True,
                     workspace=str(tmp_path / 'unused'))
    containers = export(dep, engine, str(tmp_path / 'out'))
    assert len([c for c in containers if c.mounts]) == 3  # a volume per replica
    ids = [f'w{i}' for i in range(12)]
    with LocalCluster(containers, str(tmp_path)) as cluster:
        client = Client(port=cluster.gateway_port)
        try:
            wait_for_leader(client, 'ledger')
            client.post('/index', DocList[TextDoc]([TextDoc(id=i) for i in ids]), request_size=3)
            deadline = time.monotonic() + 10
            while (found := histories(cluster)) and time.monotonic() < deadline and \
                    any(sorted(h) != sorted(ids) for h in found.values()):
                time.sleep(0.1)  # followers apply once they learn the commit index
        finally:
            client.close()
    assert len(found) == 3
    # every write reached every replica, applied in the one order the Raft log gives
    first = found['ledger-0']
    assert sorted(first) == sorted(ids), found
    assert all(history == first for history in found.values()), found


def test_an_executor_yaml_with_py_modules_travels_by_its_path(tmp_path):
    """A class only an executor YAML's py_modules can load is exported as that YAML's path
    (under the folder the image is built from), with its `with:` carried over."""
    out = tmp_path / 'k8s'
    done = subprocess.run([sys.executable, '-m', 'nborch', 'export', 'kubernetes',
                           os.path.join('tests', 'fixtures', 'local', 'flow_cli.yml'), str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    containers = kubernetes_containers(str(out))
    (upper,) = [c for c in containers if c.name == 'upper-0']
    assert upper.args[:3] == ['executor', '--uses', os.path.join('tests', 'fixtures', 'local',
                                                                 'upper.yml')]
    with LocalCluster(containers, str(tmp_path)) as cluster:
        client = Client(port=cluster.gateway_port)
        try:
            docs = client.post('/', DocList[TextDoc]([TextDoc(text='hello')]))
        finally:
            client.close()
    assert docs.text == ['HELLO!|rep-0']
