"""The gateway's HTTP door, asked with plain HTTP requests (httpx) as curl would."""
from __future__ import annotations

import shutil
import ssl

import httpx
import pytest

from nborch import Client, Deployment, ExecutorError
from nborch.errors import MessageTooLargeError
from tests.integration.helpers import Echo, Faulty, text_docs

pytestmark = pytest.mark.timeout(120)

LIMIT = 20_000  # bytes: small, so that a body over it is cheap to make


def test_post_and_endpoint_routes_errors_and_schema_on_a_gateway_with_both_doors():
    with Deployment(name='faulty', uses=Faulty, quiet=True, protocol=['grpc', 'http'],
                    max_message_size=LIMIT) as dep:
        assert list(dep.ports) == ['grpc', 'http'] and dep.port == dep.ports['grpc']
        http = httpx.Client(base_url=f'http://127.0.0.1:{dep.ports["http"]}', timeout=30)
        try:
            # POST /post: the endpoint in the body; the reply as the reference system's
            reply = http.post('/post', json={'data': [{'text': 'a'}, {'text': 'b'}],
                                             'execEndpoint': '/upper',
                                             'header': {'requestId': 'r-1'}})
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert [d['text'] for d in body['data']] == ['A', 'B']
            assert body['header']['requestId'] == 'r-1'
            assert body['header']['execEndpoint'] == '/upper'
            assert body['header']['status']['code'] == 0
            assert body['routes'] == [{'executor': 'faulty', 'shard': 0, 'replica': 0}]

            # One route per endpoint; parameters reach it and its results come back
            reply = http.post('/results', json={'data': {'text': 'one doc'},
                                                'parameters': {'limit': 7}})
            assert reply.status_code == 200, reply.text
            assert reply.json()['parameters']['__results__']['faulty'] == {'count': 1,
                                                                           'seen_limit': 7}

            # An executor's error: 499, and header.status names it
            reply = http.post('/boom', json={'data': [{'text': 'x'}]})
            assert reply.status_code == 499
            status = reply.json()['header']['status']
            assert status['code'] == 1
            assert status['description'] == "executor 'faulty' raised KeyError: 'no such doc'"
            assert status['exception']['name'] == 'KeyError'
            assert status['exception']['executor'] == 'faulty'
            assert reply.json()['data'] == [{'text': 'x'}]  # the request's docs come back

            # Malformed bodies: 422 with what is wrong
            reply = http.post('/post', content=b'{"data": [', headers={'Content-Type':
                                                                       'application/json'})
            assert reply.status_code == 422 and 'not valid JSON' in reply.json()['detail']
            reply = http.post('/post', json={'data': [1], 'execEndpoint': '/upper'})
            assert reply.status_code == 422
            assert reply.json()['detail'] == 'data[0] must be a JSON object (a doc), got int: 1'
            reply = http.post('/post', json={'data': [], 'execEnpoint': '/upper'})  # misspelt
            assert reply.status_code == 422
            assert reply.json()['detail'][0]['loc'] == ['execEnpoint']

            # A body over max_message_size: 413 before the gateway reads it
            reply = http.post('/default', json={'data': [{'text': 'x' * LIMIT}]})
            assert reply.status_code == 413 and 'max_message_size' in reply.json()['detail']

            # OpenAPI: each endpoint, and its executor's doc schema
            schema = http.get('/openapi.json').json()
            assert {'/post', '/status', '/boom', '/results', '/default'} <= set(schema['paths'])
            data = schema['paths']['/results']['post']['requestBody']['content'][
                'application/json']['schema']['properties']['data']
            assert 'text' in data['anyOf'][0]['items']['properties']  # Faulty takes TextDoc
            assert http.get('/docs').status_code == 200

            # Still serving, over both doors, one gateway (one request count)
            assert http.post('/default', json={'data': [{'text': 'c'}]}).json()['data'][0]['text'] == 'C'
            assert dep.client.post('/upper', text_docs(1)).text == ['DOC-0']
            assert http.get('/status').json()['requests'] == dep.status()['requests'] == 5
        finally:
            http.close()


def test_http_client_has_the_grpc_clients_api_and_errors():
    with Deployment(name='faulty', uses=Faulty, quiet=True, protocol='http',
                    max_message_size=LIMIT) as dep:
        client = Client(host=f'http://127.0.0.1:{dep.port}', max_message_size=LIMIT)
        try:
            assert client.post('/upper', text_docs(3), request_size=1).text == \
                ['DOC-0', 'DOC-1', 'DOC-2']
            with pytest.raises(ExecutorError, match="'faulty' raised KeyError: 'no such doc'"):
                client.post('/boom', text_docs(1))
            with pytest.raises(MessageTooLargeError, match='max_message_size'):
                client.post('/upper', [text_docs(1)[0].__class__(text='x' * LIMIT)])
            assert client.status()['executors'][0]['name'] == 'faulty'
        finally:
            client.close()
        # The owner's status (widgets) still works: HTTP-only gateways keep a gRPC one for it
        assert dep.status()['requests'] == 4  # 3 + 1; the refused one never left


def test_require_secret_wants_the_bearer_token():
    with Deployment(uses=Echo, quiet=True, protocol='http', require_secret=True) as dep:
        url = f'http://127.0.0.1:{dep.port}'
        with httpx.Client(base_url=url, timeout=30) as http:
            reply = http.post('/post', json={'data': [{'text': 'a'}]})
            assert reply.status_code == 401 and 'Authorization: Bearer' in reply.json()['detail']
            assert http.get('/openapi.json').status_code == 401
            wrong = http.post('/post', json={'data': []}, headers={'Authorization': 'Bearer nope'})
            assert wrong.status_code == 401
            right = http.post('/post', json={'data': [{'text': 'a'}]},
                              headers={'Authorization': f'Bearer {dep.secret.decode()}'})
            assert right.status_code == 200 and right.json()['data'][0]['text'] == 'a'
        with pytest.raises(ConnectionError, match='requires the deployment secret'):
            Client(host=url).post('/', text_docs(1))
        assert Client(host=url, secret=dep.secret).post('/', text_docs(1)).text == ['doc-0']
        assert dep.post('/', text_docs(1)).text == ['doc-0']  # the owner's client holds it
        assert dep.status()['running']


@pytest.mark.skipif(shutil.which('openssl') is None, reason='needs openssl')
def test_https_with_tls(tmp_path):
    import subprocess
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'self.key', '-out',
                    'self.crt', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext',
                    'subjectAltName=IP:127.0.0.1,DNS:localhost'],
                   cwd=tmp_path, check=True, capture_output=True, timeout=60)
    cert, key = str(tmp_path / 'self.crt'), str(tmp_path / 'self.key')
    with Deployment(uses=Echo, quiet=True, protocol='http', ssl_certfile=cert,
                    ssl_keyfile=key) as dep:
        assert dep.post('/', text_docs(1)).text == ['doc-0']  # its own client trusts it
        reply = httpx.post(f'https://127.0.0.1:{dep.port}/post',
                           verify=ssl.create_default_context(cafile=cert),
                           json={'data': [{'text': 'a'}]}, timeout=30)
        assert reply.status_code == 200 and reply.json()['data'][0]['text'] == 'a'
        with pytest.raises(httpx.TransportError):  # plaintext to the TLS port
            httpx.post(f'http://127.0.0.1:{dep.port}/post', json={'data': []}, timeout=30)
        assert dep.status()['running']


def test_title_description_cors_and_uvicorn_options_reach_the_http_door():
    with Deployment(name='echo', uses=Echo, quiet=True, protocol='http', title='My search',
                    description='Finds things', cors=True,
                    uvicorn_kwargs={'timeout_keep_alive': 3}) as dep:
        base = f'http://127.0.0.1:{dep.port}'
        info = httpx.get(f'{base}/openapi.json', timeout=30).json()['info']
        assert (info['title'], info['description']) == ('My search', 'Finds things')
        preflight = httpx.options(f'{base}/post', timeout=30, headers={
            'Origin': 'http://example.test', 'Access-Control-Request-Method': 'POST'})
        assert preflight.status_code == 200
        assert preflight.headers['access-control-allow-origin'] == 'http://example.test'
        plain = httpx.post(f'{base}/post', json={'data': [{'text': 'a'}]},
                           headers={'Origin': 'http://example.test'}, timeout=30)
        assert plain.headers['access-control-allow-origin'] == '*' or \
            plain.headers['access-control-allow-origin'] == 'http://example.test'
    with Deployment(name='echo', uses=Echo, quiet=True, protocol='http') as dep:
        preflight = httpx.options(f'http://127.0.0.1:{dep.port}/post', timeout=30, headers={
            'Origin': 'http://example.test', 'Access-Control-Request-Method': 'POST'})
        assert 'access-control-allow-origin' not in preflight.headers
