"""The reference page's Flow, exported and deployed on Compose and on swarm: requests
spread over every replica; scaling slow_encoder 3 → 5 → 2 is followed by the gateway with
no failed request; killed containers are restarted by the engine."""
from __future__ import annotations

import time

import pytest

from nborch import Flow
from nborch.ports import free_port
from nborch.runtime.router import DISCOVERY_REFRESH_S
from tests.engine.conftest import TIMINGS
from tests.engine.engine import ComposeStack, SwarmStack, wait_until
from tests.engine.traffic import Posts, client, gateway_status, served, wait_ready

ENCODER = 'slow-encoder'
# The gateway resolves the name again at most DISCOVERY_REFRESH_S after the last time, and
# DNS lists a new container once it is healthy (at most a health interval, 5 s, after start).
FOLLOW_S = DISCOVERY_REFRESH_S + 60


def page_flow(port: int) -> Flow:
    return Flow(name='scale-out', port=port).add(name='slow_encoder', replicas=3) \
        .add(name='fast_indexer')


def deploy(engine: str, name: str, image: str, tmp_path, deployed):
    port = free_port()
    folder = tmp_path / 'deploy'
    page_flow(port).to_docker_compose_yaml(str(folder / 'docker-compose.yml'), image=image)
    stack = (ComposeStack if engine == 'compose' else SwarmStack)(name, str(folder))
    deployed(stack)
    start = time.monotonic()
    stack.up()
    wait_ready(port)
    TIMINGS[f'{engine}: page Flow deployed and ready'] = time.monotonic() - start
    return stack, port


def spread(port: int, n: int = 30) -> dict[str, int]:
    before = served(gateway_status(port), 'slow_encoder')
    c = client(port)
    try:
        from docarray import DocList
        from docarray.documents import TextDoc
        for _ in range(n):
            c.post('/', DocList[TextDoc]([TextDoc(text='x')]), timeout=20)
    finally:
        c.close()
    after = served(gateway_status(port), 'slow_encoder')
    return {a: after[a] - before.get(a, 0) for a in after}


def follows(port: int, replicas: int) -> None:
    wait_until(f'the gateway routes to {replicas} slow_encoder replicas',
               lambda: len(served(gateway_status(port), 'slow_encoder')) == replicas,
               timeout=FOLLOW_S, every=1)


@pytest.mark.timeout(900)
@pytest.mark.parametrize('engine', ['compose', 'swarm'])
def test_the_page_flow_spreads_follows_scaling_and_survives_kills(engine, image, request,
                                                                  stack_name, tmp_path, deployed):
    if engine == 'swarm':
        request.getfixturevalue('swarm')
    stack, port = deploy(engine, stack_name, image, tmp_path, deployed)
    counts = spread(port)
    assert len(counts) == 3 and all(n > 0 for n in counts.values()), counts

    with Posts(port) as load:
        for replicas in (5, 2):
            start = time.monotonic()
            stack.scale(ENCODER, replicas)
            follows(port, replicas)
            TIMINGS[f'{engine}: gateway follows scale to {replicas}'] = time.monotonic() - start
            time.sleep(DISCOVERY_REFRESH_S)  # traffic on the new membership too
        assert load.failures == [] and load.ok > 0
    counts = spread(port, 20)
    assert len(counts) == 2 and all(n > 0 for n in counts.values()), counts

    # A killed replica: requests fail over, and the engine starts it again.
    with Posts(port) as load:
        victim = stack.containers(ENCODER)[0]
        started = stack.started_at(victim)
        start = time.monotonic()
        stack.kill(victim)
        wait_until('the killed slow_encoder container started again or replaced',
                   lambda: stack.recovered(ENCODER, victim, started, 2), timeout=120, every=1)
        follows(port, 2)
        TIMINGS[f'{engine}: killed replica replaced'] = time.monotonic() - start
        time.sleep(2)
    assert load.failures == [] and load.ok > 0

    # A killed gateway: clients see connection errors until the engine has started it again.
    with Posts(port) as load:
        start = time.monotonic()
        stack.kill(stack.containers('gateway')[0])
        wait_ready(port, timeout=180)
        TIMINGS[f'{engine}: killed gateway serving again'] = time.monotonic() - start
        ok_before = load.ok
        wait_until('posts succeed again', lambda: load.ok > ok_before + 5, timeout=60)
    retryable = ('ConnectionError', 'UnavailableError', 'TimeoutError')
    assert all(f.startswith(retryable) for f in load.failures), load.failures[:5]
