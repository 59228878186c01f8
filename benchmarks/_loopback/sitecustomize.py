"""Loaded first by every Python process that vs_reference.py starts (through PYTHONPATH),
and so by every process those start in turn: Python-level sockets may only reach loopback.

The reference system looks up the machine's public address when a Deployment starts (HTTP to
public "what is my IP" services) and sends telemetry unless JINA_OPTOUT_TELEMETRY is set; the
benchmark sets that variable, and this guard refuses name lookups other than localhost and
connections to addresses other than loopback, so nothing leaves the machine whatever a library
tries. gRPC's C core makes its own sockets; the benchmark only gives it loopback addresses.
"""
import ipaddress
import socket

_LOCAL_NAMES = {'localhost', 'localhost.localdomain', 'ip6-localhost', 'ip6-loopback', ''}


def _loopback(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode('ascii', 'replace')
    host = str(host).strip('[]').split('%')[0]
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _refuse(what, host):
    raise OSError(f'nborch benchmark loopback guard: {what} {host!r} refused (loopback only)')


_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, *args, **kwargs):
    if not _loopback(host):
        _refuse('name lookup of', host)
    return _getaddrinfo(host, *args, **kwargs)


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_sendto = socket.socket.sendto


def _check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        _refuse('connection to', address[0])


def connect(self, address):
    _check(self, address)
    return _connect(self, address)


def connect_ex(self, address):
    _check(self, address)
    return _connect_ex(self, address)


def sendto(self, data, *args):
    _check(self, args[-1])
    return _sendto(self, data, *args)


socket.getaddrinfo = getaddrinfo
socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.socket.sendto = sendto
