"""Live scaling and rolling updates of stateless replicas: new replicas join the gateway's
pools once ready, removed ones finish what they hold before they stop, and no request fails
meanwhile.

The traffic is a stateless `@write` (`SlowWriter`): the gateway never sends it twice, so a
replica stopped with a request in hand would fail that request for the caller. Every
acknowledged write must be in the file exactly once."""
from __future__ import annotations

import itertools
import os
import signal
import threading
import time

import psutil
import pytest
from docarray import DocList
from docarray.documents import TextDoc

from nborch import ChildStartError, Deployment, Executor, Flow, RolloutError, requests, write
from tests.integration.helpers import Echo, SlowWriter

pytestmark = pytest.mark.timeout(150)


class Traffic:
    """`threads` callers posting one write after another until `stop()`; each outcome kept."""

    def __init__(self, serving, path: str, threads: int = 3, sleep: float = 0.01):
        self.serving, self.path, self.sleep = serving, path, sleep
        self.acknowledged: list[str] = []
        self.errors: list[str] = []
        self._numbers = itertools.count()
        self._done = threading.Condition()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> 'Traffic':
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopping.is_set():
            text = f'w{next(self._numbers)}'
            try:
                self.serving.post('/write', DocList[TextDoc]([TextDoc(text=text)]),
                                  parameters={'path': self.path, 'sleep': self.sleep})
            except Exception as exc:  # noqa: BLE001 - every failure is what the test counts
                with self._done:
                    self.errors.append(f'{text}: {type(exc).__name__}: {exc}')
                    self._done.notify_all()
                continue
            with self._done:
                self.acknowledged.append(text)
                self._done.notify_all()

    def wait_for(self, more: int, timeout: float = 30.0) -> None:
        """Until `more` writes past the ones acknowledged now are acknowledged."""
        with self._done:
            target = len(self.acknowledged) + more
            assert self._done.wait_for(lambda: len(self.acknowledged) >= target or self.errors,
                                       timeout), f'{more} more writes did not finish in {timeout} s'

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(30)


def routed(serving, executor: int = 0) -> list[dict]:
    return serving.status()['executors'][executor]['shards'][0]['replicas']


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f'{what} did not happen in {timeout} s'
        time.sleep(0.05)
    return value


def assert_each_write_once(traffic: Traffic) -> None:
    with open(traffic.path) as f:
        lines = f.read().split()
    assert len(lines) == len(set(lines)), 'a write ran twice'
    assert set(traffic.acknowledged) <= set(lines), 'an acknowledged write is missing'


def test_scaling_1_to_4_to_2_under_traffic_fails_no_request(tmp_path):
    path = str(tmp_path / 'writes.txt')
    with Deployment(uses=SlowWriter, replicas=1, quiet=True) as dep, Traffic(dep, path) as traffic:
        traffic.wait_for(10)
        assert dep.scale(4) == {'started': 3, 'stopped': 0, 'undrained': 0}
        assert dep.spec.replicas == 4
        # Every new replica takes requests once it joined.
        wait_until(lambda: all(r['served'] > 0 for r in routed(dep)), 30,
                   'all four replicas serving')
        assert [r['replica'] for r in routed(dep)] == [0, 1, 2, 3]
        leaving = [r['pid'] for r in routed(dep)[2:]]
        traffic.wait_for(10)
        assert dep.scale(2) == {'started': 0, 'stopped': 2, 'undrained': 0}
        traffic.wait_for(10)
        traffic.stop()
        assert traffic.errors == []
        replicas = routed(dep)
        assert [(r['replica'], r['state']) for r in replicas] == [(0, 'ready'), (1, 'ready')]
        assert not any(psutil.pid_exists(pid) for pid in leaving)
        assert dep.healthy
    assert_each_write_once(traffic)


def test_a_removed_replica_finishes_the_request_it_holds_before_it_stops(tmp_path):
    path = str(tmp_path / 'writes.txt')
    with Deployment(uses=SlowWriter, replicas=2, quiet=True) as dep:
        slow = threading.Thread(target=lambda: dep.post(
            '/write', DocList[TextDoc]([TextDoc(text=f'slow{i}') for i in range(2)]),
            parameters={'path': path, 'sleep': 1.0}, request_size=1, prefetch=2))
        slow.start()  # one 1 s write on each replica
        wait_until(lambda: sum(r['outstanding'] for r in routed(dep)) == 2, 10,
                   'both replicas holding a write')
        assert dep.scale(1) == {'started': 0, 'stopped': 1, 'undrained': 0}
        slow.join(10)
        assert sorted(open(path).read().split()) == ['slow0', 'slow1']


class FailsBeyondTheFirstReplica(Executor):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.runtime_args.replica_id > 0:
            raise RuntimeError('this version cannot start more replicas')

    @requests
    def echo(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        return docs


def test_replicas_that_cannot_start_leave_the_running_ones_serving():
    with Deployment(uses=FailsBeyondTheFirstReplica, replicas=1, quiet=True,
                    timeout_ready=20_000) as dep:
        with pytest.raises(ChildStartError, match='cannot start more replicas'):
            dep.scale(3)
        assert dep.spec.replicas == 1
        assert [r['state'] for r in routed(dep)] == ['ready']
        assert dep.post('/', DocList[TextDoc]([TextDoc(text='still')])).text == ['still']


def test_a_restarted_gateway_and_replica_keep_the_scaled_shape():
    with Deployment(uses=Echo, replicas=1, quiet=True) as dep:
        dep.scale(3)
        gateway = dep.status()['gateway']['pid']
        os.kill(gateway, signal.SIGKILL)
        wait_until(lambda: dep.running and dep.status()['gateway']['pid'] != gateway, 30,
                   'the gateway restarted')
        assert [r['replica'] for r in routed(dep)] == [0, 1, 2]
        victim = routed(dep)[2]['pid']
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: dep.healthy and routed(dep)[2]['pid'] != victim, 30,
                   'the replica restarted')
        for _ in range(6):
            dep.post('/', DocList[TextDoc]([TextDoc(text='x')]))
        assert all(r['served'] > 0 for r in routed(dep))


def test_flow_scale_one_executor():
    flow = Flow(quiet=True).add(name='a', uses=Echo).add(name='b', uses=Echo, replicas=2)
    with flow:
        assert flow.scale('b', 1) == {'started': 0, 'stopped': 1, 'undrained': 0}
        assert flow.scale('a', 2)['started'] == 1
        shape = [len(e['shards'][0]['replicas']) for e in flow.status()['executors']]
        assert shape == [2, 1]
        assert flow.post('/', DocList[TextDoc]([TextDoc(text='x')])).text == ['x']


@pytest.mark.parametrize('kwargs, executor, replicas, error, message', [
    ({'uses': Echo}, None, 0, ValueError, 'replicas=0'),
    ({'uses': Echo}, 'nope', 2, ValueError, "no executor named 'nope'"),
])
def test_scale_errors_name_the_cause(kwargs, executor, replicas, error, message):
    flow = Flow(quiet=True).add(name='a', **kwargs)
    with pytest.raises(error, match=message):
        flow.scale(executor or 'a', replicas)


def test_before_start_scale_sets_the_count():
    dep = Deployment(uses=Echo, replicas=1, quiet=True)
    assert dep.scale(2) == {'started': 0, 'stopped': 0, 'undrained': 0}
    with dep:
        assert len(routed(dep)) == 2


# -- rolling update ------------------------------------------------------------------------

class SlowWriterV2(SlowWriter):
    """The next version: marks what it writes."""

    @requests(on='/write')
    @write
    def record(self, docs: DocList[TextDoc], parameters: dict, **kwargs) -> DocList[TextDoc]:
        time.sleep(parameters.get('sleep', 0))
        with open(parameters['path'], 'a') as f:
            f.writelines(f'{doc.text}@v2\n' for doc in docs)
        return docs


class Tagger(Executor):
    def __init__(self, tag: str = 'a', **kwargs):
        super().__init__(**kwargs)
        self.tag = tag

    @requests
    def tag_docs(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        for doc in docs:
            doc.text = f'{self.tag}:{doc.text}'
        return docs


class NeverStarts(Executor):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        raise RuntimeError('version 3 is broken')


def pids(serving, executor: int = 0) -> list[int]:
    return [r['pid'] for r in routed(serving, executor)]


def test_a_rolling_update_under_traffic_replaces_every_replica_and_fails_no_request(tmp_path):
    path = str(tmp_path / 'writes.txt')
    with Deployment(uses=SlowWriter, replicas=3, quiet=True) as dep, Traffic(dep, path) as traffic:
        before = pids(dep)
        traffic.wait_for(10)
        assert dep.rolling_update(uses=SlowWriterV2) == {'replaced': 3}
        traffic.wait_for(10)
        traffic.stop()
        assert traffic.errors == []
        after = pids(dep)
        assert len(after) == 3 and not set(after) & set(before)
        assert not any(psutil.pid_exists(pid) for pid in before)
        assert dep.spec.executor_class is SlowWriterV2
    with open(path) as f:
        lines = f.read().split()
    texts = [line.split('@')[0] for line in lines]
    assert len(texts) == len(set(texts)), 'a write ran twice'
    assert set(traffic.acknowledged) <= set(texts), 'an acknowledged write is missing'
    assert lines[-1].endswith('@v2')  # the last writes ran on the new version


def test_update_with_uses_with_rolls_out_and_update_with_docs_posts():
    with Deployment(uses=Tagger, replicas=2, quiet=True) as dep:
        assert dep.post('/', DocList[TextDoc]([TextDoc(text='x')])).text == ['a:x']
        assert dep.update(uses_with={'tag': 'b'}) == {'replaced': 2}
        assert {dep.post('/', DocList[TextDoc]([TextDoc(text='x')])).text[0]
                for _ in range(4)} == {'b:x'}
        assert dep.update(DocList[TextDoc]([TextDoc(text='y')])).text == ['b:y']  # a post
        with pytest.raises(TypeError, match='not both'):
            dep.update(DocList[TextDoc]([TextDoc(text='y')]), uses_with={'tag': 'c'})
        with pytest.raises(TypeError, match='not replicas'):
            dep._orchestrator.roll_out(dep.name, {'replicas': 3})


def test_a_new_version_that_cannot_start_stops_the_rollout_and_the_old_one_serves():
    with Deployment(uses=Tagger, replicas=2, quiet=True, timeout_ready=20_000) as dep:
        before = pids(dep)
        with pytest.raises(RolloutError, match=r'(?s)0 of 2 replicas run it.*version 3 is broken'):
            dep.rolling_update(uses=NeverStarts)
        assert pids(dep) == before and dep.healthy
        assert dep.spec.executor_class is Tagger
        assert dep.post('/', DocList[TextDoc]([TextDoc(text='x')])).text == ['a:x']


def test_flow_rolling_update_of_one_executor():
    flow = Flow(quiet=True).add(name='first', uses=Tagger).add(name='second', uses=Echo)
    with flow:
        kept = pids(flow, 1)
        flow.rolling_update('first', uses_with={'tag': 'z'})
        assert flow.post('/', DocList[TextDoc]([TextDoc(text='x')])).text == ['z:x']
        assert pids(flow, 1) == kept
