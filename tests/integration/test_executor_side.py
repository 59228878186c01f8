"""Executor-side behaviours through a real Deployment: @dynamic_batching in the replica,
LegacyDocument for unannotated endpoints, request/response schemas and replica names.

One deployment (a gateway and one replica) serves every test but the last, which runs a
replica on its own.
"""
from __future__ import annotations

import asyncio
import sys
import time
from typing import Optional

import numpy as np
import pytest
from docarray import DocList
from docarray.documents import TextDoc
from docarray.documents.legacy import LegacyDocument

from nborch import (AsyncClient, Deployment, Executor, IncompletePostError, dynamic_batching,
                    requests)
from nborch.runtime.auth import new_secret
from nborch.runtime.process import ChildHandle
from nborch.runtime.worker_spec import WorkerSpec
from tests.integration.helpers import text_docs

# One deployment serves the module: the per-test leftover check would see it.
pytestmark = [pytest.mark.timeout(120), pytest.mark.no_leak_check]


class Scored(TextDoc):
    score: Optional[float] = None


class BatchProbe(Executor):
    """Stamps each doc with the size of the call that processed it and records the sizes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls: dict[str, list[int]] = {}

    def _record(self, on: str, docs) -> None:
        self.calls.setdefault(on, []).append(len(docs))

    @requests(on='/encode')
    @dynamic_batching(preferred_batch_size=4, timeout=10_000)
    def encode(self, docs: DocList[TextDoc], parameters: dict, **kwargs) -> DocList[TextDoc]:
        self._record('/encode', docs)
        for doc in docs:
            doc.text = f'{doc.text}|{parameters.get("tag", "-")}|batch-{len(docs)}'
        return docs

    @requests(on='/short')
    @dynamic_batching(preferred_batch_size=4, timeout=300)
    def short(self, docs: DocList[TextDoc], **kwargs) -> None:
        self._record('/short', docs)
        for doc in docs:
            doc.text = f'{doc.text}|batch-{len(docs)}'

    @requests(on='/fragile')
    @dynamic_batching(preferred_batch_size=2)
    async def fragile(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        self._record('/fragile', docs)
        if 'bad' in docs.text:
            raise ValueError('one bad doc in the batch')
        return docs

    @requests(on='/late')
    def late(self, docs: DocList[TextDoc], **kwargs) -> None:  # batched by the Deployment
        self._record('/late', docs)

    @requests(on='/calls')
    def report(self, docs, **kwargs):
        return {'calls': self.calls, 'runtime_name': self.runtime_args.name,
                'metas_name': self.metas.name}

    @requests(on='/legacy')
    def legacy(self, docs, **kwargs):
        for doc in docs:
            doc.tags['seen_by'] = self.metas.name
            doc.tags['n_chunks'] = len(doc.chunks or [])

    @requests(on='/schemas', request_schema=DocList[TextDoc], response_schema=DocList[Scored])
    def schemas(self, docs, **kwargs):
        return DocList[Scored]([Scored(text=d.text, score=float(len(d.text))) for d in docs])


@pytest.fixture(scope='module')
def dep():
    with Deployment(name='probe', uses=BatchProbe, quiet=True, uses_dynamic_batching={
            '/late': {'preferred_batch_size': 3, 'timeout': 10_000}}) as deployment:
        yield deployment


def _results(dep) -> dict:
    responses = []
    dep.post('/calls', text_docs(1), on_done=responses.append)
    return responses[0].parameters['__results__']['probe']


def test_concurrent_single_doc_posts_are_batched_and_each_caller_gets_its_own_docs(dep):
    out = dep.post('/encode', text_docs(8), request_size=1, prefetch=8,
                   return_type=DocList[TextDoc])
    assert out.text == [f'doc-{i}|-|batch-4' for i in range(8)]
    assert _results(dep)['calls']['/encode'] == [4, 4]


def test_requests_with_different_parameters_are_not_batched_together(dep):
    async def post_all():
        client = AsyncClient(port=dep.port, secret=dep.secret)
        try:
            return await asyncio.gather(*(
                client.post('/encode', text_docs(1, f'{tag}{i}'), parameters={'tag': tag},
                            return_type=DocList[TextDoc])
                for i in range(4) for tag in ('a', 'b')))
        finally:
            await client.close()

    before = len(_results(dep)['calls'].get('/encode', []))
    results = asyncio.run(post_all())
    texts = [r[0].text for r in results]
    assert texts == [f'{tag}{i}-0|{tag}|batch-4' for i in range(4) for tag in ('a', 'b')]
    assert _results(dep)['calls']['/encode'][before:] == [4, 4]


def test_fewer_docs_than_preferred_are_flushed_after_the_timeout(dep):
    start = time.monotonic()
    out = dep.post('/short', text_docs(3), request_size=1, prefetch=3,
                   return_type=DocList[TextDoc])
    elapsed = time.monotonic() - start
    assert out.text == [f'doc-{i}|batch-3' for i in range(3)]  # changed in place
    assert _results(dep)['calls']['/short'] == [3]
    assert 0.3 <= elapsed < 5


def test_an_exception_fails_every_request_of_its_batch(dep):
    docs = DocList[TextDoc]([TextDoc(text=t) for t in ('ok', 'bad', 'x', 'y')])
    with pytest.raises(IncompletePostError) as info:
        dep.post('/fragile', docs, request_size=1, prefetch=4, continue_on_error=True,
                 return_type=DocList[TextDoc])
    failed = [r.docs[0].text for r in info.value.failed]
    assert len(failed) == 2 and 'bad' in failed  # 'bad' and its batch partner, as a whole
    assert len(info.value.docs) == 2 and 'bad' not in info.value.docs.text
    assert all('one bad doc in the batch' in str(r.error) for r in info.value.failed)
    assert _results(dep)['calls']['/fragile'] == [2, 2]


def test_uses_dynamic_batching_batches_an_endpoint_the_class_does_not(dep):
    dep.post('/late', text_docs(6), request_size=1, prefetch=6)
    assert _results(dep)['calls']['/late'] == [3, 3]


def test_replica_name_is_the_reference_systems_and_metas_name_the_executors(dep):
    report = _results(dep)
    assert (report['runtime_name'], report['metas_name']) == ('probe/rep-0', 'probe')


def test_unannotated_endpoint_gets_legacy_documents_with_every_field(dep):
    doc = LegacyDocument(text='hello', tags={'price': 10, 'nested': {'a': [1, 2]}},
                         embedding=np.arange(4.0), tensor=np.ones((2, 3)), url='http://x/y.png',
                         blob=b'\x00\xff', scores={'cosine': 0.5},
                         chunks=DocList[LegacyDocument]([LegacyDocument(text='c', tags={'k': 1})]),
                         matches=DocList[LegacyDocument]([LegacyDocument(text='m')]))
    out = dep.post('/legacy', DocList[LegacyDocument]([doc]), return_type=DocList[LegacyDocument])
    got = out[0]
    assert got.id == doc.id and got.text == 'hello' and got.url == 'http://x/y.png'
    assert got.tags == {'price': 10, 'nested': {'a': [1, 2]}, 'seen_by': 'probe', 'n_chunks': 1}
    assert np.array_equal(got.embedding, np.arange(4.0))
    assert np.array_equal(got.tensor, np.ones((2, 3)))
    assert got.blob == b'\x00\xff' and got.scores == {'cosine': 0.5}
    assert [(c.text, c.tags) for c in got.chunks] == [('c', {'k': 1})]
    assert [m.text for m in got.matches] == ['m']


def test_unannotated_endpoint_takes_text_docs_as_legacy_documents(dep):
    # TextDoc has no tags: the endpoint still finds LegacyDocument's (empty) dict there.
    out = dep.post('/legacy', text_docs(2), return_type=DocList[LegacyDocument])
    assert [d.text for d in out] == ['doc-0', 'doc-1']
    assert [d.tags for d in out] == [{'seen_by': 'probe', 'n_chunks': 0}] * 2


def test_request_and_response_schema_drive_decoding(dep):
    out = dep.post('/schemas', text_docs(2), return_type=DocList[Scored])
    assert [(d.text, d.score) for d in out] == [('doc-0', 5.0), ('doc-1', 5.0)]


def test_a_draining_replica_runs_what_waits_in_its_batch_queue(tmp_path):
    """SIGTERM to a replica: the request queued for a batch (1 of 4 docs, 10 s timeout) is
    run and answered at once, not cut off when the server's grace runs out."""
    secret = new_secret()
    spec = WorkerSpec(name='probe', uses=WorkerSpec.pack_class(BatchProbe), sys_path=sys.path)
    spec.dump(str(tmp_path / 'probe.json'))
    worker = ChildHandle('probe/rep-0', 'nborch.runtime.worker',
                         ['--spec', str(tmp_path / 'probe.json')], secret=secret)
    worker.spawn()

    async def post_then_stop():
        client = AsyncClient(port=worker.info['port'], secret=secret)
        try:
            reply = asyncio.ensure_future(client.post('/encode', text_docs(1),
                                                      return_type=DocList[TextDoc]))
            await asyncio.sleep(0.5)
            assert not reply.done()  # waiting for 3 more docs
            start = time.monotonic()
            worker.terminate()
            docs = await reply
            return docs, time.monotonic() - start
        finally:
            await client.close()

    try:
        worker.wait_ready(60)
        docs, waited = asyncio.run(post_then_stop())
    finally:
        worker.stop()
    # Without the flush the server's grace (1 s) would cancel it: an error, not a reply.
    assert docs.text == ['doc-0|-|batch-1'] and waited < 5
