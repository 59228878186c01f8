"""`Client(protocol='http')`'s transport: one `POST /post` per request, its JSON reply
turned back into the `DataResponse` a gRPC gateway would have sent, so that everything
above it (batching, callbacks, `return_type`, errors) is the gRPC client's own code."""
from __future__ import annotations

import asyncio
import json
import ssl

import httpx

from nborch.errors import MessageTooLargeError, UnavailableError
from nborch.protos import nborch_pb2 as pb
from nborch.runtime.http_docs import batch_to_json, json_to_batch
from nborch.runtime.limits import too_large
from nborch.runtime.tls import TlsFiles

ERROR = 1  # header.status.code of a failed request (the reference system's StatusProto)


def _ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca)
    if tls.cert is not None:
        context.load_cert_chain(tls.cert, tls.key)
    return context


class HttpTransport:
    """httpx clients to one HTTP gateway, one per event loop (as the gRPC channels)."""

    def __init__(self, host: str, port: int, *, tls: TlsFiles | None, secret: bytes | None,
                 max_message_size: int, limit_of: str):
        self.address = f'{host}:{port}'
        self.base_url = f'{"https" if tls is not None else "http"}://{host}:{port}'
        self._verify: ssl.SSLContext | bool = _ssl_context(tls) if tls is not None else True
        # HTTP has no handshake: the secret itself goes as a bearer token (use TLS).
        self._headers = {'Authorization': f'Bearer {secret.decode()}'} if secret else {}
        self.max_message_size = max_message_size
        self._limit_of = limit_of
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = {}

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        pair = self._clients.get(id(loop))
        if pair is None:
            client = httpx.AsyncClient(base_url=self.base_url, verify=self._verify,
                                       headers=self._headers, timeout=None,
                                       limits=httpx.Limits(max_connections=None,
                                                           max_keepalive_connections=100))
            pair = self._clients[id(loop)] = (loop, client)
        return pair[1]

    async def _call(self, method: str, path: str, timeout: float | None, **kwargs) -> httpx.Response:
        try:
            return await self._client().request(method, path, timeout=timeout, **kwargs)
        except httpx.TimeoutException:
            raise TimeoutError(f'{self.address} did not answer in {timeout} s') from None
        except httpx.TransportError as exc:  # refused, reset, broken mid-reply
            raise UnavailableError(f'cannot reach {self.base_url}: {exc or type(exc).__name__}') from None

    async def send(self, request: pb.DataRequest, timeout: float | None) -> pb.DataResponse:
        body = {'data': batch_to_json(request.docs), 'execEndpoint': request.endpoint,
                'parameters': json.loads(request.parameters) if request.parameters else {},
                'header': {'requestId': request.write_id}}
        if request.target_executor:
            body['targetExecutor'] = request.target_executor
        content = json.dumps(body).encode()
        if len(content) > self.max_message_size:
            raise too_large('the request', len(content), self.max_message_size, self._limit_of)
        reply = await self._call('POST', '/post', timeout, content=content,
                                 headers={'Content-Type': 'application/json'})
        if len(reply.content) > self.max_message_size:
            raise too_large('the reply', len(reply.content), self.max_message_size,
                            self._limit_of)
        payload = self._json(reply)
        if reply.status_code not in (200, 499, 413) or 'header' not in payload:
            raise self._refused(reply, payload)
        return self._data_response(payload)

    def _json(self, reply: httpx.Response) -> dict:
        try:
            payload = reply.json()
        except ValueError:
            raise RuntimeError(f'{self.base_url} answered HTTP {reply.status_code} with no JSON: '
                               f'{reply.text[:200]!r}') from None
        return payload if isinstance(payload, dict) else {'detail': payload}

    def _refused(self, reply: httpx.Response, payload: dict) -> Exception:
        detail = payload.get('detail', payload)
        text = f'{self.base_url} answered HTTP {reply.status_code}: {detail}'
        if reply.status_code == 413:
            return MessageTooLargeError(text)
        if reply.status_code == 503:
            return ConnectionError(str(detail))  # as a gRPC gateway's connection_error
        if reply.status_code == 504:
            return TimeoutError(str(detail))
        if reply.status_code == 401:
            return ConnectionError(f'cannot reach {self.address}: {detail}')
        return RuntimeError(text)

    @staticmethod
    def _data_response(payload: dict) -> pb.DataResponse:
        header = payload.get('header') or {}
        status = header.get('status') or {}
        response = pb.DataResponse(parameters=json.dumps(payload.get('parameters') or {}).encode())
        response.failed_shards.extend(header.get('failedShards') or [])
        response.route.extend(pb.Hop(executor=h.get('executor', ''), shard=h.get('shard', 0),
                                     replica=h.get('replica', 0))
                              for h in payload.get('routes') or [])
        if status.get('code') == ERROR:
            exception = status.get('exception') or {}
            args = exception.get('args') or [status.get('description', '')]
            response.error.CopyFrom(pb.ExecutorError(
                executor=exception.get('executor', ''), type=exception.get('name', 'Error'),
                message=str(args[0]), traceback='\n'.join(exception.get('stacks') or [])))
        else:
            response.docs = json_to_batch(payload.get('data'))
        return response

    async def status(self, timeout: float) -> dict:
        reply = await self._call('GET', '/status', timeout)
        payload = self._json(reply)
        if reply.status_code != 200:
            raise self._refused(reply, payload)
        return payload

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        pair = self._clients.pop(id(loop), None)
        if pair is not None:
            await pair[1].aclose()
