"""Arguments as the reference system spells them: Flow-wide executor defaults, one-element
port lists, `volumes`, its Raft configuration keys, and external executors' host/port
strings. All are checked before any process starts; no process starts here."""
from __future__ import annotations

import json
import textwrap
import warnings

import jsonschema
import kubernetes_validate
import pytest

from nborch import Deployment, Flow
from nborch.addresses import external_addresses
from nborch.config import ConfigError
from nborch.runtime.consensus.settings import RaftSettings
from tests.integration.helpers import Ledger
from tests.unit.test_export import COMPOSE_SCHEMA, K8S_VERSION, compose, container, k8s_objects


# -- Flow(**executor arguments) ---------------------------------------------------------------

def test_flow_executor_arguments_are_defaults_of_every_add():
    flow = Flow(replicas=3, polling='ALL', env={'A': '1'}, timeout_send=500) \
        .add(name='a').add(name='b', replicas=1, env={'B': '2'})
    a, b = flow.executors
    assert (a.replicas, a.polling, a.env, a.timeout_send) == (3, 'ALL', {'A': '1'}, 500)
    # an add's own value wins, whole (as in the reference system: a dict is not merged)
    assert (b.replicas, b.polling, b.env, b.timeout_send) == (1, 'ALL', {'B': '2'}, 500)


def test_flow_refuses_unknown_arguments_naming_what_it_takes():
    with pytest.raises(TypeError, match=r'unknown argument\(s\) replica_count; a Flow takes '
                                        r'port, .* as defaults of every add\(\): py_modules, replicas, '):
        Flow(replica_count=3)
    with pytest.raises(ValueError, match=r"Flow\(uses='flow.yml'\): not supported by nborch: .*"
                                         r'custom gateway.*Flow.load_config'):
        Flow(uses='flow.yml')


@pytest.mark.parametrize('kwargs, message', [
    ({'replicas': 0}, 'replicas=0: must be an integer >= 1'),
    ({'polling': 'SOMETIMES'}, 'SOMETIMES'),
    ({'timeout_send': 0}, 'timeout_send=0'),
])
def test_a_wrong_flow_default_is_reported_by_flow_itself(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Flow(**kwargs)


def test_stateful_executors_sharing_a_flow_workspace_are_refused(tmp_path):
    flow = Flow(stateful=True, workspace=str(tmp_path), replicas=3).add(name='one', uses=Ledger)
    with pytest.raises(ValueError, match="'two' and 'one' are both stateful in workspace"):
        flow.add(name='two', uses=Ledger)
    flow.add(name='three', uses=Ledger, workspace=str(tmp_path / 'three'))


def test_flow_yaml_with_takes_executor_defaults(tmp_path):
    path = tmp_path / 'flow.yml'
    path.write_text(textwrap.dedent('''\
        jtype: Flow
        with:
          port: 12345
          replicas: 2
        executors:
          - name: a
          - name: b
            replicas: 1
    '''))
    flow = Flow.load_config(str(path))
    assert flow.port == 12345
    assert [e.replicas for e in flow.executors] == [2, 1]
    path.write_text('jtype: Flow\nwith:\n  replica: 2\n')
    with pytest.raises(ConfigError, match=r":3: unknown key 'replica' in a Flow's with: "
                                          r"\(did you mean 'replicas'\?\)"):
        Flow.load_config(str(path))


# -- port lists --------------------------------------------------------------------------------

def test_a_one_element_port_list_is_that_port():
    from nborch.spec import gateway_ports
    assert Deployment(port=[12345]).port == 12345
    assert Flow(port=(12346,)).port == 12346
    assert gateway_ports([5], ('grpc',), '127.0.0.1') == [5] == \
        gateway_ports(5, ('grpc',), '127.0.0.1')


@pytest.mark.parametrize('port', [[12345, 12346], []])
def test_other_port_lists_are_refused_for_one_protocol(port):
    with pytest.raises(ValueError, match='one port per protocol'):
        Deployment(port=port)


# -- volumes -----------------------------------------------------------------------------------

def test_volumes_are_accepted_with_one_warning_and_mounted_by_the_exports(tmp_path):
    with pytest.warns(UserWarning, match='volumes=.* are docker mounts; local replica'):
        dep = Deployment(name='enc', uses='nborch.examples:NumpySearch',
                         volumes=[f'{tmp_path}/models:/models:ro', str(tmp_path / 'data')])
    assert dep.spec.volumes == [f'{tmp_path}/models:/models:ro', f'{tmp_path}/data:/data']
    services = compose(dep, tmp_path)['services']
    assert services['enc']['volumes'] == dep.spec.volumes
    with open(COMPOSE_SCHEMA) as f:
        assert list(jsonschema.Draft7Validator(json.load(f)).iter_errors(
            compose(dep, tmp_path))) == []
    dep.to_kubernetes_yaml(str(tmp_path / 'k8s'))
    workload = k8s_objects(tmp_path / 'k8s')['Deployment', 'enc']
    kubernetes_validate.validate(workload, K8S_VERSION, strict=True)
    mounts = {m['mountPath']: m for m in container(workload)['volumeMounts']}
    assert mounts['/models']['readOnly'] is True and '/data' in mounts
    paths = [v['hostPath']['path'] for v in workload['spec']['template']['spec']['volumes']
             if 'hostPath' in v]
    assert paths == [f'{tmp_path}/models', f'{tmp_path}/data']


def test_volumes_forms_and_errors():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert Deployment(volumes='/a:/x,/b').spec.volumes == ['/a:/x', '/b:/b']
    for bad in (3, [':/x'], ['']):
        with pytest.raises(ValueError, match='volumes'):
            Deployment(volumes=bad)


# -- Raft configuration as the reference system spells it ----------------------------------------

def test_reference_raft_keys_map_onto_the_settings_in_its_units():
    settings = RaftSettings.parse({
        'HeartbeatTimeout': 100, 'ElectionTimeout': 1000, 'CommitTimeout': 50,
        'MaxAppendEntries': 32, 'SnapshotInterval': 2, 'SnapshotThreshold': 100,
        'TrailingLogs': 10, 'LeaderLeaseTimeout': 400, 'LogLevel': 'warn',
        'BatchApplyCh': True, 'ShutdownOnRemove': False, 'NoSnapshotRestoreOnStart': False})
    assert (settings.heartbeat_ms, settings.election_ms, settings.commit_ms) == (100, 1000, 50)
    assert settings.snapshot_interval_ms == 2000  # the reference system reads it in seconds
    assert (settings.max_append_entries, settings.snapshot_threshold, settings.trailing_logs,
            settings.leader_lease_ms, settings.log_level) == (32, 100, 10, 400, 'WARNING')
    assert RaftSettings.parse({'SnapshotInterval': '500ms'}).snapshot_interval_ms == 500
    assert RaftSettings.parse({'snapshot_interval': 10}).snapshot_interval_ms == 10


@pytest.mark.parametrize('config, message', [
    ({'Heartbeat': 1}, r"unknown key\(s\) 'Heartbeat'; known: heartbeat_timeout, .* or as the "
                       r'reference system spells them: HeartbeatTimeout, '),
    ({'HeartbeatTimeout': 100, 'heartbeat_timeout': 100},
     "'HeartbeatTimeout' and 'heartbeat_timeout' are one setting"),
    ({'NoSnapshotRestoreOnStart': True}, 'only False here'),
    ({'BatchApplyCh': 'yes'}, 'only True or False'),
    ({'LogLevel': 'LOUD'}, r"\['LogLevel'\]='LOUD': DEBUG, INFO, WARNING or ERROR"),
    ({'MaxAppendEntries': -1}, r"\['MaxAppendEntries'\]=-1"),
    ({'HeartbeatTimeout': 'soon'}, r"\['HeartbeatTimeout'\]='soon': a duration"),
])
def test_reference_raft_keys_errors(config, message):
    with pytest.raises(ValueError, match=message):
        RaftSettings.parse(config)


def test_a_stateful_deployment_takes_the_reference_pages_raft_configuration():
    config = {'LogLevel': 'INFO', 'HeartbeatTimeout': 100, 'ElectionTimeout': 1000}
    dep = Deployment(uses=Ledger, replicas=3, stateful=True, workspace='w',
                     raft_configuration=config)
    assert dep.spec.raft_settings.heartbeat_ms == 100 and dep.spec.routing()['election_ms'] == 1000


def test_raft_log_level_sets_the_replicas_raft_logger():
    import logging
    from nborch.runtime.consensus.replica import ConsensusReplica
    logger = logging.getLogger('nborch.raft')
    before = logger.level
    try:
        ConsensusReplica(node_id=0, peers={}, directory='unused', state_machine=None,
                         settings=RaftSettings.parse({'LogLevel': 'DEBUG'}))
        assert logger.level == logging.DEBUG
        logger.setLevel(logging.ERROR)
        ConsensusReplica(node_id=0, peers={}, directory='unused', state_machine=None,
                         settings=RaftSettings.parse({}))
        assert logger.level == logging.ERROR  # not given: left as the replica's logging has it
    finally:
        logger.setLevel(before)


# -- external executors ------------------------------------------------------------------------

def test_external_host_and_port_strings_are_comma_separated_lists():
    dep = Deployment(host='10.0.0.1,10.0.0.2', port='9000,9001', external=True)
    assert [str(a) for a in dep.spec.external_addresses] == ['10.0.0.1:9000', '10.0.0.2:9001']
    assert dep.spec.replicas == 2
    one_host = external_addresses('localhost,localhost', [9000, 9001])
    assert [str(a) for a in one_host] == ['127.0.0.1:9000', '127.0.0.1:9001']
    assert [str(a) for a in external_addresses('grpcs://localhost:9000')] == \
        ['grpcs://localhost:9000']  # TLS keeps the name its certificate carries


@pytest.mark.parametrize('host, port', [
    ('localhost,localhost', 9000),
    ('localhost,127.0.0.1', '9000'),
    (['localhost:9000', '127.0.0.1:9000'], None),
])
def test_one_address_given_twice_is_refused_before_start(host, port):
    with pytest.raises(ValueError, match='are the same address; each replica needs its own'):
        Deployment(host=host, port=port, external=True)


def test_a_host_list_without_external_is_refused():
    with pytest.raises(ValueError, match='a list of hosts needs external=True'):
        Deployment(host='h1,h2')


def test_an_external_sharded_executor_is_dialed_at_its_entry_point():
    dep = Deployment(host='10.0.0.1', port=9000, external=True, shards=2,
                     polling={'/search': 'ALL'})
    assert [str(a) for a in dep.spec.external_addresses] == ['10.0.0.1:9000']
    flow = Flow().add(name='remote', host='10.0.0.1:9000', external=True, shards=2)
    assert flow._orchestrator._addresses(flow.executors[0]) == [['10.0.0.1:9000']]


def test_one_external_address_needs_no_gateway_several_do():
    one = Deployment(host='localhost:9000', external=True)
    assert (one.host, one.port, one._orchestrator.direct is not None) == ('127.0.0.1', 9000, True)
    several = Deployment(host='localhost', port=[9000, 9001], external=True)
    assert several._orchestrator.direct is None and several.port not in (9000, 9001)
    # a gateway feature asked for keeps the gateway
    assert Deployment(host='localhost:9000', external=True,
                      timeout_send=1000)._orchestrator.direct is None


def test_an_unreachable_single_external_address_is_reported_not_raised():
    dep = Deployment(name='gone', host='localhost:1', external=True).start()
    try:
        status = dep.status()
    finally:
        dep.close()
    assert (status['running'], status['healthy'], status['down']) == (True, False, ['127.0.0.1:1'])
    assert 'cannot reach 127.0.0.1:1' in status['gateway']['error']
    assert status['executors'][0]['shards'][0]['replicas'][0]['reachable'] is False
