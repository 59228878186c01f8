"""Polling table and shard choice (reference page "Customize polling behaviors")."""

from __future__ import annotations

import json

import pytest

from nborch.runtime import polling as polling_module
from nborch.runtime.polling import BUILTIN_POLLING, Polling, PollingTable, choose_shards

ANY, ALL = Polling.ANY, Polling.ALL
OTHER_ENDPOINTS = ('/', '/custom', '/default', '/foo/bar', 'search')


def test_public_names_are_exact():
    assert sorted(polling_module.__all__) == [
        'BUILTIN_POLLING',
        'Polling',
        'PollingTable',
        'choose_shards',
    ]


# --- built-in defaults -------------------------------------------------------------------


@pytest.mark.parametrize('spec', [None, 'ANY', Polling.ANY, {}, '{}'])
def test_not_given_or_any_keeps_builtins(spec):
    table = PollingTable.parse(spec)
    assert table.for_endpoint('/search') is ALL
    assert table.for_endpoint('/index') is ANY
    assert table.for_endpoint('/update') is ANY
    assert table.for_endpoint('/delete') is ANY
    for endpoint in OTHER_ENDPOINTS:
        assert table.for_endpoint(endpoint) is ANY


@pytest.mark.parametrize('spec', ['ALL', Polling.ALL, {'*': 'ALL'}, '{"*": "ALL"}'])
def test_plain_all_sets_the_default_but_not_the_builtins(spec):
    # As the reference system's head runtime: a plain value fills the defaultdict behind
    # {'/search': ALL, '/index': ANY}; it does not override them.
    table = PollingTable.parse(spec)
    assert table.for_endpoint('/search') is ALL
    assert table.for_endpoint('/index') is ANY
    assert table.for_endpoint('/update') is ANY
    assert table.for_endpoint('/delete') is ANY
    for endpoint in OTHER_ENDPOINTS:
        assert table.for_endpoint(endpoint) is ALL


def test_reference_table_shards_2_posting_to_root():
    # | shards=2 | polling='ALL' -> both shards | polling='ANY' -> one shard |
    assert choose_shards(PollingTable.parse('ALL').for_endpoint('/'), 2, rotation=0) == (0, 1)
    assert choose_shards(PollingTable.parse('ANY').for_endpoint('/'), 2, rotation=0) == (0,)


def test_builtins_constant():
    assert dict(BUILTIN_POLLING) == {
        '/search': ALL,
        '/index': ANY,
        '/update': ANY,
        '/delete': ANY,
    }


# --- dict form -----------------------------------------------------------------------------


PAGE_EXAMPLE = {'/custom': 'ALL', '/search': 'ANY', '*': 'ANY'}


@pytest.mark.parametrize('spec', [PAGE_EXAMPLE, json.dumps(PAGE_EXAMPLE)])
def test_reference_page_example(spec):
    table = PollingTable.parse(spec)
    assert table.for_endpoint('/index') is ANY  # the default value is not changed here
    assert table.for_endpoint('/search') is ANY  # explicitly set
    assert table.for_endpoint('/custom') is ALL
    assert table.for_endpoint('/other') is ANY  # '*' catches the rest
    assert table.for_endpoint('/update') is ANY
    assert table.for_endpoint('/delete') is ANY


def test_explicit_entries_win_over_builtins():
    table = PollingTable.parse(
        {'/index': 'ALL', '/search': 'ANY', '/update': 'ALL', '/delete': 'ALL'}
    )
    assert table.for_endpoint('/index') is ALL
    assert table.for_endpoint('/search') is ANY
    assert table.for_endpoint('/update') is ALL
    assert table.for_endpoint('/delete') is ALL
    assert table.for_endpoint('/other') is ANY


def test_wildcard_default_and_missing_wildcard():
    assert PollingTable.parse({'*': 'ALL', '/x': 'ANY'}).for_endpoint('/y') is ALL
    assert PollingTable.parse({'*': 'ALL', '/x': 'ANY'}).for_endpoint('/x') is ANY
    assert PollingTable.parse({'/x': 'ALL'}).for_endpoint('/y') is ANY


def test_dict_values_may_be_members_and_any_case():
    table = PollingTable.parse({'/a': Polling.ALL, '/b': ' all ', '/c': 'Any', '*': 'aLL'})
    assert table.for_endpoint('/a') is ALL
    assert table.for_endpoint('/b') is ALL
    assert table.for_endpoint('/c') is ANY
    assert table.for_endpoint('/d') is ALL


def test_json_string_with_whitespace_and_case():
    table = PollingTable.parse('  {"/custom": "all", "*": "Any"}\n')
    assert table.for_endpoint('/custom') is ALL
    assert table.for_endpoint('/x') is ANY


def test_endpoints_match_exactly():
    table = PollingTable.parse({'/custom': 'ALL'})
    assert table.for_endpoint('/custom') is ALL
    assert table.for_endpoint('custom') is ANY
    assert table.for_endpoint('/custom/') is ANY
    assert table.for_endpoint('/CUSTOM') is ANY


# --- plain values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('spec', 'default'),
    [
        ('ANY', ANY),
        ('any', ANY),
        ('Any', ANY),
        ('  any\t', ANY),
        ('ALL', ALL),
        ('all', ALL),
        ('aLl', ALL),
        (' ALL\n', ALL),
        (Polling.ANY, ANY),
        (Polling.ALL, ALL),
    ],
)
def test_plain_values(spec, default):
    table = PollingTable.parse(spec)
    assert table.default is default
    assert table.explicit == ()
    assert table.for_endpoint('/anything') is default


def test_parse_is_idempotent_and_tables_compare_by_value():
    table = PollingTable.parse({'/b': 'ALL', '/a': 'ANY', '*': 'ALL'})
    assert PollingTable.parse(table) is table
    same = PollingTable.parse('{"/a": "any", "/b": "all", "*": "all"}')
    assert same == table
    assert hash(same) == hash(table)
    assert table.explicit == (('/a', ANY), ('/b', ALL))
    assert PollingTable.parse('all') == PollingTable(default=ALL)
    assert PollingTable.parse('all') != PollingTable.parse('any')


def test_table_is_frozen():
    table = PollingTable.parse('ALL')
    with pytest.raises(AttributeError):
        table.default = ANY  # type: ignore[misc]


def test_repr_is_readable():
    assert repr(PollingTable.parse({'/x': 'ALL'})) == (
        "PollingTable(default=<Polling.ANY: 'ANY'>, explicit=(('/x', <Polling.ALL: 'ALL'>),))"
    )


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('spec', 'fragment'),
    [
        ('SOME', "invalid polling 'SOME'"),
        ('', "invalid polling ''"),
        ('ALL_ASYNC', "invalid polling 'ALL_ASYNC'"),
        ('"ALL"', 'invalid polling \'"ALL"\''),
        ({'/x': 'MAYBE'}, "invalid polling for endpoint '/x': 'MAYBE'"),
        ({'*': 'SOME'}, "invalid polling for endpoint '*': 'SOME'"),
        ({'/x': 1}, "invalid polling for endpoint '/x': 1"),
        ({'/x': None}, "invalid polling for endpoint '/x': None"),
        ('{"/x": "MAYBE"}', "invalid polling for endpoint '/x': 'MAYBE'"),
        ('{"/x": "ALL",}', 'malformed JSON'),
        ("{'/x': 'ALL'}", 'malformed JSON'),
        ('{', 'malformed JSON'),
        ({1: 'ALL'}, 'invalid polling endpoint 1 of type int'),
        ({('/a',): 'ALL'}, "invalid polling endpoint ('/a',) of type tuple"),
        ({'': 'ALL'}, "invalid polling endpoint ''"),
        ({'   ': 'ALL'}, "invalid polling endpoint '   '"),
        ({' /x': 'ALL'}, "invalid polling endpoint ' /x'"),
        ('{"": "ALL"}', "invalid polling endpoint ''"),
        (3, 'invalid polling 3 of type int'),
        (['ALL'], "invalid polling ['ALL'] of type list"),
    ],
)
def test_errors_name_the_bad_value(spec, fragment):
    with pytest.raises(ValueError) as info:
        PollingTable.parse(spec)
    message = str(info.value)
    assert fragment in message
    assert "'ANY'" in message or "'/search'" in message  # names what is allowed
    assert '\n' not in message


def test_plain_error_lists_allowed_forms():
    with pytest.raises(ValueError, match=r"expected 'ANY' or 'ALL' \(any case\), or a dict"):
        PollingTable.parse('SOME')


# --- choose_shards -----------------------------------------------------------------------------


@pytest.mark.parametrize('shards', [1, 2, 3, 7])
def test_all_goes_to_every_shard_in_order(shards):
    for rotation in (0, 1, 5, -3):
        assert choose_shards(ALL, shards, rotation) == tuple(range(shards))


def test_any_rotates_over_shards():
    assert [choose_shards(ANY, 3, r) for r in range(7)] == [
        (0,),
        (1,),
        (2,),
        (0,),
        (1,),
        (2,),
        (0,),
    ]
    assert choose_shards(ANY, 3, -1) == (2,)
    assert choose_shards(ANY, 3, 10**12 + 1) == (2,)


def test_one_shard_is_always_shard_zero():
    for rotation in range(5):
        assert choose_shards(ANY, 1, rotation) == (0,)
        assert choose_shards(ALL, 1, rotation) == (0,)


@pytest.mark.parametrize('shards', [0, -1, 1.5, True, '2', None])
def test_choose_shards_rejects_bad_counts(shards):
    with pytest.raises(ValueError, match=r'invalid shards=.*expected an integer >= 1'):
        choose_shards(ANY, shards, 0)  # type: ignore[arg-type]


def test_choose_shards_rejects_a_non_member():
    with pytest.raises(ValueError, match="invalid polling 'ALL'"):
        choose_shards('ALL', 2, 0)  # type: ignore[arg-type]
