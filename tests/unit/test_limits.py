"""Limits are options like any other: defaults, validation, YAML keys, CLI flags, plumbing."""
from __future__ import annotations

import numpy as np
import pytest
from docarray import DocList
from docarray.documents import TextDoc

from nborch import Deployment, Flow
from nborch.cli import build_parser
from nborch.config import deployment_keys, flow_keys
from nborch.protos import nborch_pb2 as pb
from nborch.runtime.codec import encode_docs
from nborch.runtime.grpc_options import channel_options, server_options
from nborch.runtime.limits import (DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_REQUEST_DOCS,
                                   GRPC_MAX_MESSAGE_SIZE, PACK_OVERHEAD, bounded_reply)
from nborch.spec import DeploymentSpec

ECHO = 'nborch.examples:Echo'


def test_defaults_fit_the_pages_whole_dataset_in_one_request():
    docs = DocList[TextDoc]([TextDoc(text=f'doc {i}', embedding=np.zeros(128, np.float32))
                             for i in range(DEFAULT_MAX_REQUEST_DOCS)])
    request = pb.DataRequest(endpoint='/index', docs=encode_docs(docs), write_id='x' * 32)
    assert request.ByteSize() < DEFAULT_MAX_MESSAGE_SIZE
    spec = DeploymentSpec.from_kwargs(uses=ECHO)
    assert (spec.max_message_size, spec.max_request_docs) == (64 << 20, 100_000)


@pytest.mark.parametrize('key,value', [('max_message_size', 0), ('max_message_size', 2**31),
                                       ('max_message_size', '4MB'), ('max_request_docs', -1),
                                       ('max_request_docs', True)])
def test_a_bad_limit_is_an_error_naming_it(key, value):
    with pytest.raises(ValueError, match=rf'{key}={value!r}: an integer in 1\.\.'):
        Deployment(uses=ECHO, **{key: value})


def test_flow_limits_are_its_gateways_and_its_executors_default():
    flow = Flow(max_message_size=1 << 20, max_request_docs=10).add(uses=ECHO, name='a') \
        .add(uses=ECHO, name='b', max_message_size=2 << 20)
    a, b = flow.executors
    assert (a.max_message_size, a.max_request_docs) == (1 << 20, 10)
    assert (b.max_message_size, b.max_request_docs) == (2 << 20, 10)
    assert flow._orchestrator.max_message_size == 1 << 20


def test_limits_are_yaml_keys_and_cli_flags(tmp_path):
    assert {'max_message_size', 'max_request_docs'} <= set(deployment_keys()) & set(flow_keys())
    path = tmp_path / 'dep.yml'
    path.write_text(f'jtype: Deployment\nwith:\n  uses: {ECHO}\n  max_message_size: 1048576\n'
                    '  max_request_docs: 7\n')
    spec = Deployment.load_config(str(path)).spec
    assert (spec.max_message_size, spec.max_request_docs) == (1 << 20, 7)
    parser = build_parser()
    for command in ('deployment', 'flow', 'executor'):
        args = parser.parse_args([command, '--uses', ECHO, '--max-message-size', '1048576',
                                  '--max-request-docs', '7'])
        assert (args.max_message_size, args.max_request_docs) == (1 << 20, 7)


def test_grpc_options_carry_the_limit_and_what_packing_adds():
    for options in (server_options(12345), channel_options(12345)):
        assert ('grpc.max_receive_message_length', 12345 + PACK_OVERHEAD) in options
        assert ('grpc.max_send_message_length', 12345 + PACK_OVERHEAD) in options
    assert ('grpc.max_receive_message_length', GRPC_MAX_MESSAGE_SIZE) in \
        server_options(GRPC_MAX_MESSAGE_SIZE)


def test_a_reply_too_large_becomes_an_error_reply_naming_the_limit():
    reply = pb.DataResponse(docs=b'x' * 2000)
    assert bounded_reply(reply, 5000, 'the gateway') is reply
    error = bounded_reply(reply, 1000, 'the gateway').error
    assert error.type == 'MessageTooLargeError'
    assert 'over the 1000-byte' in error.message and 'of the gateway' in error.message


def test_exports_carry_the_limits_to_executors_and_gateway(tmp_path):
    from tests.unit.test_export import arg, container, k8s_objects
    Deployment(name='enc', uses=ECHO, max_message_size=1 << 20,
               max_request_docs=7).to_kubernetes_yaml(str(tmp_path))
    objects = k8s_objects(tmp_path)
    args = container(objects['Deployment', 'enc'])['args']
    assert (arg(args, '--max-message-size'), arg(args, '--max-request-docs')) == ('1048576', '7')
    from nborch.runtime.topology import Topology
    topology = Topology.load(arg(container(objects['Deployment', 'gateway'])['args'],
                                 '--topology'))
    assert topology.max_message_size == 1 << 20
    assert topology.executors[0].max_message_size == 1 << 20
