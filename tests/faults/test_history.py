"""The history checker on hand-made histories: good ones pass, each kind of bad one fails."""
from __future__ import annotations

import random

import pytest

from tests.faults.history import (ACKED, FAILED, INDETERMINATE, CounterModel, LogModel, Op,
                                  check_history, check_linearizable, check_replicas)

W, R = Op.write, Op.read


def kinds(report) -> list[str]:
    return sorted({a.kind for a in report.anomalies})


def sequential(n: int) -> list[Op]:
    """n writes one after another, each followed by a read of the log so far."""
    ops, log = [], []
    for i in range(n):
        ops.append(W(f'w{i}', 10 * i, 10 * i + 1))
        log.append(f'w{i}')
        ops.append(R(tuple(log), 10 * i + 2, 10 * i + 3))
    return ops


def test_a_sequential_history_on_identical_replicas_passes():
    ops = sequential(5)
    report = check_history(ops, [[f'w{i}' for i in range(5)]] * 3)
    assert report.ok, report.anomalies
    # reads_checked counts the clients' reads, not the final read of the replicas' log
    assert (report.writes_checked, report.acked, report.reads_checked) == (5, 5, 5)


def test_concurrent_writes_may_land_in_either_order_and_reads_in_between_see_either():
    ops = [W('a', 0, 10), W('b', 1, 9), R(('b',), 2, 8), R(('b', 'a'), 3, 11)]
    assert check_history(ops, [['b', 'a']] * 3).ok
    assert not check_history(ops, [['a', 'b']] * 3).ok  # the read saw 'b' alone first


def test_an_acknowledged_write_lost_on_one_replica_is_reported():
    ops = [W('a', 0, 1), W('b', 2, 3)]
    report = check_history(ops, [['a', 'b'], ['a', 'b'], ['a']])
    assert 'lost' in kinds(report) and 'diverged' in kinds(report)
    assert any("lacks acknowledged write 'b'" in a.detail for a in report.anomalies)


def test_an_acknowledged_write_lost_everywhere_is_reported_by_both_checks():
    report = check_history([W('a', 0, 1), W('b', 2, 3)], [['a']] * 3)
    assert kinds(report) == ['lost', 'not-linearizable']


def test_a_duplicate_apply_is_reported_even_when_every_replica_agrees():
    report = check_history([W('a', 0, 1), W('b', 2, 3)], [['a', 'b', 'a']] * 3)
    assert 'duplicate' in kinds(report) and 'not-linearizable' in kinds(report)


def test_an_indeterminate_write_may_be_absent_or_present_once_but_not_twice():
    ops = [W('a', 0, 1), W('x', 2, outcome=INDETERMINATE), W('b', 3, 4)]
    assert check_history(ops, [['a', 'b']] * 3).ok
    assert check_history(ops, [['a', 'x', 'b']] * 3).ok
    assert check_history(ops, [['a', 'b', 'x']] * 3).ok  # it may take effect later
    assert 'duplicate' in kinds(check_history(ops, [['a', 'x', 'b', 'x']] * 3))
    assert not check_history(ops, [['x', 'a', 'b']] * 3).ok  # not before it was sent


def test_a_write_reordered_on_one_replica_is_reported():
    ops = [W('a', 0, 5), W('b', 0, 5)]  # concurrent: either order is fine, but one for all
    assert check_history(ops, [['b', 'a']] * 3).ok
    report = check_history(ops, [['a', 'b'], ['b', 'a'], ['a', 'b']])
    assert kinds(report) == ['diverged']
    assert 'differ at position 0' in report.anomalies[0].detail


def test_an_order_against_real_time_is_reported():
    # 'a' was acknowledged before 'b' was sent, yet every replica applied 'b' first.
    report = check_history([W('a', 0, 1), W('b', 2, 3)], [['b', 'a']] * 3)
    assert kinds(report) == ['not-linearizable']


def test_a_stale_read_is_reported():
    # 'b' was acknowledged before the read was sent; the read does not show it.
    ops = [W('a', 0, 1), W('b', 2, 3), R(('a',), 4, 5)]
    report = check_history(ops, [['a', 'b']] * 3)
    assert kinds(report) == ['not-linearizable']
    assert "read -> ['a']" in report.anomalies[0].detail


def test_a_read_from_the_future_or_of_another_log_is_reported():
    future = [W('a', 0, 1), R(('a', 'b'), 2, 3), W('b', 4, 5)]  # saw 'b' before it was sent
    assert not check_history(future, [['a', 'b']] * 3).ok
    other = [W('a', 0, 1), W('b', 0, 1), R(('b',), 2, 3)]  # not a prefix of the final log
    assert not check_history(other, [['a', 'b']] * 3).ok


def test_reads_that_go_back_in_time_are_reported():
    # Each read alone fits, but the second, sent after the first returned, sees less.
    ops = [W('a', 0, 10), R(('a',), 1, 2), R((), 3, 4)]
    assert not check_history(ops, [['a']] * 3).ok
    assert check_history([W('a', 0, 10), R((), 1, 2), R(('a',), 3, 4)], [['a']] * 3).ok


def test_a_phantom_and_a_refused_write_that_was_applied_are_reported():
    ops = [W('a', 0, 1), W('no', 2, outcome=FAILED)]
    assert check_history(ops, [['a']] * 3).ok
    assert 'failed-applied' in kinds(check_history(ops, [['a', 'no']] * 3))
    assert 'phantom' in kinds(check_history(ops, [['a', 'ghost']] * 3))


def test_write_values_must_be_unique():
    with pytest.raises(ValueError, match='unique'):
        check_replicas([W('a', 0, 1), W('a', 2, 3)], [['a']])


def test_the_counter_model_accepts_the_classic_concurrent_read_and_rejects_a_stale_one():
    ops = [W('a', 0, 10), R(0, 1, 2), R(1, 3, 4)]
    assert check_linearizable(ops, CounterModel()).ok
    stale = [W('a', 0, 1), W('b', 2, 3), R(1, 4, 5)]
    verdict = check_linearizable(stale, CounterModel())
    assert not verdict.ok and stale[verdict.stuck_on].kind == 'read'


def test_the_search_returns_an_order_that_respects_real_time_and_the_model():
    rng = random.Random(7)
    ops, log, clock = [], [], 0.0
    for i in range(200):  # overlapping intervals; each op takes effect at a point inside
        start = clock + rng.random()
        point = start + rng.random()
        end = point + rng.random() * 3
        if rng.random() < 0.6:
            ops.append((point, W(f'w{i}', start, end)))
            log.append((point, f'w{i}'))
        else:
            ops.append((point, None, start, end))
        clock = start
    final = [v for _, v in sorted(log)]
    history = []
    for item in ops:
        if item[1] is None:
            point, _, start, end = item
            history.append(R(tuple(v for p, v in sorted(log) if p < point), start, end))
        else:
            history.append(item[1])
    verdict = check_linearizable(history, LogModel(final))
    assert verdict.ok
    position = {i: k for k, i in enumerate(verdict.order)}
    for i, a in enumerate(history):
        for j, b in enumerate(history):
            if a.completed < b.invoked:
                assert position[i] < position[j]
    assert check_history(history, [final] * 3).ok
    # One write moved later in the final log breaks it.
    moved = final[1:4] + final[:1] + final[4:]
    assert not check_history(history, [moved] * 3).ok


def test_outcomes_are_validated():
    with pytest.raises(ValueError, match='outcome'):
        W('a', 0, 1, outcome='maybe')
    assert W('a', 0, 1, outcome=INDETERMINATE).completed == float('inf')
    assert W('a', 0, 1, outcome=ACKED).completed == 1
