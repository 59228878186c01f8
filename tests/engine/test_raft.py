"""A 3-replica Raft group, exported and deployed on Compose, under writes: its leader and a
follower cut off their network (`docker network disconnect`) and reconnected, its leader
killed, then the whole stack restarted on its volumes. Every acknowledged write must be on
every replica exactly once, in one order (the fault campaign's history checker), and no
write is acknowledged by a minority (a cut-off leader's would be missing after healing)."""
from __future__ import annotations

import time

import pytest

from nborch import Deployment
from nborch.ports import free_port
from tests.engine.conftest import TIMINGS
from tests.engine.engine import ComposeStack, wait_until
from tests.engine.traffic import Writes, gateway_status, wait_ready
from tests.faults.history import check_history

REPLICAS = 3
RAFT = {'heartbeat_timeout': 100, 'election_timeout': 600}
PHASE_WRITES = 100  # acknowledged writes each fault must let through (500 in all)
PHASE_TIMEOUT_S = 120


def ledger(port: int, workspace: str) -> Deployment:
    # `workspace` is where a local run would keep the logs; the export mounts a volume per
    # replica at /workspace instead.
    return Deployment(name='ledger', uses='engine_ledger:Ledger', replicas=REPLICAS,
                      stateful=True, workspace=workspace, port=port, raft_configuration=RAFT)


def rafts(port: int) -> list[dict]:
    (node,) = [e for e in gateway_status(port)['executors'] if e['name'] == 'ledger']
    return [r.get('raft') or {} for r in node['shards'][0]['replicas']]


def leader(port: int) -> int:
    """The replica index every replica names as leader."""
    def agreed():
        leaders = {r.get('leader') for r in rafts(port)}
        return leaders.pop() if len(leaders) == 1 and None not in leaders and 0 not in leaders \
            else None
    return wait_until('one leader for every replica', agreed, timeout=PHASE_TIMEOUT_S) - 1


def healed(port: int, timeout: float = 120) -> None:
    def same():
        states = rafts(port)
        applied = {r.get('applied') for r in states} | {r.get('commit') for r in states}
        return len(states) == REPLICAS and all(states) and len(applied) == 1
    wait_until('every replica applied the same log', same, timeout=timeout)
    leader(port)


def histories(stack: ComposeStack) -> list[list[str]]:
    out = []
    for i in range(REPLICAS):
        text = stack.exec(stack.container(f'ledger-{i}'), 'sh', '-c',
                          f'cat $(find /workspace -name history-{i}.log)')
        out.append(text.split())
    return out


def stable_histories(stack: ComposeStack, port: int) -> list[list[str]]:
    """Read twice around a healed status until both reads agree."""
    before = None
    deadline = time.monotonic() + 60
    while True:
        healed(port)
        now = histories(stack)
        if now == before or time.monotonic() > deadline:
            return now
        before = now


def phase(load: Writes, name: str) -> None:
    start = time.monotonic()
    load.wait_acked(load.acked() + PHASE_WRITES, PHASE_TIMEOUT_S)
    TIMINGS[f'raft: {PHASE_WRITES} writes {name}'] = time.monotonic() - start


@pytest.mark.timeout(900)
def test_partitions_kills_and_a_full_restart_lose_duplicate_and_reorder_nothing(
        image, stack_name, tmp_path, deployed):
    port = free_port()
    folder = tmp_path / 'deploy'
    ledger(port, str(tmp_path / 'local-workspace')).to_docker_compose_yaml(
        str(folder / 'docker-compose.yml'), image=image)
    stack = ComposeStack(stack_name, str(folder))
    deployed(stack)
    start = time.monotonic()
    stack.up()
    wait_ready(port)
    leader(port)
    TIMINGS['raft: group deployed with a leader'] = time.monotonic() - start

    with Writes(port, 'ledger', prefix='w') as load:
        phase(load, 'before any fault')
        old = leader(port)
        cut = stack.container(f'ledger-{old}')
        stack.disconnect(cut)
        try:
            phase(load, 'with the leader cut off')
            # acknowledged by the other two, under a leader of their own
            assert new_leader_without(port, old) != old
        finally:
            stack.connect(cut, f'ledger-{old}')
        follower = (leader(port) + 1) % REPLICAS
        cut = stack.container(f'ledger-{follower}')
        stack.disconnect(cut)
        try:
            phase(load, 'with a follower cut off')
        finally:
            stack.connect(cut, f'ledger-{follower}')
        phase(load, 'with every replica connected again')
        stack.kill(stack.container(f'ledger-{leader(port)}'))
        phase(load, 'after the leader was killed')
    ops = list(load.ops)
    report = check_history(ops, stable_histories(stack, port))
    assert report.anomalies == [], [str(a) for a in report.anomalies[:5]]
    assert report.acked >= 5 * PHASE_WRITES
    retryable = {'ConnectionError', 'UnavailableError', 'TimeoutError', 'ExecutorError',
                 'IncompletePostError'}
    assert set(load.errors) <= retryable, load.errors

    # The whole stack down and up again on its volumes: nothing lost.
    before = stable_histories(stack, port)
    start = time.monotonic()
    stack.compose('down', '-t', '10', timeout=300)  # keeps the named volumes
    stack.up()
    wait_ready(port)
    after = stable_histories(stack, port)
    TIMINGS['raft: whole stack restarted and healed'] = time.monotonic() - start
    assert after == before and len(after[0]) >= report.acked


def new_leader_without(port: int, cut: int) -> int:
    """The leader the replicas still reachable agree on (the cut one reports nothing)."""
    def agreed():
        states = [r for i, r in enumerate(rafts(port)) if i != cut and r]
        leaders = {r.get('leader') for r in states}
        return leaders.pop() if len(states) == REPLICAS - 1 and len(leaders) == 1 \
            and 0 not in leaders else None
    return wait_until('a leader among the connected replicas', agreed, PHASE_TIMEOUT_S) - 1
