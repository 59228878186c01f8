"""Live scale and rolling update of a stateful executor, with real processes: its Raft group
grows and shrinks one member at a time (a learner that catches up, then a promotion; a removal
that commits before the replica stops), or restarts member by member as a new version, while
writers and linearizable readers go on. The history is checked as in the fault campaign
(tests/faults/history.py): every acknowledged write applied exactly once on every member,
the same order everywhere, and an order of all operations that respects real time. The
workspace's record follows, so a restart sees the group's new size."""
from __future__ import annotations

import pytest

from nborch import ChildStartError, Deployment, RolloutError, requests
from nborch.errors import MembershipError
from tests.faults.history import check_history
from tests.faults.workload import LogLedger, Workload
from tests.integration.helpers import converged, docs, poll, read_history, replicas

pytestmark = pytest.mark.timeout(240)
FAST = {'heartbeat_timeout': 50, 'election_timeout': 300}


def members(dep) -> list[tuple[list[int], list[int]]]:
    return [(r['raft']['voters'], r['raft']['learners']) for r in replicas(dep)]


def ledger(tmp_path, replicas: int = 3, uses=LogLedger) -> Deployment:
    return Deployment(name='ledger', uses=uses, replicas=replicas, stateful=True,
                      workspace=str(tmp_path), raft_configuration=FAST, quiet=True)


def checked(load: Workload, dep, tmp_path, replicas: int = 3) -> list[list[str]]:
    """The members' applied histories once they converged, checked against the workload."""
    poll(lambda: converged(dep, 1), 'the members apply the same index')
    histories = [read_history(str(tmp_path), 'ledger', r) for r in range(replicas)]
    report = check_history(load.ops, histories)
    assert report.ok, [str(a) for a in report.anomalies]
    assert report.acked > 20 and report.reads_checked > 5, report
    return histories


def test_a_stateful_group_grows_to_5_and_shrinks_to_3_under_traffic_losing_nothing(tmp_path):
    dep = ledger(tmp_path)
    with dep:
        # routed as dep.post routes (from this process): that router must follow the group
        with Workload(dep.port, executor='ledger', prefix='scale',
                      router=dep._orchestrator.router) as load:
            poll(lambda: load.acked() >= 5, 'the first writes')
            assert dep.scale(replicas=5) == {'started': 2, 'stopped': 0, 'undrained': 0}
            assert members(dep) == [([1, 2, 3, 4, 5], [])] * 5
            acked = load.acked()
            poll(lambda: load.acked() >= acked + 10, 'writes to the group of five')
            grown = {r['replica']: r['raft']['applied'] for r in replicas(dep)}
            assert set(grown) == {0, 1, 2, 3, 4} and min(grown.values()) > 0
            assert dep.scale(replicas=3) == {'started': 0, 'stopped': 2, 'undrained': 0}
            assert members(dep) == [([1, 2, 3], [])] * 3
            acked = load.acked()
            poll(lambda: load.acked() >= acked + 5, 'writes to the group of three again')
        histories = checked(load, dep, tmp_path)
    assert load.errors == {}
    # The removed members' folders are gone; the others record a group of three.
    assert not (tmp_path / 'raft' / '3').exists() and not (tmp_path / 'raft' / '4').exists()

    with ledger(tmp_path):
        poll(lambda: all(read_history(str(tmp_path), 'ledger', r) == histories[0]
                         for r in range(3)), 'the restarted group replays its log')
    with pytest.raises(MembershipError, match='a Raft group of 3 replicas, but it was started '
                                              'with replicas=5'):
        with ledger(tmp_path, replicas=5):
            pass


class LogLedgerV2(LogLedger):
    """The same state, a new answer: /read also says which version read it."""

    @requests(on='/read')
    def read(self, docs, **kwargs):
        return {'ids': list(self.ids), 'replica': self.runtime_args.replica_id, 'version': 2}


def test_a_rolling_update_of_a_stateful_group_restarts_each_member_in_place_losing_nothing(
        tmp_path):
    dep = ledger(tmp_path)
    with dep:
        with Workload(dep.port, executor='ledger', prefix='roll') as load:
            poll(lambda: load.acked() >= 5, 'the first writes')
            assert dep.rolling_update(uses=LogLedgerV2) == {'replaced': 3}
            acked = load.acked()
            poll(lambda: load.acked() >= acked + 10, 'writes to the new version')
        histories = checked(load, dep, tmp_path)
        answers = []
        for _ in range(3):
            dep.post('/read', None, parameters={'read_consistency': 'linearizable'},
                     on_done=lambda r: answers.append(r.parameters['__results__']['ledger']))
        assert members(dep) == [([1, 2, 3], [])] * 3
    assert [a.get('version') for a in answers] == [2, 2, 2], answers
    assert all(a['ids'] == histories[0] for a in answers)


class NoFourthReplica(LogLedger):
    """Replica 3 cannot start (a model file missing on that machine, say)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.runtime_args.replica_id == 3:
            raise RuntimeError('replica 3 has no model file')


def test_a_newcomer_that_cannot_start_leaves_the_group_as_it_was(tmp_path):
    with ledger(tmp_path, uses=NoFourthReplica) as dep:
        dep.post('/index', docs(5, 'before'), request_size=1)
        with pytest.raises(ChildStartError, match='replica 3 has no model file'):
            dep.scale(replicas=5)
        assert members(dep) == [([1, 2, 3], [])] * 3
        assert not (tmp_path / 'raft' / '3').exists()
        dep.post('/index', docs(5, 'after'), request_size=1)
        poll(lambda: converged(dep, 1), 'the three members apply the same index')
        histories = [read_history(str(tmp_path), 'ledger', r) for r in range(3)]
    assert histories[0] == histories[1] == histories[2]
    assert sorted(histories[0]) == sorted([f'before{i}' for i in range(5)]
                                          + [f'after{i}' for i in range(5)])


class Broken(LogLedger):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        raise RuntimeError('v3 needs a model file that is not there')


def test_a_stateful_version_that_cannot_start_stops_the_rollout_with_the_old_one_serving(
        tmp_path):
    with ledger(tmp_path) as dep:
        dep.post('/index', docs(5, 'before'), request_size=1)
        with pytest.raises(RolloutError, match=r'(?s)0 of 3 replicas run it.*v3 needs a model file'):
            dep.rolling_update(uses=Broken)
        assert members(dep) == [([1, 2, 3], [])] * 3
        assert [r['state'] for r in replicas(dep)] == ['ready'] * 3
        dep.post('/index', docs(5, 'after'), request_size=1)
        poll(lambda: converged(dep, 1), 'the three members apply the same index')
        histories = [read_history(str(tmp_path), 'ledger', r) for r in range(3)]
    assert histories[0] == histories[1] == histories[2]
    assert len(histories[0]) == 10


def test_a_removal_that_fails_is_finished_by_asking_again(tmp_path):
    with ledger(tmp_path, replicas=4) as dep:
        dep.post('/index', docs(5, 'before'), request_size=1)
        orchestrator = dep._orchestrator
        change = orchestrator._change_membership

        def unanswered(rid, op, *args, **kwargs):  # the leader's answer is lost, say
            raise MembershipError(f'could not {op} replica {rid.replica}: no answer')
        orchestrator._change_membership = unanswered
        with pytest.raises(MembershipError, match='could not remove replica 3'):
            dep.scale(replicas=3)
        orchestrator._change_membership = change
        assert dep.scale(replicas=3)['stopped'] == 0  # it was stopped by the first attempt
        assert members(dep) == [([1, 2, 3], [])] * 3
        dep.post('/index', docs(5, 'after'), request_size=1)
        poll(lambda: converged(dep, 1), 'the three members apply the same index')
        histories = [read_history(str(tmp_path), 'ledger', r) for r in range(3)]
    assert histories[0] == histories[1] == histories[2] and len(histories[0]) == 10
