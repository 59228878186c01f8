"""A gateway is ready once it has found every executor's replicas (what an engine's health
check asks through `nborch ping`), and stays ready when a scale-down takes some away."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from nborch.ports import free_port
from nborch.runtime.gateway import READY_SETTLE_S, Gateway
from nborch.runtime.resolve import HOSTS_ENV
from nborch.runtime.topology import ExecutorTopology, Topology


def encoder_topology(port: int = 0) -> Topology:
    return Topology(port=port, executors=[
        ExecutorTopology(name='enc', shards=[['enc:8080']], discover=True, replicas=3),
        ExecutorTopology(name='idx', shards=[['127.0.0.1:1', 'localhost:2']])])


def test_the_gateway_is_unresolved_until_every_replica_is_found_then_for_good(monkeypatch):
    async def scenario():
        gateway = Gateway(encoder_topology())
        monkeypatch.setenv(HOSTS_ENV, json.dumps({'enc:8080': ['10.0.0.1:8080', '10.0.0.2:8080']}))
        (missing,) = (await gateway.status())['unresolved']
        assert missing == 'enc/shard-0: 2 of 3 replicas found at enc:8080'
        monkeypatch.setenv(HOSTS_ENV, json.dumps({'enc:8080': [f'10.0.0.{i}:8080'
                                                               for i in (1, 2, 3)]}))
        assert (await gateway.status())['unresolved'] == []  # found at once, not in 5 s
        monkeypatch.setenv(HOSTS_ENV, json.dumps({'enc:8080': ['10.0.0.1:8080']}))
        assert (await gateway.status())['unresolved'] == []  # scaled down: still serving
        await gateway.close()

    asyncio.run(scenario())


def test_a_gateway_started_after_a_scale_down_is_ready_once_the_count_holds(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(time, 'monotonic', lambda: clock[0])

    async def scenario():
        gateway = Gateway(encoder_topology())
        monkeypatch.setenv(HOSTS_ENV, json.dumps({'enc:8080': ['10.0.0.1:8080', '10.0.0.2:8080']}))
        assert await gateway.unresolved()
        clock[0] += READY_SETTLE_S - 1
        assert await gateway.unresolved()  # could still be a deploy coming up
        clock[0] += 2
        assert await gateway.unresolved() == []
        await gateway.close()

    asyncio.run(scenario())


def test_a_fixed_name_that_does_not_resolve_keeps_the_gateway_unready(monkeypatch):
    monkeypatch.delenv(HOSTS_ENV, raising=False)

    async def scenario():
        gateway = Gateway(Topology(executors=[ExecutorTopology(
            name='indexer', shards=[['indexer-0.invalid:8080', 'localhost:8080']],
            stateful=True)]))
        assert await gateway.unresolved() == [
            'indexer/shard-0: indexer-0.invalid:8080 does not resolve']
        await gateway.close()

    asyncio.run(scenario())


def test_ping_fails_until_the_gateway_has_found_every_replica(tmp_path):
    port = free_port()
    env = {**os.environ, HOSTS_ENV: json.dumps({'enc:8080': ['127.0.0.1:9', '127.0.0.1:10']})}
    gateway = subprocess.Popen([sys.executable, '-m', 'nborch', 'gateway', '--insecure',
                                '--topology', encoder_topology(port).to_json()],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            done = subprocess.run([sys.executable, '-m', 'nborch', 'ping', f'127.0.0.1:{port}'],
                                  capture_output=True, text=True, timeout=60)
            if 'not ready: enc/shard-0' in done.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert done.returncode == 1
        assert 'enc/shard-0: 2 of 3 replicas found at enc:8080' in done.stderr
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
