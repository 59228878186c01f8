"""The gateway's HTTP door: FastAPI on uvicorn, on the same event loop (and the same
`Gateway`, replica pools and counters) as its gRPC server.

Routes follow the reference system's HTTP gateway: `POST /post` with `execEndpoint` in
the body, and `POST /<endpoint>` per endpoint the executors declare, each taking
`{"data": [docs] | doc, "parameters": {...}, "header": {"requestId", "targetExecutor"}}`.
A reply is what the reference system's `DataRequest.to_dict()` gives: `header` (request
id, `status` with `code` 0 success / 1 error, `description` and `exception`),
`parameters`, `routes` and `data`. An executor's error is HTTP 499 (as its
docarray-v2 gateway answers), an unreachable executor 503, a timeout 504, a message over
`max_message_size` 413, a body that is not a request 422.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from nborch.errors import MessageTooLargeError
from nborch.protos import nborch_pb2 as pb
from nborch.runtime import auth
from nborch.runtime.http_docs import ANY_DOC_SCHEMA, batch_to_json, json_to_batch
from nborch.runtime.limits import bounded_reply, megabytes
from nborch.runtime.topology import GATEWAY, Topology

DEFAULT_ENDPOINT = '/default'  # nborch.executor's; no import of the Executor API here
EXECUTOR_ERROR_STATUS = 499
SUCCESS, ERROR = 0, 1  # the reference system's StatusProto codes


class Header(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra='forbid')
    request_id: str | None = None
    target_executor: str | None = None


class EndpointBody(BaseModel):
    """`POST /<endpoint>`: unknown keys are refused, so a misspelt one is an error."""
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra='forbid')
    data: list[Any] | dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None
    header: Header | None = None
    target_executor: str | None = None


class PostBody(EndpointBody):
    """`POST /post`: the endpoint travels in the body."""
    exec_endpoint: str = DEFAULT_ENDPOINT


def _error(status: int, detail: Any, **headers: str) -> JSONResponse:
    return JSONResponse({'detail': detail}, status_code=status, headers=headers or None)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before the app
    sees it (by Content-Length, or counted as it streams in: the handlers read the whole
    body anyway, so it is read here and handed on)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        length = dict(scope.get('headers') or []).get(b'content-length')
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(f'{int(length)} bytes', scope, receive, send)
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message['type'] != 'http.request':
                break  # the client went away: the app sees that too
            seen += len(message.get('body', b''))
            if seen > self.limit:
                return await self._refuse(f'at least {seen} bytes', scope, receive, send)
            if not message.get('more_body', False):
                break
        replay = iter(messages)

        async def replayed():
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, size: str, scope, receive, send):
        message = (f'the request body is {size}, over the {self.limit}-byte '
                   f'({megabytes(self.limit)}) max_message_size of the gateway; send fewer '
                   'docs per request or raise max_message_size= of the Deployment/Flow')
        await _error(413, message)(scope, receive, send)


class BearerGuard:
    """ASGI middleware for `require_secret`: every route wants `Authorization: Bearer
    <deployment secret>`; a refusal is 401 and counts in the gateway's `auth_refused`."""

    def __init__(self, app, link: auth.LinkAuth):
        self.app, self.link = app, link

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        value = dict(scope.get('headers') or []).get(b'authorization', b'').decode('latin-1')
        scheme, _, token = value.partition(' ')
        if scheme.lower() == 'bearer' and self.link.bearer_matches(token):
            return await self.app(scope, receive, send)
        client = scope.get('client') or ('?', 0)
        reason = 'wrong secret' if value else 'no Authorization header'
        self.link.record_rejection(f'HTTP {scope.get("path")}', f'{client[0]}:{client[1]}', reason)
        await _error(401, f'this gateway requires the deployment secret: send '
                          f'"Authorization: Bearer <secret>" ({reason})',
                     **{'WWW-Authenticate': 'Bearer'})(scope, receive, send)


def _route_schemas(topology: Topology) -> dict[str, tuple[dict, dict]]:
    """Endpoint path → (input doc schema, output doc schema): the input is what the
    executors after the gateway take, the output what the last ones give."""
    executors = topology.executors
    needed = {p for e in executors for p in e.needs}
    entries = [e for e in executors if GATEWAY in e.needs]
    sinks = [e for e in executors if e.name not in needed] or executors[-1:]
    paths: list[str] = []
    for e in executors:
        for path in e.endpoints or {}:
            if path not in paths:
                paths.append(path)

    def schema_of(candidates, path, key):
        for e in candidates:
            schemas = e.schemas or {}
            found = schemas.get(path) or schemas.get(DEFAULT_ENDPOINT)
            if found:
                return found[key]
        return ANY_DOC_SCHEMA

    return {path: (schema_of(entries, path, 'input'), schema_of(sinks, path, 'output'))
            for path in paths}


def _body_schema(doc: dict, with_endpoint: bool) -> dict:
    properties = {
        'data': {'anyOf': [{'type': 'array', 'items': doc}, doc, {'type': 'null'}],
                 'description': 'the docs (a list, or one doc)'},
        'parameters': {'type': 'object', 'description': "the endpoint's parameters"},
        'header': {'type': 'object', 'properties': {'requestId': {'type': 'string'},
                                                    'targetExecutor': {'type': 'string'}}},
        'targetExecutor': {'type': 'string', 'description': 'run only this executor'},
    }
    if with_endpoint:
        properties['execEndpoint'] = {'type': 'string', 'default': DEFAULT_ENDPOINT,
                                      'example': '/search'}
    return {'type': 'object', 'properties': properties, 'additionalProperties': False}


def _reply_schema(doc: dict) -> dict:
    return {'type': 'object', 'properties': {
        'header': {'type': 'object', 'properties': {
            'requestId': {'type': 'string'}, 'execEndpoint': {'type': 'string'},
            'targetExecutor': {'type': 'string'},
            'status': {'type': 'object', 'properties': {
                'code': {'type': 'integer', 'description': '0 success, 1 error'},
                'description': {'type': 'string'}, 'exception': {'type': 'object'}}},
            'failedShards': {'type': 'array', 'items': {'type': 'string'}}}},
        'parameters': {'type': 'object'},
        'routes': {'type': 'array', 'items': {'type': 'object', 'properties': {
            'executor': {'type': 'string'}, 'shard': {'type': 'integer'},
            'replica': {'type': 'integer'}}}},
        'data': {'type': 'array', 'items': doc}}}


def _openapi(in_schema: dict, out_schema: dict, with_endpoint: bool) -> dict:
    return {'requestBody': {'required': True, 'content': {'application/json': {
        'schema': _body_schema(in_schema, with_endpoint)}}},
        'responses': {'200': {'description': 'the docs the executors returned',
                              'content': {'application/json': {'schema': _reply_schema(out_schema)}}},
                      str(EXECUTOR_ERROR_STATUS): {'description': 'an executor raised: '
                                                   'header.status says which and what'},
                      '413': {'description': 'over max_message_size'},
                      '422': {'description': 'the body is not a request'},
                      '503': {'description': 'an executor is unreachable'}}}


def _version() -> str:
    try:
        from importlib.metadata import version
        return version('nborch')
    except Exception:
        return 'unknown'


def build_app(gateway, topology: Topology) -> FastAPI:
    """The HTTP app serving `gateway` (a runtime.gateway.Gateway)."""
    options = topology.http_options or {}
    app = FastAPI(title=options.get('title') or 'nborch gateway', version=_version(),
                  description=options.get('description') or
                  'Post docs to the executors behind this gateway: `POST /post` with '
                  '`execEndpoint`, or `POST /<endpoint>`.')
    if options.get('cors'):  # as the reference system's `cors`: every origin, method, header
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=['*'], allow_credentials=True,
                           allow_methods=['*'], allow_headers=['*'])
    limit = topology.max_message_size

    async def parse(request: Request, model: type[EndpointBody]):
        raw = await request.body()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError as exc:
            return _error(422, f'the body is not valid JSON: {exc}')
        if not isinstance(payload, dict):
            return _error(422, 'the body must be a JSON object: {"data": [...], '
                               '"parameters": {...}}')
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            return _error(422, json.loads(exc.json(include_url=False)))

    async def run(body: EndpointBody, endpoint: str) -> JSONResponse:
        header = body.header or Header()
        target = body.target_executor or header.target_executor or ''
        request_id = header.request_id or uuid.uuid4().hex
        try:
            docs = json_to_batch(body.data)
        except (ValueError, TypeError) as exc:
            return _error(422, str(exc))
        parameters = body.parameters or {}
        request = pb.DataRequest(endpoint=endpoint, docs=docs,
                                 parameters=json.dumps(parameters).encode(),
                                 write_id=request_id, target_executor=target)
        head = {'requestId': request_id, 'execEndpoint': endpoint, 'targetExecutor': target,
                'status': {'code': SUCCESS, 'description': ''}, 'failedShards': []}
        try:
            reply = bounded_reply(await gateway.process(request), limit, 'the gateway')
        except MessageTooLargeError as exc:
            reply = pb.DataResponse(error=pb.ExecutorError(
                executor=GATEWAY, type=MessageTooLargeError.__name__, message=str(exc)))
        except (TimeoutError, asyncio.TimeoutError) as exc:
            return _failed(504, head, body, parameters, exc)
        except ConnectionError as exc:
            return _failed(503, head, body, parameters, exc)
        head['failedShards'] = list(reply.failed_shards)
        routes = [{'executor': h.executor, 'shard': h.shard, 'replica': h.replica}
                  for h in reply.route]
        out_parameters = json.loads(reply.parameters) if reply.parameters else parameters
        if reply.HasField('error'):
            e = reply.error
            head['status'] = {'code': ERROR,
                              'description': f'executor {e.executor!r} raised {e.type}: {e.message}',
                              'exception': {'name': e.type, 'args': [e.message],
                                            'stacks': e.traceback.splitlines(),
                                            'executor': e.executor}}
            status = 413 if e.type == MessageTooLargeError.__name__ else EXECUTOR_ERROR_STATUS
            # As the reference system does, a failed request's reply carries its docs
            return JSONResponse({'header': head, 'parameters': out_parameters, 'routes': routes,
                                 'data': _as_list(body.data),
                                 'detail': head['status']['description']}, status_code=status)
        return JSONResponse({'header': head, 'parameters': out_parameters, 'routes': routes,
                             'data': batch_to_json(reply.docs)})

    def _failed(status: int, head: dict, body: EndpointBody, parameters: dict, exc) -> JSONResponse:
        head['status'] = {'code': ERROR, 'description': str(exc),
                          'exception': {'name': type(exc).__name__, 'args': [str(exc)],
                                        'stacks': [], 'executor': ''}}
        return JSONResponse({'header': head, 'parameters': parameters, 'routes': [],
                             'data': _as_list(body.data), 'detail': str(exc)},
                            status_code=status)

    any_in = ANY_DOC_SCHEMA

    @app.post('/post', summary='Post a data request to some endpoint', tags=['Debug'],
              openapi_extra=_openapi(any_in, any_in, with_endpoint=True))
    async def post(request: Request):
        body = await parse(request, PostBody)
        if isinstance(body, JSONResponse):
            return body
        return await run(body, body.exec_endpoint)

    @app.get('/status', summary="The gateway's routing status", tags=['Debug'])
    async def status():
        return {'nborch': {'version': _version()}, **await gateway.status()}

    for path, (in_schema, out_schema) in _route_schemas(topology).items():
        route = '/' + path.strip('/')
        if route == '/post':
            continue  # the debug route's: reach that endpoint with /post's execEndpoint

        async def endpoint(request: Request, _path=path):
            body = await parse(request, EndpointBody)
            if isinstance(body, JSONResponse):
                return body
            return await run(body, _path)

        app.add_api_route(route, endpoint, methods=['POST'], summary=f'Endpoint {path}',
                          name=f'endpoint {path}', tags=['Endpoints'],
                          openapi_extra=_openapi(in_schema, out_schema, with_endpoint=False))

    served = BodyLimit(app, limit)
    if not topology.require_secret:
        return served
    link = auth.installed()
    if link is None:
        raise ValueError('require_secret: this gateway holds no deployment secret (--secret-file)')
    return BearerGuard(served, link)  # outermost: a stranger's body is never read


def _as_list(data) -> list:
    return [] if data is None else data if isinstance(data, list) else [data]


class _Server(uvicorn.Server):
    # The gateway's own signal handlers stop both doors; uvicorn's would replace them.
    @contextlib.contextmanager
    def capture_signals(self):
        yield


def listen(host: str, port: int) -> socket.socket:
    """The HTTP door's socket, bound now so that a taken port is a clear error."""
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # A restarted gateway binds the port its predecessor's connections may still hold in
    # TIME_WAIT (Linux still refuses a second listener with it)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f'cannot listen on {host}:{port} (http): {exc.strerror}') from None
    sock.set_inheritable(True)
    return sock


async def start_http(app, sock: socket.socket, tls: dict | None,
                     uvicorn_kwargs: dict | None = None) -> tuple[_Server, asyncio.Task]:
    """Serve `app` on `sock` (HTTPS with `tls`: {'cert', 'key'[, 'ca': clients must show a
    certificate it signed]}; `uvicorn_kwargs` are the user's uvicorn.Config options, checked
    by the spec); returns once it accepts connections."""
    ssl_options = {}
    if tls:
        ssl_options = {'ssl_certfile': tls['cert'], 'ssl_keyfile': tls['key']}
        if tls.get('ca'):
            ssl_options.update(ssl_ca_certs=tls['ca'], ssl_cert_reqs=ssl.CERT_REQUIRED)
    settings = {'log_level': 'warning', 'access_log': False, 'timeout_graceful_shutdown': 1,
                **(uvicorn_kwargs or {})}
    config = uvicorn.Config(app, lifespan='off', **settings, **ssl_options)
    server = _Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise OSError('the HTTP server stopped while starting')
        await asyncio.sleep(0.01)
    return server, task


async def stop_http(server: _Server, task: asyncio.Task) -> None:
    server.should_exit = True
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=3)
