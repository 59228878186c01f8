"""Address forms users write: `host` + `port`, `'host:port'`, `grpc://` and `grpcs://` (TLS)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    tls: bool = False

    def __str__(self) -> str:
        return f'{"grpcs://" if self.tls else ""}{self.host}:{self.port}'


def parse_address(host: str = 'localhost', port: int | str | None = None) -> tuple[str, int, bool]:
    """`'grpc://h:p'`, `'grpcs://h:p'`, `'h:p'` or host + port → (host, port, tls)."""
    tls = False
    for scheme, secure in (('grpcs://', True), ('grpc://', False)):
        if host.startswith(scheme):
            host, tls = host[len(scheme):], secure
    if ':' in host and not host.startswith('['):
        host, _, embedded = host.rpartition(':')
        if port is not None and int(port) != int(embedded):
            raise ValueError(f'host {host}:{embedded} and port={port} disagree')
        port = embedded
    if not host:
        raise ValueError('empty host')
    if port is None:
        raise ValueError(f'no port given for host {host!r}')
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError(f'port must be a number, got {port!r}') from None
    if not 0 < port < 65536:
        raise ValueError(f'port must be in 1..65535, got {port}')
    return host, port, tls


def _split(value) -> list:
    """A list, or a string of comma-separated items (the reference system's `--host h1,h2`
    and `--port p1,p2`), as a list; anything else as a one-item list."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str) and ',' in value:
        return [item.strip() for item in value.split(',')]
    return [value]


_LOOPBACK = ('localhost', 'localhost.', '127.0.0.1', '::1', '[::1]')


def _same_place(address: Address) -> tuple[str, int]:
    host = address.host.lower()
    return ('127.0.0.1' if host in _LOOPBACK else host), address.port


def external_addresses(host, port=None) -> list[Address]:
    """The replicas of an external executor.

    `host` and `port` are each one value, a list, or a comma-separated string. 1 host × N
    ports and N hosts × 1 port broadcast; N × N pair up; any other mismatch is a ValueError.
    A host may carry its own port (`'localhost:12345'`, `'grpc://10.0.0.2:12346'`), then
    `port` may be omitted. `localhost` becomes 127.0.0.1 (what a local worker binds; no
    resolver is asked) unless the address is TLS, whose certificate names the host. One
    address given twice is an error: it would count as two replicas.
    """
    hosts = _split(host)
    ports = _split(port)
    if not hosts or any(not isinstance(h, str) for h in hosts):
        raise ValueError(f'external executor: host must be a string or a list of strings, got {host!r}')
    if len(hosts) == len(ports):
        pairs = list(zip(hosts, ports))
    elif len(hosts) == 1:
        pairs = [(hosts[0], p) for p in ports]
    elif len(ports) == 1:
        pairs = [(h, ports[0]) for h in hosts]
    else:
        raise ValueError(f'external executor: {len(hosts)} hosts and {len(ports)} ports do not '
                         'match (give as many of each, or one of either)')
    addresses = []
    for h, p in pairs:
        try:
            addresses.append(Address(*parse_address(h, p)))
        except ValueError as exc:
            raise ValueError(f'external executor address {h!r} / port {p!r}: {exc}') from None
    seen: dict[tuple[str, int], Address] = {}
    for i, address in enumerate(addresses):
        if not address.tls and address.host.lower() in ('localhost', 'localhost.'):
            addresses[i] = address = Address('127.0.0.1', address.port)
        first = seen.setdefault(_same_place(address), address)
        if first is not address:
            raise ValueError(f'external executor: {first} and {address} are the same address; '
                             'each replica needs its own host:port')
    return addresses
