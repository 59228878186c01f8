"""Bad input fails in the constructor, before any process starts."""
import socket

import pytest

from nborch import Deployment, Executor, Flow, PortInUseError, requests
from nborch.addresses import parse_address
from nborch.spec import DeploymentSpec
from nborch.uses import PassThrough, resolve_uses


class SpecEcho(Executor):
    @requests
    def foo(self, docs, **kwargs):
        return docs


def test_uses_forms():
    assert resolve_uses(SpecEcho) is SpecEcho
    assert resolve_uses('SpecEcho') is SpecEcho
    assert resolve_uses('nborch.uses:PassThrough') is PassThrough
    assert resolve_uses('nborch.uses.PassThrough') is PassThrough
    assert resolve_uses(None) is PassThrough


@pytest.mark.parametrize('uses, error, message', [
    ('jinaai://jina-ai/CLIPEncoder', ValueError, 'no executor hub'),
    ('NoSuchExecutorAnywhere', ValueError, "unknown executor 'NoSuchExecutorAnywhere'"),
    ('no_such_module_xyz:Thing', ValueError, "cannot import 'no_such_module_xyz'"),
    ('nborch.uses:Nope', ValueError, "has no 'Nope'"),
    (dict, TypeError, 'not a subclass of nborch.Executor'),
    ('json:dumps', TypeError, 'not an Executor class'),
    (42, TypeError, 'takes an Executor class or a string'),
])
def test_bad_uses(uses, error, message):
    with pytest.raises(error, match=message):
        Deployment(uses=uses)


def test_a_name_two_classes_share_is_ambiguous():
    from tests.integration import helpers
    import nborch.examples  # noqa: F401  (also defines an Echo)
    assert helpers.Echo is not None
    with pytest.raises(ValueError, match="uses='Echo' is ambiguous: nborch.examples:Echo, "
                                         "tests.integration.helpers:Echo"):
        Deployment(uses='Echo')


def test_instance_instead_of_class():
    with pytest.raises(TypeError, match='not an instance'):
        Deployment(uses=SpecEcho())


@pytest.mark.parametrize('key, value', [('replicas', 0), ('replicas', -1), ('shards', 0),
                                        ('replicas', 1.5), ('replicas', True)])
def test_bad_counts(key, value):
    with pytest.raises(ValueError, match=f'{key}='):
        Deployment(uses=SpecEcho, **{key: value})


def test_unknown_argument_names_the_valid_ones():
    with pytest.raises(TypeError, match='unknown argument.*replica_count.*replicas'):
        Deployment(uses=SpecEcho, replica_count=3)


def test_reference_only_option_is_accepted():
    Deployment(uses=SpecEcho, install_requirements=True)


def test_bad_port():
    with pytest.raises(ValueError, match='port='):
        Deployment(uses=SpecEcho, port=70000)


def test_port_in_use_fails_before_any_process():
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = busy.getsockname()[1]
        dep = Deployment(uses=SpecEcho, port=port)
        with pytest.raises(PortInUseError, match=f'port {port} on 127.0.0.1 is in use'):
            dep.start()
        assert not dep._orchestrator.running


def test_default_port_is_assigned_and_host_is_loopback():
    dep = Deployment(uses=SpecEcho)
    assert 0 < dep.port < 65536
    assert dep.host == '127.0.0.1'


def test_needs_all_is_a_no_op():
    dep = Deployment(uses=SpecEcho, replicas=2)
    assert dep.needs_all() is dep


@pytest.mark.parametrize('host, port, expected', [
    ('localhost', 5555, ('localhost', 5555, False)),
    ('grpc://10.0.0.2:12346', None, ('10.0.0.2', 12346, False)),
    ('grpcs://example.org:443', None, ('example.org', 443, True)),
    ('localhost:12345', '12345', ('localhost', 12345, False)),
])
def test_parse_address(host, port, expected):
    assert parse_address(host, port) == expected


@pytest.mark.parametrize('host, port, message', [
    ('localhost', None, 'no port'), ('localhost', 'abc', 'must be a number'),
    ('localhost:1', 2, 'disagree'), ('localhost', 0, '1..65535'),
])
def test_parse_address_errors(host, port, message):
    with pytest.raises(ValueError, match=message):
        parse_address(host, port)


@pytest.mark.parametrize('protocol, expected', [
    ('grpc', ('grpc',)), ('GRPC', ('grpc',)), (['grpc'], ('grpc',)), (('GRPC',), ('grpc',)),
    ('http', ('http',)), ('HTTP', ('http',)), (['http', 'grpc'], ('http', 'grpc')),
    ('grpc,http', ('grpc', 'http')),
])
def test_the_reference_systems_protocol_spellings_are_accepted(protocol, expected):
    spec = DeploymentSpec.from_kwargs(uses=SpecEcho, protocol=protocol)
    assert spec.protocol == expected
    assert len(spec.ports) == len(expected) == len(set(spec.ports)) and spec.port == spec.ports[0]
    Flow(protocol=protocol)  # the gateway's, validated the same way


def test_an_enum_member_naming_a_protocol_is_accepted():
    import enum

    class ProtocolType(enum.Enum):  # the reference system's gateway enum, by shape
        GRPC = 0
        HTTP = 1
        WEBSOCKET = 2
    assert DeploymentSpec.from_kwargs(uses=SpecEcho, protocol=ProtocolType.GRPC).protocol == ('grpc',)
    assert DeploymentSpec.from_kwargs(uses=SpecEcho, protocol=ProtocolType.HTTP).protocol == ('http',)
    with pytest.raises(ValueError, match='does not serve websocket'):
        DeploymentSpec.from_kwargs(uses=SpecEcho, protocol=ProtocolType.WEBSOCKET)


@pytest.mark.parametrize('protocol, message', [
    (['grpc', 'websocket'], 'does not serve websocket'), ([], 'at least one protocol'),
    ('graphql', "serves 'grpc' and 'http', not 'graphql'"), (['http', 'HTTP'], 'named twice'),
])
def test_a_protocol_nborch_does_not_serve_is_refused_before_start(protocol, message):
    with pytest.raises(ValueError, match=message):
        DeploymentSpec.from_kwargs(uses=SpecEcho, protocol=protocol)
    with pytest.raises(ValueError, match=message):
        Flow(protocol=protocol)


def test_no_reduce_is_a_bool():
    assert Deployment(uses=SpecEcho, no_reduce=True).spec.no_reduce is True
    assert Deployment(uses=SpecEcho).spec.no_reduce is False
    with pytest.raises(ValueError, match=r"no_reduce='yes': True or False"):
        Deployment(uses=SpecEcho, no_reduce='yes')


def test_an_external_executor_needing_several_must_reduce():
    """The reference page: 'setting no_reduce=True is not allowed for these cases'."""
    flow = Flow().add(name='a').add(name='b', needs='gateway')
    with pytest.raises(ValueError, match=r"remote: an external executor that needs several "
                                         r"executors \(a, b\) must reduce"):
        flow.add(name='remote', host='localhost:12345', external=True, needs=['a', 'b'],
                 no_reduce=True)
    flow.add(name='remote', host='localhost:12345', external=True, needs=['a', 'b'])
    Flow().add(name='one', host='localhost:12345', external=True, no_reduce=True)


@pytest.mark.parametrize('protocol, port, message', [
    (['grpc', 'http'], 12345, 'needs one port per protocol'),
    (['grpc', 'http'], [12345], '1 port'),
    ('http', [1, 2], '2 port'),
    (['grpc', 'http'], [12345, 12345], 'its own port'),
    (['grpc', 'http'], [12345, 'x'], "port='x'"),
])
def test_ports_go_one_per_protocol(protocol, port, message):
    with pytest.raises(ValueError, match=message):
        DeploymentSpec.from_kwargs(uses=SpecEcho, protocol=protocol, port=port)


def test_given_ports_keep_the_protocols_order():
    spec = DeploymentSpec.from_kwargs(uses=SpecEcho, protocol=['http', 'grpc'], port=[23456, 23457])
    assert spec.ports == [23456, 23457] and spec.port == 23456 and spec.port_given


# -- live edits: what a re-run cell changes without a restart ------------------------------
_SOURCE = '''
class Redefined(Executor):
    @requests
    def f(self, docs, **kwargs):
        return docs
'''


def _define(source: str) -> type:
    from nborch import Executor, requests
    namespace = {'Executor': Executor, 'requests': requests, '__name__': '__main__'}
    exec(source, namespace)
    return namespace['Redefined']


def test_live_edits_name_what_a_running_executor_can_take():
    from nborch.spec import live_edits
    first = _define(_SOURCE)
    running = DeploymentSpec.from_kwargs(uses=first, replicas=2)
    same_code = _define(_SOURCE)  # a class cell run again, unchanged
    assert live_edits(running, DeploymentSpec.from_kwargs(uses=same_code, replicas=2)) == {}
    assert live_edits(running, DeploymentSpec.from_kwargs(uses=first, replicas=4)) == \
        {'replicas': 4}
    edited = _define(_SOURCE.replace('return docs', 'return None'))
    assert live_edits(running, DeploymentSpec.from_kwargs(uses=edited, replicas=2,
                                                          uses_with={'a': 1})) == \
        {'uses': edited, 'uses_with': {'a': 1}}
    assert live_edits(running, DeploymentSpec.from_kwargs(uses=first, replicas=2,
                                                          shards=2)) is None
