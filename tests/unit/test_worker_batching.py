"""The worker's `Batcher` on an executor in this process: requests in, replies out."""
import asyncio
import concurrent.futures
import json

from docarray import DocList
from docarray.documents import TextDoc

from nborch import Executor, dynamic_batching, requests
from nborch.protos import nborch_pb2 as pb
from nborch.runtime.codec import decode_docs, encode_docs
from nborch.runtime.worker import Batcher, ExecutorRunner


class Tagger(Executor):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sizes: list[int] = []

    @requests(on='/tag')
    @dynamic_batching(preferred_batch_size=2, timeout=5_000)
    def tag(self, docs: DocList[TextDoc], parameters: dict, **kwargs) -> DocList[TextDoc]:
        self.sizes.append(len(docs))
        for doc in docs:
            doc.text = f'{doc.text}|{parameters.get("t")}|{len(docs)}'
        return docs

    @requests(on='/dict')
    @dynamic_batching(preferred_batch_size=1)
    def as_dict(self, docs, **kwargs):
        return {'n': len(docs)}


def request(text: str, on: str = '/tag', **parameters) -> pb.DataRequest:
    return pb.DataRequest(endpoint=on, docs=encode_docs(DocList[TextDoc]([TextDoc(text=text)])),
                          parameters=json.dumps(parameters).encode())


def serve(*requests_):
    async def scenario():
        executor = Tagger()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher = Batcher(ExecutorRunner(executor, 'tagger'), pool)
            assert all(batcher.batched(r) for r in requests_)
            replies = await asyncio.wait_for(
                asyncio.gather(*(batcher.handle(r) for r in requests_)), 10)
        return executor.sizes, replies, batcher.queues
    return asyncio.run(scenario())


def texts(reply: pb.DataResponse) -> list[str]:
    assert not reply.HasField('error'), reply.error.message
    return decode_docs(reply.docs, TextDoc).text


def test_requests_are_batched_per_parameters_and_queues_do_not_outlive_them():
    sizes, replies, queues = serve(request('a', t=1), request('b', t=2), request('c', t=1),
                                   request('d', t=2))
    assert sizes == [2, 2]
    assert [texts(r) for r in replies] == [['a|1|2'], ['b|2|2'], ['c|1|2'], ['d|2|2']]
    assert queues == {}


def test_a_dict_result_fails_the_batched_requests():
    _, [reply], _ = serve(request('a', on='/dict'))
    assert reply.error.type == 'TypeError'
    assert 'returns a DocList or None, got dict' in reply.error.message


def test_requests_without_docs_or_for_unbatched_endpoints_skip_the_queues():
    executor = Tagger()
    batcher = Batcher(ExecutorRunner(executor, 'tagger'), None)
    empty = pb.DataRequest(endpoint='/tag', docs=encode_docs(DocList[TextDoc]()))
    assert not batcher.batched(empty)
    assert not batcher.batched(request('a', on='/nowhere'))
    assert not batcher.batched(pb.DataRequest(endpoint='/tag', docs=b'not a batch'))
