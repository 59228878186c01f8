"""Port checks done in the owner process before anything starts."""
from __future__ import annotations

import socket

from nborch.errors import PortInUseError


def _bindable(host: str) -> str:
    return '127.0.0.1' if host in ('localhost', '') else host


def free_port(host: str = '127.0.0.1') -> int:
    with socket.socket() as s:
        s.bind((_bindable(host), 0))
        return s.getsockname()[1]


def check_port_free(host: str, port: int, what: str) -> None:
    """Raise PortInUseError when something listens on host:port.

    SO_REUSEADDR matches what the gRPC server will do: a port left in TIME_WAIT by a
    stopped deployment is free, a listening one is not.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((_bindable(host), port))
        except OSError as exc:
            raise PortInUseError(f'{what}: port {port} on {host} is in use ({exc.strerror})') from None
