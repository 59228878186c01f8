"""The reference system's own scale-out tests, ported: `jina` replaced by `nborch`.

Ported from Jina 3.34's tests/integration/stateful/test_stateful.py and
tests/integration/external_deployment/test_external_deployment.py. What changed, and why:
its fixed `time.sleep(20)` waits for replication become polls with a bound; its docker image
fixture and `volumes=` are local processes here (volumes warn); its `vars(parser args)` of a
Deployment are the parser's recorded defaults (tests/fixtures/reference/jina_arguments.json);
int tags become strings (pydantic 2, which nborch runs on, does not coerce int to str).
"""
from __future__ import annotations

import json
import os
import random
import time
import warnings
from typing import Dict, List

import pytest
from docarray import DocList
from docarray.documents import TextDoc
from docarray.documents.legacy import LegacyDocument

from nborch import Deployment, Executor, Flow, requests, write
from nborch.errors import IgnoredArgumentWarning
from nborch.ports import free_port

pytestmark = pytest.mark.timeout(240)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
REFERENCE_DEFAULTS = json.load(open(os.path.join(
    ROOT, 'tests', 'fixtures', 'reference', 'jina_arguments.json')))['Deployment defaults']


class TextDocWithId(TextDoc):
    id: str
    tags: Dict[str, str] = {}
    l: List[str] = []


random_num = random.randint(0, 50000)


class MyStateExecutor(Executor):
    """The reference test's stateful executor (its snapshot variant), as written there."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._docs = DocList[TextDocWithId]()
        self._docs_dict = {}

    @requests(on=['/index'])
    @write
    def index(self, docs: DocList[TextDocWithId], **kwargs) -> DocList[TextDocWithId]:
        for doc in docs:
            self._docs.append(doc)
            self._docs_dict[doc.id] = doc

    @requests(on=['/search'])
    def search(self, docs: DocList[TextDocWithId], **kwargs) -> DocList[TextDocWithId]:
        for doc in docs:
            doc.text = self._docs_dict[doc.id].text  # KeyError on a shard without the doc
            doc.tags['pid'] = str(os.getpid())
            doc.tags['num'] = str(random_num)

    @requests(on=['/similarity'])
    def search_similarity(self, docs: DocList[TextDocWithId], **kwargs) -> DocList[TextDocWithId]:
        for doc in docs:
            doc.text = 'similarity'
            doc.l = [doc.id for doc in self._docs]

    def snapshot(self, snapshot_file: str):
        with open(snapshot_file, 'wb') as f:
            self._docs.save_binary(f)

    def restore(self, snapshot_file: str):
        self._docs = DocList[TextDocWithId].load_binary(snapshot_file)
        for doc in self._docs:
            self._docs_dict[doc.id] = doc


def assert_is_indexed(client, search_da):
    docs = client.search(inputs=search_da, request_size=1, return_type=DocList[TextDocWithId])
    for doc in docs:
        assert doc.text == f'ID {doc.id}'


def assert_all_replicas_indexed(client, search_da, num_replicas=3, key='pid'):
    for query in search_da:
        pids = set()
        for _ in range(10):
            for resp in client.search(inputs=query, request_size=1,
                                      return_type=DocList[TextDocWithId]):
                pids.add(resp.tags[key])
                assert resp.text == f'ID {query.id}'
            if len(pids) == num_replicas:
                break
        assert len(pids) == num_replicas


def eventually(check, timeout: float = 60.0):
    """The reference test sleeps 20 s for replication; this retries the same check instead."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, Exception):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def stateful_deployment(tmpdir, shards: int) -> Deployment:
    replicas = 3
    if shards > 1:
        peer_ports = {shard: [free_port('127.0.0.1') for _ in range(replicas)]
                      for shard in range(shards)}
    else:
        peer_ports = [free_port('127.0.0.1') for _ in range(replicas)]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', IgnoredArgumentWarning)  # volumes: local processes
        return Deployment(
            uses=MyStateExecutor,
            replicas=replicas,
            workspace=str(tmpdir),
            stateful=True,
            raft_configuration={
                'snapshot_interval': 10,
                'snapshot_threshold': 5,
                'trailing_logs': 10,
                'LogLevel': 'INFO',
            },
            shards=shards,
            volumes=[str(tmpdir) + ':' + '/workspace'],
            peer_ports=peer_ports,
            polling={'/index': 'ANY', '/search': 'ALL'},
            quiet=True,
        )


@pytest.mark.parametrize('shards', [2, 1])
def test_stateful_index_search(shards, tmp_path):
    dep = stateful_deployment(tmp_path, shards)
    with dep:
        index_da = DocList[TextDocWithId](
            [TextDocWithId(id=f'{i}', text=f'ID {i}') for i in range(100)])
        search_da = DocList[TextDocWithId]([TextDocWithId(id=f'{i}') for i in range(1)])
        dep.index(inputs=index_da, request_size=1, return_type=DocList[TextDocWithId])
        eventually(lambda: assert_is_indexed(dep, search_da))
        eventually(lambda: assert_all_replicas_indexed(dep, search_da))
        if shards == 1:  # '/similarity' is ANY-polled: one shard's docs

            def similarity_sees_every_doc():  # on every replica (reads rotate over them)
                for _ in range(3):
                    docs = dep.post(on='/similarity', inputs=search_da, request_size=1,
                                    return_type=DocList[TextDocWithId])
                    for doc in docs:
                        assert doc.text == 'similarity'
                        assert len(doc.l) == len(index_da)  # good merging of results
            eventually(similarity_sees_every_doc)


def test_stateful_index_search_restore(tmp_path):
    dep = stateful_deployment(tmp_path, 1)
    with dep:
        index_da = DocList[TextDocWithId](
            [TextDocWithId(id=f'{i}', text=f'ID {i}') for i in range(100)])
        search_da = DocList[TextDocWithId]([TextDocWithId(id=f'{i}') for i in range(1)])
        dep.index(inputs=index_da, request_size=1, return_type=DocList[TextDocWithId])
        eventually(lambda: assert_is_indexed(dep, search_da))
        eventually(lambda: assert_all_replicas_indexed(dep, search_da))

    with dep:  # restored from the workspace
        index_da = DocList[TextDocWithId](
            [TextDocWithId(id=f'{i}', text=f'ID {i}') for i in range(100, 200)])
        dep.index(inputs=index_da, request_size=1, return_type=DocList[TextDocWithId])
        search_da = DocList[TextDocWithId]([TextDocWithId(id=f'{i}') for i in range(0, 200, 7)])
        eventually(lambda: assert_all_replicas_indexed(dep, search_da))


class MyExternalExecutor(Executor):
    @requests
    def foo(self, docs, *args, **kwargs):
        for doc in docs:
            doc.tags['name'] = self.runtime_args.name


def validate_response(docs, expected_docs=50):
    assert len(docs) == expected_docs
    for doc in docs:
        assert 'external_real' in doc.tags['name']


def input_docs():
    return DocList[LegacyDocument]([LegacyDocument() for _ in range(50)])


def external_args(num_shards: int, port: int) -> dict:
    """`vars()` of the reference system's parsed Deployment arguments, as its test passes them
    to `Flow.add`: every default, with the test's own flags; minus name and external."""
    args = {**REFERENCE_DEFAULTS, 'uses': 'MyExternalExecutor', 'port': [port],
            'host': ['127.0.0.1'], 'shards': num_shards, 'polling': 'all'}
    for key in ('name', 'external', 'deployment_role'):
        args.pop(key)
    return args


@pytest.mark.parametrize('num_shards', [1, 2])
def test_flow_with_external_deployment(num_shards):
    port = free_port('127.0.0.1')
    external = Deployment(uses=MyExternalExecutor, name='external_real', port=port,
                          shards=num_shards, polling='all', quiet=True)
    with external:
        flow = Flow().add(**external_args(num_shards, port), name='external_fake',
                          external=True)
        with flow:
            resp = flow.index(inputs=input_docs())
        # expect 50 reduced Documents in total after sharding
        validate_response(resp, 50)


def test_flow_with_external_deployment_pre_shards():
    port = free_port('127.0.0.1')
    external = Deployment(uses=MyExternalExecutor, name='external_real', port=port, shards=2,
                          polling='all', quiet=True)
    with external:
        flow = (Flow()
                .add(**external_args(2, port), name='external_fake', external=True)
                .add(name='executor1', needs=['external_fake'])
                .add(name='executor2', needs=['external_fake'])
                .needs(['executor1', 'executor2']))
        with flow:
            resp = flow.index(inputs=input_docs())
        # Reducing applied on shards and needs, expect 50 docs
        validate_response(resp, 50)
