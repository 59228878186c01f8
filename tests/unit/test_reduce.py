"""Reduce of shard / predecessor results (the reference page: "Results from ALL shards are reduced")."""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Optional, Set

import numpy as np
import pytest
from docarray import BaseDoc, DocList
from docarray.base_doc import AnyDoc
from docarray.documents import TextDoc

from nborch.runtime import reduce as reduce_module
from nborch.runtime.reduce import SCORE_FIELD, concat_docs, reduce_docs


class ScoredDoc(TextDoc):
    score: float = 0.0


class QueryDoc(TextDoc):
    matches: DocList[ScoredDoc] = DocList[ScoredDoc]()


class PlainQueryDoc(TextDoc):
    """The reference page's QueryDoc: matches without a score."""

    matches: DocList[TextDoc] = DocList[TextDoc]()


class Meta(BaseDoc):
    author: Optional[str] = None
    pages: Optional[int] = None
    keywords: List[str] = []


class RichDoc(BaseDoc):
    title: Optional[str] = None
    count: Optional[int] = None
    tags: List[str] = []
    labels: Set[str] = set()
    info: Dict[str, Any] = {}
    pair: Optional[tuple] = None
    meta: Optional[Meta] = None
    chunks: DocList[TextDoc] = DocList[TextDoc]()


class NeedsTitle(BaseDoc):
    title: str
    extra: int = 7


def ids(docs) -> list[str]:
    return [doc.id for doc in docs]


def snapshot(value: Any) -> Any:
    """A deep, comparable picture of a doc tree, ids included (BaseDoc.__eq__ skips ids)."""
    if isinstance(value, BaseDoc):
        return (type(value).__name__, {k: snapshot(v) for k, v in value.__dict__.items()})
    if isinstance(value, (list, tuple)):
        return [snapshot(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def test_public_names_are_exact():
    assert sorted(reduce_module.__all__) == ['SCORE_FIELD', 'concat_docs', 'reduce_docs']
    assert SCORE_FIELD == 'score'


# --- identity and order --------------------------------------------------------------------


def test_merge_by_id_in_first_occurrence_order():
    a = DocList[TextDoc]([TextDoc(id='a', text='a1'), TextDoc(id='b', text='b1')])
    b = DocList[TextDoc]([TextDoc(id='c', text='c2'), TextDoc(id='a', text='a2')])
    c = DocList[TextDoc]([TextDoc(id='d', text='d3'), TextDoc(id='b'), TextDoc(id='c')])
    out = reduce_docs([a, b, c])
    assert ids(out) == ['a', 'b', 'c', 'd']
    assert [doc.text for doc in out] == ['a2', 'b1', 'c2', 'd3']
    assert out.doc_type is TextDoc


def test_later_results_append_new_docs_in_result_order():
    a = DocList[TextDoc]([TextDoc(id='x')])
    b = DocList[TextDoc]([TextDoc(id='z'), TextDoc(id='y')])
    c = DocList[TextDoc]([TextDoc(id='y'), TextDoc(id='w')])
    assert ids(reduce_docs([a, b, c])) == ['x', 'z', 'y', 'w']
    assert ids(reduce_docs([c, b, a])) == ['y', 'w', 'z', 'x']


def test_duplicate_ids_within_one_result_are_kept():
    a = DocList[TextDoc]([TextDoc(id='d', text='1'), TextDoc(id='d', text='2')])
    b = DocList[TextDoc]([TextDoc(id='d', text='1b')])
    out = reduce_docs([a, b])
    assert ids(out) == ['d', 'd']
    assert [doc.text for doc in out] == ['1b', '2']  # k-th occurrence meets k-th occurrence


# --- field rules -----------------------------------------------------------------------------


def test_right_hand_non_none_scalar_wins():
    a = DocList[RichDoc]([RichDoc(id='1', title='left', count=1)])
    b = DocList[RichDoc]([RichDoc(id='1', title=None, count=2)])
    c = DocList[RichDoc]([RichDoc(id='1', title='right', count=None)])
    out = reduce_docs([a, b, c])
    assert out[0].title == 'right'
    assert out[0].count == 2
    assert reduce_docs([a, b])[0].title == 'left'
    assert reduce_docs([b, a])[0].count == 1


def test_tensor_and_tuple_are_replaced_not_combined():
    left = TextDoc(id='1', embedding=np.zeros(3))
    right = TextDoc(id='1', embedding=np.ones(3))
    out = reduce_docs([DocList[TextDoc]([left]), DocList[TextDoc]([right])])
    assert out[0].embedding.tolist() == [1.0, 1.0, 1.0]
    out = reduce_docs(
        [
            DocList[RichDoc]([RichDoc(id='1', pair=(1, 2))]),
            DocList[RichDoc]([RichDoc(id='1', pair=(3,))]),
        ]
    )
    assert out[0].pair == (3,)


def test_lists_concatenate_sets_unite_dicts_update():
    a = DocList[RichDoc]([RichDoc(id='1', tags=['a', 'b'], labels={'x'}, info={'k': 1, 'a': 0})])
    b = DocList[RichDoc]([RichDoc(id='1', tags=['c'], labels={'y'}, info={'k': 2})])
    c = DocList[RichDoc]([RichDoc(id='1', tags=['b'])])
    out = reduce_docs([a, b, c])
    assert out[0].tags == ['a', 'b', 'c', 'b']
    assert out[0].labels == {'x', 'y'}
    assert out[0].info == {'k': 2, 'a': 0}


def test_nested_doc_merges_recursively():
    a = DocList[RichDoc]([RichDoc(id='1', meta=Meta(author='ann', keywords=['k1']))])
    b = DocList[RichDoc]([RichDoc(id='1', meta=Meta(pages=3, keywords=['k2']))])
    c = DocList[RichDoc]([RichDoc(id='1', meta=None)])
    out = reduce_docs([a, b, c])
    assert out[0].meta.author == 'ann'
    assert out[0].meta.pages == 3
    assert out[0].meta.keywords == ['k1', 'k2']


def test_nested_doclists_merge_by_id():
    a = DocList[RichDoc](
        [RichDoc(id='1', chunks=DocList[TextDoc]([TextDoc(id='c1', text='one'), TextDoc(id='c2')]))]
    )
    b = DocList[RichDoc](
        [RichDoc(id='1', chunks=DocList[TextDoc]([TextDoc(id='c2', text='two'), TextDoc(id='c3')]))]
    )
    out = reduce_docs([a, b])
    assert ids(out[0].chunks) == ['c1', 'c2', 'c3']
    assert [chunk.text for chunk in out[0].chunks] == ['one', 'two', None]


def test_matches_merged_by_id_recursively():
    def query(*matches: PlainQueryDoc) -> DocList[PlainQueryDoc]:
        return DocList[PlainQueryDoc]([PlainQueryDoc(id='q', matches=DocList[TextDoc](matches))])

    shard0 = query(TextDoc(id='m1', text='m1'), TextDoc(id='m2'))
    shard1 = query(TextDoc(id='m2', text='m2'), TextDoc(id='m3'))
    shard2 = query(TextDoc(id='m4'), TextDoc(id='m1', text='m1 again'))
    out = reduce_docs([shard0, shard1, shard2])
    assert ids(out) == ['q']
    assert ids(out[0].matches) == ['m1', 'm2', 'm3', 'm4']
    assert [m.text for m in out[0].matches] == ['m1 again', 'm2', None, None]


def test_doclists_nested_two_levels_merge_with_the_same_rules():
    class Match(TextDoc):
        chunks: DocList[TextDoc] = DocList[TextDoc]()

    class Query(TextDoc):
        matches: DocList[Match] = DocList[Match]()

    def shard(chunk_id: str) -> DocList[Query]:
        match = Match(id='m', chunks=DocList[TextDoc]([TextDoc(id=chunk_id)]))
        return DocList[Query]([Query(id='q', matches=DocList[Match]([match]))])

    out = reduce_docs([shard('c0'), shard('c1'), shard('c0')])
    assert ids(out[0].matches) == ['m']
    assert ids(out[0].matches[0].chunks) == ['c0', 'c1']


def test_none_and_empty_nested_values():
    a = DocList[RichDoc]([RichDoc(id='1')])  # chunks: empty default
    b = DocList[RichDoc]([RichDoc(id='1', chunks=DocList[TextDoc]([TextDoc(id='c')]))])
    assert ids(reduce_docs([a, b])[0].chunks) == ['c']
    assert ids(reduce_docs([b, a])[0].chunks) == ['c']
    assert len(reduce_docs([a, a.__class__([RichDoc(id='1')])])[0].chunks) == 0


# --- ranking ---------------------------------------------------------------------------------


def make_query(qid: str, matches: list[tuple[str, float]]) -> QueryDoc:
    return QueryDoc(
        id=qid, matches=DocList[ScoredDoc]([ScoredDoc(id=m, score=s) for m, s in matches])
    )


def any_query(*matches: AnyDoc) -> AnyDoc:
    return AnyDoc(id='q', matches=DocList[AnyDoc](list(matches)))


def scored(out) -> list[tuple[str, float]]:
    return [(m.id, m.score) for m in out[0].matches]


def test_top_k_equals_brute_force_over_three_shards():
    rng = np.random.default_rng(20240501)
    vectors = rng.normal(size=(3000, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    doc_ids = [f'doc-{i}' for i in range(len(vectors))]
    shard_of = rng.permutation(len(vectors)) % 3
    queries = rng.normal(size=(25, 16))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    k = 10

    def top(query: np.ndarray, members: np.ndarray) -> list[tuple[str, float]]:
        scores = vectors[members] @ query
        best = members[np.argsort(-scores, kind='stable')[:k]]
        return [(doc_ids[i], float(vectors[i] @ query)) for i in best]

    shard_results = []
    for shard in range(3):
        members = np.flatnonzero(shard_of == shard)
        shard_results.append(
            DocList[QueryDoc](
                [make_query(f'q{j}', top(q, members)) for j, q in enumerate(queries)]
            )
        )
    out = reduce_docs(shard_results, limit=k)

    everything = np.arange(len(vectors))
    assert ids(out) == [f'q{j}' for j in range(len(queries))]
    for query_doc, query in zip(out, queries):
        expected = top(query, everything)
        assert [(m.id, m.score) for m in query_doc.matches] == expected
        assert query_doc.matches.doc_type is ScoredDoc


def test_ranking_sorts_descending_and_cuts():
    a = DocList[QueryDoc]([make_query('q', [('a', 0.9), ('b', 0.5), ('c', 0.1)])])
    b = DocList[QueryDoc]([make_query('q', [('d', 0.95), ('e', 0.6), ('f', 0.0)])])
    assert scored(reduce_docs([a, b], limit=4)) == [('d', 0.95), ('a', 0.9), ('e', 0.6), ('b', 0.5)]
    assert len(reduce_docs([a, b], limit=100)[0].matches) == 6
    assert reduce_docs([a, b], limit=0)[0].matches.doc_type is ScoredDoc
    assert len(reduce_docs([a, b], limit=0)[0].matches) == 0


def test_ties_keep_merge_order():
    a = DocList[QueryDoc]([make_query('q', [('a', 0.5), ('b', 0.5)])])
    b = DocList[QueryDoc]([make_query('q', [('c', 0.7), ('d', 0.5)])])
    assert ids(reduce_docs([a, b], limit=3)[0].matches) == ['c', 'a', 'b']
    assert ids(reduce_docs([b, a], limit=3)[0].matches) == ['c', 'd', 'a']


def test_same_match_from_two_shards_counts_once_with_right_hand_score():
    a = DocList[QueryDoc]([make_query('q', [('a', 0.2), ('b', 0.5)])])
    b = DocList[QueryDoc]([make_query('q', [('a', 0.9)])])
    assert scored(reduce_docs([a, b], limit=2)) == [('a', 0.9), ('b', 0.5)]


def test_without_limit_merge_order_is_kept():
    a = DocList[QueryDoc]([make_query('q', [('a', 0.1), ('b', 0.2)])])
    b = DocList[QueryDoc]([make_query('q', [('c', 0.9)])])
    assert ids(reduce_docs([a, b])[0].matches) == ['a', 'b', 'c']


def test_unscored_matches_are_neither_sorted_nor_cut():
    a = DocList[PlainQueryDoc](
        [PlainQueryDoc(id='q', matches=DocList[TextDoc]([TextDoc(id=f'a{i}') for i in range(5)]))]
    )
    b = DocList[PlainQueryDoc](
        [PlainQueryDoc(id='q', matches=DocList[TextDoc]([TextDoc(id=f'b{i}') for i in range(5)]))]
    )
    out = reduce_docs([a, b], limit=3)
    assert ids(out[0].matches) == [f'a{i}' for i in range(5)] + [f'b{i}' for i in range(5)]


def test_partially_scored_matches_are_left_alone():
    class MaybeScored(TextDoc):
        score: Optional[float] = None

    class Query(TextDoc):
        matches: DocList[MaybeScored] = DocList[MaybeScored]()

    def shard(*pairs):
        matches = DocList[MaybeScored]([MaybeScored(id=i, score=s) for i, s in pairs])
        return DocList[Query]([Query(id='q', matches=matches)])

    out = reduce_docs([shard(('a', 0.1), ('b', None)), shard(('c', 0.9))], limit=1)
    assert ids(out[0].matches) == ['a', 'b', 'c']
    out = reduce_docs([shard(('a', 0.1)), shard(('c', 0.9))], limit=1)
    assert ids(out[0].matches) == ['c']


def test_nan_scores_rank_last_and_numpy_scores_count():
    a = any_query(AnyDoc(id='n', score=math.nan), AnyDoc(id='x', score=np.float32(0.5)))
    b = any_query(AnyDoc(id='y', score=np.int64(1)), AnyDoc(id='z', score=0.25))
    out = reduce_docs([DocList[AnyDoc]([a]), DocList[AnyDoc]([b])], limit=4)
    assert ids(out[0].matches) == ['y', 'x', 'z', 'n']


def test_bool_and_string_scores_are_not_scores():
    for bad in (True, '0.9'):
        a = any_query(AnyDoc(id='a', score=0.1), AnyDoc(id='b', score=bad))
        b = any_query(AnyDoc(id='c', score=0.9))
        out = reduce_docs([DocList[AnyDoc]([a]), DocList[AnyDoc]([b])], limit=1)
        assert ids(out[0].matches) == ['a', 'b', 'c']


def test_limit_ranks_matches_of_merged_docs_only():
    a = DocList[QueryDoc](
        [make_query('q', [('a', 0.1), ('b', 0.9)]), make_query('solo', [('s1', 0.1), ('s2', 0.9)])]
    )
    b = DocList[QueryDoc]([make_query('q', [('c', 0.5)])])
    out = reduce_docs([a, b], limit=1)
    assert ids(out) == ['q', 'solo']
    assert ids(out[0].matches) == ['b']
    assert ids(out[1].matches) == ['s1', 's2']  # not merged: returned as the shard sent it


def test_limit_ranks_a_merged_doc_even_if_one_side_has_no_matches():
    a = DocList[QueryDoc]([make_query('q', [('a', 0.1), ('b', 0.9)])])
    b = DocList[QueryDoc]([QueryDoc(id='q', text='from shard 1')])
    out = reduce_docs([a, b], limit=1)
    assert out[0].text == 'from shard 1'
    assert ids(out[0].matches) == ['b']


def test_limit_does_not_cut_top_level_docs():
    a = DocList[ScoredDoc]([ScoredDoc(id=str(i), score=i) for i in range(5)])
    b = DocList[ScoredDoc]([ScoredDoc(id=str(i), score=i) for i in range(5, 10)])
    assert ids(reduce_docs([a, b], limit=2)) == [str(i) for i in range(10)]


@pytest.mark.parametrize('limit', [-1, 1.5, True, '10'])
def test_bad_limit(limit):
    with pytest.raises(ValueError, match=r'invalid limit=.*expected None or an integer >= 0'):
        reduce_docs([DocList[TextDoc]()], limit=limit)


# --- edge inputs ------------------------------------------------------------------------------


def test_no_input_gives_an_empty_anydoc_list():
    out = reduce_docs([])
    assert len(out) == 0
    assert out.doc_type is AnyDoc


def test_only_empty_inputs_give_an_empty_list_of_the_first_type():
    out = reduce_docs([DocList[QueryDoc](), DocList[TextDoc]()])
    assert len(out) == 0
    assert out.doc_type is QueryDoc


def test_single_input_is_returned_unchanged_as_a_copy():
    docs = DocList[QueryDoc](
        [make_query('q', [('b', 0.1), ('a', 0.9), ('c', 0.5)]), QueryDoc(id='r')]
    )
    before = snapshot(docs)
    for out in (reduce_docs([docs]), reduce_docs([docs], limit=1)):
        assert out is not docs
        assert type(out) is type(docs)
        assert snapshot(out) == before
        out.append(QueryDoc(id='new'))
        assert len(docs) == 2


def test_one_empty_shard_is_ignored():
    docs = DocList[QueryDoc]([make_query('q', [('b', 0.1), ('a', 0.9)])])
    out = reduce_docs([DocList[QueryDoc](), docs, DocList[QueryDoc]()], limit=1)
    assert snapshot(out) == snapshot(docs)  # a single non-empty result: nothing to merge
    other = DocList[QueryDoc]([make_query('q', [('c', 0.5)])])
    out = reduce_docs([docs, DocList[QueryDoc](), other], limit=2)
    assert scored(out) == [('a', 0.9), ('c', 0.5)]


def test_schema_comes_from_the_first_non_empty_result():
    text = DocList[TextDoc]([TextDoc(id='1', text='t'), TextDoc(id='2', text='only text')])
    query = DocList[QueryDoc]([make_query('1', [('m', 0.5)]), make_query('3', [('n', 0.4)])])

    out = reduce_docs([DocList[RichDoc](), query, text])
    assert out.doc_type is QueryDoc
    assert ids(out) == ['1', '3', '2']
    assert all(type(doc) is QueryDoc for doc in out)
    assert out[0].text == 't' and ids(out[0].matches) == ['m']
    assert out[2].text == 'only text' and len(out[2].matches) == 0  # rebuilt, default matches

    out = reduce_docs([text, query])
    assert out.doc_type is TextDoc
    assert ids(out) == ['1', '2', '3']
    assert type(out[0]) is TextDoc  # merged into the first doc's type: matches not merged
    assert isinstance(out[2], QueryDoc)  # a QueryDoc is a TextDoc: kept as it is


def test_unrelated_schemas_merge_shared_fields_only():
    rich = DocList[RichDoc]([RichDoc(id='1', title='r', tags=['x'])])
    text = DocList[TextDoc]([TextDoc(id='1', text='t'), TextDoc(id='2', text='t2')])
    with pytest.raises(ValueError, match=r"no field 'title', required by NeedsTitle"):
        reduce_docs([DocList[NeedsTitle]([NeedsTitle(id='1', title='x')]), text])
    out = reduce_docs([rich, text])
    assert out.doc_type is RichDoc
    assert (out[0].title, out[0].tags) == ('r', ['x'])
    assert type(out[1]) is RichDoc and out[1].id == '2' and out[1].title is None


def test_anydoc_results_merge_every_attribute():
    a = DocList[AnyDoc]([AnyDoc(id='1', text='a', tags=['x']), AnyDoc(id='2', only_left=1)])
    b = DocList[AnyDoc]([AnyDoc(id='1', tags=['y'], extra=None, more=3), AnyDoc(id='3', z=0)])
    out = reduce_docs([a, b])
    assert out.doc_type is AnyDoc
    assert ids(out) == ['1', '2', '3']
    assert (out[0].text, out[0].tags, out[0].extra, out[0].more) == ('a', ['x', 'y'], None, 3)
    assert out[1].only_left == 1 and out[2].z == 0


def test_typed_docs_in_an_anydoc_result():
    a = DocList[AnyDoc]([AnyDoc(id='1', text='any', note='n')])
    b = DocList[TextDoc]([TextDoc(id='1', text='typed'), TextDoc(id='2')])
    out = reduce_docs([a, b])
    assert out.doc_type is AnyDoc
    assert (out[0].text, out[0].note) == ('typed', 'n')
    assert type(out[1]) is TextDoc


# --- ownership ---------------------------------------------------------------------------------


def test_inputs_are_not_mutated():
    shard0 = DocList[RichDoc](
        [
            RichDoc(
                id='1',
                tags=['a'],
                labels={'l'},
                info={'k': 0},
                meta=Meta(author='x', keywords=['k']),
                chunks=DocList[TextDoc]([TextDoc(id='c1')]),
            ),
            RichDoc(id='2', title='two'),
        ]
    )
    shard1 = DocList[RichDoc](
        [
            RichDoc(
                id='1',
                title='one',
                tags=['b'],
                labels={'m'},
                info={'k': 1},
                meta=Meta(pages=1, keywords=['j']),
                chunks=DocList[TextDoc]([TextDoc(id='c1', text='t'), TextDoc(id='c2')]),
            )
        ]
    )
    queries = [
        DocList[QueryDoc]([make_query('q', [('a', 0.1), ('b', 0.9)])]),
        DocList[QueryDoc]([make_query('q', [('b', 0.2), ('c', 0.3)])]),
    ]
    inputs = [shard0, shard1, *queries]
    before = [snapshot(docs) for docs in inputs]
    deep = copy.deepcopy(inputs)
    reduce_docs([shard0, shard1])
    reduce_docs(queries, limit=1)
    reduce_docs([queries[1], queries[0]], limit=5)
    assert [snapshot(docs) for docs in inputs] == before
    assert [snapshot(docs) for docs in deep] == before


def test_merged_docs_are_new_and_unmerged_docs_are_shared():
    a = DocList[RichDoc]([RichDoc(id='1', tags=['a']), RichDoc(id='2')])
    b = DocList[RichDoc]([RichDoc(id='1', tags=['b']), RichDoc(id='3')])
    out = reduce_docs([a, b])
    assert out[0] is not a[0] and out[0] is not b[0]
    assert out[0].tags is not a[0].tags
    assert out[1] is a[1]
    assert out[2] is b[1]
    out[0].tags.append('c')
    assert a[0].tags == ['a'] and b[0].tags == ['b']


def test_accepts_any_sequence_and_iterables_of_doclists():
    a = DocList[TextDoc]([TextDoc(id='1')])
    b = DocList[TextDoc]([TextDoc(id='2')])
    assert ids(reduce_docs((a, b))) == ['1', '2']
    assert ids(reduce_docs(iter([a, b]))) == ['1', '2']  # type: ignore[arg-type]


# --- concat_docs (no_reduce) -----------------------------------------------------------------

def test_concat_keeps_every_doc_in_result_order_ids_repeating():
    a = DocList[TextDoc]([TextDoc(id='1', text='a1'), TextDoc(id='2', text='a2')])
    b = DocList[TextDoc]([TextDoc(id='1', text='b1')])
    before = snapshot(a), snapshot(b)
    out = concat_docs([DocList[TextDoc](), a, b])
    assert ids(out) == ['1', '2', '1'] and list(out.text) == ['a1', 'a2', 'b1']
    assert out.doc_type is TextDoc and out[0] is a[0]  # placed as is, not copied
    assert (snapshot(a), snapshot(b)) == before


def test_concat_rebuilds_other_schemas_into_the_first_non_empty_one():
    rich = DocList[RichDoc]([RichDoc(id='1', title='r')])
    text = DocList[TextDoc]([TextDoc(id='1', text='t')])
    out = concat_docs([rich, text])
    assert out.doc_type is RichDoc and [type(d) for d in out] == [RichDoc, RichDoc]
    assert ids(out) == ['1', '1'] and out[1].title is None
    with pytest.raises(ValueError, match=r"no field 'title', required by NeedsTitle"):
        concat_docs([DocList[NeedsTitle]([NeedsTitle(id='1', title='x')]), text])


def test_concat_of_nothing_or_empty_lists():
    assert len(concat_docs([])) == 0 and concat_docs([]).doc_type is AnyDoc
    assert concat_docs([DocList[TextDoc](), DocList[RichDoc]()]).doc_type is TextDoc
