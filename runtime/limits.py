"""What one message may weigh: `max_message_size` bytes, `max_request_docs` docs.

Defaults fit the reference page's workloads with room to spare. Indexing or searching
100 000 docs of 128-d float32 embeddings in requests of the default 100 docs sends ~60 KB
messages; even all 100 000 docs in one request (~56 MB with ids and text) fit 64 MiB. The
bound is what a message costs the gateway: it holds a message about three times while
forwarding it (received, decoded into protobuf, sent on), so one request stays under
~200 MB. 100 000 docs per request is that same whole dataset in one request; decoding
costs a replica ~10-40 µs per doc, so a request costs at most a few seconds of CPU.
"""
from __future__ import annotations

from nborch.errors import MessageTooLargeError
from nborch.protos import nborch_pb2 as pb

DEFAULT_MAX_MESSAGE_SIZE = 64 << 20
DEFAULT_MAX_REQUEST_DOCS = 100_000
GRPC_MAX_MESSAGE_SIZE = (2 << 30) - 1  # gRPC and protobuf take no larger message
# A packed stream message (DataRequests, DataResponses) adds a field tag and a length to each
# request or reply it carries: gRPC's own limit allows that much over nborch's, so that one
# request at the limit still travels packed.
PACK_OVERHEAD = 16
# A Raft message wraps what it carries: one write request (of up to max_message_size) or
# up to 1 MiB of smaller entries or snapshot data, plus a few header bytes.
RAFT_ENVELOPE = 1 << 20
RAISE_IT = 'max_message_size= of the Deployment/Flow (YAML key, --max-message-size) and of the Client'


def check_limit(name: str, value, largest: int) -> int:
    """A limit given by the user: an integer in 1..`largest`; ValueError names `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= largest:
        raise ValueError(f'{name}={value!r}: an integer in 1..{largest}')
    return value


def megabytes(nbytes: int) -> str:
    return f'{nbytes / (1 << 20):.1f} MiB'


def too_large(what: str, size: int, limit: int, where: str) -> MessageTooLargeError:
    return MessageTooLargeError(
        f'{what} is {size} bytes ({megabytes(size)}), over the {limit}-byte '
        f'({megabytes(limit)}) max_message_size of {where}; send fewer docs per request '
        f'(request_size) or raise {RAISE_IT}')


def too_many_docs(n_docs: int, limit: int, where: str) -> MessageTooLargeError:
    return MessageTooLargeError(
        f'a request of {n_docs} docs is over the max_request_docs={limit} of {where}; send '
        'fewer docs per request (request_size) or raise max_request_docs= of the '
        'Deployment/Flow (YAML key, --max-request-docs)')


def check_request_size(request: pb.DataRequest, limit: int, where: str) -> int:
    """Refuse to send `request` to a receiver that would reject it: gRPC would fail the
    whole stream it travels on, every other request on it included. Returns its size."""
    size = request.ByteSize()
    if size > limit:
        raise too_large('the request', size, limit, where)
    return size


def bounded_reply(reply: pb.DataResponse, limit: int, where: str) -> pb.DataResponse:
    """`reply`, or an error reply naming the limit when it is too large to send."""
    size = reply.ByteSize()
    if size <= limit:
        return reply
    return error_reply(too_large('the reply', size, limit, where), where)


def error_reply(error: MessageTooLargeError, where: str) -> pb.DataResponse:
    return pb.DataResponse(error=pb.ExecutorError(
        executor=where, type=MessageTooLargeError.__name__, message=str(error)))


def raise_if_too_large(reply: pb.DataResponse) -> None:
    """A client's side: an error reply for a limit becomes `MessageTooLargeError`."""
    if reply.HasField('error') and reply.error.type == MessageTooLargeError.__name__:
        raise MessageTooLargeError(reply.error.message)
