"""How the client reads a reply: an error reply without docs is the error, not a decode failure."""
from __future__ import annotations

from docarray.documents import TextDoc

from nborch.client import _to_response
from nborch.errors import ExecutorError
from nborch.protos import nborch_pb2 as pb


def test_an_error_reply_without_docs_surfaces_as_the_error():
    reply = pb.DataResponse(error=pb.ExecutorError(executor='gateway', type='KeyError',
                                                   message="'x'"))
    for doc_type in (None, TextDoc):
        response = _to_response(reply, doc_type)
        assert isinstance(response.error, ExecutorError)
        assert str(response.error) == "executor 'gateway' raised KeyError: 'x'"
        assert len(response.docs) == 0
