"""The reference system's arguments against real deployments: Client.post options, py_modules."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest
from docarray import DocList
from docarray.documents import TextDoc

from nborch import AsyncClient, Client, Deployment, UnavailableError
from nborch.client import Response
from nborch.errors import IgnoredArgumentWarning
from nborch.ports import free_port
from tests.integration.helpers import Echo, text_docs

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def echo():
    with Deployment(name='echo', uses=Echo, quiet=True) as dep:
        yield dep


def test_return_responses_gives_one_response_per_request_in_input_order(echo):
    responses = echo.post('/', text_docs(5), request_size=2, return_responses=True)
    assert all(isinstance(r, Response) and r.error is None for r in responses)
    assert [d.text for r in responses for d in r.docs] == [f'doc-{i}' for i in range(5)]
    assert [len(r.docs) for r in responses] == [2, 2, 1]


def test_a_doc_class_as_return_type_gives_the_one_doc_back(echo):
    doc = echo.post('/', TextDoc(text='one'), return_type=TextDoc)
    assert isinstance(doc, TextDoc) and doc.text == 'one'
    many = echo.post('/', text_docs(2), return_type=TextDoc)
    assert isinstance(many, DocList) and many.text == ['doc-0', 'doc-1']


def test_client_asyncio_true_is_the_async_client(echo):
    client = Client(port=echo.port, asyncio=True, secret=echo.secret)
    assert isinstance(client, AsyncClient)

    async def post():
        try:
            return await client.post('/', text_docs(3))
        finally:
            await client.close()
    assert asyncio.run(post()).text == ['doc-0', 'doc-1', 'doc-2']


def test_client_prefetch_is_the_default_window(echo):
    assert Client(port=echo.port, prefetch=2).post('/', text_docs(6), request_size=1).text == \
        [f'doc-{i}' for i in range(6)]
    with pytest.raises(ValueError, match='prefetch=-1'):
        Client(port=echo.port, prefetch=-1)


def test_unknown_arguments_are_type_errors_and_ignored_ones_warn(echo):
    with pytest.raises(TypeError, match='unknown argument.*colour'):
        echo.post('/', text_docs(1), colour='red')
    with pytest.raises(TypeError, match='unknown argument.*colour'):
        Client(port=echo.port, colour='red')
    with pytest.warns(IgnoredArgumentWarning, match='tracing'):
        Client(port=echo.port, tracing=True)


def test_max_attempts_resends_until_the_gateway_is_up():
    port = free_port('127.0.0.1')
    outcome = {}

    def post():
        try:
            outcome['docs'] = Client(port=port).post('/', text_docs(2), max_attempts=40,
                                                     initial_backoff=0.25, max_backoff=0.5)
        except Exception as exc:  # reported below
            outcome['error'] = exc

    sender = threading.Thread(target=post)
    sender.start()
    time.sleep(0.6)  # the first attempts find nothing listening
    assert sender.is_alive()
    with Deployment(name='late', uses=Echo, port=port, quiet=True):
        sender.join(30)
    assert 'error' not in outcome, outcome.get('error')
    assert outcome['docs'].text == ['doc-0', 'doc-1']


def test_without_retries_nothing_listening_fails_at_once_and_retries_are_bounded():
    port = free_port('127.0.0.1')
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        Client(port=port).post('/', text_docs(1))
    once = time.monotonic() - started
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        Client(port=port).post('/', text_docs(1), max_attempts=3, initial_backoff=0.3,
                               max_backoff=0.3)
    # two waits: exactly 0.3 s, then at most 0.3 s
    assert time.monotonic() - started >= 0.3 + once * 0.5


def test_a_class_from_py_modules_runs_in_the_replicas(tmp_path):
    module = tmp_path / 'shouting_module.py'
    module.write_text('from nborch import Executor, requests\n\n'
                      'class ShoutFromFile(Executor):\n'
                      '    @requests\n    def f(self, docs, **kwargs):\n'
                      '        for d in docs:\n            d.text = d.text.upper()\n')
    with Deployment(name='shout', uses='ShoutFromFile', py_modules=[str(module)], replicas=2,
                    quiet=True) as dep:
        assert dep.post('/', text_docs(2), request_size=1).text == ['DOC-0', 'DOC-1']
