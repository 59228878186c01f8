"""Checking a recorded history: what clients saw against what every replica applied.

Two checks, both pure:

- `check_replicas`: every acknowledged write is on every replica exactly once, the replicas
  applied the same sequence, an indeterminate write appears at most once, and nothing
  appears that no client sent (or that was refused for sure).
- `check_linearizable`: a Wing–Gong search (with Lowe's memoisation of the set of
  linearized operations and the model state, as porcupine and Knossos do) for a sequential
  order of the operations that respects real time and a model's semantics.

`check_history` runs both, using the replicas' applied log as a final read, so the search
also proves the replicated order agrees with real time (a write acknowledged before
another was sent comes first) and every linearizable read saw a prefix of that log which
holds every write acknowledged before the read was sent.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Hashable, Protocol, Sequence

ACKED, FAILED, INDETERMINATE = 'acked', 'failed', 'indeterminate'
NEVER = math.inf  # the completion time of an operation whose outcome is unknown


@dataclass(frozen=True)
class Op:
    """One client operation: its real-time interval and what it returned.

    A write carries its unique `value` (the written id); a read carries `result`, the state
    it observed (a tuple of ids for the log model, an int for the counter model). Only
    reads that answered belong in a history: a failed read has no effect.
    """

    kind: str                    # 'write' | 'read'
    invoked: float
    completed: float = NEVER
    outcome: str = ACKED         # writes: ACKED | FAILED (surely not applied) | INDETERMINATE
    value: str | None = None
    result: object = None
    client: str = ''

    @classmethod
    def write(cls, value: str, invoked: float, completed: float = NEVER,
              outcome: str = ACKED, client: str = '') -> 'Op':
        if outcome not in (ACKED, FAILED, INDETERMINATE):
            raise ValueError(f'unknown outcome {outcome!r}')
        if outcome != ACKED:
            completed = NEVER  # it may take effect at any time after it was sent
        return cls('write', invoked, completed, outcome, value, None, client)

    @classmethod
    def read(cls, result, invoked: float, completed: float, client: str = '') -> 'Op':
        return cls('read', invoked, completed, ACKED, None, result, client)

    def describe(self) -> str:
        end = 'never' if self.completed == NEVER else f'{self.completed:.3f}'
        what = f'write {self.value!r} ({self.outcome})' if self.kind == 'write' else \
            f'read -> {_short(self.result)}'
        return f'{what} [{self.invoked:.3f}, {end}]{" by " + self.client if self.client else ""}'


@dataclass(frozen=True)
class Anomaly:
    kind: str     # lost | duplicate | phantom | failed-applied | diverged | not-linearizable
    detail: str

    def __str__(self) -> str:
        return f'{self.kind}: {self.detail}'


@dataclass
class Report:
    writes_checked: int = 0
    acked: int = 0
    indeterminate_applied: int = 0
    indeterminate_absent: int = 0
    reads_checked: int = 0
    anomalies: list[Anomaly] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.anomalies


# -- replicas -------------------------------------------------------------------------------

def check_replicas(ops: Sequence[Op], histories: Sequence[Sequence[str]]) -> list[Anomaly]:
    """Anomalies in the replicas' applied histories (each in apply order)."""
    writes = {op.value: op for op in ops if op.kind == 'write'}
    if len(writes) != sum(op.kind == 'write' for op in ops):
        raise ValueError('write values must be unique: they identify the write on replicas')
    found: list[Anomaly] = []
    for replica, history in enumerate(histories):
        counts = Counter(history)
        for value, n in counts.items():
            op = writes.get(value)
            if op is None:
                found.append(Anomaly('phantom', f'replica {replica} applied {value!r}, '
                                                f'which no client sent'))
            elif op.outcome == FAILED:
                found.append(Anomaly('failed-applied', f'replica {replica} applied {value!r}, '
                                                       f'which was refused'))
            if n > 1:
                found.append(Anomaly('duplicate', f'replica {replica} applied {value!r} {n} '
                                                  f'times (at {_positions(history, value)})'))
        for value, op in writes.items():
            if op.outcome == ACKED and value not in counts:
                found.append(Anomaly('lost', f'replica {replica} lacks acknowledged '
                                             f'{op.describe()}'))
    for replica in range(1, len(histories)):
        a, b = histories[0], histories[replica]
        if list(a) != list(b):
            at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            found.append(Anomaly('diverged', f'replicas 0 and {replica} differ at position {at}: '
                                             f'{_at(a, at)} vs {_at(b, at)} '
                                             f'(lengths {len(a)}, {len(b)})'))
    return found


# -- linearizability ------------------------------------------------------------------------

class Model(Protocol):
    """A sequential specification; states must be hashable (they key the memo)."""

    def init(self) -> Hashable: ...
    def step(self, state: Hashable, op: Op) -> tuple[bool, Hashable]: ...


class CounterModel:
    """Each write adds one; a read returns how many writes came before it."""

    def init(self) -> int:
        return 0

    def step(self, state: int, op: Op) -> tuple[bool, int]:
        if op.kind == 'write':
            return True, state + 1
        return op.result == state, state


class LogModel:
    """An append-only log whose final content `final` is known (the replicas' log).

    Knowing the end makes the state just how much of it is written: a write may only
    append the next entry of `final`, a read must return exactly the prefix written so far.
    That is exact when a read of `final` completes the history: every write it holds must
    be linearized before that read, so in `final`'s order.
    """

    def __init__(self, final: Sequence[str]):
        self.final = tuple(final)

    def init(self) -> int:
        return 0

    def step(self, state: int, op: Op) -> tuple[bool, int]:
        if op.kind == 'write':
            ok = state < len(self.final) and self.final[state] == op.value
            return ok, state + 1
        result = tuple(op.result)
        return len(result) == state and result == self.final[:state], state


@dataclass
class Linearizability:
    ok: bool
    order: list[int] = field(default_factory=list)   # op indices, when ok
    longest: int = 0                                # ops linearized in the deepest attempt
    stuck_on: int | None = None                     # an op that could not be placed there
    steps: int = 0


class _Node:
    __slots__ = ('op', 'is_call', 'match', 'prev', 'next')

    def __init__(self, op: int, is_call: bool):
        self.op, self.is_call = op, is_call
        self.match: _Node | None = None
        self.prev: _Node | None = None
        self.next: _Node | None = None


def _event_list(ops: Sequence[Op]) -> _Node:
    """A doubly linked list of call and return events in time order (calls first on ties:
    operations that touch in time count as concurrent). Returns the head sentinel."""
    events = []
    for i, op in enumerate(ops):
        if op.completed < op.invoked:
            raise ValueError(f'operation {i} completes before it is invoked: {op.describe()}')
        call, ret = _Node(i, True), _Node(i, False)
        call.match = ret
        events += [(op.invoked, 0, i, call), (op.completed, 1, i, ret)]
    events.sort(key=lambda e: e[:3])
    head = _Node(-1, False)
    last = head
    for *_, node in events:
        last.next, node.prev = node, last
        last = node
    return head


def _lift(call: _Node) -> None:
    for node in (call, call.match):
        node.prev.next = node.next
        if node.next is not None:
            node.next.prev = node.prev


def _unlift(call: _Node) -> None:
    for node in (call.match, call):
        node.prev.next = node
        if node.next is not None:
            node.next.prev = node


def check_linearizable(ops: Sequence[Op], model: Model, max_steps: int = 5_000_000
                       ) -> Linearizability:
    """Search for a linearization of `ops` under `model` (Wing–Gong with memoisation).

    Walk the events in time order; at a call, try to linearize that op now (the model must
    accept it, and the pair (set of linearized ops, state) must be new); at a return whose
    op is still pending, undo the last choice. The history is linearizable when every op
    is placed. `max_steps` bounds pathological searches (an error, not a verdict).
    """
    head = _event_list(ops)
    state = model.init()
    linearized = 0
    seen: set[tuple[int, Hashable]] = set()
    stack: list[tuple[_Node, Hashable]] = []
    result = Linearizability(ok=False)
    entry = head.next
    while head.next is not None:
        result.steps += 1
        if result.steps > max_steps:
            raise RuntimeError(f'linearizability search gave up after {max_steps} steps')
        if entry.is_call:
            ok, new_state = model.step(state, ops[entry.op])
            if ok:
                key = (linearized | 1 << entry.op, new_state)
                if key not in seen:
                    seen.add(key)
                    stack.append((entry, state))
                    state, linearized = new_state, key[0]
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:  # this op's return came before any placement of it worked: back up
            if len(stack) >= result.longest:
                result.longest, result.stuck_on = len(stack), entry.op
            if not stack:
                return result
            entry, state = stack.pop()
            linearized &= ~(1 << entry.op)
            _unlift(entry)
            entry = entry.next
    result.ok = True
    result.order = [node.op for node, _ in stack]
    result.longest = len(stack)
    return result


# -- both -----------------------------------------------------------------------------------

def check_history(ops: Sequence[Op], histories: Sequence[Sequence[str]]) -> Report:
    """Check client operations against the replicas' applied logs (read once all healed)."""
    if not histories:
        raise ValueError('no replica histories to check against')
    report = Report(anomalies=check_replicas(ops, histories))
    final = list(histories[0])
    present = set(final)
    writes = [op for op in ops if op.kind == 'write']
    report.writes_checked = len(writes)
    report.acked = sum(op.outcome == ACKED for op in writes)
    report.indeterminate_applied = sum(op.outcome == INDETERMINATE and op.value in present
                                       for op in writes)
    report.indeterminate_absent = sum(op.outcome == INDETERMINATE and op.value not in present
                                      for op in writes)
    # A write that never took effect may be left out of the linearization (it is
    # indistinguishable from one placed after everything); one that was refused for sure
    # and applied anyway is already reported above.
    history = [op for op in ops if op.kind == 'read' or
               (op.outcome == ACKED or (op.outcome == INDETERMINATE and op.value in present))]
    report.reads_checked = sum(op.kind == 'read' for op in history)
    end = max([op.invoked for op in ops] + [op.completed for op in ops if op.completed != NEVER]
              + [0.0])
    history.append(Op.read(tuple(final), end + 1.0, end + 2.0, client='replica 0 after healing'))
    verdict = check_linearizable(history, LogModel(final))
    if not verdict.ok:
        stuck = history[verdict.stuck_on].describe() if verdict.stuck_on is not None else '?'
        report.anomalies.append(Anomaly(
            'not-linearizable', f'no order of the {len(history)} operations fits an append-only '
                                f'log ending as replica 0 does; the deepest attempt placed '
                                f'{verdict.longest} and could not place {stuck}'))
    return report


def _short(result) -> str:
    if isinstance(result, (tuple, list)):
        tail = ', '.join(map(repr, result[-3:]))
        return f'{len(result)} entries (…{tail})' if len(result) > 3 else f'[{tail}]'
    return repr(result)


def _positions(history: Sequence[str], value: str) -> list[int]:
    return [i for i, v in enumerate(history) if v == value]


def _at(history: Sequence[str], i: int) -> str:
    return repr(history[i]) if i < len(history) else 'end'
