"""A server that stops while callers keep their streams open ends those calls itself.

grpc cancels a handler still running when the grace of `server.stop` runs out; on Python
3.12+ each such cancel is logged as `ERROR grpc._cython.cygrpc ... Exception not handled ...
CancelledError`. The gateway and Raft peers keep streams open for as long as they live, so
without the drain every stop of a worker logged one.
"""
from __future__ import annotations

import grpc
import pytest
from docarray import DocList
from docarray.documents import TextDoc

from nborch import Deployment
from nborch.protos import nborch_pb2 as pb
from nborch.protos import nborch_pb2_grpc as pb_grpc
from nborch.runtime.auth import LinkAuth
from nborch.runtime.codec import encode_docs
from tests.integration.helpers import Echo

pytestmark = pytest.mark.timeout(120)


def test_a_worker_stopping_under_an_open_stream_ends_it_without_a_cancel(capfd):
    dep = Deployment(name='drain', uses=Echo)  # not quiet: the children's log is the evidence
    dep.start()
    try:
        port = dep.status()['executors'][0]['shards'][0]['replicas'][0]['port']
        target = f'127.0.0.1:{port}'
        channel = grpc.insecure_channel(target)
        handshake = LinkAuth(dep.secret).handshake('/nborch.Executor/Stream', target)
        stream = pb_grpc.ExecutorStub(channel).Stream(iter(_one_request_then_hold()),
                                                       metadata=handshake.metadata)
        reply = next(stream)
        assert reply.request_id == 'r0'
    finally:
        dep.close()  # SIGTERM to the worker while this test still holds its stream open
    with pytest.raises(StopIteration):
        next(stream)  # the worker ended the call: a clean end of stream, not a reset
    channel.close()
    out = capfd.readouterr()
    log = out.out + out.err
    assert 'Exception not handled' not in log and 'CancelledError' not in log, log


def _one_request_then_hold():
    yield pb.DataRequest(request_id='r0', endpoint='/',
                         docs=encode_docs(DocList[TextDoc]([TextDoc(text='x')])))
    import threading
    threading.Event().wait(30)  # keep the request side open, as the gateway does
