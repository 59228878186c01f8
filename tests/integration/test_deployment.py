"""Deployments as real processes behind a real gateway."""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import psutil
import pytest
from docarray import DocList
from docarray.documents import TextDoc

from nborch import AsyncClient, Client, Deployment, ExecutorError, IncompletePostError
from nborch.ports import free_port
from nborch.runtime.process import ChildStartError
from nborch.runtime.router import ReplicaPool
from nborch.protos import nborch_pb2 as pb
from tests.conftest import session_processes, wait_for_no_processes
from tests.integration.helpers import (BrokenInit, Echo, EndpointNamer, Faulty, WhoAmI, run_script,
                                       text_docs, wait_for_line)

pytestmark = pytest.mark.timeout(120)


def served_by(docs) -> list[int]:
    return [int(d.text.split('|rep-')[1].split('|')[0]) for d in docs]


def test_reference_page_slow_encoder_with_three_replicas():
    dep = Deployment(name='slow_encoder', replicas=3, quiet=True)
    with dep:
        out = dep.post('/', text_docs(10), request_size=1, return_type=DocList[TextDoc])
    assert out.text == [f'doc-{i}' for i in range(10)]


@pytest.mark.parametrize('protocol', ['grpc', 'http'])
def test_requests_spread_over_replicas_and_results_keep_input_order(protocol):
    with Deployment(name='who', uses=WhoAmI, replicas=3, quiet=True, protocol=protocol) as dep:
        out = dep.post('/', text_docs(30), request_size=1, return_type=DocList[TextDoc])
        status = dep.status()
    assert [d.text.split('|')[0] for d in out] == [f'doc-{i}' for i in range(30)]
    assert set(served_by(out)) == {0, 1, 2}
    replicas = status['executors'][0]['shards'][0]['replicas']
    assert sum(r['served'] for r in replicas) == 30 == status['requests']
    assert all(r['state'] == 'ready' and r['pid'] for r in replicas)
    assert len({r['pid'] for r in replicas}) == 3


def test_post_routes_from_the_owner_and_status_counts_both_routers():
    with Deployment(name='who', uses=WhoAmI, replicas=2, quiet=True) as dep:
        gateway = dep.status()['gateway']['pid']
        os.kill(gateway, signal.SIGSTOP)  # a frozen gateway does not hold up the owner's posts
        try:
            out = dep.post('/', text_docs(4), request_size=1, timeout=5)
        finally:
            os.kill(gateway, signal.SIGCONT)
        assert set(served_by(out)) == {0, 1}
        dep.client.post('/', text_docs(2), request_size=1)  # and 2 through the gateway
        status = dep.status()
    replicas = status['executors'][0]['shards'][0]['replicas']
    assert status['requests'] == 6 == sum(r['served'] for r in replicas)
    assert len(status['recent_routes']) == 6


def test_a_client_routed_by_the_owner_follows_a_restart_of_the_deployment():
    dep = Deployment(name='who', uses=WhoAmI, quiet=True)
    routed = Client(port=free_port()).route_through(dep._orchestrator.router)
    try:
        with dep:
            assert len(routed.post('/', text_docs(2))) == 2
        # a status taken while the deployment stops still counts what the owner routed
        (shard,) = dep._orchestrator.router.counters()['executors'][0]['shards']
        assert [r['served'] for r in shard['replicas']] == [1]
        with pytest.raises(ConnectionError, match='not running'):
            routed.post('/', text_docs(1))
        with dep:  # new replicas, new ports: the same router routes to them
            assert len(routed.post('/', text_docs(2))) == 2
            assert len(dep.post('/', text_docs(2))) == 2
    finally:
        routed.close()


def test_idle_replica_gets_the_request_first():
    """While replica A is busy with a slow request, every other request goes elsewhere."""
    with Deployment(name='who', uses=WhoAmI, replicas=2, quiet=True) as dep:
        client = Client(port=dep.port)
        slow = threading.Thread(target=client.post, args=('/', text_docs(1, 'slow')),
                                kwargs={'parameters': {'sleep': 2.0}})
        slow.start()
        deadline = time.monotonic() + 5
        busy = None
        while busy is None and time.monotonic() < deadline:
            replicas = dep.status()['executors'][0]['shards'][0]['replicas']
            busy = next((r['replica'] for r in replicas if r['outstanding']), None)
        fast = client.post('/', text_docs(6, 'fast'), request_size=1, prefetch=1)
        slow.join()
    assert busy is not None
    assert set(served_by(fast)) == {1 - busy}


@pytest.mark.parametrize('protocol', ['grpc', 'http'])
def test_executor_error_names_executor_type_and_message_and_replica_keeps_serving(protocol):
    with Deployment(name='faulty', uses=Faulty, quiet=True, protocol=protocol) as dep:
        with pytest.raises(ExecutorError, match="executor 'faulty' raised KeyError: 'no such doc'"):
            dep.post('/boom', text_docs(2))
        assert dep.post('/anything', text_docs(2)).text == ['DOC-0', 'DOC-1']
        errors, done = [], []
        dep.post('/boom', text_docs(3), request_size=1, on_error=errors.append,
                 on_done=done.append)
        assert len(errors) == 3 and not done
        assert errors[0].error.type_name == 'KeyError'
        with pytest.raises(IncompletePostError) as info:  # every request sent, none lost
            dep.post('/boom', text_docs(3), request_size=1, continue_on_error=True)
        assert len(info.value.failed) == 3 and len(info.value.docs) == 0
        assert [r.docs[0].text for r in info.value.failed] == ['doc-0', 'doc-1', 'doc-2']
        # With return_type, the error is still the executor's, not the inputs failing to
        # decode as an output type with a required field
        with pytest.raises(ExecutorError, match="raised KeyError: 'no such doc'"):
            dep.post('/boom', text_docs(2), return_type=DocList[ScoredDoc])


class ScoredDoc(TextDoc):
    score: float  # required: the inputs of /boom have none


@pytest.mark.parametrize('protocol', ['grpc', 'http'])
def test_dict_return_goes_to_results_and_parameters_reach_the_endpoint(protocol):
    with Deployment(name='faulty', uses=Faulty, quiet=True, protocol=protocol) as dep:
        responses = []
        out = dep.post('/results', text_docs(4), parameters={'limit': 7}, on_done=responses.append)
        assert out.text == [f'doc-{i}' for i in range(4)]  # docs unchanged
        assert responses[0].parameters['__results__']['faulty'] == {'count': 4, 'seen_limit': 7}
        own = dep.post('/results', text_docs(1), parameters={'limit': 7, 'faulty': {'limit': 3}},
                       on_done=responses.append)
        assert len(own) == 1
        assert responses[1].parameters['__results__']['faulty']['seen_limit'] == 3


def test_callbacks_in_order_and_on_always():
    with Deployment(uses=Echo, replicas=2, quiet=True) as dep:
        seen, always = [], []
        dep.post('/', text_docs(20), request_size=2, results_in_order=True,
                 on_done=lambda r: seen.append(r.docs[0].text), on_always=always.append)
    assert seen == [f'doc-{i}' for i in range(0, 20, 2)]
    assert len(always) == 10


def test_async_client_in_users_own_loop():
    with Deployment(uses=Echo, quiet=True) as dep:
        async def main():
            client = AsyncClient(port=dep.port)
            try:
                return await client.post('/', text_docs(5), request_size=2)
            finally:
                await client.close()

        assert asyncio.run(main()).text == [f'doc-{i}' for i in range(5)]


def test_class_defined_in_main_goes_by_value():
    script = run_script('''
        from docarray import DocList
        from docarray.documents import TextDoc
        from nborch import Deployment, Executor, requests

        class QDoc(TextDoc):  # a document schema defined in __main__ travels too
            matches: DocList[TextDoc] = DocList[TextDoc]()

        class Shout(Executor):
            @requests
            def shout(self, docs: DocList[QDoc], **kwargs) -> DocList[QDoc]:
                for d in docs:
                    d.text = d.text.upper() + '!'
                    d.matches = DocList[TextDoc]([TextDoc(text='m')])

        with Deployment(uses=Shout, replicas=2, quiet=True) as dep:
            r = dep.post('/', TextDoc(text='hi'), return_type=DocList[QDoc])
            print('RESULT', r.text, r[0].matches.text)
    ''')
    out, _ = script.communicate(timeout=90)
    assert "RESULT ['HI!'] ['m']" in out, out


def test_child_that_fails_to_start_shows_its_log_and_leaves_nothing():
    dep = Deployment(name='broken', uses=BrokenInit, replicas=2, quiet=True)
    with pytest.raises(ChildStartError, match='model weights missing at /nowhere'):
        dep.start()
    assert not dep._orchestrator.running


def test_all_replicas_failing_names_executor_and_every_address():
    async def call():
        pool = ReplicaPool('ghost', ['127.0.0.1:9', '127.0.0.1:11'])
        try:
            await pool.call(pb.DataRequest(endpoint='/'), timeout=5)
        finally:
            await pool.close()

    with pytest.raises(ConnectionError) as info:
        asyncio.run(call())
    message = str(info.value)
    assert "executor 'ghost'" in message
    assert '127.0.0.1:9' in message and '127.0.0.1:11' in message


def test_killed_replica_loses_no_request_and_comes_back():
    with Deployment(name='who', uses=WhoAmI, replicas=3, quiet=True) as dep:
        before = {r['replica']: r['pid'] for r in
                  dep.status()['executors'][0]['shards'][0]['replicas']}
        results = {}

        def post():
            results['docs'] = dep.post('/', text_docs(1000), request_size=1, prefetch=8)

        poster = threading.Thread(target=post)
        poster.start()
        time.sleep(0.5)
        os.kill(before[1], signal.SIGKILL)
        poster.join(timeout=100)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            replica = dep.status()['executors'][0]['shards'][0]['replicas'][1]
            if replica['state'] == 'ready' and replica['pid'] != before[1]:
                break
            time.sleep(0.1)
        after = dep.post('/', text_docs(30), request_size=1)
    docs = results['docs']
    assert [d.text.split('|')[0] for d in docs] == [f'doc-{i}' for i in range(1000)]
    assert replica['restarts'] >= 1 and replica['pid'] != before[1]
    assert psutil.pid_exists(replica['pid']) is False  # stopped with the deployment
    assert 1 in served_by(after) or replica['served'] > 0


def test_kill_9_of_the_owner_leaves_no_process():
    owner = run_script('''
        from nborch import Deployment
        dep = Deployment(name='orphan', replicas=3, quiet=True).start()
        print('READY', flush=True)
        import time
        time.sleep(600)
    ''')
    try:
        wait_for_line(owner, 'READY', timeout=90)
        assert len(session_processes()) >= 5  # owner + gateway + 3 replicas
        owner.kill()
        owner.wait()
        left = wait_for_no_processes(timeout=5)
        assert not left, [p.pid for p in left]
    finally:
        owner.kill()


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_block_stops_cleanly_on_signal(sig):
    owner = run_script('''
        import signal, threading, time
        from nborch import Deployment

        def announce():  # READY only once block() has taken over SIGTERM
            while signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                time.sleep(0.01)
            print('READY', flush=True)

        with Deployment(name='blocker', replicas=2, quiet=True) as dep:
            threading.Thread(target=announce, daemon=True).start()
            dep.block()
        print('STOPPED', flush=True)
    ''')
    try:
        wait_for_line(owner, 'READY', timeout=90)
        owner.send_signal(sig)
        wait_for_line(owner, 'STOPPED', timeout=30)
        assert owner.wait(timeout=30) == 0
    finally:
        owner.kill()


def test_index_search_update_delete_shortcuts_post_to_their_endpoints():
    with Deployment(name='who', uses=EndpointNamer, quiet=True) as dep:
        replies = {on: getattr(dep, on)(text_docs(2), return_type=DocList[TextDoc]).text
                   for on in ('index', 'search', 'update', 'delete')}
    assert replies == {on: [f'/{on}:doc-0', f'/{on}:doc-1']
                       for on in ('index', 'search', 'update', 'delete')}
