"""Hostile peer input, a failed Raft driver and a changed replica count, with real processes.

A peer's bytes are network input: a forged or broken message is a counted drop, never a dead
driver; a replica whose driver stops anyway ends its process so the supervisor restarts it;
and a workspace is only started as the group it records.
"""
from __future__ import annotations

import os
import struct
import time

import grpc
import psutil
import pytest

from nborch import Deployment
from nborch.errors import MembershipError
from nborch.protos import nborch_pb2 as pb
from nborch.protos import nborch_pb2_grpc as pb_grpc
from nborch.runtime.consensus.core import AppendEntries, Entry, Heartbeat, checksum
from nborch.runtime.auth import LinkAuth
from nborch.runtime.process import ChildHandle, ChildStartError
from nborch.runtime.worker_spec import WorkerSpec
from tests.integration.helpers import (Ledger, converged, docs, poll, read_history,
                                       replicas)

pytestmark = pytest.mark.timeout(240)
FAST = {'heartbeat_timeout': 50, 'election_timeout': 300}


class BrittleLedger(Ledger):
    """Its snapshot fails while `<its workspace>/broken-<replica>` exists, which makes the Raft
    driver fail when it compacts the log."""

    def snapshot(self, path: str) -> None:
        if os.path.exists(self._marker()):
            raise OSError('disk full (simulated)')
        super().snapshot(path)

    def _marker(self) -> str:
        return os.path.join(self.workspace, f'broken-{self.runtime_args.replica_id}')










def raft_address(dep, replica: int) -> str:
    worker = dep._orchestrator.workers['ledger'][0][replica]
    return WorkerSpec.load(worker.spec_path).peers[replica]


def send_raw(address: str, messages: list[bytes], secret: bytes) -> None:
    """Send as an insider would: a caller holding the deployment secret (outsiders are
    refused before any message is read; tests/integration/test_auth.py)."""
    handshake = LinkAuth(secret).handshake('/nborch.Raft/Send', address)
    with grpc.insecure_channel(address) as channel:
        pb_grpc.RaftStub(channel).Send(iter([pb.RaftMessage(data=m) for m in messages]),
                                       metadata=handshake.metadata, timeout=10)


def test_hostile_raft_messages_are_counted_drops_and_writes_still_commit(tmp_path):
    dep = Deployment(name='ledger', uses=Ledger, replicas=3, stateful=True,
                     workspace=str(tmp_path), raft_configuration=FAST, quiet=True)
    with dep:
        dep.post('/index', docs(10, 'before'), request_size=5)
        reps = poll(lambda: converged(dep, 3), 'the group converges')
        leader = next(r['raft'] for r in reps if r['raft']['role'] == 'leader')
        follower = next(r for r in reps if r['raft']['role'] == 'follower')
        me, boss, term = follower['raft']['id'], leader['id'], leader['term']
        truncated = AppendEntries(dst=me, src=boss, term=term, prev_index=1, prev_term=1,
                                  entries=(Entry(term, 2, b'x' * 40),)).to_bytes()[:-10]
        send_raw(raft_address(dep, follower['replica']), [
            Heartbeat(dst=me, src=boss, term=2**64 - 1).to_bytes(),  # the report's forgery
            AppendEntries(dst=me, src=boss, term=term, prev_index=2**62).to_bytes(),
            truncated,
            Heartbeat(dst=boss, src=boss, term=term).to_bytes(),  # not for this replica
            Heartbeat(dst=me, src=9, term=term).to_bytes(),       # not a member
            Heartbeat(dst=me, src=boss, term=term, commit=10**6).to_bytes(),  # past its log
        ], dep.secret)
        dropped = poll(lambda: next(r for r in replicas(dep) if r['replica'] == follower['replica'])
                       ['raft']['dropped'], 'the follower reports its drops', timeout=10)
        assert dropped == {'malformed': 3, 'wrong_dst': 1, 'unknown_src': 1, 'refused': 1}
        started = time.monotonic()
        dep.post('/index', docs(10, 'after'), request_size=1)
        assert time.monotonic() - started < 15  # committed, not waiting out the 30 s timeout
        reps = poll(lambda: converged(dep, 13), 'every replica applies the new writes')
        assert all(r['restarts'] == 0 and r['raft']['term'] < 2**53 for r in reps)
        histories = [read_history(str(tmp_path), 'ledger', i) for i in range(3)]
    assert histories[0] == histories[1] == histories[2]
    assert sorted(histories[0]) == sorted([f'before{i}' for i in range(10)]
                                          + [f'after{i}' for i in range(10)])


def test_a_failed_raft_driver_ends_the_worker_and_the_supervisor_restarts_it(tmp_path):
    config = {**FAST, 'snapshot_threshold': 4, 'snapshot_interval': 10, 'trailing_logs': 2}
    dep = Deployment(name='ledger', uses=BrittleLedger, replicas=3, stateful=True,
                     workspace=str(tmp_path), raft_configuration=config, quiet=True)
    marker = tmp_path / 'ledger' / '0' / 'broken-0'
    with dep:
        marker.write_text('')
        for i in range(8):  # enough entries for replica 0 to compact (and fail)
            try:
                dep.post('/index', docs(1, f'w{i}-'), request_size=1)
            except Exception:
                pass  # a request routed to replica 0 while it is down may fail
        exited = poll(lambda: (replicas(dep)[0]['restarts'] >= 1 and replicas(dep)[0]['last_exit']),
                      'replica 0 exits and is restarted')
        assert exited['code'] == 3
        assert exited['reason'].startswith('the Raft driver failed while handling a Ready: '
                                           'OSError: disk full (simulated)')
        marker.unlink()
        dep.post('/index', docs(5, 'after'), request_size=1, prefetch=1)
        top = max((r.get('raft') or {}).get('commit', 0) for r in replicas(dep))
        reps = poll(lambda: converged(dep, top), 'the restarted replica catches up', timeout=90)
        assert all(r['state'] == 'ready' for r in reps)
        histories = [read_history(str(tmp_path), 'ledger', i) for i in range(3)]
    assert histories[0] == histories[1] == histories[2]
    assert histories[0][-5:] == [f'after{i}' for i in range(5)]


def _session_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.is_running()]


def test_a_restart_with_another_replica_count_is_refused_before_anything_starts(tmp_path):
    three = Deployment(name='ledger', uses=Ledger, replicas=3, stateful=True,
                       workspace=str(tmp_path), raft_configuration=FAST, quiet=True)
    with three:
        three.post('/index', docs(30, 'w'), request_size=3)
    with pytest.warns(UserWarning, match='tolerates no failure'):
        one = Deployment(name='ledger', uses=Ledger, replicas=1, stateful=True,
                         workspace=str(tmp_path), raft_configuration=FAST, quiet=True)
    with pytest.raises(MembershipError) as refused:
        with one:
            pass
    message = str(refused.value)
    assert f'ledger (workspace {tmp_path})' in message
    assert 'a Raft group of 3 replicas, but it was started with replicas=1' in message
    assert 'grows or shrinks only while it runs' in message
    assert not one.running and _session_children() == []

    # The worker checks too (the `nborch executor --stateful` role of the exports).
    spec = WorkerSpec(name='ledger', uses=WorkerSpec.pack_class(Ledger), workspace=str(tmp_path),
                      stateful=True, peers=['127.0.0.1:1'], replicas=1)
    spec.complete()
    spec.dump(str(tmp_path / 'alone.json'))
    worker = ChildHandle('ledger/rep-0', 'nborch.runtime.worker',
                         ['--spec', str(tmp_path / 'alone.json')])
    worker.spawn()
    try:
        with pytest.raises(ChildStartError, match='records a Raft group of 3 replicas, but it '
                                                  'was started with 1'):
            worker.wait_ready(60)
    finally:
        worker.stop()
    assert worker.returncode == 3

    with three:  # the recorded count still recovers every write
        counts = []
        for _ in range(3):
            three.post('/count', None, parameters={'read_consistency': 'linearizable'},
                       on_done=lambda r: counts.append(r.parameters['__results__']['ledger']))
    assert [c['n'] for c in counts] == [30, 30, 30]


def test_a_persisted_out_of_bound_term_is_quarantined_and_the_replica_rebuilt(tmp_path):
    dep = Deployment(name='ledger', uses=Ledger, replicas=3, stateful=True,
                     workspace=str(tmp_path), raft_configuration=FAST, quiet=True)
    with dep:
        dep.post('/index', docs(12, 'w'), request_size=3)
    hardstate = tmp_path / 'raft' / '1' / 'hardstate'
    body = struct.pack('<4sQQQ', b'NBHS', 2**64 - 1, 0, 0)  # what an older version persisted
    hardstate.write_bytes(body + struct.pack('<I', checksum(body)))
    with dep:  # the replica sets the hard state aside and is rebuilt from its peers
        poll(lambda: 'term 18446744073709551615 / commit 0 is beyond' in dep.logs(replica=1),
             'the warning naming the out-of-bound term')
        counts = []
        for _ in range(3):
            dep.post('/count', None, parameters={'read_consistency': 'linearizable'},
                     on_done=lambda r: counts.append(r.parameters['__results__']['ledger']))
        poll(lambda: converged(dep, 5), 'the rebuilt replica catches up')
        histories = [read_history(str(tmp_path), 'ledger', i) for i in range(3)]
    [kept] = (tmp_path / 'raft' / '1' / 'quarantine').glob('*-corrupt/hardstate')
    assert kept.read_bytes()[4:12] == struct.pack('<Q', 2**64 - 1)  # kept, not repaired
    assert [c['n'] for c in counts] == [12, 12, 12]
    assert histories[0] == histories[1] == histories[2]
