"""The gateway's merge of shard and predecessor replies: pure, on pb messages.

ALL polling keeps the shards that answered when others raise or cannot be reached, and
names the failed ones; `no_reduce=True` concatenates instead of merging by id.
"""
from __future__ import annotations

import asyncio
import json
import logging

import pytest
from docarray import DocList
from docarray.documents import TextDoc

from nborch.protos import nborch_pb2 as pb
from nborch.runtime.codec import decode_docs, encode_docs
from nborch.runtime.gateway import Gateway, merge_responses, merge_shards
from nborch.runtime.topology import ExecutorTopology, Topology


def reply(*texts: str, shard: int = 0, ids: list[str] | None = None) -> pb.DataResponse:
    docs = DocList[TextDoc]([TextDoc(id=(ids[i] if ids else t), text=t)
                             for i, t in enumerate(texts)])
    return pb.DataResponse(docs=encode_docs(docs), parameters=b'{}',
                           route=[pb.Hop(executor='ex', shard=shard)])


def error_reply(shard: int, type_name='KeyError', message="'doc-7'") -> pb.DataResponse:
    r = reply('input', shard=shard)  # a worker's error reply carries the input docs
    r.error.CopyFrom(pb.ExecutorError(executor='ex', type=type_name, message=message))
    return r


def texts(response: pb.DataResponse) -> list[str]:
    return list(decode_docs(response.docs, TextDoc).text)


def test_a_raising_shard_leaves_the_others_results_and_is_named():
    merged = merge_shards('ex', [(0, reply('a0', 'b0', shard=0)), (1, error_reply(1)),
                                 (2, reply('c2', shard=2))])
    assert not merged.HasField('error')
    assert texts(merged) == ['a0', 'b0', 'c2']  # the failed shard's input docs are not mixed in
    assert list(merged.failed_shards) == ["ex/shard-1: KeyError: 'doc-7'"]
    assert [h.shard for h in merged.route] == [0, 1, 2]  # every shard the request reached


def test_one_shard_answering_is_enough():
    merged = merge_shards('ex', [(0, error_reply(0, 'ValueError', 'bad')),
                                 (1, reply('x', shard=1))])
    assert not merged.HasField('error')
    assert texts(merged) == ['x']
    assert list(merged.failed_shards) == ['ex/shard-0: ValueError: bad']


def test_an_unreachable_shard_is_named_with_its_error_type():
    merged = merge_shards('ex', [(0, reply('x')), (1, ConnectionError('no replica could serve'))])
    assert texts(merged) == ['x']
    assert list(merged.failed_shards) == ['ex/shard-1: ConnectionError: no replica could serve']


def test_every_shard_raising_fails_the_request_with_the_first_error():
    merged = merge_shards('ex', [(0, error_reply(0, 'KeyError', 'first')),
                                 (1, error_reply(1, 'ValueError', 'second'))])
    assert merged.HasField('error')
    assert (merged.error.type, merged.error.message) == ('KeyError', 'first')
    assert list(merged.failed_shards) == ['ex/shard-0: KeyError: first',
                                          'ex/shard-1: ValueError: second']


def test_raising_and_unreachable_shards_fail_with_the_executor_error():
    merged = merge_shards('ex', [(0, ConnectionError('down')), (1, error_reply(1))])
    assert merged.error.type == 'KeyError'
    assert len(merged.failed_shards) == 2


def test_no_shard_reachable_is_a_connection_error_naming_each():
    with pytest.raises(ConnectionError, match=r"every shard failed: ex/shard-0: "
                                              r"ConnectionError: a; ex/shard-1: TimeoutError: b"):
        merge_shards('ex', [(0, ConnectionError('a')), (1, TimeoutError('b'))])


def test_failed_shards_reported_further_in_are_kept():
    inner = reply('x')
    inner.failed_shards.append('inner/shard-1: KeyError: k')  # an external gateway's report
    merged = merge_shards('ex', [(0, inner), (1, reply('y', shard=1))])
    assert list(merged.failed_shards) == ['inner/shard-1: KeyError: k']


def test_shards_reduce_by_id_unless_no_reduce():
    shards = [(0, reply('from-0', ids=['same'])), (1, reply('from-1', ids=['same'], shard=1))]
    assert texts(merge_shards('ex', shards)) == ['from-1']  # one doc, right-hand text wins
    shards = [(0, reply('from-0', ids=['same'])), (1, reply('from-1', ids=['same'], shard=1))]
    concatenated = merge_shards('ex', shards, reduce=False)
    assert texts(concatenated) == ['from-0', 'from-1']
    assert list(decode_docs(concatenated.docs, TextDoc).id) == ['same', 'same']


def test_merge_responses_concatenates_in_order_with_reduce_off():
    branches = [reply('a', 'b', ids=['1', '2']), reply('b2', 'c', ids=['2', '3'])]
    assert texts(merge_responses(branches)) == ['a', 'b2', 'c']
    assert texts(merge_responses(branches, reduce=False)) == ['a', 'b', 'b2', 'c']


class _Pool:
    """Stands in for a shard's ReplicaPool: answers with `outcome`."""

    def __init__(self, outcome):
        self.outcome = outcome

    async def call(self, request):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        from nborch.runtime.router import Served
        response = pb.DataResponse()
        response.CopyFrom(self.outcome)
        del response.route[:]
        return Served(response, 0)

    async def close(self):
        pass


def _run(executors: list[ExecutorTopology], pools: dict[str, list],
         endpoint: str = '/search') -> pb.DataResponse:
    """One request through a gateway over `executors` whose shards answer as `pools` say
    (a reply, an exception, or a pool)."""
    async def main():
        gateway = Gateway(Topology(executors=executors))
        await gateway.close()  # its real channels: the stand-ins answer instead
        for name, node in gateway.nodes.items():
            node.pools = [p if isinstance(p, _Pool) else _Pool(p) for p in pools[name]]
        request = pb.DataRequest(endpoint=endpoint, docs=reply('q').docs, parameters=b'{}')
        return await gateway.process(request)
    return asyncio.run(main())


def test_a_downstream_executor_gets_the_partial_result_and_the_report_goes_on(caplog):
    with caplog.at_level(logging.WARNING, logger='nborch.gateway'):
        out = _run([ExecutorTopology('sharded', [['a:1'], ['b:1']], polling='ALL'),
                    ExecutorTopology('after', [['c:1']], needs=['sharded'])],
                   {'sharded': [reply('from-0'), error_reply(1, 'KeyError', 'gone')],
                    'after': [reply('after')]})
    assert not out.HasField('error') and texts(out) == ['after']
    assert list(out.failed_shards) == ['sharded/shard-1: KeyError: gone']
    assert [(h.executor, h.shard) for h in out.route] == [('sharded', 0), ('sharded', 1),
                                                          ('after', 0)]
    assert "sharded on /search: 1 of 2 shards failed" in caplog.text
    assert 'sharded/shard-1: KeyError: gone' in caplog.text


class _Echo(_Pool):
    """A pass-through joiner that records the docs it was sent."""

    def __init__(self):
        super().__init__(None)
        self.seen: list[list[str]] = []

    async def call(self, request):
        self.seen.append(texts(pb.DataResponse(docs=request.docs)))
        self.outcome = pb.DataResponse(docs=request.docs, parameters=b'{}')
        return await super().call(request)


@pytest.mark.parametrize('no_reduce, expected', [(False, ['from-b']),
                                                 (True, ['from-a', 'from-b'])])
def test_a_join_with_no_reduce_concatenates_its_needs(no_reduce, expected):
    joiner = _Echo()
    out = _run([ExecutorTopology('a', [['a:1']]), ExecutorTopology('b', [['b:1']]),
                ExecutorTopology('join', [['j:1']], needs=['a', 'b'], no_reduce=no_reduce)],
               {'a': [reply('from-a', ids=['d'])], 'b': [reply('from-b', ids=['d'])],
                'join': [joiner]}, endpoint='/')
    assert joiner.seen == [expected]  # what the joiner was sent: merged by id, or both docs
    assert texts(out) == expected


def test_topology_json_carries_no_reduce_and_older_json_defaults_to_reduce():
    topology = Topology(executors=[ExecutorTopology('j', [['h:1']], no_reduce=True)])
    assert Topology.load(topology.to_json()).executors[0].no_reduce is True
    raw = json.loads(topology.to_json())
    del raw['executors'][0]['no_reduce']  # written before the option existed
    assert Topology.load(json.dumps(raw)).executors[0].no_reduce is False
    raw['executors'][0]['no_reduce'] = 'yes'
    with pytest.raises(ValueError, match="executor 'j' has no_reduce='yes'"):
        Topology.load(json.dumps(raw))


@pytest.mark.parametrize('no_reduce, expected', [(False, ['from-1']),
                                                 (True, ['from-0', 'from-1'])])
def test_an_executor_with_no_reduce_concatenates_its_shards(no_reduce, expected):
    out = _run([ExecutorTopology('ex', [['a:1'], ['b:1']], polling='ALL', no_reduce=no_reduce)],
               {'ex': [reply('from-0', ids=['d']), reply('from-1', ids=['d'])]})
    assert texts(out) == expected
