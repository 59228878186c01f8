"""JSON ↔ docs for the HTTP door, and its route table and schemas (no process: a stand-in
gateway behind the real FastAPI app)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from docarray import DocList
from docarray.documents import TextDoc
from fastapi.testclient import TestClient

from nborch import Executor, requests
from nborch.examples import Match, QueryDoc
from nborch.protos import nborch_pb2 as pb
from nborch.runtime.codec import decode_docs, encode_docs
from nborch.runtime.http_docs import (ANY_DOC_SCHEMA, doc_json_schema, docs_from_json,
                                      docs_to_json, endpoint_schemas, json_to_batch)
from nborch.runtime.http_gateway import build_app
from nborch.runtime.topology import ExecutorTopology, Topology


def test_json_docs_become_the_executors_doc_type_through_the_codec():
    rows = [{'id': 'q1', 'embedding': [0.5, 1.5], 'matches': [{'id': 'm', 'text': 'hit',
                                                               'score': 0.25}]},
            {'text': 'no id'}]
    docs = decode_docs(json_to_batch(rows), QueryDoc)
    assert docs[0].id == 'q1' and isinstance(docs[0].embedding, np.ndarray)
    assert docs[0].embedding.tolist() == [0.5, 1.5]
    assert isinstance(docs[0].matches[0], Match) and docs[0].matches[0].score == 0.25
    assert docs[1].text == 'no id' and docs[1].id  # an id is made, as for any new doc


def test_docs_become_plain_json():
    doc = QueryDoc(id='q', text='t', embedding=np.arange(3, dtype=np.float32),
                   matches=DocList[Match]([Match(id='m', score=0.5)]))
    (out,) = docs_to_json([doc])
    assert json.loads(json.dumps(out)) == out  # JSON, nothing left over
    assert out['embedding'] == [0.0, 1.0, 2.0]
    assert out['matches'][0]['id'] == 'm' and out['matches'][0]['score'] == 0.5
    assert docs_to_json([TextDoc(id='b', bytes_=b'\x00\xff')])[0]['bytes_'] == 'AP8='


@pytest.mark.parametrize('data, message', [
    ('text', 'data must be a list of JSON objects'),
    ([{'text': 'a'}, 3], r'data\[1\] must be a JSON object \(a doc\), got int: 3'),
    ([{'id': 5}], r'data\[0\].id must be a string, got 5'),
    ([{'_private': 1}], "'_private' cannot be a doc field"),
    ([{'has space': 1}], "'has space' cannot be a doc field"),
])
def test_json_that_is_not_docs_is_refused_with_what_is_wrong(data, message):
    with pytest.raises(ValueError, match=message):
        docs_from_json(data)


def test_a_doclist_field_is_described_as_an_array_of_its_docs():
    schema = doc_json_schema(QueryDoc)
    assert '$defs' not in json.dumps(schema) and '$ref' not in json.dumps(schema)
    matches = schema['properties']['matches']
    assert matches['type'] == 'array' and 'score' in matches['items']['properties']


class Encoder(Executor):
    @requests(on='/encode')
    def encode(self, docs: DocList[TextDoc], **kwargs) -> DocList[QueryDoc]:
        return DocList[QueryDoc]([QueryDoc(id=d.id) for d in docs])


class Ranker(Executor):
    @requests(on='/encode')
    def rank(self, docs: DocList[QueryDoc], **kwargs) -> DocList[Match]:
        return DocList[Match]([Match(id=d.id, score=1.0) for d in docs])

    @requests(on='/post')
    def clash(self, docs, **kwargs):
        return docs


class StandIn:
    """Answers like a gateway: upper-cases texts and records what it was asked."""

    def __init__(self):
        self.requests: list[pb.DataRequest] = []

    async def process(self, request):
        self.requests.append(request)
        docs = decode_docs(request.docs, TextDoc)
        for d in docs:
            d.text = (d.text or '').upper()
        return pb.DataResponse(docs=encode_docs(docs), parameters=request.parameters,
                               route=[pb.Hop(executor='enc', shard=0, replica=1)])

    async def status(self):
        return {'role': 'gateway', 'requests': len(self.requests)}


def _topology(**kwargs) -> Topology:
    def executor(name, cls, needs):
        return ExecutorTopology(name=name, shards=[['127.0.0.1:1']], needs=needs,
                                endpoints={p: False for p in cls.endpoints()},
                                schemas=endpoint_schemas(cls.endpoints()))
    external = ExecutorTopology(name='ext', shards=[['127.0.0.1:2']], needs=['gateway'],
                                external=True)
    return Topology(executors=[executor('enc', Encoder, ['gateway']),
                               executor('rank', Ranker, ['enc']), external],
                    protocols=['http'], http_port=1, **kwargs)


def test_route_table_and_schemas_take_the_first_executors_input_and_the_last_ones_output():
    client = TestClient(build_app(StandIn(), _topology()))
    paths = client.get('/openapi.json').json()['paths']
    assert set(paths) == {'/post', '/status', '/encode'}  # Ranker's '/post' does not clash
    op = paths['/encode']['post']
    data = op['requestBody']['content']['application/json']['schema']['properties']['data']
    assert data['anyOf'][0]['items']['title'] == 'TextDoc'  # Encoder's input
    out = op['responses']['200']['content']['application/json']['schema']['properties']['data']
    assert out['items']['title'] == 'Match'  # the sink's (Ranker's) output
    post = paths['/post']['post']['requestBody']['content']['application/json']['schema']
    assert post['properties']['data']['anyOf'][0]['items'] == ANY_DOC_SCHEMA


def test_a_request_reaches_the_gateway_as_nborchs_request():
    gateway = StandIn()
    client = TestClient(build_app(gateway, _topology()))
    reply = client.post('/encode', json={'data': {'text': 'a'}, 'parameters': {'k': 1},
                                         'header': {'requestId': 'abc',
                                                    'targetExecutor': 'rank'}})
    assert reply.status_code == 200
    (request,) = gateway.requests
    assert (request.endpoint, request.write_id, request.target_executor) == ('/encode', 'abc', 'rank')
    assert json.loads(request.parameters) == {'k': 1}
    body = reply.json()
    assert body['data'][0]['text'] == 'A' and body['parameters'] == {'k': 1}
    assert body['header'] == {'requestId': 'abc', 'execEndpoint': '/encode',
                              'targetExecutor': 'rank', 'failedShards': [],
                              'status': {'code': 0, 'description': ''}}
    assert body['routes'] == [{'executor': 'enc', 'shard': 0, 'replica': 1}]
    assert client.post('/post', json={'execEndpoint': '/x'}).json()['header']['execEndpoint'] == '/x'
    assert client.get('/status').json()['requests'] == 2


def test_a_gateway_error_is_503_and_an_oversized_body_413():
    class Down(StandIn):
        async def process(self, request):
            raise ConnectionError("executor 'enc': every replica failed")

    client = TestClient(build_app(Down(), _topology(max_message_size=1000)))
    reply = client.post('/encode', json={'data': [{'text': 'a'}]})
    assert reply.status_code == 503
    assert reply.json()['header']['status']['description'] == "executor 'enc': every replica failed"
    reply = client.post('/encode', json={'data': [{'text': 'a' * 1000}]})
    assert reply.status_code == 413 and 'over the 1000-byte' in reply.json()['detail']
    chunks = iter([b'{"data": [{"text": "', b'a' * 1000, b'"}]}'])  # no Content-Length
    reply = client.post('/encode', content=chunks, headers={'Content-Type': 'application/json'})
    assert reply.status_code == 413 and 'at least' in reply.json()['detail']


def test_http_options_are_checked_before_start_and_warned_about_without_http():
    import warnings
    from nborch import Deployment
    from nborch.errors import IgnoredArgumentWarning
    with pytest.raises(ValueError, match='uvicorn_kwargs: colour not options of uvicorn.Config'):
        Deployment(name='d', protocol='http', uvicorn_kwargs={'colour': 1})
    with pytest.raises(ValueError, match='uvicorn_kwargs: port set by nborch'):
        Deployment(name='d', protocol='http', uvicorn_kwargs={'port': 1})
    with pytest.raises(ValueError, match="cors='yes'"):
        Deployment(name='d', protocol='http', cors='yes')
    with pytest.warns(IgnoredArgumentWarning, match='title, cors configure the HTTP gateway'):
        Deployment(name='d', title='x', cors=True)
    with warnings.catch_warnings():
        warnings.simplefilter('error', IgnoredArgumentWarning)
        Deployment(name='d', protocol=['grpc', 'http'], title='x', cors=True)


def test_a_recursive_doc_type_gets_a_small_schema_of_its_fields():
    # LegacyDocument (what unannotated endpoints take) nests DocList[LegacyDocument] twice.
    from docarray.documents.legacy import LegacyDocument
    from nborch.runtime.http_docs import doc_json_schema
    schema = doc_json_schema(LegacyDocument)
    assert {'text', 'tags', 'embedding', 'chunks', 'matches'} <= set(schema['properties'])
    assert len(json.dumps(schema)) < 20_000
