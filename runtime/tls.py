"""TLS and mutual TLS from certificate files: the gateway's public port and clients.

`TlsFiles` is what a user names (`Deployment(tls={'cert': ..., 'key': ..., 'ca': ...})`, or
the reference system's `ssl_certfile` / `ssl_keyfile`): with `ca` the server also asks every
caller for a certificate signed by it (mutual TLS). The deployment secret's handshake
(runtime/auth.py) still runs inside the TLS session where the caller has the secret.

With `tls_internal=True` the same files secure the internal links too (mutual TLS between
the gateway and the workers, and between Raft peers): each runtime process `install()`s them
and its servers and channels to the deployment's own processes use them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import grpc

KEYS = ('cert', 'key', 'ca')


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, 'rb') as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f'tls {what} {path!r}: {exc.strerror}') from None


@dataclass(frozen=True)
class TlsFiles:
    cert: str | None = None   # PEM certificate chain of this side
    key: str | None = None    # PEM private key of `cert`
    ca: str | None = None     # PEM roots to check the other side against

    @classmethod
    def parse(cls, tls, *, ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
              server: bool) -> 'TlsFiles | None':
        """`tls` as a dict (or True, a client with the system's roots) merged with the
        reference system's spellings; None when no TLS is asked for. ValueError names the fault."""
        if tls in (None, False) and ssl_certfile is None and ssl_keyfile is None:
            return None
        given = {} if tls in (None, False, True) else tls
        if not isinstance(given, dict) or set(given) - set(KEYS):
            raise ValueError(f'tls={tls!r}: a dict with keys {", ".join(KEYS)} (or True)')
        files = cls(cert=given.get('cert', ssl_certfile), key=given.get('key', ssl_keyfile),
                    ca=given.get('ca'))
        if server and (files.cert is None or files.key is None):
            raise ValueError('tls: a server needs both cert and key (ssl_certfile, ssl_keyfile)')
        if (files.cert is None) != (files.key is None):
            raise ValueError('tls: cert and key go together')
        for what, path in asdict(files).items():
            if path is not None:
                _read(path, what)  # a missing file is an error now, not at start
        return files

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def server_credentials(self) -> grpc.ServerCredentials:
        ca = _read(self.ca, 'ca') if self.ca else None
        return grpc.ssl_server_credentials([(_read(self.key, 'key'), _read(self.cert, 'cert'))],
                                           root_certificates=ca, require_client_auth=ca is not None)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, 'ca') if self.ca else None,
            private_key=_read(self.key, 'key') if self.key else None,
            certificate_chain=_read(self.cert, 'cert') if self.cert else None)

    def for_own_client(self) -> 'TlsFiles':
        """How the deployment's own Client reaches its TLS gateway: trusting `ca` (or the
        server's certificate itself, when self-signed) and, under mutual TLS, showing the
        server's own certificate (it must then allow client authentication)."""
        if self.ca is None:
            return TlsFiles(ca=self.cert)
        return TlsFiles(cert=self.cert, key=self.key, ca=self.ca)


_internal: TlsFiles | None = None


def install(files: TlsFiles | None) -> None:
    """The TLS files this runtime process uses on its internal links (None: plaintext)."""
    global _internal
    _internal = files


def internal() -> TlsFiles | None:
    return _internal
