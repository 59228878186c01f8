"""Where topology addresses lead: the NBORCH_HOSTS table, DNS, and a discovered pool's
membership following what its name resolves to."""
from __future__ import annotations

import asyncio
import json

import pytest

from nborch.protos import nborch_pb2 as pb
from nborch.runtime.resolve import HOSTS_ENV, dial_target, resolve_replicas
from nborch.runtime.router import ReplicaPool


def test_the_hosts_table_maps_names_for_dialing_and_discovery(monkeypatch):
    monkeypatch.setenv(HOSTS_ENV, json.dumps({'indexer-0.indexer:8081': '127.0.0.1:4001',
                                              'enc:8080': ['127.0.0.1:4003', '127.0.0.1:4002']}))
    assert dial_target('indexer-0.indexer:8081') == '127.0.0.1:4001'
    assert dial_target('other:1') == 'other:1'
    assert asyncio.run(resolve_replicas('enc:8080')) == ['127.0.0.1:4002', '127.0.0.1:4003']


def test_a_bad_hosts_table_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(HOSTS_ENV, '[1, 2]')
    with pytest.raises(ValueError, match='NBORCH_HOSTS must be a JSON object'):
        dial_target('x:1')


def test_dns_gives_every_record_and_nothing_for_an_unknown_name(monkeypatch):
    monkeypatch.delenv(HOSTS_ENV, raising=False)
    assert '127.0.0.1:8080' in asyncio.run(resolve_replicas('localhost:8080'))
    assert asyncio.run(resolve_replicas('no-such-service.invalid:8080')) is None


def test_a_discovered_pool_follows_its_name(monkeypatch):
    """Pods come and go behind a headless Service: replicas that stay keep their counters."""
    async def scenario():
        pool = ReplicaPool('enc', ['enc:8080'], discover=True, refresh_s=60)
        monkeypatch.setenv(HOSTS_ENV, json.dumps({'enc:8080': ['127.0.0.1:1', '127.0.0.1:2']}))
        await pool.refresh()
        assert pool.addresses == ['127.0.0.1:1', '127.0.0.1:2']
        kept = pool.replicas[1]
        kept.served = 7
        monkeypatch.setenv(HOSTS_ENV, json.dumps({'enc:8080': ['127.0.0.1:2', '127.0.0.1:3']}))
        await pool.refresh()  # not due yet: membership holds
        assert pool.addresses == ['127.0.0.1:1', '127.0.0.1:2']
        await pool.refresh(force=True)
        assert pool.addresses == ['127.0.0.1:2', '127.0.0.1:3']
        assert pool.replicas[0] is kept and kept.served == 7
        monkeypatch.setenv(HOSTS_ENV, json.dumps({}))  # DNS fails: the replicas stay
        await pool.refresh(force=True)
        assert pool.addresses == ['127.0.0.1:2', '127.0.0.1:3']
        monkeypatch.setenv(HOSTS_ENV, json.dumps({'enc:8080': []}))  # resolves to nothing
        await pool.refresh(force=True)
        with pytest.raises(ConnectionError, match='no replica found at enc:8080'):
            await pool.call(pb.DataRequest(endpoint='/'))
        await pool.close()

    asyncio.run(scenario())
