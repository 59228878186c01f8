"""gRPC options shared by every nborch server and channel."""

import grpc

from nborch.runtime.limits import DEFAULT_MAX_MESSAGE_SIZE, GRPC_MAX_MESSAGE_SIZE, PACK_OVERHEAD


def _message_size(max_message_size: int) -> list[tuple[str, int]]:
    # gRPC's own check, the last line: senders check first (runtime/limits.py), so that an
    # oversized message fails alone instead of the stream it would travel on.
    limit = min(max_message_size + PACK_OVERHEAD, GRPC_MAX_MESSAGE_SIZE)
    return [('grpc.max_send_message_length', limit),
            ('grpc.max_receive_message_length', limit)]


def server_options(max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> list[tuple[str, int]]:
    # A port in use must be an error, not a silent share with another process.
    return [*_message_size(max_message_size), ('grpc.so_reuseport', 0)]


def channel_options(max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> list[tuple[str, int]]:
    return [
        *_message_size(max_message_size),
        # Reconnect fast to a restarted replica instead of gRPC's default 1 s → 120 s back-off.
        ('grpc.initial_reconnect_backoff_ms', 100),
        ('grpc.min_reconnect_backoff_ms', 100),
        ('grpc.max_reconnect_backoff_ms', 1000),
        ('grpc.enable_retries', 0),  # nborch's router retries on another replica itself
    ]


def bind(server, host: str, port: int, *, guard=None, credentials=None) -> int:
    """Bind `server` to host:port (TLS with `credentials`); return the bound port or raise a
    clear OSError. A `guard` (runtime/auth.py) learns the port: handshakes name it."""
    try:
        address = f'{host}:{port}'
        bound = server.add_secure_port(address, credentials) if credentials is not None \
            else server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises RuntimeError("Failed to bind ...")
        raise OSError(f'cannot listen on {host}:{port}: port in use or address unavailable') from exc
    if not bound:
        raise OSError(f'cannot listen on {host}:{port}: port in use or address unavailable')
    if guard is not None:
        guard.listen_on(bound)
    return bound


def secure_channel(target: str, tls, options=None) -> grpc.aio.Channel:
    """A channel to `target` with `tls` (runtime/tls.TlsFiles) credentials."""
    return grpc.aio.secure_channel(target, tls.channel_credentials(),
                                   options=options if options is not None else channel_options())
