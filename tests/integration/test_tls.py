"""TLS and mutual TLS on the gateway's public port, with certificates made here (openssl)."""
from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from nborch import Client, Deployment
from tests.integration.helpers import Echo, Ledger, read_history, text_docs

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which('openssl') is None, reason='needs openssl')]

EXTENSIONS = ('subjectAltName=IP:127.0.0.1,DNS:localhost\n'
              'extendedKeyUsage=serverAuth,clientAuth\n')


def openssl(*args, cwd) -> None:
    subprocess.run(['openssl', *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope='module')
def certs(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both CA-signed; and
    a self-signed one for 127.0.0.1."""
    d = tmp_path_factory.mktemp('certs')
    (d / 'ext.cnf').write_text(EXTENSIONS)
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
            '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=test-ca', cwd=d)
    for name in ('server', 'client'):
        openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                '-keyout', f'{name}.key', '-out', f'{name}.csr', '-subj', f'/CN={name}', cwd=d)
        openssl('x509', '-req', '-in', f'{name}.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key',
                '-CAcreateserial', '-out', f'{name}.crt', '-days', '2', '-extfile', 'ext.cnf',
                cwd=d)
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
            '-keyout', 'self.key', '-out', 'self.crt', '-days', '2', '-subj', '/CN=127.0.0.1',
            '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', cwd=d)
    return {p.stem + p.suffix: str(p) for p in d.iterdir()}


def post(client: Client) -> list[str]:
    try:
        return client.post('/', text_docs(2)).text
    finally:
        client.close()


def test_tls_with_the_reference_systems_argument_names(certs):
    with Deployment(uses=Echo, quiet=True, ssl_certfile=certs['self.crt'],
                    ssl_keyfile=certs['self.key']) as dep:
        assert dep.post('/', text_docs(2)).text == ['doc-0', 'doc-1']  # its own client trusts it
        assert post(Client(port=dep.port, tls={'ca': certs['self.crt']})) == ['doc-0', 'doc-1']
        with pytest.raises(ConnectionError):
            post(Client(port=dep.port))  # plaintext to a TLS port
        with pytest.raises(ConnectionError):
            post(Client(host=f'grpcs://127.0.0.1:{dep.port}'))  # the system's roots: unknown CA


def test_mutual_tls_asks_every_caller_for_a_certificate_of_the_ca(certs):
    tls = {'cert': certs['server.crt'], 'key': certs['server.key'], 'ca': certs['ca.crt']}
    with Deployment(uses=Echo, quiet=True, tls=tls) as dep:
        assert dep.post('/', text_docs(2)).text == ['doc-0', 'doc-1']
        client_tls = {'ca': certs['ca.crt'], 'cert': certs['client.crt'],
                      'key': certs['client.key']}
        assert post(Client(port=dep.port, tls=client_tls)) == ['doc-0', 'doc-1']
        with pytest.raises(ConnectionError):
            post(Client(port=dep.port, tls={'ca': certs['ca.crt']}))  # no client certificate
        with pytest.raises(ConnectionError):  # a certificate the CA did not sign
            post(Client(port=dep.port, tls={'ca': certs['ca.crt'], 'cert': certs['self.crt'],
                                            'key': certs['self.key']}))


def test_internal_links_in_mutual_tls(certs, tmp_path):
    """Gateway → workers and Raft peers, all mutual TLS with the deployment's files."""
    tls = {'cert': certs['server.crt'], 'key': certs['server.key'], 'ca': certs['ca.crt']}
    with Deployment(name='ledger', uses=Ledger, replicas=3, stateful=True, quiet=True,
                    workspace=str(tmp_path), tls=tls, tls_internal=True,
                    raft_configuration={'heartbeat_timeout': 50, 'election_timeout': 300}) as dep:
        dep.post('/index', text_docs(6), request_size=1)
        reps = dep.status()['executors'][0]['shards'][0]['replicas']
        assert sum(r['served'] for r in reps) == 6
        assert {r['raft']['role'] for r in reps} == {'leader', 'follower'}  # peers talk
        port = reps[0]['port']
        for client_tls in (False, {'ca': certs['ca.crt']}):  # plaintext; TLS, no certificate
            with pytest.raises(ConnectionError):
                Client(port=port, tls=client_tls, secret=dep.secret).status(timeout=10)
        ok = Client(port=port, secret=dep.secret, tls={'ca': certs['ca.crt'],
                    'cert': certs['client.crt'], 'key': certs['client.key']})
        assert ok.status(timeout=10)['role'] == 'worker'
        ok.close()
        deadline = time.monotonic() + 60  # every replica applies the writes, through its peers
        while not all(len(read_history(str(tmp_path), 'ledger', i)) == 6 for i in range(3)):
            assert time.monotonic() < deadline, 'the followers never applied the writes'
            time.sleep(0.05)
    with pytest.raises(ValueError, match='tls_internal=True needs'):
        Deployment(uses=Echo, tls={'cert': certs['self.crt'], 'key': certs['self.key']},
                   tls_internal=True)


def test_missing_certificate_files_are_an_error_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match='tls cert .*nowhere.crt'):
        Deployment(uses=Echo, ssl_certfile=str(tmp_path / 'nowhere.crt'),
                   ssl_keyfile=str(tmp_path / 'nowhere.key'))
    with pytest.raises(ValueError, match='cert and key'):
        Deployment(uses=Echo, tls={'cert': str(tmp_path / 'x')})
