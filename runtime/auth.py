"""Authenticated internal links: every process of one deployment proves it holds the
deployment's secret, and so does every server it calls.

Choice: a challenge/response in gRPC metadata, HMAC-SHA256 over a fresh nonce, rather than TLS
with per-deployment generated certificates. It needs nothing beyond the standard library (no
certificate generation, nothing to rotate but 32 random bytes, which `kubectl create secret` or
a file makes), it is checked once per call — and the data path is long-lived streams
(runtime/mux.py, Raft links), so once per stream — and it lets a server answer a caller
without proof with a real gRPC status (UNAUTHENTICATED), logged and counted, where a TLS
handshake failure never reaches the application. Users who need the traffic itself kept
secret (an untrusted network) add TLS (`tls=` / grpcs://, nborch.runtime.tls) on top.

The exchange, per call:
- the caller sends `nborch-auth: 1:<ms>:<nonce>:<mac>`, mac = HMAC(secret, "caller", method,
  port it dialed, ms, nonce);
- the server accepts it if the mac matches one of the ports it listens on, the time is within
  WINDOW_S of its clock and the nonce was not seen in that window (a replayed header is
  refused; one captured by an impostor on another replica's port names the wrong port);
- the server answers in its initial metadata `nborch-auth-proof: HMAC(secret, "server",
  method, port, nonce)`, and the caller checks it before it trusts — or sends — anything on
  the call: a process that took over a dead replica's port cannot answer the fresh nonce.

What it does not do: hide or protect the bytes from someone on the network path (a relay that
can read and rewrite TCP can tamper after the handshake). That is what TLS is for.

Runtime processes (one deployment each) `install()` their `LinkAuth` once; channel and server
creation sites ask `installed()`. Health checks (`grpc.health.v1`) stay open: probes carry no
secret and learn nothing but SERVING.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import Iterable

import grpc

SECRET_ENV = 'NBORCH_SECRET'
SECRET_BYTES = 32
MIN_SECRET_BYTES = 16
WINDOW_S = 30.0          # how far a caller's clock may be from the server's
HANDSHAKE_TIMEOUT_S = 10.0  # a server that never answers the nonce is not trusted, nor waited on
CALLER_KEY = 'nborch-auth'
PROOF_KEY = 'nborch-auth-proof'
OPEN_PREFIXES = ('/grpc.health.v1.Health/',)
# The methods callers make handshakes for (a handshake names its method).
PROCESS_METHOD = '/nborch.Executor/Process'
STREAM_METHOD = '/nborch.Executor/Stream'
STREAM_BATCHES_METHOD = '/nborch.Executor/StreamBatches'
STATUS_METHOD = '/nborch.Executor/Status'
SET_POOLS_METHOD = '/nborch.Gateway/SetPools'
SEND_METHOD = '/nborch.Raft/Send'
PROPOSE_METHOD = '/nborch.Raft/Propose'
CHANGE_MEMBERSHIP_METHOD = '/nborch.Raft/ChangeMembership'
LOG_EVERY_S = 1.0        # at most one rejection line per second (a flood must not flood the log)

log = logging.getLogger('nborch.auth')


class AuthError(ConnectionError):
    """A server did not prove it holds the deployment secret."""


def new_secret() -> bytes:
    """32 random bytes, as hex text: a secret survives every way it travels (a pipe, a file, an
    env var, `secret_from_text`'s stripping) unchanged, and can be written where text goes."""
    return secrets.token_hex(SECRET_BYTES).encode()


def secret_from_text(text: str | bytes, where: str) -> bytes:
    """A secret written by a person or a cluster (a file, an env var): its bytes, stripped."""
    raw = text.encode() if isinstance(text, str) else text
    raw = raw.strip()
    if len(raw) < MIN_SECRET_BYTES:
        raise ValueError(f'{where}: the deployment secret must be at least {MIN_SECRET_BYTES} '
                         f'bytes, got {len(raw)} (make one with `python -c "import secrets; '
                         f'print(secrets.token_hex(32))"`)')
    return raw


def read_secret_file(path: str) -> bytes:
    try:
        with open(path, 'rb') as f:
            return secret_from_text(f.read(), path)
    except OSError as exc:
        raise ValueError(f'cannot read the deployment secret from {path}: {exc.strerror}') from None


def read_secret_fd(fd: int) -> bytes:
    """The secret the owner wrote into an inherited pipe (runtime/process.py), read to EOF."""
    chunks = []
    with os.fdopen(fd, 'rb') as pipe:
        while chunk := pipe.read():
            chunks.append(chunk)
    return secret_from_text(b''.join(chunks), 'the secret pipe')


def pop_secret_env() -> bytes | None:
    """`NBORCH_SECRET` if set, removed from the environment (executors' subprocesses do not
    inherit it)."""
    text = os.environ.pop(SECRET_ENV, None)
    return None if text is None else secret_from_text(text, SECRET_ENV)


def _port_of(target: str) -> str:
    return target.rpartition(':')[2]


@dataclass(frozen=True)
class Handshake:
    """The caller's side of one call: metadata to send, the proof to expect back."""

    metadata: tuple[tuple[str, str], ...]
    expected: str
    target: str

    def check(self, initial_metadata) -> None:
        proof = dict(initial_metadata or ()).get(PROOF_KEY)
        if proof is None or not hmac.compare_digest(proof, self.expected):
            raise AuthError(f'{self.target} did not prove it holds the deployment secret '
                            f'({"a wrong proof" if proof else "no proof"}): not trusted')

    async def verify(self, call) -> None:
        """Wait for the server's initial metadata and check it (AuthError if wrong or late)."""
        import asyncio
        try:
            metadata = await asyncio.wait_for(call.initial_metadata(), HANDSHAKE_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise AuthError(f'{self.target} did not answer the handshake in '
                            f'{HANDSHAKE_TIMEOUT_S:.0f} s') from None
        if not metadata and call.done():
            code = await call.code()
            if code != grpc.StatusCode.OK:
                details = await call.details()
                raise AuthError(f'{self.target} refused the call: {code.name}: {details}')
        self.check(metadata)


class LinkAuth:
    """One deployment's secret: makes callers' handshakes and guards servers."""

    def __init__(self, secret: bytes | str, *, clock=time.time):
        # Normalised as every reader of a file or variable does, so all sides agree.
        self._secret = secret_from_text(secret, 'the deployment secret')
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._seen_order: collections.deque[tuple[float, str]] = collections.deque()
        self.rejected = 0
        self._last_log = 0.0
        self._unlogged = 0

    def _mac(self, *parts: str) -> str:
        return hmac.new(self._secret, '\0'.join(parts).encode(), hashlib.sha256).hexdigest()

    def bearer_matches(self, token: str) -> bool:
        """The HTTP door's check: `Authorization: Bearer <token>` carries the secret itself
        (HTTP has no handshake to prove it; serve HTTP with TLS where the path is not trusted)."""
        return hmac.compare_digest(token.strip().encode(), self._secret)

    # -- caller ----------------------------------------------------------------------------
    def handshake(self, method: str, target: str) -> Handshake:
        """For a call of `method` (e.g. '/nborch.Executor/Stream') to `target` (host:port,
        as dialed)."""
        ms, nonce, port = str(int(self._clock() * 1000)), secrets.token_hex(16), _port_of(target)
        mac = self._mac('caller', method, port, ms, nonce)
        return Handshake(metadata=((CALLER_KEY, f'1:{ms}:{nonce}:{mac}'),),
                         expected=self._mac('server', method, port, nonce), target=target)

    # -- server ----------------------------------------------------------------------------
    def verify_caller(self, method: str, value: str, ports: Iterable[int]) -> str:
        """The proof to answer with; ValueError says why `value` is refused."""
        try:
            version, ms, nonce, mac = value.split(':')
            sent_at = int(ms) / 1000
        except ValueError:
            raise ValueError('a malformed auth header') from None
        if version != '1':
            raise ValueError(f'auth version {version!r} is not 1')
        now = self._clock()
        if abs(now - sent_at) > WINDOW_S:
            raise ValueError(f'a handshake {now - sent_at:+.0f} s off this clock '
                             f'(allowed: ±{WINDOW_S:.0f} s; replayed, or clocks drift)')
        port = next((str(p) for p in ports
                     if hmac.compare_digest(mac, self._mac('caller', method, str(p), ms, nonce))),
                    None)
        if port is None:
            raise ValueError('a wrong proof of the deployment secret (or one meant for another '
                             'port)')
        self._forget_before(now - 2 * WINDOW_S)
        if nonce in self._seen:
            raise ValueError('a replayed handshake')
        self._seen[nonce] = now
        self._seen_order.append((now, nonce))
        return self._mac('server', method, port, nonce)

    def _forget_before(self, cutoff: float) -> None:
        while self._seen_order and self._seen_order[0][0] < cutoff:
            self._seen.pop(self._seen_order.popleft()[1], None)

    def record_rejection(self, method: str, peer: str, reason: str) -> None:
        self.rejected += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            more = f' ({self._unlogged - 1} more since the last line)' if self._unlogged > 1 else ''
            log.warning('refused %s from %s: %s; %d refused in all%s', method, peer, reason,
                        self.rejected, more)
            self._last_log, self._unlogged = now, 0

    def guard(self, *, required: bool = True) -> 'ServerGuard':
        return ServerGuard(self, required)


class ServerGuard(grpc.aio.ServerInterceptor):
    """Checks callers' handshakes on one server and answers them. With `required=False`
    (an open public port) callers without a handshake pass; a wrong one is still refused.
    `listen_on(port)` each bound port: a handshake names the port it was made for."""

    def __init__(self, auth: LinkAuth, required: bool):
        self.auth = auth
        self.required = required
        self.ports: set[int] = set()

    def listen_on(self, port: int) -> int:
        self.ports.add(port)
        return port

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        value = dict(details.invocation_metadata or ()).get(CALLER_KEY)
        if value is None:
            if not self.required:
                return handler
            return _refusing(handler, self.auth, details.method, 'no proof of the deployment secret')
        try:
            proof = self.auth.verify_caller(details.method, value, self.ports)
        except ValueError as exc:
            return _refusing(handler, self.auth, details.method, str(exc))
        return _answering(handler, ((PROOF_KEY, proof),))


def _kind(handler) -> str:
    return {(False, False): 'unary_unary', (False, True): 'unary_stream',
            (True, False): 'stream_unary', (True, True): 'stream_stream'}[
        (handler.request_streaming, handler.response_streaming)]


def _refusing(handler, auth: LinkAuth, method: str, reason: str):
    async def refuse(request_or_iterator, context):
        auth.record_rejection(method, context.peer(), reason)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                            f'refused: {reason}; internal nborch ports need the deployment secret')
    return handler._replace(**{_kind(handler): refuse})


def _answering(handler, metadata):
    import inspect
    kind = _kind(handler)
    behavior = getattr(handler, kind)
    if inspect.isasyncgenfunction(behavior):
        async def answer(request_or_iterator, context):
            await context.send_initial_metadata(metadata)
            async for reply in behavior(request_or_iterator, context):
                yield reply
    else:
        async def answer(request_or_iterator, context):
            await context.send_initial_metadata(metadata)
            return await behavior(request_or_iterator, context)
    return handler._replace(**{kind: answer})


# -- the process's own deployment ---------------------------------------------------------------

_installed: LinkAuth | None = None


def install(auth: LinkAuth | None) -> None:
    """Set the LinkAuth this runtime process uses for every internal link (None: insecure)."""
    global _installed
    _installed = auth


def installed() -> LinkAuth | None:
    return _installed


def refused_count() -> int:
    """Calls this process refused for want of the secret (reported in its status)."""
    return _installed.rejected if _installed is not None else 0


def guard_of(link: LinkAuth | None, *, required: bool) -> ServerGuard | None:
    return link.guard(required=required) if link is not None else None


def interceptors(guard: ServerGuard | None) -> list | None:
    return [guard] if guard is not None else None


async def call_unary(auth: LinkAuth | None, method: str, target: str, multicallable, request,
                     **kwargs):
    """`await multicallable(request, **kwargs)`, with the handshake when `auth` is set: the
    reply is returned only once the server proved the secret."""
    if auth is None:
        return await multicallable(request, **kwargs)
    handshake = auth.handshake(method, target)
    call = multicallable(request, metadata=handshake.metadata, **kwargs)
    try:
        await handshake.verify(call)
    except AuthError:
        call.cancel()
        raise
    return await call
