"""Deadlines, failover and a supervised gateway, as real processes (issue 12, items 4–5).

A replica is frozen with SIGSTOP (alive to the kernel, silent to everyone); every test thaws
what it froze in a `finally`, so a failing test still leaves processes that can be stopped.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from docarray import DocList
from docarray.documents import TextDoc

from nborch import Client, Deployment, IncompletePostError, UnavailableError
from nborch.runtime.router import LIVENESS_CHECK_S, PROBE_TIMEOUT_S
from tests.integration.helpers import (Ledger, SlowWriter, WhoAmI, poll, read_history, replicas,
                                       text_docs)

pytestmark = pytest.mark.timeout(180)
SLACK_S = 2.0  # scheduling on a loaded two-core machine


def timed_posts(dep, n: int, freeze_after: int, victim: int, **kwargs) -> tuple[list, list]:
    """n sequential 1-doc posts; SIGSTOP `victim` after `freeze_after`; (docs, seconds each)."""
    client = Client(port=dep.port)
    docs, took = [], []
    try:
        for i in range(n):
            if i == freeze_after:
                os.kill(victim, signal.SIGSTOP)
            start = time.monotonic()
            docs += client.post('/', text_docs(1, f'p{i}'), **kwargs)
            took.append(time.monotonic() - start)
    finally:
        os.kill(victim, signal.SIGCONT)
        client.close()
    return docs, took


@pytest.mark.parametrize('timeout_send, bound', [
    (1000, 1.0),                                # the user's deadline
    (None, LIVENESS_CHECK_S + PROBE_TIMEOUT_S),  # the default: a liveness check
])
def test_frozen_replica_is_ejected_and_no_request_waits_much_past_the_deadline(
        timeout_send, bound):
    with Deployment(name='who', uses=WhoAmI, replicas=3, quiet=True,
                    timeout_send=timeout_send) as dep:
        victim = replicas(dep)[1]
        docs, took = timed_posts(dep, 60, freeze_after=10, victim=victim['pid'])
        after = replicas(dep)[1]
    assert [d.text.split('|')[0] for d in docs] == [f'p{i}-0' for i in range(60)]
    assert max(took) < bound + SLACK_S, sorted(took)[-5:]
    assert after['deadline_misses'] >= 1 and after['ejections'] >= 1
    assert after['ejected']  # still frozen when counted: not re-admitted without an answer
    # served while frozen: nothing after the first miss (the one at the freeze)
    assert sum(1 for d in docs[10:] if '|rep-1|' in d.text) == 0


def test_a_busy_replica_keeps_its_slow_request_by_default():
    """Slow but alive is not frozen: past the liveness check it still answers health checks
    (from its event loop; the executor thread is busy), so its request is not cut."""
    busy_s = LIVENESS_CHECK_S + PROBE_TIMEOUT_S + 1.0
    with Deployment(name='who', uses=WhoAmI, replicas=2, quiet=True) as dep:
        start = time.monotonic()
        docs = dep.post('/', text_docs(1), parameters={'sleep': busy_s})
        took = time.monotonic() - start
        counters = replicas(dep)
    assert took >= busy_s and len(docs) == 1
    assert sum(r['served'] for r in counters) == 1  # ran once, not retried elsewhere
    assert all(r['deadline_misses'] == 0 and r['ejections'] == 0 for r in counters)


def test_prefetch_1_does_not_stall_and_a_thawed_replica_is_readmitted():
    with Deployment(name='who', uses=WhoAmI, replicas=3, quiet=True, timeout_send=1000) as dep:
        victim = replicas(dep)[0]
        stopped = threading.Event()
        arrived = []

        def freeze_once(response):
            arrived.append(time.monotonic())
            if len(arrived) == 5 and not stopped.is_set():
                os.kill(victim['pid'], signal.SIGSTOP)
                stopped.set()

        try:
            start = time.monotonic()
            docs = dep.post('/', text_docs(100), request_size=1, prefetch=1,
                            on_done=freeze_once)
            took = time.monotonic() - start
        finally:
            os.kill(victim['pid'], signal.SIGCONT)
        assert len(docs) == 100 and stopped.is_set()
        gaps = [b - a for a, b in zip(arrived, arrived[1:])]
        assert max(gaps) < 1.0 + SLACK_S, max(gaps)
        poll(lambda: not replicas(dep)[0]['ejected'], 'the thawed replica is re-admitted',
             timeout=30)
        served = replicas(dep)[0]['served']
        dep.post('/', text_docs(30), request_size=1)
        assert replicas(dep)[0]['served'] > served
    assert took < 60


def test_client_timeout_with_continue_on_error_accounts_for_every_doc():
    # The gateway waits forever (timeout_send=-1): only the client's deadline fires.
    with Deployment(name='who', uses=WhoAmI, replicas=3, quiet=True, timeout_send=-1) as dep:
        dep.post('/', text_docs(30), request_size=1)  # connected to every replica: a new
        victims = [r['pid'] for r in replicas(dep)[1:]]  # connection to a frozen one fails fast
        os.kill(victims[1], signal.SIGSTOP)
        try:
            inputs = text_docs(60)
            errors = []
            got = dep.post('/', inputs, request_size=2, prefetch=6, timeout=1.0,
                           on_error=errors.append, continue_on_error=True)
            # The requests stuck at the first victim keep it busiest: freeze another one.
            os.kill(victims[0], signal.SIGSTOP)
            with pytest.raises(IncompletePostError) as info:
                dep.post('/', inputs, request_size=2, prefetch=6, timeout=1.0,
                         continue_on_error=True)
        finally:
            for pid in victims:
                os.kill(pid, signal.SIGCONT)
    expected = sorted(d.text for d in inputs)
    assert errors and all(isinstance(r.error, TimeoutError) for r in errors)
    returned = [d.text.split('|')[0] for d in got]
    assert sorted(returned + [d.text for r in errors for d in r.docs]) == expected
    incomplete = info.value
    assert incomplete.failed and len(incomplete.docs) + sum(
        len(r.docs) for r in incomplete.failed) == len(inputs)
    assert sorted([d.text.split('|')[0] for d in incomplete.docs]
                  + [d.text for r in incomplete.failed for d in r.docs]) == expected
    assert 'request(s) failed' in str(incomplete)


def test_a_stateless_write_past_its_deadline_is_an_error_and_runs_once(tmp_path):
    path = tmp_path / 'applied.txt'
    with Deployment(name='w', uses=SlowWriter, replicas=2, quiet=True, timeout_send=500) as dep:
        errors = []
        dep.post('/write', text_docs(1, 'slow'), parameters={'sleep': 2, 'path': str(path)},
                 on_error=errors.append)
        poll(lambda: path.exists() and path.read_text(), 'the slow write to finish',
             timeout=10)
        fast = dep.post('/write', text_docs(2, 'fast'), parameters={'path': str(path)})
    assert len(errors) == 1 and isinstance(errors[0].error, ConnectionError)
    assert 'not sent again' in str(errors[0].error)
    assert [d.text for d in errors[0].docs] == ['slow-0']
    assert len(fast) == 2
    assert path.read_text().split() == ['slow-0', 'fast-0', 'fast-1']  # once each


ELECTION_MS = 500


def test_writes_are_acknowledged_again_soon_after_a_frozen_leader_is_replaced(tmp_path):
    dep = Deployment(name='ledger', uses=Ledger, replicas=3, stateful=True, quiet=True,
                     workspace=str(tmp_path),
                     raft_configuration={'heartbeat_timeout': 50,
                                         'election_timeout': ELECTION_MS})
    writes = DocList[TextDoc]([TextDoc(id=f'w{i}', text=str(i)) for i in range(400)])
    acks: list[float] = []
    frozen: dict = {}
    with dep:
        leader = next(r for r in replicas(dep) if (r.get('raft') or {}).get('role') == 'leader')

        def on_ack(response):
            acks.append(time.monotonic())
            if len(acks) == 50:
                os.kill(leader['pid'], signal.SIGSTOP)
                frozen['at'] = time.monotonic()

        result = {}
        poster = threading.Thread(target=lambda: result.setdefault('docs', dep.post(
            '/index', writes, request_size=1, prefetch=4, on_done=on_ack)))
        poster.start()
        try:
            poll(lambda: 'at' in frozen, 'the leader is frozen', timeout=60)
            # hold it frozen until writes flow again, or 15 s (the old behaviour)
            poll(lambda: any(t > frozen['at'] for t in acks) or
                 time.monotonic() - frozen['at'] > 15, 'writes resume', timeout=30, every=0.02)
        finally:
            os.kill(leader['pid'], signal.SIGCONT)
        poster.join(timeout=120)
        resumed = min(t for t in acks if t > frozen['at']) - frozen['at']
        assert len(result['docs']) == 400
        poll(lambda: len({(r.get('raft') or {}).get('applied') for r in replicas(dep)}) == 1,
             'replicas converge', timeout=60)
        histories = [read_history(str(tmp_path), 'ledger', i) for i in range(3)]
    # An election takes one to two election timeouts; the gateway learns of it within
    # about one more (it asks the other replicas while a write waits at the old leader).
    assert resumed < 8 * ELECTION_MS / 1000 + SLACK_S, resumed
    for history in histories:
        assert len(history) == len(set(history)) == 400  # every write exactly once
    assert histories[0] == histories[1] == histories[2]


@pytest.mark.parametrize('protocol', ['grpc', 'http'])
def test_killed_gateway_is_reported_then_restarted_on_its_port_and_serves_again(protocol):
    with Deployment(name='who', uses=WhoAmI, replicas=2, quiet=True, protocol=protocol) as dep:
        before = dep.status()['gateway']
        assert dep.running and dep.healthy
        failed = {}

        def slow_post():
            start = time.monotonic()
            try:  # through the gateway (dep.post routes from this process)
                dep.client.post('/', text_docs(1), parameters={'sleep': 5})
            except UnavailableError as exc:
                failed['after'], failed['error'] = time.monotonic() - start, exc

        poster = threading.Thread(target=slow_post)
        poster.start()
        poll(lambda: any(r['outstanding'] for r in replicas(dep)), 'the post in flight',
             timeout=10)
        os.kill(before['pid'], signal.SIGKILL)
        status = poll(lambda: status_if(dep, lambda s: not s['running']),
                      'the dead gateway reported', timeout=5)
        gateway = status['gateway']  # dead, or already being restarted
        assert not status['healthy'] and (not gateway['alive'] or gateway['state'] != 'ready')
        assert any('gateway' in name for name in status['down'])
        poster.join(timeout=30)
        assert failed and failed['after'] < 3, failed  # in flight: fails fast, retryable
        status = poll(lambda: status_if(dep, lambda s: s['running']),
                      'the gateway restarted', timeout=30)
        assert status['gateway']['pid'] != before['pid']
        assert status['gateway']['port'] == before['port'] == dep.port
        assert status['gateway']['restarts'] == 1 and status['healthy']
        docs = poll(lambda: _post_or_none(dep), 'posts work again', timeout=10)
        assert len(docs) == 3


def status_if(dep, condition) -> dict | None:
    status = dep.status()
    return status if condition(status) else None


def _post_or_none(dep):
    try:
        return dep.post('/', text_docs(3))
    except ConnectionError:
        return None
