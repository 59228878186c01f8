"""Stateful replicas kept consistent by Raft, as real processes.

Each test checks the safety property a user relies on: every acknowledged write is applied
exactly once on every replica, in the same order, and survives crashes and restarts.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from docarray import DocList
from docarray.documents import TextDoc

from nborch import Deployment
from tests.integration.helpers import Ledger, docs, read_history, replicas

pytestmark = pytest.mark.timeout(180)
FAST = {'heartbeat_timeout': 50, 'election_timeout': 300}






def wait_converged(dep, at_least: int, shard: int = 0, timeout: float = 60) -> list[dict]:
    """Poll until every replica of the shard has applied the same index >= at_least."""
    deadline = time.monotonic() + timeout
    while True:
        reps = replicas(dep, shard)
        applied = [(r.get('raft') or {}).get('applied', -1) for r in reps]
        if len(set(applied)) == 1 and applied[0] >= at_least:
            return reps
        if time.monotonic() > deadline:
            raise AssertionError(f'replicas did not converge: {[r.get("raft") for r in reps]}')
        time.sleep(0.1)


def leader_of(dep, shard: int = 0) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for r in replicas(dep, shard):
            if (r.get('raft') or {}).get('role') == 'leader':
                return r
        time.sleep(0.05)
    raise AssertionError('no leader')


def _applied_by_others(dep, stopped: dict) -> bool:
    """Whether the replicas other than `stopped` applied writes while it was frozen."""
    others = [r for r in replicas(dep) if r['pid'] != stopped['pid']]
    return all((r.get('raft') or {}).get('applied', 0) > stopped['raft']['applied'] + 10
               for r in others)


def stateful(tmp_path, **kwargs) -> Deployment:
    return Deployment(name='ledger', uses=Ledger, replicas=3, stateful=True,
                      workspace=str(tmp_path), raft_configuration=FAST, quiet=True, **kwargs)


def test_kill_9_of_the_leader_during_1000_writes_loses_and_duplicates_nothing(tmp_path):
    dep = stateful(tmp_path)
    writes = docs(1000)
    with dep:
        result = {}
        poster = threading.Thread(target=lambda: result.setdefault(
            'docs', dep.post('/index', writes, request_size=1, prefetch=16)))
        poster.start()
        time.sleep(1.0)
        victim = leader_of(dep)
        os.kill(victim['pid'], signal.SIGKILL)
        poster.join(timeout=150)
        assert len(result['docs']) == 1000  # every write acknowledged
        reps = wait_converged(dep, at_least=1000)
        assert any(r['restarts'] >= 1 for r in reps)
        histories = [read_history(str(tmp_path), 'ledger', i) for i in range(3)]
    expected = {d.id for d in writes}
    for history in histories:
        assert len(history) == len(set(history)) == 1000  # exactly once
        assert set(history) == expected
    assert histories[0] == histories[1] == histories[2]  # identical apply order


def test_a_stopped_follower_catches_up_after_sigcont(tmp_path):
    with stateful(tmp_path) as dep:
        dep.post('/index', docs(50, 'a'), request_size=10)
        follower = next(r for r in replicas(dep) if r['raft']['role'] == 'follower')
        os.kill(follower['pid'], signal.SIGSTOP)
        try:
            # A majority is up, so writes commit; the ones the gateway routed to the frozen
            # replica fail over once it is found silent (write ids make that safe).
            poster = threading.Thread(target=dep.post, args=('/index', docs(200, 'b')),
                                      kwargs={'request_size': 5})
            poster.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not _applied_by_others(dep, follower):
                time.sleep(0.1)
        finally:
            os.kill(follower['pid'], signal.SIGCONT)
        poster.join(timeout=60)
        wait_converged(dep, at_least=1)
        histories = [read_history(str(tmp_path), 'ledger', i) for i in range(3)]
    assert histories[0] == histories[1] == histories[2]
    assert len(histories[0]) == 250


def test_restart_with_the_same_workspace_keeps_every_write(tmp_path):
    config = {**FAST, 'snapshot_threshold': 20, 'snapshot_interval': 10, 'trailing_logs': 5}
    dep = Deployment(name='ledger', uses=Ledger, replicas=3, stateful=True,
                     workspace=str(tmp_path),
                     raft_configuration=config, quiet=True)
    with dep:
        dep.post('/index', docs(300), request_size=3)
        reps = wait_converged(dep, at_least=100)
        assert max(r['raft']['snapshot_index'] for r in reps) > 0  # compaction happened
    assert any(name.endswith('.data') for _, _, files in os.walk(tmp_path / 'raft')
               for name in files)
    with dep:
        counts = []
        for _ in range(3):
            dep.post('/count', None, parameters={'read_consistency': 'linearizable'},
                     on_done=lambda r: counts.append(r.parameters['__results__']['ledger']))
        dep.post('/index', docs(5, 'after'), request_size=1, prefetch=1)  # one at a time
        wait_converged(dep, at_least=1)
        histories = [read_history(str(tmp_path), 'ledger', i) for i in range(3)]
    assert sorted(c['replica'] for c in counts) == [0, 1, 2]
    assert all(c['n'] == 300 for c in counts)
    assert histories[0] == histories[1] == histories[2]
    # Concurrent requests commit in arrival order, not input order; the later post follows.
    assert sorted(histories[0][:300]) == sorted(f'w{i}' for i in range(300))
    assert histories[0][300:] == [f'after{i}' for i in range(5)]


@pytest.mark.parametrize('protocol', ['grpc', 'http'])
def test_reference_page_stateful_example_with_peer_ports(tmp_path, protocol):
    from tests.integration.helpers import MyStateStatefulExecutor  # noqa: F401  (page's code)
    d = Deployment(name='stateful_executor', uses='MyStateStatefulExecutor', replicas=3,
                   stateful=True, workspace=str(tmp_path), quiet=True,
                   peer_ports=_free_ports(3), protocol=protocol)
    with d:
        d.post('/index', DocList[TextDoc]([TextDoc(id=f'd{i}', text=f'text {i}')
                                           for i in range(30)]), request_size=5)
        for _ in range(6):  # any replica answers, each has every document
            out = d.post('/search', DocList[TextDoc]([TextDoc(id='d7')]),
                         parameters={'read_consistency': 'linearizable'})
            assert out.text == ['text 7']


def test_stateful_shards_form_one_group_per_shard(tmp_path):
    dep = Deployment(name='ledger', uses=Ledger, replicas=3, shards=2, stateful=True,
                     workspace=str(tmp_path), raft_configuration=FAST, quiet=True)
    with dep:
        dep.post('/index', docs(40), request_size=5)
        for shard in (0, 1):
            wait_converged(dep, at_least=1, shard=shard)
        per_shard = [[read_history(str(tmp_path), 'ledger', r, shard) for r in range(3)]
                     for shard in (0, 1)]
    for histories in per_shard:
        assert histories[0] == histories[1] == histories[2] and histories[0]
    assert sorted(per_shard[0][0] + per_shard[1][0]) == sorted(f'w{i}' for i in range(40))
    assert (tmp_path / 'raft' / '1' / '2').is_dir()  # <workspace>/raft/<shard>/<replica>


@pytest.mark.parametrize('kwargs, message', [
    ({'stateful': True}, 'needs a workspace'),
    ({'stateful': True, 'workspace': 'w', 'peer_ports': [1, 2]}, 'has 2 ports; replicas=3'),
    ({'stateful': True, 'workspace': 'w', 'shards': 2, 'peer_ports': {0: [1, 2, 3]}},
     r'names shards \[0\]; the deployment has shards \[0, 1\]'),
    ({'stateful': True, 'workspace': 'w', 'peer_ports': '[1, 2'}, 'not valid JSON'),
    ({'stateful': True, 'workspace': 'w', 'peer_ports': [5, 5, 6]}, 'repeats a port'),
    ({'stateful': True, 'workspace': 'w', 'raft_configuration': {'heartbeat': 1}},
     "unknown key\\(s\\) 'heartbeat'"),
    ({'stateful': True, 'workspace': 'w', 'raft_configuration': {'election_timeout': 'soon'}},
     'a duration'),
    ({'peer_ports': [1, 2, 3]}, 'need stateful=True'),
    ({'stateful': True, 'workspace': 'w', 'read_consistency': 'strong'}, 'read_consistency'),
])
def test_consensus_input_errors_before_anything_starts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Deployment(uses=Ledger, replicas=3, **kwargs)


def test_peer_ports_forms_agree():
    a = Deployment(uses=Ledger, replicas=3, stateful=True, workspace='w', peer_ports=[1, 2, 3])
    b = Deployment(uses=Ledger, replicas=3, stateful=True, workspace='w',
                   peer_ports='{"0": [1, 2, 3]}')
    assert a.spec.peer_port_table == b.spec.peer_port_table == {0: [1, 2, 3]}


def _free_ports(n: int) -> list[int]:
    import socket
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(('127.0.0.1', 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_raft_configuration_as_the_reference_docs_spell_it(tmp_path):
    # LogLevel sets the Raft logger only: INFO under replicas that log WARNING and up.
    dep = Deployment(name='ledger', uses=Ledger, replicas=3, stateful=True, quiet=True,
                     workspace=str(tmp_path), log_level='WARNING',
                     raft_configuration={'LogLevel': 'INFO', 'HeartbeatTimeout': 50,
                                         'ElectionTimeout': 300})
    assert (dep.spec.raft_settings.heartbeat_ms, dep.spec.raft_settings.election_ms) == (50, 300)
    with dep:
        assert len(dep.post('/index', docs(3))) == 3
        logs = [dep.logs(0, r) for r in range(3)]
    for log in logs:
        assert 'INFO   nborch.raft@' in log and ' storage: ' in log
