"""Exported manifests: valid against the Kubernetes schema and the Compose spec, shaped as a
cluster runs them, and errors that write nothing. No process starts here (see
tests/integration/test_export_runs.py for the exported commands serving)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml

from nborch import Deployment, Executor, Flow, requests
from nborch.cli import build_parser, executor_fields
from nborch.errors import ExportError
from nborch.runtime.topology import Topology

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE_SCHEMA = os.path.join(ROOT, 'tests', 'fixtures', 'schemas', 'compose-spec.json')
K8S_VERSION = kubernetes_validate.latest_version()


def page_flow() -> Flow:
    return Flow(name='scale-out', port=5555).add(name='slow_encoder', replicas=3) \
        .add(name='fast_indexer')


def sharded_search() -> Deployment:
    return Deployment(name='searcher', uses='nborch.examples:NumpySearch', shards=2,
                      polling={'/search': 'ALL', '*': 'ANY'})


def stateful_indexer(tmp_path) -> Deployment:
    return Deployment(name='indexer', uses='nborch.examples:ExactNNSearch', replicas=3,
                      stateful=True, workspace=str(tmp_path / 'raft'),
                      raft_configuration={'heartbeat_timeout': 0.2})


def gpu_flow() -> Flow:
    return Flow().add(name='encoder', replicas=2, env={'CUDA_VISIBLE_DEVICES': 'RR', 'X': '1'}) \
        .add(name='ranker', gpus=2)


EXPORTS = {'page_flow': lambda tmp: page_flow(), 'sharded_search': lambda tmp: sharded_search(),
           'stateful_indexer': stateful_indexer, 'gpu_flow': lambda tmp: gpu_flow()}


def k8s_objects(directory) -> dict[tuple[str, str], dict]:
    objects = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith('.yml'):
            with open(os.path.join(directory, name)) as f:
                for obj in yaml.safe_load_all(f):
                    objects[obj['kind'], obj['metadata']['name']] = obj
    return objects


def container(obj: dict) -> dict:
    (c,) = obj['spec']['template']['spec']['containers']
    return c


def arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def compose(serving, tmp_path) -> dict:
    path = tmp_path / 'compose' / 'docker-compose.yml'
    serving.to_docker_compose_yaml(str(path))
    with open(path) as f:
        return yaml.safe_load(f)


# -- validity -----------------------------------------------------------------------------------

@pytest.mark.parametrize('case', sorted(EXPORTS))
def test_every_kubernetes_manifest_is_valid_in_strict_mode(case, tmp_path):
    written = EXPORTS[case](tmp_path).to_kubernetes_yaml(str(tmp_path / 'k8s'), namespace='ml')
    assert os.path.join(str(tmp_path / 'k8s'), 'Dockerfile') in written
    objects = k8s_objects(tmp_path / 'k8s')
    assert ('Namespace', 'ml') in objects and ('Deployment', 'gateway') in objects
    for obj in objects.values():
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)  # raises if invalid


@pytest.mark.parametrize('case', sorted(EXPORTS))
def test_every_compose_file_is_valid_against_the_compose_spec(case, tmp_path):
    with open(COMPOSE_SCHEMA) as f:
        validator = jsonschema.Draft7Validator(json.load(f))
    errors = [e.message for e in validator.iter_errors(compose(EXPORTS[case](tmp_path), tmp_path))]
    assert errors == []


COMPOSE_129_SCHEMA = os.path.join(ROOT, 'tests', 'fixtures', 'schemas', 'compose-1.29-spec.json')


@pytest.mark.parametrize('case', sorted(EXPORTS))
def test_every_compose_file_is_valid_for_docker_compose_1_29_and_swarm(case, tmp_path):
    """Debian's docker-compose 1.29 validates with an older schema (no top-level `name`,
    which `docker stack deploy` refuses too); 3.8 is the newest format both read."""
    with open(COMPOSE_129_SCHEMA) as f:
        validator = jsonschema.Draft7Validator(json.load(f))
    document = compose(EXPORTS[case](tmp_path), tmp_path)
    assert [e.message for e in validator.iter_errors(document)] == []
    assert document['version'] == '3.8' and 'name' not in document


def test_every_compose_container_restarts_and_is_found_by_dns_on_swarm_too(tmp_path):
    for case in ('page_flow', 'stateful_indexer'):
        services = compose(EXPORTS[case](tmp_path), tmp_path)['services']
        for name, service in services.items():
            assert service['restart'] == 'unless-stopped'  # Compose
            assert service['deploy']['restart_policy']['condition'] == 'any'  # swarm
            # every container's address in DNS: no virtual IP (one address, and IPVS)
            assert service['deploy']['endpoint_mode'] == 'dnsrr', name
        (port,) = services['gateway']['ports']
        assert port['mode'] == 'host'  # no routing mesh either


def test_the_validators_reject_what_a_cluster_would(tmp_path):
    """The checks above can fail: misspelt fields are caught."""
    page_flow().to_kubernetes_yaml(str(tmp_path / 'k8s'))
    deployment = k8s_objects(tmp_path / 'k8s')['Deployment', 'slow-encoder']
    container(deployment)['argz'] = container(deployment).pop('args')
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    document = compose(page_flow(), tmp_path)
    service = document['services']['slow-encoder']
    service['commands'] = service.pop('command')
    with open(COMPOSE_SCHEMA) as f:
        assert list(jsonschema.Draft7Validator(json.load(f)).iter_errors(document))


# -- shape --------------------------------------------------------------------------------------

def test_stateless_shards_are_deployments_behind_headless_services(tmp_path):
    sharded_search().to_kubernetes_yaml(str(tmp_path))
    objects = k8s_objects(tmp_path)
    for shard in (0, 1):
        name = f'searcher-{shard}'
        service, deployment = objects['Service', name], objects['Deployment', name]
        assert service['spec']['clusterIP'] == 'None'  # the gateway resolves every pod
        assert deployment['spec']['replicas'] == 1
        args = container(deployment)['args']
        assert args[:3] == ['executor', '--uses', 'nborch.examples:NumpySearch']
        fields = executor_fields(build_parser().parse_args(args))  # what the container runs
        assert (fields['shard_id'], fields['shards']) == (shard, 2)
        probes = {k: v for k, v in container(deployment).items() if k.endswith('Probe')}
        assert sorted(probes) == ['livenessProbe', 'readinessProbe', 'startupProbe']
        assert all(p['grpc'] == {'port': 8080} for p in probes.values())
    topology = Topology.load(arg(container(objects['Deployment', 'gateway'])['args'], '--topology'))
    (searcher,) = topology.executors
    assert searcher.discover and searcher.polling == {'/search': 'ALL', '*': 'ANY'}
    assert searcher.shards == [['searcher-0.default.svc:8080'], ['searcher-1.default.svc:8080']]


def test_a_stateful_executor_is_a_statefulset_with_stable_peers_and_a_volume_each(tmp_path):
    stateful_indexer(tmp_path).to_kubernetes_yaml(str(tmp_path / 'k8s'), namespace='ml')
    objects = k8s_objects(tmp_path / 'k8s')
    service, sts = objects['Service', 'indexer'], objects['StatefulSet', 'indexer']
    assert service['spec']['clusterIP'] == 'None'
    assert service['spec']['publishNotReadyAddresses'] is True  # peers meet before a quorum
    assert sts['spec']['serviceName'] == 'indexer' and sts['spec']['replicas'] == 3
    assert sts['spec']['podManagementPolicy'] == 'Parallel'
    (claim,) = sts['spec']['volumeClaimTemplates']
    assert container(sts)['volumeMounts'][0] == {'name': claim['metadata']['name'],
                                                 'mountPath': '/workspace'}
    args = container(sts)['args']
    assert arg(args, '--peers').split(',') == [
        f'indexer-{i}.indexer.ml.svc:8081' for i in range(3)]
    assert arg(args, '--replica-id') == '$(NBORCH_REPLICA_ID)'
    (index_var,) = [e for e in container(sts)['env'] if e['name'] == 'NBORCH_REPLICA_ID']
    assert 'apps.kubernetes.io/pod-index' in index_var['valueFrom']['fieldRef']['fieldPath']
    assert json.loads(arg(args, '--raft-configuration')) == {'heartbeat_timeout': 0.2}
    topology = Topology.load(arg(container(objects['Deployment', 'gateway'])['args'], '--topology'))
    assert topology.executors[0].shards == [[f'indexer-{i}.indexer.ml.svc:8080' for i in range(3)]]
    assert topology.executors[0].stateful and not topology.executors[0].discover


def test_compose_gives_each_stateful_replica_its_own_service_and_volume(tmp_path):
    services = compose(stateful_indexer(tmp_path), tmp_path)
    names = [f'indexer-{i}' for i in range(3)]
    assert list(services['services']) == [*names, 'gateway']
    assert sorted(services['volumes']) == [f'{n}-workspace' for n in names]
    for i, name in enumerate(names):
        args = services['services'][name]['command']
        assert arg(args, '--replica-id') == str(i)
        assert arg(args, '--peers') == ','.join(f'{n}:8081' for n in names)
    gateway = services['services']['gateway']
    assert gateway['ports'] == [{'target': 8080, 'published': 8080, 'protocol': 'tcp',
                                 'mode': 'host'}]
    assert gateway['depends_on'] == names


@pytest.mark.parametrize('case', sorted(EXPORTS))
def test_every_kubernetes_pod_reads_the_deployment_secret_from_one_secret(case, tmp_path):
    EXPORTS[case](tmp_path).to_kubernetes_yaml(str(tmp_path / 'k8s'))
    objects = k8s_objects(tmp_path / 'k8s')
    assert not [key for key in objects if key[0] == 'Secret']  # made once, by hand (docs)
    workloads = [o for (kind, _), o in objects.items() if kind in ('Deployment', 'StatefulSet')]
    for workload in workloads:
        pod = workload['spec']['template']['spec']
        (volume,) = [v for v in pod['volumes'] if 'secret' in v]
        assert volume['secret']['secretName'] == f'{workload["metadata"]["labels"]["app.kubernetes.io/part-of"]}-secret'
        assert volume['secret']['defaultMode'] == 0o400
        (mount,) = [m for m in container(workload)['volumeMounts'] if m['name'] == volume['name']]
        assert mount['readOnly'] is True
        secret_file = arg(container(workload)['args'], '--secret-file')
        assert secret_file == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
        assert '--insecure' not in container(workload)['args']
    assert len(workloads) >= 2


def test_compose_services_read_the_secret_from_a_private_file_made_once(tmp_path):
    document = compose(page_flow(), tmp_path)
    secret_file = tmp_path / 'compose' / 'nborch-secret'
    assert document['secrets'] == {'nborch-secret': {'file': './nborch-secret'}}
    assert oct(os.stat(secret_file).st_mode & 0o777) == '0o600'
    first = secret_file.read_text()
    assert len(bytes.fromhex(first.strip())) == 32
    for service in document['services'].values():
        (mounted,) = service['secrets']
        assert mounted['source'] == 'nborch-secret'
        assert arg(service['command'], '--secret-file') == mounted['target']
    gateway_health = document['services']['gateway']['healthcheck']['test']
    assert gateway_health[:3] == ['CMD', 'nborch', 'ping'] and '--secret-file' in gateway_health
    compose(page_flow(), tmp_path)
    assert secret_file.read_text() == first  # exporting again keeps the running secret


def test_gpus_become_limits_per_replica_and_rr_leaves_the_env(tmp_path):
    gpu_flow().to_kubernetes_yaml(str(tmp_path / 'k8s'))
    objects = k8s_objects(tmp_path / 'k8s')
    encoder, ranker = (container(objects['Deployment', n]) for n in ('encoder', 'ranker'))
    assert encoder['resources'] == {'limits': {'nvidia.com/gpu': 1}}
    assert encoder['env'] == [{'name': 'X', 'value': '1'}]  # RR is a local-only assignment
    assert ranker['resources'] == {'limits': {'nvidia.com/gpu': 2}}
    assert 'resources' not in container(objects['Deployment', 'gateway'])
    services = compose(gpu_flow(), tmp_path)['services']
    assert services['encoder']['deploy']['resources'] == {'reservations': {'devices': [
        {'driver': 'nvidia', 'count': 1, 'capabilities': ['gpu']}]}}
    assert services['encoder']['deploy']['replicas'] == 2


def test_env_and_uses_with_are_carried_over(tmp_path):
    Deployment(name='enc', uses='nborch.examples:NumpySearch', uses_with={'dim': 3},
               env={'MODEL': 'small'}, log_level='DEBUG').to_kubernetes_yaml(str(tmp_path))
    c = container(k8s_objects(tmp_path)['Deployment', 'enc'])
    assert json.loads(arg(c['args'], '--uses-with')) == {'dim': 3}
    assert arg(c['args'], '--log-level') == 'DEBUG'
    assert c['env'] == [{'name': 'MODEL', 'value': 'small'}]


def test_uses_dynamic_batching_is_carried_over(tmp_path):
    batching = {'/search': {'preferred_batch_size': 8, 'timeout': 20}}
    Deployment(name='enc', uses='nborch.examples:NumpySearch',
               uses_dynamic_batching=batching).to_kubernetes_yaml(str(tmp_path))
    c = container(k8s_objects(tmp_path)['Deployment', 'enc'])
    assert json.loads(arg(c['args'], '--uses-dynamic-batching')) == batching


def test_external_executors_are_addresses_in_the_topology_not_workloads(tmp_path):
    flow = Flow().add(name='remote', host=['10.0.0.5:9000', '10.0.0.6:9000'], external=True)
    flow.to_kubernetes_yaml(str(tmp_path))
    objects = k8s_objects(tmp_path)
    assert sorted(objects) == [('Deployment', 'gateway'), ('Service', 'gateway')]
    topology = Topology.load(arg(container(objects['Deployment', 'gateway'])['args'], '--topology'))
    assert topology.executors[0].shards == [['10.0.0.5:9000', '10.0.0.6:9000']]
    assert not topology.executors[0].discover


def test_no_reduce_travels_in_the_exported_topology(tmp_path):
    flow = Flow().add(name='a').add(name='b', needs='gateway') \
        .add(name='join', needs=['a', 'b'], no_reduce=True)
    flow.to_kubernetes_yaml(str(tmp_path))
    gateway = container(k8s_objects(tmp_path)['Deployment', 'gateway'])
    topology = Topology.load(arg(gateway['args'], '--topology'))
    assert [e.no_reduce for e in topology.executors] == [False, False, True]


def test_the_dockerfile_builds_the_one_image_every_container_runs(tmp_path):
    page_flow().to_kubernetes_yaml(str(tmp_path), image='registry.example/ml/nborch:1')
    with open(tmp_path / 'Dockerfile') as f:
        text = f.read()
    assert 'ENTRYPOINT ["nborch"]' in text and 'docker build -f' in text
    assert 'registry.example/ml/nborch:1' in text
    # offline: the base image is a build argument, pip never reaches an index
    assert 'ARG BASE_IMAGE=' in text and 'FROM ${BASE_IMAGE}' in text
    assert 'ARG NBORCH_PACKAGE=nborch\n' in text
    (install,) = [line for line in text.splitlines() if '/opt/nborch/bin/pip install' in line
                  and 'requirements' not in line]
    assert '--no-index --find-links' in install
    images = {container(o)['image'] for (kind, _), o in k8s_objects(tmp_path).items()
              if kind == 'Deployment'}
    assert images == {'registry.example/ml/nborch:1'}


# -- errors: one line, nothing written ----------------------------------------------------------

class NotebookExecutor(Executor):
    @requests
    def foo(self, docs, **kwargs):
        return docs


NotebookExecutor.__module__ = '__main__'  # as a class defined in a notebook cell is


def test_a_class_no_image_can_import_is_refused_before_writing(tmp_path):
    flow = Flow().add(name='mine', uses=NotebookExecutor)
    with pytest.raises(ExportError, match=r"executor 'mine' uses NotebookExecutor, defined in a "
                                          r"notebook or the __main__ script.*executors:"):
        flow.to_kubernetes_yaml(str(tmp_path / 'out'))
    assert not (tmp_path / 'out').exists()


def test_an_output_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / 'out').write_text('not a folder')
    with pytest.raises(ExportError, match='is a file'):
        page_flow().to_kubernetes_yaml(str(tmp_path / 'out'))
    assert (tmp_path / 'out').read_text() == 'not a folder'


def test_arguments_that_are_not_json_are_refused_by_name(tmp_path):
    flow = Flow().add(name='encoder', uses_with={'when': object()})
    with pytest.raises(ExportError, match='encoder: uses_with must be JSON to travel in '
                                          'container arguments'):
        flow.to_docker_compose_yaml(str(tmp_path / 'docker-compose.yml'))
    assert os.listdir(tmp_path) == []


def test_names_that_collide_in_the_cluster_are_refused(tmp_path):
    flow = Flow().add(name='slow_encoder').add(name='slow-encoder')
    with pytest.raises(ExportError, match="'slow_encoder' and 'slow-encoder' would both be "
                                          "named 'slow-encoder'"):
        flow.to_kubernetes_yaml(str(tmp_path))
    assert os.listdir(tmp_path) == []
    with pytest.raises(ExportError, match='namespace'):
        page_flow().to_kubernetes_yaml(str(tmp_path), namespace='Bad_NS')


def run_cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'nborch', *args], capture_output=True,
                          text=True, cwd=cwd, timeout=60)


def test_cli_export_errors_are_one_line_and_write_nothing(tmp_path):
    missing = run_cli('export', 'kubernetes', str(tmp_path / 'nope.yml'), str(tmp_path / 'a'))
    (bad := tmp_path / 'bad.yml').write_text('jtype: Flow\nexecutors: [{name: x, replicas: two}]\n')
    invalid = run_cli('export', 'compose', str(bad), str(tmp_path / 'b'))
    executor_yaml = run_cli('export', 'kubernetes',
                            os.path.join(ROOT, 'tests', 'fixtures', 'local', 'upper.yml'),
                            str(tmp_path / 'c'))
    for done in (missing, invalid, executor_yaml):
        assert done.returncode == 2, done
        assert done.stdout == '' and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith('nborch: error: ')
    assert 'nope.yml' in missing.stderr and 'replicas' in invalid.stderr
    assert 'Flow or a Deployment YAML' in executor_yaml.stderr
    assert sorted(os.listdir(tmp_path)) == ['bad.yml']


def test_cli_gateway_and_executor_check_their_arguments_first():
    bad_topology = run_cli('gateway', '--topology', '{"executors": [{"name": "x"}]}')
    no_peers = run_cli('executor', '--uses', 'nborch.examples:Echo', '--stateful',
                       '--workspace', '/tmp/x')
    wrong_replica = run_cli('executor', '--uses', 'nborch.examples:Echo', '--stateful',
                            '--workspace', '/tmp/x', '--peers', 'a:1,b:2', '--replica-id', '2')
    bad_peer = run_cli('executor', '--uses', 'nborch.examples:Echo', '--stateful',
                       '--workspace', '/tmp/x', '--peers', 'a:1,b')
    for done, text in ((bad_topology, 'topology'), (no_peers, '--stateful needs --peers'),
                       (bad_peer, "--peers: 'b' is not host:port"),
                       (wrong_replica, '--replica-id 2 has no entry in --peers')):
        assert done.returncode == 2 and text in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_an_executor_yaml_outside_the_build_folder_is_refused(tmp_path, monkeypatch):
    flow = Flow.load_config(os.path.join(ROOT, 'tests', 'fixtures', 'local', 'flow_cli.yml'))
    monkeypatch.chdir(tmp_path)  # the image is built from here: upper.yml is not under it
    with pytest.raises(ExportError, match=r"executor 'upper' uses .*upper.yml, outside this "
                                          r"folder"):
        flow.to_kubernetes_yaml('out')
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('protocol', ['http', ['grpc', 'http']])
def test_an_http_gateway_is_not_exported_yet(protocol, tmp_path):
    dep = Deployment(name='searcher', uses='nborch.examples:NumpySearch', protocol=protocol)
    with pytest.raises(ExportError, match="exported gateways serve gRPC only"):
        dep.to_kubernetes_yaml(str(tmp_path / 'k8s'))
    with pytest.raises(ExportError, match="exported gateways serve gRPC only"):
        dep.to_docker_compose_yaml(str(tmp_path / 'compose.yml'))
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_stateful_deployment_yaml_exports_without_a_workspace(tmp_path):
    """Exported, every replica keeps its Raft log on its own volume at /workspace: the YAML
    need not name a local folder only for the export to replace it."""
    path = tmp_path / 'indexer.yml'
    path.write_text('jtype: Deployment\nwith:\n  name: indexer\n'
                    '  uses: nborch.examples:ExactNNSearch\n  replicas: 3\n  stateful: true\n')
    from nborch.cli import main
    assert main(['export', 'compose', str(path), str(tmp_path / 'out') + os.sep]) == 0
    with open(tmp_path / 'out' / 'docker-compose.yml') as f:
        services = yaml.safe_load(f)['services']
    assert arg(services['indexer-0']['command'], '--workspace') == '/workspace'
    assert services['indexer-0']['volumes'] == ['indexer-0-workspace:/workspace']


def test_the_kubernetes_gateway_is_ready_only_once_it_found_every_replica(tmp_path):
    page_flow().to_kubernetes_yaml(str(tmp_path / 'k8s'))
    gateway = container(k8s_objects(tmp_path / 'k8s')['Deployment', 'gateway'])
    probe = gateway['readinessProbe']
    assert probe['exec']['command'][:3] == ['nborch', 'ping', '--secret-file']
    assert probe['exec']['command'][-1] == '127.0.0.1:5555' and probe['timeoutSeconds'] >= 10
    assert 'grpc' in gateway['livenessProbe']  # alive is not the same as ready
