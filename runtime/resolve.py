"""Where an address in a topology really is: DNS discovery of replicas, and a static table.

In a cluster, the replicas of a stateless executor shard sit behind one DNS name (a headless
Kubernetes Service, or a Compose service with `deploy.replicas`) whose A records are the
replicas; the gateway resolves it now and then and routes to each record as a replica
(a ClusterIP Service would pin its one HTTP/2 connection to one pod).

`NBORCH_HOSTS` maps names to addresses without DNS, to run exported commands on one machine:
`{"indexer-0.indexer:8081": "127.0.0.1:40001", "encoder:8080": ["127.0.0.1:40002", ...]}`.
Keys are `host:port` as written in the topology or the peers; values one address or a list.
"""
from __future__ import annotations

import asyncio
import functools
import json
import os
import socket

HOSTS_ENV = 'NBORCH_HOSTS'


@functools.lru_cache(maxsize=1)
def _table(text: str) -> dict[str, list[str]]:
    try:
        raw = json.loads(text) if text else {}
    except ValueError as exc:
        raise ValueError(f'{HOSTS_ENV} is not JSON: {exc}') from None
    if not isinstance(raw, dict):
        raise ValueError(f'{HOSTS_ENV} must be a JSON object of "host:port" → address(es)')
    return {key: [value] if isinstance(value, str) else list(value) for key, value in raw.items()}


def hosts_table() -> dict[str, list[str]]:
    return _table(os.environ.get(HOSTS_ENV, ''))


def dial_target(address: str) -> str:
    """The address to dial for one replica or peer (the table's first entry if it names it)."""
    mapped = hosts_table().get(address)
    return mapped[0] if mapped else address


async def resolve_replicas(address: str) -> list[str] | None:
    """Every `ip:port` a discovered name stands for, sorted; None when the name does not
    resolve (no pod is ready, or DNS failed: the caller keeps the replicas it knows)."""
    mapped = hosts_table().get(address)
    if mapped is not None:
        return sorted(mapped)
    host, _, port = address.rpartition(':')
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return None
    return sorted({f'[{ip}]:{p}' if family == socket.AF_INET6 else f'{ip}:{p}'
                   for family, _, _, _, (ip, p, *_) in infos})
