"""Internal links prove the deployment secret both ways (runtime/auth.py), as real processes.

A caller without the secret changes nothing on any replica; a process that takes over a dead
replica's port cannot answer users; files on disk are the user's alone.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import stat
import time

import grpc
import pytest
from docarray import DocList
from docarray.documents import TextDoc

from nborch import Client, Deployment
from nborch.ports import free_port
from nborch.protos import nborch_pb2 as pb
from nborch.protos import nborch_pb2_grpc as pb_grpc
from nborch.runtime.auth import CALLER_KEY, LinkAuth, new_secret
from nborch.runtime.codec import encode_docs
from nborch.runtime.consensus.core.messages import AppendEntries, Entry, Heartbeat
from tests.integration.helpers import (Ledger, WhoAmI, converged, docs, poll, read_history,
                                       replicas)

pytestmark = pytest.mark.timeout(180)
FAST = {'heartbeat_timeout': 50, 'election_timeout': 300}
FORGED = DocList[TextDoc]([TextDoc(id='forged', text='forged')])










def refused(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_callers_without_the_secret_are_refused_and_change_nothing(tmp_path):
    raft_ports = [free_port('127.0.0.1') for _ in range(3)]
    with Deployment(name='ledger', uses=Ledger, replicas=3, stateful=True, quiet=True,
                    workspace=str(tmp_path), raft_configuration=FAST,
                    peer_ports=raft_ports) as dep:
        dep.post('/index', docs(5), request_size=1, prefetch=1)
        before = poll(lambda: converged(dep, 5), 'the first writes to apply')
        terms = [r['raft']['term'] for r in before]
        leader = next(r['replica'] for r in before if r['raft']['role'] == 'leader')
        forged_request = pb.DataRequest(endpoint='/index', docs=encode_docs(FORGED),
                                        write_id='forged')
        wrong_secret = LinkAuth(new_secret())
        remove_one = pb.MembershipChange(json=b'{"op": "remove", "node": 3}')
        codes = []
        for i, replica in enumerate(before):
            for port in (raft_ports[i], replica['port']):
                target = f'127.0.0.1:{port}'
                with grpc.insecure_channel(target) as channel:
                    raft, executor = pb_grpc.RaftStub(channel), pb_grpc.ExecutorStub(channel)
                    forged = [
                        Heartbeat(dst=i + 1, src=leader + 1, term=10 ** 6).to_bytes(),
                        AppendEntries(dst=i + 1, src=leader + 1, term=terms[i],
                                      prev_index=0, prev_term=0, commit=99,
                                      entries=(Entry(terms[i], 1, b'forged'),)).to_bytes()]
                    messages = [pb.RaftMessage(data=m) for m in forged]
                    wrong = wrong_secret.handshake('/nborch.Raft/Propose', target).metadata
                    codes += [
                        refused(lambda: raft.Propose(forged_request, timeout=10)),
                        refused(lambda: raft.Propose(forged_request, timeout=10, metadata=wrong)),
                        refused(lambda: raft.Send(iter(messages), timeout=10)),
                        refused(lambda: raft.ChangeMembership(remove_one, timeout=10)),
                        refused(lambda: executor.Process(forged_request, timeout=10)),
                        refused(lambda: list(executor.Stream(iter([forged_request]), timeout=10))),
                        refused(lambda: list(executor.StreamBatches(
                            iter([pb.DataRequests(requests=[forged_request])]), timeout=10))),
                        refused(lambda: executor.Status(pb.StatusRequest(), timeout=10))]
        assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED}, codes
        dep.post('/index', docs(1, 'after'))  # the group still serves its own gateway
        after = poll(lambda: converged(dep, 6), 'the last write to apply')
        assert [r['raft']['term'] for r in after] == terms  # no forged term reached Raft
        assert all(r['raft']['voters'] == [1, 2, 3] for r in after)  # nor a removal
        histories = [read_history(str(tmp_path), 'ledger', i) for i in range(3)]
        status = dep.client.status()
    for history in histories:
        assert history == [*(f'w{i}' for i in range(5)), 'after0'], history
    assert 'forged' not in str(status)


class _Impostor(pb_grpc.ExecutorServicer):
    """What took the dead replica's port: answers every request with forged docs."""

    def __init__(self):
        self.seen_metadata: list[dict] = []

    def _forged(self, request) -> pb.DataResponse:
        return pb.DataResponse(docs=encode_docs(FORGED), request_id=request.request_id)

    def Process(self, request, context):
        self.seen_metadata.append(dict(context.invocation_metadata()))
        return self._forged(request)

    def Stream(self, request_iterator, context):
        self.seen_metadata.append(dict(context.invocation_metadata()))
        for request in request_iterator:
            yield self._forged(request)

    def StreamBatches(self, request_iterator, context):
        self.seen_metadata.append(dict(context.invocation_metadata()))
        for message in request_iterator:
            yield pb.DataResponses(responses=[self._forged(r) for r in message.requests])


def _bind_as_soon_as_free(port: int, servicer, timeout: float = 10) -> grpc.Server:
    deadline = time.monotonic() + timeout
    while True:
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(4),
                             options=[('grpc.so_reuseport', 0)])
        pb_grpc.add_ExecutorServicer_to_server(servicer, server)
        try:
            if server.add_insecure_port(f'127.0.0.1:{port}'):
                server.start()
                return server
        except RuntimeError:
            pass
        server.stop(None)
        if time.monotonic() > deadline:
            raise AssertionError(f'could not take port {port}')
        time.sleep(0.001)


def test_an_impostor_on_a_dead_replicas_port_never_answers_users():
    impostor = _Impostor()
    with Deployment(name='who', uses=WhoAmI, replicas=2, quiet=True) as dep:
        dep.post('/', docs(4))  # both replicas have open streams from the gateway
        victim, survivor = replicas(dep)
        os.kill(victim['pid'], signal.SIGKILL)
        server = _bind_as_soon_as_free(victim['port'], impostor)
        try:
            served = dep.post('/', docs(40), request_size=1)
            assert len(served) == 40
            assert all(d.text != 'forged' and '|rep-1|' in d.text for d in served), \
                [d.text for d in served if '|rep-1|' not in d.text]
            poll(lambda: impostor.seen_metadata, 'the gateway to call the impostor')
            # What the impostor saw cannot open a call on the surviving replica either.
            captured = [(k, v) for k, v in impostor.seen_metadata[0].items() if k == CALLER_KEY]
            with grpc.insecure_channel(f'127.0.0.1:{survivor["port"]}') as channel:
                code = refused(lambda: list(pb_grpc.ExecutorStub(channel).StreamBatches(
                    iter([pb.DataRequests(requests=[
                        pb.DataRequest(endpoint='/', docs=encode_docs(FORGED))])]),
                    metadata=captured, timeout=10)))
        finally:
            server.stop(None)
    assert captured  # the gateway did offer a handshake, and nothing more
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_workspace_files_and_folders_are_private(tmp_path):
    with Deployment(name='ledger', uses=Ledger, replicas=3, stateful=True, quiet=True,
                    workspace=str(tmp_path),
                    raft_configuration={**FAST, 'snapshot_threshold': 5,
                                        'snapshot_interval': 2, 'trailing_logs': 1}) as dep:
        dep.post('/index', docs(30), request_size=1)
        poll(lambda: converged(dep, 30), 'the writes to apply')
    modes = {}
    for root, folders, files in os.walk(tmp_path):
        for name in folders + files:
            path = os.path.join(root, name)
            modes[os.path.relpath(path, tmp_path)] = stat.S_IMODE(os.stat(path).st_mode)
    raft_files = [p for p in modes if p.startswith('raft')]
    assert any(p.endswith('.data') for p in raft_files)  # a snapshot was written too
    assert any('history' in p for p in modes)
    assert len(raft_files) > 6
    loose = {p: oct(m) for p, m in modes.items() if m & 0o077}
    assert not loose


def test_the_public_port_is_open_unless_the_secret_is_required():
    with Deployment(uses=WhoAmI, quiet=True) as open_dep:
        assert len(Client(port=open_dep.port).post('/', docs(2))) == 2  # the front door
    with Deployment(uses=WhoAmI, quiet=True, require_secret=True) as dep:
        assert len(dep.post('/', docs(2))) == 2  # its own client carries the secret
        stranger = Client(port=dep.port)
        with pytest.raises(ConnectionError, match='UNAUTHENTICATED'):
            stranger.post('/', docs(1))
        stranger.close()
        friend = Client(port=dep.port, secret=dep.secret)
        assert len(friend.post('/', docs(1))) == 1
        status = friend.status()
        friend.close()
        worker = replicas(dep)[0]['port']
        with grpc.insecure_channel(f'127.0.0.1:{worker}') as channel:
            refused(lambda: pb_grpc.ExecutorStub(channel).Status(pb.StatusRequest(), timeout=10))
            handshake = LinkAuth(dep.secret).handshake('/nborch.Executor/Status',
                                                       f'127.0.0.1:{worker}')
            reply, call = pb_grpc.ExecutorStub(channel).Status.with_call(
                pb.StatusRequest(), metadata=handshake.metadata, timeout=10)
            handshake.check(call.initial_metadata())  # the worker proved the secret back
    assert status['auth_refused'] == 1  # the gateway counted the stranger
    assert json.loads(reply.json)['auth_refused'] == 1  # and the worker its own refusal
