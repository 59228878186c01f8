"""Shards and polling, Flow DAGs, external executors, GPU round robin."""
from __future__ import annotations

import time

import numpy as np
import pytest
from docarray import DocList
from docarray.documents import TextDoc

from nborch import Deployment, Flow
from nborch.errors import ExecutorError
from nborch.examples import NumpySearch, QueryDoc, top_k
from nborch.runtime.gpu import detect_device_count
from tests.integration.helpers import (BrokenShards, Echo, MarkA, MarkB, MarkDoc, MyExec,
                                       WhoAmI, text_docs)

pytestmark = pytest.mark.timeout(120)

# The reference page's table: (setup, polling) → executor calls per request.
POLLING_TABLE = [({'replicas': 2}, 'ALL', 1), ({'replicas': 2}, 'ANY', 1),
                 ({'shards': 2}, 'ALL', 2), ({'shards': 2}, 'ANY', 1)]


def wait_for_count(capsys, text: str, expected: int, timeout: float = 10.0) -> str:
    """Replica output reaches this process through a reader thread: wait for it."""
    seen, deadline = '', time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += capsys.readouterr().out
        if seen.count(text) >= expected:
            break
        time.sleep(0.02)
    return seen


@pytest.mark.parametrize('kind', ['Deployment', 'Flow'])
@pytest.mark.parametrize('setup, polling, calls', POLLING_TABLE,
                         ids=[f'{list(s)[0]}=2-{p}' for s, p, _ in POLLING_TABLE])
def test_reference_page_polling_table(kind, setup, polling, calls, capsys):
    if kind == 'Deployment':
        orchestration = Deployment(uses=MyExec, polling=polling, **setup).needs_all()
    else:
        orchestration = Flow().add(uses=MyExec, polling=polling, **setup).needs_all()
    routes = []
    with orchestration:
        r = orchestration.post('/', TextDoc(text='hello'), return_type=DocList[TextDoc],
                               on_done=lambda resp: routes.append(resp.route))
        print(f'return: {r.text}')
        out = wait_for_count(capsys, "inside: ['hello']", calls)
    assert r.text == ['hello']
    assert len(routes[0]) == calls  # one hop per executor call, exactly
    assert out.count("inside: ['hello']") == calls
    assert "return: ['hello']" in out


@pytest.mark.parametrize('protocol', ['grpc', 'http'])
def test_sharded_search_returns_the_unsharded_top_k(protocol):
    """Acceptance: a 3-shard search returns brute force's top-10 ids, in order."""
    rng = np.random.default_rng(7)
    vectors = rng.random((3100, 16)).astype(np.float32)  # 31 requests: uneven over 3 shards
    docs = DocList[TextDoc]([TextDoc(id=f'd{i}', text=f'doc {i}', embedding=v)
                             for i, v in enumerate(vectors)])
    queries = DocList[QueryDoc]([QueryDoc(id=f'q{i}', embedding=v)
                                 for i, v in enumerate(rng.random((20, 16)).astype(np.float32))])
    with Deployment(name='search', uses=NumpySearch, shards=3, quiet=True,
                    protocol=protocol) as dep:
        dep.post('/index', docs, request_size=100)
        counts = [r['served'] for s in dep.status()['executors'][0]['shards'] for r in s['replicas']]
        results = dep.post('/search', queries, request_size=1, parameters={'limit': 10},
                           return_type=DocList[QueryDoc])
    # ANY spread the 31 index requests over the shards; the streams to the shards have
    # carried different numbers of requests, which ALL polling must not confuse.
    assert counts == [11, 10, 10]
    for query, result in zip(queries, results):
        expected, _ = top_k(vectors, np.asarray(query.embedding), 10)
        assert result.matches.id == [f'd{i}' for i in expected]


@pytest.mark.parametrize('protocol', ['grpc', 'http'])
def test_flow_dag_join_waits_for_both_branches_and_merges(protocol):
    flow = (Flow(quiet=True, protocol=protocol)
            .add(name='a', uses=MarkA, shards=2, polling='ALL')
            .add(name='b', uses=MarkB, needs='gateway')
            .needs(['a', 'b']))
    with flow:
        out = flow.post('/', DocList[MarkDoc]([MarkDoc(text=f't{i}') for i in range(4)]),
                        request_size=2, return_type=DocList[MarkDoc])
        routes = []
        flow.post('/', MarkDoc(text='x'), on_done=lambda r: routes.append(r.route))
    assert out.text == [f't{i}' for i in range(4)]
    assert set(out.a) <= {'A0', 'A1'} and out.b == ['B'] * 4
    assert sorted(h[0] for h in routes[0]) == ['a', 'a', 'b', 'joiner']


def test_a_raising_shard_leaves_the_other_shards_results_and_is_reported(caplog):
    responses = []
    with Deployment(name='broken', uses=BrokenShards, shards=2, polling='ALL', quiet=True) as dep:
        with caplog.at_level('WARNING', logger='nborch.client'):
            out = dep.post('/', text_docs(2), return_type=DocList[TextDoc],
                           on_done=responses.append)
        with pytest.raises(ExecutorError, match="'broken' raised ValueError: shard 0 is broken"):
            dep.post('/', text_docs(1), parameters={'broken': [0, 1]})
    assert out.text == ['doc-0|shard-0', 'doc-1|shard-0']  # shard 0's results only
    assert responses[0].failed_shards == ['broken/shard-1: ValueError: shard 1 is broken']
    assert sorted(responses[0].route) == [('broken', 0, 0), ('broken', 1, 0)]
    assert 'broken/shard-1: ValueError: shard 1 is broken' in caplog.text


def test_a_partial_result_goes_on_down_a_flow():
    responses = []
    flow = Flow(quiet=True).add(name='broken', uses=BrokenShards, shards=2, polling='ALL') \
        .add(name='after', uses=MarkB)
    with flow:
        out = flow.post('/', MarkDoc(text='x'), return_type=DocList[MarkDoc],
                        on_done=responses.append)
    assert (out.text, out.b) == (['x|shard-0'], ['B'])
    assert responses[0].failed_shards == ['broken/shard-1: ValueError: shard 1 is broken']


def test_a_join_with_no_reduce_concatenates_where_the_default_merges_by_id():
    flow = (Flow(quiet=True)
            .add(name='a', uses=MarkA)
            .add(name='b', uses=MarkB, needs='gateway')
            .add(name='merged', needs=['a', 'b'])
            .add(name='concatenated', needs=['a', 'b'], no_reduce=True)
            .add(name='both', needs=['concatenated', 'merged'], no_reduce=True))
    with flow:
        out = flow.post('/', MarkDoc(id='x', text='x'), return_type=DocList[MarkDoc])
    # 'concatenated' keeps a's and b's copy of doc x; 'merged' made one doc of them
    assert out.id == ['x', 'x', 'x']
    assert list(zip(out.a, out.b)) == [('A0', None), (None, 'B'), ('A0', 'B')]


def test_flow_chain_passes_results_along():
    flow = Flow(quiet=True).add(name='a', uses=MarkA).add(name='b', uses=MarkB)
    with flow:
        out = flow.post('/', MarkDoc(text='x'), return_type=DocList[MarkDoc])
    assert (out[0].a, out[0].b) == ('A0', 'B')


@pytest.mark.parametrize('build, message', [
    (lambda: Flow().add(name='a').add(name='b', needs='nope'), "needs 'nope', which is not in"),
    (lambda: Flow().add(name='a').add(name='a'), "already has an executor named 'a'"),
    (lambda: Flow().add(name='a', needs=3), 'needs=3'),
    (lambda: Flow().add(name='a', polling='SOMETIMES'), 'SOMETIMES'),
    (lambda: Flow(protocol='websocket'), 'does not serve websocket'),
])
def test_flow_errors_before_anything_starts(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_external_replicas_are_used_like_own_ones():
    with Deployment(name='who', uses=WhoAmI, replicas=2, quiet=True) as inner:
        ports = [r['port'] for r in inner.status()['executors'][0]['shards'][0]['replicas']]
        # They are the inner deployment's: they answer callers that hold its secret.
        external = Deployment(name='ext', host='127.0.0.1', port=ports, external=True, quiet=True,
                              secret=inner.secret)
        with external:
            out = external.post('/', text_docs(8), request_size=1)
            status = external.status()
    served = {int(d.text.split('|rep-')[1].split('|')[0]) for d in out}
    assert served == {0, 1}
    replicas = status['executors'][0]['shards'][0]['replicas']
    assert [r['address'] for r in replicas] == [f'127.0.0.1:{p}' for p in ports]
    assert sum(r['served'] for r in replicas) == 8


def test_a_gateway_serves_as_an_external_executor():
    with Deployment(name='inner', uses=MarkA, quiet=True) as inner:
        flow = Flow(quiet=True).add(name='remote', host=f'grpc://127.0.0.1:{inner.port}',
                                    external=True).add(name='b', uses=MarkB)
        with flow:
            out = flow.post('/', MarkDoc(text='x'), return_type=DocList[MarkDoc])
    assert (out[0].a, out[0].b) == ('A0', 'B')


@pytest.mark.parametrize('host, port, message', [
    (['a', 'b'], [1, 2, 3], '2 hosts and 3 ports do not match'),
    ('localhost', None, 'no port given'),
    ('localhost:1', 2, 'disagree'),
])
def test_external_address_errors(host, port, message):
    with pytest.raises(ValueError, match=message):
        Deployment(host=host, port=port, external=True)


def test_external_broadcasts():
    one_host = Deployment(host='localhost', port=[1001, 1002], external=True).spec
    one_port = Deployment(host=['h1', 'grpcs://h2'], port=1003, external=True).spec
    assert [str(a) for a in one_host.external_addresses] == ['127.0.0.1:1001', '127.0.0.1:1002']
    assert [str(a) for a in one_port.external_addresses] == ['h1:1003', 'grpcs://h2:1003']
    assert one_host.replicas == 2


def test_gpu_round_robin_reaches_each_replica_process():
    env = {'CUDA_VISIBLE_DEVICES': 'RR', 'CUDA_TOTAL_DEVICES': '2'}
    count = detect_device_count(env)  # a real GPU machine answers through nvidia-smi
    with Deployment(uses=Echo, replicas=3, shards=2, env=env, quiet=True) as dep:
        shards = dep.status()['executors'][0]['shards']
    expected = [str(i % count) for i in range(3)]
    for shard in shards:
        assert [r['gpu']['assigned'] for r in shard['replicas']] == expected
        assert [r['gpu']['seen'] for r in shard['replicas']] == expected


@pytest.mark.parametrize('spec', ['RR1:2:0', 'RR,', 'RRx', 'RR-1'])
def test_malformed_round_robin_fails_before_anything_starts(spec):
    with pytest.raises(ValueError, match='CUDA_VISIBLE_DEVICES|RR'):
        Deployment(uses=Echo, env={'CUDA_VISIBLE_DEVICES': spec})
