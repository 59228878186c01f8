"""Refused peer messages are counted per reason; the log gets one line per reason per period."""
from __future__ import annotations

import logging

from nborch.runtime.consensus.drops import LOG_EVERY_S, DropCounter


def test_drops_are_counted_and_logged_sparingly(caplog):
    now = [100.0]
    drops = DropCounter(clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger='nborch.raft'):
        for _ in range(1000):
            drops.drop('malformed', lambda: 'truncated message')
        drops.drop('wrong_dst', lambda: 'x' * 10_000)
        now[0] += LOG_EVERY_S
        drops.drop('malformed', lambda: 'truncated message')
    assert drops.as_dict() == {'malformed': 1001, 'wrong_dst': 1}
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == 'dropped a raft message (malformed, 1 so far): truncated message'
    assert lines[1].startswith('dropped a raft message (wrong_dst, 1 so far): xxx')
    assert len(lines[1]) < 300  # a peer's data does not flood the log
    assert lines[2] == 'dropped a raft message (malformed, 1001 so far): truncated message'
    assert len(lines) == 3


def test_a_drop_that_is_not_logged_costs_no_formatting():
    calls = []
    drops = DropCounter(clock=lambda: 0.0)
    for _ in range(100):
        drops.drop('refused', lambda: calls.append(1) or 'described')
    assert drops.as_dict() == {'refused': 100} and len(calls) == 1
