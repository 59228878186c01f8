"""The Executor API without processes."""
import logging

import pytest
from docarray import DocList
from docarray.documents import TextDoc
from docarray.documents.legacy import LegacyDocument

from nborch import Executor, dynamic_batching, requests, write
from nborch.executor import DEFAULT_ENDPOINT, Batching, batching_table, refuse_batched_writes
from nborch.runtime.worker_spec import WorkerSpec


class QueryDoc(TextDoc):
    matches: DocList[TextDoc] = DocList[TextDoc]()


class Indexer(Executor):
    def __init__(self, dim: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim

    @requests(on='/index')
    @write
    def index(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        return docs

    @write
    @requests(on=['/update', '/delete'])
    def change(self, docs: DocList[TextDoc], **kwargs):
        return None

    @requests(on='/search')
    def search(self, docs: DocList[QueryDoc], parameters: dict, **kwargs) -> DocList[QueryDoc]:
        return docs

    @requests
    def other(self, docs, **kwargs):
        return {'seen': len(docs)}

    async def not_an_endpoint(self):
        pass


def test_endpoint_table_lists_every_marked_path():
    assert set(Indexer.endpoints()) == {'/index', '/update', '/delete', '/search', DEFAULT_ENDPOINT}


def test_write_marks_either_order():
    table = Indexer.endpoints()
    assert table['/index'].is_write
    assert table['/update'].is_write and table['/delete'].is_write
    assert not table['/search'].is_write


def test_schemas_come_from_annotations():
    table = Indexer.endpoints()
    assert table['/search'].input_type is QueryDoc
    assert table['/search'].output_type is QueryDoc
    assert table['/index'].input_type is TextDoc
    # unannotated: the reference system's LegacyDocument (tags, text, embedding, ...)
    assert table[DEFAULT_ENDPOINT].input_type is LegacyDocument
    assert table[DEFAULT_ENDPOINT].output_type is LegacyDocument


def test_unknown_endpoint_falls_back_to_default():
    ex = Indexer()
    assert ex.endpoint_for('/whatever').method_name == 'other'
    assert ex.endpoint_for('/search').method_name == 'search'


def test_no_default_means_pass_through():
    class OnlySearch(Executor):
        @requests(on='/search')
        def search(self, docs, **kwargs):
            pass

    assert OnlySearch().endpoint_for('/index') is None


def test_accepted_kwargs_without_var_keyword():
    class Strict(Executor):
        @requests
        def foo(self, docs):
            pass

    assert Strict.endpoints()[DEFAULT_ENDPOINT].accepted_kwargs == frozenset({'self', 'docs'})
    assert Indexer.endpoints()['/search'].accepted_kwargs is None


def test_async_endpoints_are_detected():
    class Async(Executor):
        @requests
        async def foo(self, docs, **kwargs):
            pass

    assert Async.endpoints()[DEFAULT_ENDPOINT].is_async


def test_subclass_overrides_endpoint():
    class Child(Indexer):
        @requests(on='/search')
        def search2(self, docs, **kwargs):
            pass

    assert Child.endpoints()['/search'].method_name == 'search2'
    assert Child.endpoints()['/index'].method_name == 'index'


def test_runtime_args_logger_and_workspace(tmp_path):
    ex = Indexer(dim=4, metas={'name': 'indexer'},
                 runtime_args={'name': 'indexer/shard-1/rep-2', 'replica_id': 2, 'shard_id': 1,
                               'replicas': 3, 'shards': 2, 'workspace': str(tmp_path)})
    assert ex.dim == 4
    assert ex.runtime_args.replica_id == 2 and ex.runtime_args.shards == 2
    assert ex.metas.name == 'indexer' and ex.runtime_args.name == 'indexer/shard-1/rep-2'
    assert isinstance(ex.logger, logging.Logger) and ex.logger.name == 'indexer/shard-1/rep-2'
    assert ex.workspace == str(tmp_path / 'indexer' / '1')  # from metas.name, not the replica's
    assert (tmp_path / 'indexer' / '1').is_dir()


def test_names_default_to_the_class_name_outside_a_deployment():
    ex = Indexer()
    assert ex.metas.name == ex.runtime_args.name == ex.logger.name == 'Indexer'


def test_workspace_is_none_without_one():
    assert Indexer().workspace is None


def test_registered_by_class_name():
    assert Executor.registered('Indexer') is Indexer


def test_requests_rejects_bad_paths():
    with pytest.raises(ValueError, match='endpoint paths'):
        requests(on=['/ok', ''])


class InDoc(TextDoc):
    n: int = 0


class OutDoc(TextDoc):
    score: float = 0.0


def test_request_and_response_schema_take_precedence_over_annotations():
    class Schemas(Executor):
        @requests(on='/bar', request_schema=DocList[InDoc], response_schema=DocList[OutDoc])
        def bar(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
            pass

        @requests(on='/only-in', request_schema=DocList[InDoc])
        def only_in(self, docs, **kwargs):
            pass

        @requests(on='/plain')
        def plain(self, docs: DocList[QueryDoc], **kwargs) -> DocList[OutDoc]:
            pass

    table = Schemas.endpoints()
    assert (table['/bar'].input_type, table['/bar'].output_type) == (InDoc, OutDoc)
    assert (table['/only-in'].input_type, table['/only-in'].output_type) == (InDoc, InDoc)
    assert (table['/plain'].input_type, table['/plain'].output_type) == (QueryDoc, OutDoc)


def test_schemas_are_per_path_of_one_method():
    class TwoPaths(Executor):
        @requests(on='/a', request_schema=DocList[InDoc])
        @requests(on='/b')
        def f(self, docs: DocList[QueryDoc], **kwargs):
            pass

    table = TwoPaths.endpoints()
    assert table['/a'].input_type is InDoc and table['/b'].input_type is QueryDoc


@pytest.mark.parametrize('schema', [InDoc, dict, 'DocList[InDoc]', DocList[InDoc]()])
def test_schemas_must_be_a_doclist_of_a_doc(schema):
    with pytest.raises(TypeError, match=r'request_schema=\.\.\.\) takes DocList\[SomeDoc\]'):
        requests(on='/x', request_schema=schema)
    with pytest.raises(TypeError, match='give DocList\\[InDoc\\]'):
        requests(on='/x', response_schema=InDoc)


def test_dynamic_batching_marks_the_endpoint_in_either_order():
    class Batched(Executor):
        @requests(on='/a')
        @dynamic_batching(preferred_batch_size=8, timeout=200)
        def a(self, docs, **kwargs):
            pass

        @dynamic_batching(preferred_batch_size=2, flush_all=True)
        @requests(on='/b')
        async def b(self, docs, **kwargs):
            pass

        @requests(on='/c')
        @dynamic_batching(preferred_batch_size=2, use_dynamic_batching=False)
        def c(self, docs, **kwargs):
            pass

        @requests(on='/d')
        def d(self, docs, **kwargs):
            pass

    table = Batched.endpoints()
    assert table['/a'].batching == Batching(8, 200.0, False)
    assert table['/b'].batching == Batching(2, 10_000.0, True)  # the reference default: 10 s
    assert table['/c'].batching is None and table['/d'].batching is None


@pytest.mark.parametrize('kwargs, match', [
    ({}, 'preferred_batch_size'), ({'preferred_batch_size': 0}, 'preferred_batch_size'),
    ({'preferred_batch_size': 2.5}, 'preferred_batch_size'),
    ({'preferred_batch_size': True}, 'preferred_batch_size'),
    ({'preferred_batch_size': 4, 'timeout': 0}, 'timeout'),
    ({'preferred_batch_size': 4, 'timeout': '200'}, 'timeout'),
])
def test_dynamic_batching_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dynamic_batching(**kwargs)


def test_batched_writes_refused_for_stateful_executors():
    class BatchedWrite(Executor):
        @requests(on='/index')
        @write
        @dynamic_batching(preferred_batch_size=4)
        def index(self, docs, **kwargs):
            pass

        @requests(on='/search')
        @dynamic_batching(preferred_batch_size=4)
        def search(self, docs, **kwargs):
            pass

    with pytest.raises(ValueError, match=r"idx: stateful=True .* @write endpoint\(s\) /index;"):
        refuse_batched_writes(BatchedWrite, 'idx')
    refuse_batched_writes(Indexer, 'idx')  # writes without batching are fine


@pytest.mark.parametrize('shards, shard, replica, name', [
    (1, 0, 0, 'indexer/rep-0'), (1, 0, 2, 'indexer/rep-2'),
    (3, 1, 0, 'indexer/shard-1/rep-0'), (3, 2, 1, 'indexer/shard-2/rep-1'),
])
def test_each_replica_is_named_as_in_the_reference_system(tmp_path, shards, shard, replica, name):
    spec = WorkerSpec(name='indexer', uses=WorkerSpec.pack_class(Indexer), shards=shards,
                      shard_id=shard, replicas=3, replica_id=replica, workspace=str(tmp_path),
                      uses_with={'dim': 2})
    ex = spec.build_executor()
    assert spec.replica_name == ex.runtime_args.name == ex.logger.name == name
    assert ex.metas.name == 'indexer' and ex.dim == 2
    # The workspace (and what replicas persisted there) keeps the executor's name.
    assert ex.workspace == str(tmp_path / 'indexer' / str(shard))


def test_a_stateful_deployment_refuses_batched_writes_before_starting(tmp_path):
    from nborch import Deployment

    class BatchedIndexer(Executor):
        @requests(on='/index')
        @write
        @dynamic_batching(preferred_batch_size=4)
        def index(self, docs, **kwargs):
            pass

    with pytest.raises(ValueError, match='@dynamic_batching cannot apply to @write endpoint'):
        Deployment(name='idx', uses=BatchedIndexer, replicas=3, stateful=True,
                   workspace=str(tmp_path))
    Deployment(name='idx', uses=BatchedIndexer)  # stateless: batched like any endpoint


class Tunable(Executor):
    @requests(on=['/a', '/b'])
    @dynamic_batching(preferred_batch_size=8)
    def ab(self, docs, **kwargs):
        pass

    @requests(on='/c')
    def c(self, docs, **kwargs):
        pass


def test_uses_dynamic_batching_overrides_by_endpoint_then_by_method():
    table = batching_table(Tunable, {'ab': {'preferred_batch_size': 2, 'timeout': 50},
                                     '/b': {'preferred_batch_size': 3},
                                     '/c': {'preferred_batch_size': 4, 'flush_all': True}})
    assert table == {'/a': Batching(2, 50.0), '/b': Batching(3), '/c': Batching(4, flush_all=True)}
    assert batching_table(Tunable) == {'/a': Batching(8), '/b': Batching(8), '/c': None}
    off = batching_table(Tunable, {'/a': {'preferred_batch_size': 8, 'use_dynamic_batching': False}})
    assert off['/a'] is None and off['/b'] == Batching(8)


@pytest.mark.parametrize('overrides, match', [
    ({'/nope': {'preferred_batch_size': 2}}, r"'/nope' is neither an endpoint nor a method"),
    ({'/a': {'preferred_batch_size': 2, 'custom_metric': len}}, r"\['/a'\] takes a dict of"),
    ({'/a': 4}, r"\['/a'\] takes a dict of"),
    ({'/a': {'timeout': 100}}, r"\['/a'\]\(preferred_batch_size=\.\.\.\)"),
    (['/a'], 'uses_dynamic_batching takes'),
])
def test_uses_dynamic_batching_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        batching_table(Tunable, overrides)


def test_a_deployment_checks_uses_dynamic_batching_before_starting(tmp_path):
    from nborch import Deployment

    with pytest.raises(ValueError, match="'/nope' is neither an endpoint"):
        Deployment(uses=Tunable, uses_dynamic_batching={'/nope': {'preferred_batch_size': 2}})
    with pytest.raises(ValueError, match='@write endpoint'):
        Deployment(uses=Indexer, replicas=3, stateful=True, workspace=str(tmp_path),
                   uses_dynamic_batching={'/index': {'preferred_batch_size': 2}})
    with pytest.raises(ValueError, match='set it where the external executor runs'):
        Deployment(external=True, host='127.0.0.1', port=12345,
                   uses_dynamic_batching={'/a': {'preferred_batch_size': 2}})


def test_custom_metric_needs_a_function():
    with pytest.raises(ValueError, match='use_custom_metric=True\\) needs custom_metric='):
        dynamic_batching(preferred_batch_size=4, use_custom_metric=True)
    assert dynamic_batching(preferred_batch_size=4, custom_metric=len)  # unused unless asked
