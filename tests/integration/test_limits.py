"""Message-size and docs-per-request limits, enforced with errors that name them."""
from __future__ import annotations

import json
import struct
import time

import grpc
import pytest
from docarray import DocList

from nborch import Client, Deployment, Flow
from nborch.errors import MessageTooLargeError
from nborch.protos import nborch_pb2 as pb
from nborch.protos import nborch_pb2_grpc as pb_grpc
from nborch.runtime.auth import LinkAuth
from tests.integration.blobs import BlobDoc, BlobEcho, blob_docs
from tests.integration.helpers import text_docs

# One deployment serves the module (its processes outlive each test by design; the
# session-end check still finds any left behind).
pytestmark = pytest.mark.no_leak_check

LIMIT = 4 << 20
BLOBS = DocList[BlobDoc]


@pytest.fixture(scope='module')
def small():
    """A deployment whose messages may weigh 4 MiB and whose requests hold 50 docs."""
    with Deployment(uses=BlobEcho, max_message_size=LIMIT, max_request_docs=50,
                    quiet=True) as dep:
        yield dep


def _still_serves(dep) -> None:
    assert len(dep.post('/echo', blob_docs(1000), return_type=BLOBS)) == 1


@pytest.mark.parametrize('stream', [True, False])
def test_a_request_over_the_limit_fails_naming_limit_size_and_option(small, stream):
    with pytest.raises(MessageTooLargeError) as raised:
        small.post('/echo', blob_docs(LIMIT + 1000), return_type=BLOBS, stream=stream)
    message = str(raised.value)
    assert str(LIMIT) in message and 'max_message_size' in message
    assert 'the request is 41' in message  # its size, in bytes
    _still_serves(small)


def test_a_reply_over_the_limit_fails_alone_naming_the_executor(small):
    with pytest.raises(MessageTooLargeError, match=rf"reply .* over the {LIMIT}-byte .* "
                                                   r"of executor 'executor'"):
        small.post('/grow', blob_docs(LIMIT // 3), parameters={'times': 4}, return_type=BLOBS)
    _still_serves(small)


def test_a_reply_over_the_clients_own_limit_names_the_clients_limit(small):
    client = Client(port=small.port, max_message_size=1 << 20)
    try:
        with pytest.raises(MessageTooLargeError, match=r"this client's max_message_size is "
                                                       r'1048576'):
            client.post('/grow', blob_docs(600_000), parameters={'times': 3}, return_type=BLOBS)
        assert len(client.post('/echo', blob_docs(1000), return_type=BLOBS)) == 1
    finally:
        client.close()


def test_a_request_over_max_request_docs_fails_naming_the_limit(small):
    with pytest.raises(MessageTooLargeError, match=r'request of 60 docs is over the '
                                                   r"max_request_docs=50 of executor 'executor'"):
        small.post('/echo', text_docs(60), request_size=60)
    assert len(small.post('/echo', text_docs(60), request_size=30)) == 60


def _megabyte_claiming_a_million(backed: bool) -> bytes:
    """1 MB claiming 10^6 docs: a bool column the target lacks backs them (1 byte each),
    or nothing does (a buffer no column uses)."""
    cols = [{'name': 'flag', 'kind': 'bool', 'data': 0}] if backed else []
    header = json.dumps({'doc': 'BlobDoc', 'cols': cols, 'bufs': [1_000_000]}).encode()
    return struct.pack('<4sHHII', b'NBDC', 1, 0, 1_000_000, len(header)) + header + \
        b'\x01' * 1_000_000


@pytest.mark.parametrize('backed', [True, False])
def test_a_replica_refuses_a_megabyte_claiming_a_million_docs_at_once(small, backed):
    # The count is refused from the batch's prefix, before anything is decoded (the codec
    # itself refuses counts its bytes do not back: tests/unit/test_codec.py).
    replica = small._orchestrator.process_status()['executors']['executor'][0][0]['port']
    request = pb.DataRequest(endpoint='/echo', docs=_megabyte_claiming_a_million(backed))
    target = f'127.0.0.1:{replica}'
    insider = LinkAuth(small.secret).handshake('/nborch.Executor/Process', target)
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ExecutorStub(channel)
        started = time.monotonic()
        reply = stub.Process(request, metadata=insider.metadata, timeout=60)
        took = time.monotonic() - started
    assert reply.error.type == 'MessageTooLargeError'
    assert 'a request of 1000000 docs is over the max_request_docs=50' in reply.error.message
    assert took < 5.0  # it cost a replica 32 s of CPU (generous: 2 shared cores)


def test_a_request_too_large_for_one_executor_of_a_flow_fails_naming_it():
    flow = Flow(max_message_size=LIMIT, quiet=True).add(name='wide', uses=BlobEcho) \
        .add(name='narrow', uses=BlobEcho, max_message_size=1 << 20)
    with flow:
        with pytest.raises(MessageTooLargeError, match=r"over the 1048576-byte .* of executor "
                                                       r"'narrow'"):
            flow.post('/echo', blob_docs(2 << 20), return_type=BLOBS)
        assert len(flow.post('/echo', blob_docs(1000), return_type=BLOBS)) == 1
