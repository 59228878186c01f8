"""Live scale of a stateful executor, with real processes: its Raft group grows and shrinks one
member at a time (a learner that catches up, then a promotion; a removal that commits before
the replica stops) while writes go on, and every acknowledged write is applied, once, on
every member. The workspace's record follows, so a restart sees the group's new size."""
from __future__ import annotations

import collections
import itertools
import threading

import pytest
from docarray import DocList
from docarray.documents import TextDoc

from nborch import Deployment, requests
from nborch.errors import MembershipError
from tests.integration.helpers import Ledger, converged, docs, poll, read_history, replicas

pytestmark = pytest.mark.timeout(240)
FAST = {'heartbeat_timeout': 50, 'election_timeout': 300}


class Writes:
    """One caller indexing one doc after another (ids `w0`, `w1`, ...) until `stop()`."""

    def __init__(self, dep):
        self.dep = dep
        self.acknowledged: list[str] = []
        self.errors: list[str] = []
        self._numbers = itertools.count()
        self._done = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> 'Writes':
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._thread.join(60)

    def _run(self) -> None:
        while not self._stopping.is_set():
            doc_id = f'w{next(self._numbers)}'
            try:
                self.dep.post('/index', DocList[TextDoc]([TextDoc(id=doc_id, text=doc_id)]))
            except Exception as exc:  # noqa: BLE001 - every failure is what the test counts
                with self._done:
                    self.errors.append(f'{doc_id}: {type(exc).__name__}: {exc}')
                    self._done.notify_all()
                continue
            with self._done:
                self.acknowledged.append(doc_id)
                self._done.notify_all()

    def wait_for(self, more: int, timeout: float = 60.0) -> None:
        with self._done:
            target = len(self.acknowledged) + more
            assert self._done.wait_for(lambda: len(self.acknowledged) >= target or self.errors,
                                       timeout), f'{more} more writes did not finish in {timeout} s'
        assert self.errors == []


def members(dep) -> list[tuple[list[int], list[int]]]:
    return [(r['raft']['voters'], r['raft']['learners']) for r in replicas(dep)]


def test_a_stateful_group_grows_to_5_and_shrinks_to_3_under_writes_losing_nothing(tmp_path):
    dep = Deployment(name='ledger', uses=Ledger, replicas=3, stateful=True,
                     workspace=str(tmp_path), raft_configuration=FAST, quiet=True)
    with dep:
        dep.post('/index', docs(20, 'before'), request_size=5)
        with Writes(dep) as writes:
            writes.wait_for(5)
            assert dep.scale(replicas=5) == {'started': 2, 'stopped': 0, 'undrained': 0}
            assert members(dep) == [([1, 2, 3, 4, 5], [])] * 5
            writes.wait_for(10)  # the new members take writes too (as followers)
            grown = {r['replica']: r['raft']['applied'] for r in replicas(dep)}
            assert set(grown) == {0, 1, 2, 3, 4} and min(grown.values()) > 0
            assert dep.scale(replicas=3) == {'started': 0, 'stopped': 2, 'undrained': 0}
            assert members(dep) == [([1, 2, 3], [])] * 3
            writes.wait_for(5)
        assert writes.errors == []
        acknowledged = writes.acknowledged
        poll(lambda: converged(dep, 0), 'the three members apply the same index')
        histories = [read_history(str(tmp_path), 'ledger', r) for r in range(3)]
    assert histories[0] == histories[1] == histories[2]
    applied = collections.Counter(histories[0])
    assert all(applied[doc_id] == 1 for doc_id in acknowledged), 'an acknowledged write is lost'
    assert {f'before{i}' for i in range(20)} == set(histories[0][:20])
    # The removed members' folders are gone, the others record a group of three.
    assert not (tmp_path / 'raft' / '3').exists() and not (tmp_path / 'raft' / '4').exists()

    again = Deployment(name='ledger', uses=Ledger, replicas=3, stateful=True,
                       workspace=str(tmp_path), raft_configuration=FAST, quiet=True)
    with again:
        poll(lambda: all(read_history(str(tmp_path), 'ledger', r) == histories[0]
                         for r in range(3)), 'the restarted group replays its log')
    with pytest.raises(MembershipError, match='a Raft group of 3 replicas, but it was started '
                                              'with replicas=5'):
        with Deployment(name='ledger', uses=Ledger, replicas=5, stateful=True,
                        workspace=str(tmp_path), raft_configuration=FAST, quiet=True):
            pass


class LedgerV2(Ledger):
    """The same state, a new answer: /count says which version counted."""

    @requests(on='/count')
    def count(self, docs, **kwargs):
        return {'n': len(self.ids), 'replica': self.runtime_args.replica_id, 'version': 2}


def test_a_rolling_update_of_a_stateful_group_restarts_each_member_in_place_losing_nothing(
        tmp_path):
    dep = Deployment(name='ledger', uses=Ledger, replicas=3, stateful=True,
                     workspace=str(tmp_path), raft_configuration=FAST, quiet=True)
    with dep:
        dep.post('/index', docs(10, 'before'), request_size=5)
        with Writes(dep) as writes:
            writes.wait_for(5)
            assert dep.rolling_update(uses=LedgerV2) == {'replaced': 3}
            writes.wait_for(5)
        assert writes.errors == []
        poll(lambda: converged(dep, 0), 'the members apply the same index')
        histories = [read_history(str(tmp_path), 'ledger', r) for r in range(3)]
        answers = []
        for _ in range(3):
            dep.post('/count', None, parameters={'read_consistency': 'linearizable'},
                     on_done=lambda r: answers.append(r.parameters['__results__']['ledger']))
        assert members(dep) == [([1, 2, 3], [])] * 3
    assert histories[0] == histories[1] == histories[2]
    applied = collections.Counter(histories[0])
    assert all(applied[doc_id] == 1 for doc_id in writes.acknowledged + [f'before{i}' for i in
                                                                          range(10)])
    assert [a.get('version') for a in answers] == [2, 2, 2], answers
    assert {a['n'] for a in answers} == {len(histories[0])}
