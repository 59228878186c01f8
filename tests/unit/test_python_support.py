"""The page's nested document type works on every supported Python (3.11–3.13).

docarray 0.41 fails to define a `DocList[...]` field on Python 3.12+ (its DocList[X] is a
types.GenericAlias that typing subscribes again); CI runs this file on 3.11, 3.12 and 3.13.
"""
from __future__ import annotations

import sys

from docarray import DocList
from docarray.documents import TextDoc

from nborch.runtime.codec import decode_docs, encode_docs


def test_supported_interpreter():
    assert sys.version_info >= (3, 11)


def test_a_nested_doclist_field_defines_and_round_trips():
    class Match(TextDoc):
        score: float = 0.0

    class QueryDoc(TextDoc):  # the reference page's shape
        matches: DocList[Match] = DocList[Match]()

    query = QueryDoc(text='q', matches=DocList[Match]([Match(text='a', score=0.5),
                                                        Match(text='b', score=0.25)]))
    back = decode_docs(encode_docs(DocList[QueryDoc]([query])), QueryDoc)
    assert [m.text for m in back[0].matches] == ['a', 'b']
    assert [m.score for m in back[0].matches] == [0.5, 0.25]
