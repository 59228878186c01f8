"""Round-trip, schema-matching and corruption tests of the columnar docs codec.

The core property: for every schema below, ``decode_docs(encode_docs(docs), Cls)`` gives
docs equal to ``docs`` field by field, with the same value types (``ID``, ``NdArrayEmbedding``,
nested ``DocList``...), and ``decode_docs(encode_docs(docs))`` gives the same values in a
class rebuilt from the batch.
"""

from __future__ import annotations

import json
import math
import struct
import time
from typing import Any, Dict, List, Optional

import numpy as np
import pytest
from docarray import BaseDoc, DocList
from docarray.base_doc.doc import BaseDocWithoutId
from docarray.documents import TextDoc
from docarray.typing import ID, AnyTensor, NdArray
from docarray.typing.tensor.embedding.ndarray import NdArrayEmbedding
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nborch.runtime.codec as codec
from nborch.runtime.codec import batch_length, decode_docs, encode_docs

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- schemas ---------------------------------------------------------------------------


class QueryDoc(TextDoc):
    matches: DocList[TextDoc] = DocList[TextDoc]()


class ScoredDoc(TextDoc):
    score: float = 0.0


class RankedQuery(TextDoc):
    matches: DocList[ScoredDoc] = DocList[ScoredDoc]()


class ScalarDoc(BaseDoc):
    count: int = 0
    ratio: float = 0.0
    flag: bool = False
    name: str = ""
    maybe_count: Optional[int] = None
    maybe_ratio: Optional[float] = None
    maybe_flag: Optional[bool] = None
    maybe_name: Optional[str] = None
    blob: Optional[bytes] = None
    big: int = 0


class FallbackDoc(BaseDoc):
    tags: Dict[str, int] = {}
    values: List[float] = []
    anything: Any = None


class Inner(BaseDoc):
    label: str = ""
    weight: float = 0.0


class NestedDoc(BaseDoc):
    title: str = ""
    inner: Optional[Inner] = None


class FloatScore(BaseDoc):
    score: float = 0.0


class TensorDoc(BaseDoc):
    tensor: Optional[AnyTensor] = None
    fixed: Optional[NdArray[4]] = None


# --- strategies ------------------------------------------------------------------------

texts = st.text(max_size=20)
finite_floats = st.floats(allow_nan=False, allow_infinity=True)
any_floats = st.floats(allow_nan=True, allow_infinity=True)
int64s = st.integers(-(2**63), 2**63 - 1)
int32s = st.integers(-(2**31), 2**31 - 1)


@st.composite
def embeddings(draw, dtype=None):
    """None or a 128-d vector; seeded numpy keeps big vectors cheap to generate."""
    if draw(st.booleans()) and draw(st.booleans()):
        return None
    dtype = dtype or draw(st.sampled_from([np.float32, np.float64]))
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1))).random(128).astype(dtype)


urls = st.sampled_from([None, "https://example.com/a.txt", "http://x.org/b?c=d"])


@st.composite
def text_docs(draw, cls=TextDoc, dtype=np.float32, **extra):
    fields = {name: draw(strategy) for name, strategy in extra.items()}
    return cls(
        text=draw(st.none() | texts),
        url=draw(urls),
        embedding=draw(embeddings(dtype)),
        bytes_=draw(st.none() | st.binary(max_size=8)),
        **fields,
    )


def doc_lists(doc_strategy, cls, max_size=6):
    return st.lists(doc_strategy, max_size=max_size).map(DocList[cls])


scalar_docs = st.builds(
    ScalarDoc,
    count=int64s,
    ratio=any_floats,
    flag=st.booleans(),
    name=st.text(st.characters(exclude_categories=())),  # lone surrogates included
    maybe_count=st.none() | int64s,
    maybe_ratio=st.none() | any_floats,
    maybe_flag=st.none() | st.booleans(),
    maybe_name=st.none() | texts,
    blob=st.none() | st.binary(max_size=10),
    big=st.integers(-(2**63), 2**63 - 1) | st.integers(2**63, 2**80),  # beyond int64 too
)

# Values mixed with lists go through docarray protobuf, whose ints are int32.
scalars = st.none() | int32s | finite_floats | texts | st.booleans()
fallback_docs = st.builds(
    FallbackDoc,
    tags=st.dictionaries(texts, int32s, max_size=3),  # docarray protobuf ints are int32
    values=st.lists(finite_floats, max_size=4),
    anything=scalars
    | st.lists(st.integers(-100, 100), max_size=3)
    | st.dictionaries(texts, texts, max_size=2),
)

nested_docs = st.builds(
    NestedDoc,
    title=texts,
    inner=st.none() | st.builds(Inner, label=texts, weight=finite_floats),
)

query_docs = st.builds(
    QueryDoc,
    text=texts,
    embedding=embeddings(np.float32),
    matches=doc_lists(text_docs(), TextDoc, max_size=5),
)

ranked_queries = st.builds(
    RankedQuery,
    text=texts,
    matches=doc_lists(text_docs(ScoredDoc, score=any_floats), ScoredDoc, max_size=5),
)

tensor_dtypes = st.sampled_from(["<f4", ">f8", "<i2", "|u1", "|b1", "<c8"])


@st.composite
def tensor_docs(draw):
    """Tensors that are sometimes None, sometimes ragged, sometimes of mixed dtypes."""
    dtype = draw(tensor_dtypes)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
    ragged = draw(st.booleans())

    def tensor():
        row_shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)) if ragged else shape
        return draw(st.none() | hnp.arrays(dtype, row_shape))

    fixed = draw(st.none() | hnp.arrays(np.float32, 4))
    return TensorDoc(tensor=tensor(), fixed=fixed)


# --- comparison ------------------------------------------------------------------------


def assert_same_value(got: Any, want: Any, where: str) -> None:
    """Equal value *and* type, NaN equal to NaN, -0.0 distinct from 0.0."""
    assert type(got) is type(want) or isinstance(want, BaseDoc | DocList), (where, got, want)
    if isinstance(want, np.ndarray):
        assert (got.shape, got.dtype) == (want.shape, want.dtype), where
        assert np.array_equal(got, want, equal_nan=want.dtype.kind in "fc"), where
    elif isinstance(want, BaseDoc):
        assert_same_doc(got, want, where)
    elif isinstance(want, DocList):
        assert isinstance(got, DocList) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_doc(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert math.copysign(1, got) == math.copysign(1, want), where
        assert got == want or (math.isnan(got) and math.isnan(want)), (where, got, want)
    elif isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for key in want:
            assert_same_value(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_value(g, w, f"{where}[{i}]")
    else:
        assert got == want, (where, got, want)


def assert_same_doc(got: BaseDoc, want: BaseDoc, where: str = "doc", fields=None) -> None:
    assert got.id == want.id and type(got.id) is ID, where
    for name in fields or type(want).model_fields:
        assert_same_value(getattr(got, name), getattr(want, name), f"{where}.{name}")


def assert_round_trip(docs: DocList, cls: type) -> None:
    data = encode_docs(docs)
    assert batch_length(data) == len(docs)
    typed = decode_docs(data, cls)
    assert typed.doc_type is cls and all(type(d) is cls for d in typed)
    assert len(typed) == len(docs)
    for i, (got, want) in enumerate(zip(typed, docs)):
        assert_same_doc(got, want, f"typed[{i}]")
    untyped = decode_docs(data)
    assert untyped.doc_type.__name__ == cls.__name__
    assert list(untyped.doc_type.model_fields) == list(cls.model_fields)
    for i, (got, want) in enumerate(zip(untyped, docs)):
        assert_same_doc(got, want, f"untyped[{i}]")


# --- round trips -----------------------------------------------------------------------


@FAST
@given(doc_lists(text_docs(dtype=None), TextDoc, max_size=8))
def test_text_docs_round_trip(docs):
    # dtype=None mixes float32 and float64 rows: the field then falls back to protobuf.
    assert_round_trip(docs, TextDoc)


@FAST
@given(doc_lists(scalar_docs, ScalarDoc, max_size=8))
def test_scalar_docs_round_trip(docs):
    assert_round_trip(docs, ScalarDoc)


@FAST
@given(doc_lists(fallback_docs, FallbackDoc))
def test_dict_and_list_fields_fall_back_to_protobuf(docs):
    assert_round_trip(docs, FallbackDoc)


@FAST
@given(doc_lists(nested_docs, NestedDoc))
def test_nested_doc_round_trip(docs):
    assert_round_trip(docs, NestedDoc)


@FAST
@given(doc_lists(query_docs, QueryDoc, max_size=4))
def test_query_docs_with_matches_round_trip(docs):
    assert_round_trip(docs, QueryDoc)


@FAST
@given(doc_lists(ranked_queries, RankedQuery, max_size=4))
def test_scored_matches_round_trip(docs):
    assert_round_trip(docs, RankedQuery)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc_lists(tensor_docs(), TensorDoc, max_size=5))
def test_tensors_with_none_ragged_and_odd_dtypes_round_trip(docs):
    assert_round_trip(docs, TensorDoc)


def test_uniform_embeddings_travel_as_one_matrix_of_ndarray_rows():
    docs = DocList[TextDoc](
        TextDoc(text=str(i), embedding=np.full(128, i, np.float32)) for i in range(10)
    )
    docs[3].embedding = None
    data = encode_docs(docs)
    assert len(data) < 10 * 128 * 4 + 1000  # raw float32s plus a small header: no per-row framing
    out = decode_docs(data, TextDoc)
    assert out[3].embedding is None
    for i in (0, 9):
        assert isinstance(out[i].embedding, NdArray) and type(out[i].embedding) is NdArrayEmbedding
        assert out[i].embedding.shape == (128,) and (out[i].embedding == i).all()
    out[0].embedding += 1  # rows are writable
    assert (out[0].embedding == 1).all() and (out[1].embedding == 1).all()


def test_docs_of_mixed_classes_share_one_batch():
    mixed = [
        TextDoc(text="a"),
        ScoredDoc(text="b", score=2.5),
        QueryDoc(text="c", matches=[TextDoc()]),
    ]
    out = decode_docs(encode_docs(mixed), ScoredDoc)
    assert [d.text for d in out] == ["a", "b", "c"]
    assert [d.score for d in out] == [0.0, 2.5, 0.0]  # absent in a row -> the default
    assert [d.id for d in out] == [d.id for d in mixed]


# --- schema matching -------------------------------------------------------------------


def test_text_docs_decode_into_query_docs_with_fresh_default_matches():
    docs = DocList[TextDoc](
        [TextDoc(text="a", embedding=np.ones(128, np.float32)), TextDoc(text="b")]
    )
    out = decode_docs(encode_docs(docs), QueryDoc)
    assert out.doc_type is QueryDoc
    for got, want in zip(out, docs):
        assert_same_doc(got, want, fields=TextDoc.model_fields)
        assert isinstance(got.matches, DocList) and len(got.matches) == 0
    out[0].matches.append(TextDoc(text="m"))
    assert len(out[1].matches) == 0  # each doc got its own default, not a shared list


def test_query_docs_decode_into_text_docs_dropping_matches():
    queries = DocList[QueryDoc]([QueryDoc(text="q", matches=[TextDoc(text="m")])])
    out = decode_docs(encode_docs(queries), TextDoc)
    assert type(out[0]) is TextDoc and "matches" not in out[0].__dict__
    assert_same_doc(out[0], queries[0], fields=TextDoc.model_fields)


def test_scored_matches_decode_into_plain_text_matches():
    query = RankedQuery(text="q", matches=[ScoredDoc(text="m", score=0.5)])
    out = decode_docs(encode_docs([query]), QueryDoc)
    match = out[0].matches[0]
    assert type(match) is TextDoc and match.id == query.matches[0].id and match.text == "m"


def test_missing_required_field_is_a_clear_error():
    class NeedsScore(BaseDoc):
        score: float

    with pytest.raises(ValueError, match="score"):
        decode_docs(encode_docs([TextDoc(text="a")]), NeedsScore)


def test_values_of_another_type_are_validated_against_the_target():
    class IntScore(BaseDoc):
        score: int

    class StrScore(BaseDoc):
        score: str

    out = decode_docs(encode_docs([IntScore(score=3)]), FloatScore)
    assert out[0].score == 3.0 and type(out[0].score) is float
    with pytest.raises(ValueError):
        decode_docs(encode_docs([StrScore(score="high")]), FloatScore)


def test_untyped_decode_rebuilds_one_class_per_schema():
    a = decode_docs(encode_docs([QueryDoc(text="x", matches=[TextDoc(text="m")])]))
    b = decode_docs(encode_docs([QueryDoc(text="y")]))  # no matches at all, no embedding
    assert a.doc_type is b.doc_type and a.doc_type.__name__ == "QueryDoc"
    assert isinstance(a[0].matches, DocList) and a[0].matches[0].text == "m"
    assert a[0].matches.doc_type is b[0].matches.doc_type
    a[0].matches.extend(b[0].matches)  # a gateway merging shard results


# --- empty, length, corruption ---------------------------------------------------------


@pytest.mark.parametrize("empty", [[], DocList[TextDoc](), DocList[QueryDoc]()])
def test_empty_batch(empty):
    data = encode_docs(empty)
    assert batch_length(data) == 0
    assert len(decode_docs(data)) == 0
    out = decode_docs(data, TextDoc)
    assert len(out) == 0 and out.doc_type is TextDoc


def test_batch_length_reads_only_the_prefix():
    data = encode_docs([TextDoc(text=str(i)) for i in range(7)])
    assert batch_length(data) == 7
    assert batch_length(data[:30]) == 7  # the columns need not even be there


def test_public_names_are_exact():
    assert sorted(codec.__all__) == ["batch_length", "decode_docs", "encode_docs"]


def test_unencodable_value_names_its_field():
    import datetime

    class WhenDoc(BaseDoc):
        when: Optional[datetime.datetime] = None

    with pytest.raises(ValueError, match="when"):
        encode_docs([WhenDoc(when=datetime.datetime(2024, 1, 1))])


def test_encode_refuses_non_docs():
    with pytest.raises(TypeError):
        encode_docs([{"text": "a"}])


SAMPLE = encode_docs(
    [
        QueryDoc(text="q", embedding=np.ones(128, np.float32), matches=[TextDoc(text="m")]),
        QueryDoc(),
    ]
)


@pytest.mark.parametrize("cut", [0, 3, 10, 16, 40, len(SAMPLE) // 2, len(SAMPLE) - 1])
def test_truncated_batch_raises_value_error(cut):
    with pytest.raises(ValueError, match="corrupt"):
        decode_docs(SAMPLE[:cut])


@pytest.mark.parametrize(
    "bad",
    [
        b"XXXX" + SAMPLE[4:],  # magic
        SAMPLE[:4] + struct.pack("<H", 99) + SAMPLE[6:],  # version
        SAMPLE + b"\0",  # trailing bytes
        SAMPLE[:16] + b"[" + SAMPLE[17:],  # header JSON
        b"",
    ],
)
def test_malformed_batch_raises_value_error(bad):
    with pytest.raises(ValueError, match="corrupt"):
        decode_docs(bad)
    if len(bad) < 16 or bad[:4] != b"NBDC":
        with pytest.raises(ValueError):
            batch_length(bad)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_damaged_batch_decodes_or_raises_value_error(data):
    raw = bytearray(SAMPLE)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode_docs(bytes(raw), QueryDoc)
        decode_docs(bytes(raw))
    except ValueError:
        pass


# --- hostile row counts: a claimed count is checked against the bytes before any loop ---


def _frame(n_rows: int, header: dict, buffers: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<4sHHII", b"NBDC", 1, 0, n_rows, len(raw)) + raw + buffers


MEGABYTE = 1 << 20
CLAIMED = 1_000_000
_ID_NONE = {"name": "id", "kind": "none"}
HOSTILE_CLAIMS = {
    # 1 MB of bytes no column uses: nothing backs the rows
    "no columns, padding": _frame(CLAIMED, {"doc": "TextDoc", "cols": [], "bufs": [MEGABYTE]},
                                  bytes(MEGABYTE)),
    "only None columns, padding": _frame(
        CLAIMED, {"doc": "TextDoc", "cols": [_ID_NONE, {"name": "text", "kind": "none"}],
                  "bufs": [MEGABYTE]}, bytes(MEGABYTE)),
    # a 1 MB header (no buffers at all)
    "padded header": _frame(CLAIMED, {"doc": "TextDoc", "cols": [], "bufs": [],
                                      "pad": " " * MEGABYTE}),
    # a column the target lacks holds 10 rows, not a million
    "skipped column holds fewer rows": _frame(
        CLAIMED, {"doc": "TextDoc", "cols": [_ID_NONE, {"name": "n", "kind": "int", "data": 0}],
                  "bufs": [80 + MEGABYTE]}, bytes(80 + MEGABYTE)),
    "skipped column's mask is short": _frame(
        CLAIMED, {"doc": "TextDoc", "cols": [{"name": "x", "kind": "bool", "data": 0,
                                             "mask": 1}], "bufs": [1, MEGABYTE]},
        b"\1" + bytes(MEGABYTE)),
    # a decoded column holds 10 ids
    "decoded column holds fewer rows": _frame(
        CLAIMED, {"doc": "TextDoc", "cols": [{"name": "id", "kind": "json", "data": 0}],
                  "bufs": [MEGABYTE]}, json.dumps([str(i) for i in range(10)]).encode().ljust(
                      MEGABYTE)),
}


@pytest.mark.parametrize("name", HOSTILE_CLAIMS)
@pytest.mark.parametrize("target", [TextDoc, None])
def test_a_megabyte_claiming_a_million_docs_is_refused_at_once(name, target):
    data = HOSTILE_CLAIMS[name]
    assert len(data) < 2 * MEGABYTE and batch_length(data) == CLAIMED
    started = time.process_time()
    with pytest.raises(ValueError, match="corrupt nborch docs batch"):
        decode_docs(data, target)
    assert time.process_time() - started < 0.5  # it cost a worker 32 s of CPU


def test_a_few_rows_without_data_still_decode():
    class Empty(BaseDocWithoutId):
        note: Optional[str] = None

    docs = decode_docs(encode_docs(DocList[Empty]([Empty() for _ in range(300)])), Empty)
    assert len(docs) == 300 and all(d.note is None for d in docs)


@settings(max_examples=80, deadline=None)
@given(doc_lists(text_docs(dtype=None), TextDoc, max_size=6), st.integers(1, 2**32 - 1),
       st.sampled_from([TextDoc, QueryDoc, None]))
def test_an_inflated_row_count_raises_value_error(docs, extra, target):
    assume(len(docs) > 0)  # docs carry an id: some column backs the true count
    raw = bytearray(encode_docs(docs))
    n_rows = min(len(docs) + extra, 2**32 - 1)
    struct.pack_into("<I", raw, 8, n_rows)
    started = time.process_time()
    with pytest.raises(ValueError):
        decode_docs(bytes(raw), target)
    assert time.process_time() - started < 0.5
