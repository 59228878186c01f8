"""gRPC options shared by every nborch server and channel."""

# Unlimited message sizes: a batch of 100 128-d docs is ~60 KB, but users post big tensors.
MESSAGE_SIZE = [('grpc.max_send_message_length', -1), ('grpc.max_receive_message_length', -1)]

# A port in use must be an error, not a silent share with another process.
SERVER_OPTIONS = [*MESSAGE_SIZE, ('grpc.so_reuseport', 0)]

# Reconnect fast to a restarted replica instead of gRPC's default 1 s → 120 s back-off.
CHANNEL_OPTIONS = [
    *MESSAGE_SIZE,
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


def secure_channel(target: str, tls) -> 'grpc.aio.Channel':
    """A channel to `target` with `tls` (runtime/tls.TlsFiles) credentials."""
    import grpc
    return grpc.aio.secure_channel(target, tls.channel_credentials(), options=CHANNEL_OPTIONS)
