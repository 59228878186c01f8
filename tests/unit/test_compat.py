"""The reference system's arguments: each is taken (acted on, warned about, or refused with a
reason) and none is a TypeError; docs/compatibility.md has a row for each."""
import json
import os
import random
import re
import warnings

import pytest

from nborch import compat
from nborch.client import RetryPolicy
from nborch.errors import IgnoredArgumentWarning

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
REFERENCE = json.load(open(os.path.join(ROOT, 'tests', 'fixtures', 'reference',
                                        'jina_arguments.json')))


def test_a_set_no_effect_argument_warns_and_is_removed():
    kwargs = {'monitoring': True, 'replicas': 2}
    with pytest.warns(IgnoredArgumentWarning, match=r'monitoring=.*no effect.*status\(\)'):
        compat.take_reference_arguments(kwargs, 'Deployment')
    assert kwargs == {'replicas': 2}


def test_a_set_unsupported_argument_is_refused_with_what_to_do_instead():
    with pytest.raises(ValueError, match=r"uses_after='Merger'.*not supported.*Flow"):
        compat.take_reference_arguments({'uses_after': 'Merger'}, 'Deployment')


@pytest.mark.parametrize('name,value', [('when', None), ('reload', False), ('retries', -1),
                                        ('log_config', 'default'), ('docker_kwargs', {}),
                                        ('exit_on_exceptions', [])])
def test_the_reference_systems_default_values_pass_silently(name, value):
    kwargs = {name: value}
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert compat.take_reference_arguments(kwargs, 'Deployment') == {}


def test_an_argument_scoped_to_one_place_applies_only_there():
    # `prefetch` means nothing to a Flow's gateway, but is the client's window.
    with pytest.warns(IgnoredArgumentWarning):
        assert compat.take_reference_arguments({'prefetch': 10}, 'Flow') == {}
    assert compat.take_reference_arguments({'prefetch': 10}, 'Client.post') == {'prefetch': 10}


def test_every_argument_in_the_tables_is_a_reference_argument():
    known = {name for names in REFERENCE.values() if isinstance(names, list) for name in names}
    for name in [*compat.NO_EFFECT, *compat.NOT_SUPPORTED]:
        assert name.partition('@')[0] in known, name
    assert compat.QUIET <= compat.NO_EFFECT.keys()


def test_retry_waits_follow_the_reference_clients_schedule():
    policy = RetryPolicy.checked(5, 0.5, 2, 1.5)
    assert policy.wait(1) == 0.5
    random.seed(7)
    waits = [policy.wait(a) for a in range(2, 5) for _ in range(200)]
    assert 0 <= min(waits) and max(waits) <= 2.0
    assert max(policy.wait(2) for _ in range(200)) <= 0.5 * 1.5


@pytest.mark.parametrize('args', [(0, 0.5, 2, 1.5), (True, 0.5, 2, 1.5), (3, -1, 2, 1.5),
                                  (3, 0.5, 'x', 1.5)])
def test_bad_retry_settings_are_refused(args):
    with pytest.raises(ValueError):
        RetryPolicy.checked(*args)


def test_a_deployment_warns_about_a_no_effect_argument_and_refuses_an_unsupported_one():
    from nborch import Deployment
    with pytest.warns(IgnoredArgumentWarning, match='monitoring'):
        Deployment(name='d', monitoring=True, port_monitoring=9090)
    with pytest.raises(ValueError, match='uses_before.*not supported'):
        Deployment(name='d', uses_before='Filter')


def test_a_reference_yaml_with_such_arguments_loads_and_passes_them_on(tmp_path):
    from nborch import Deployment
    path = tmp_path / 'dep.yml'
    path.write_text('jtype: Deployment\nwith:\n  replicas: 2\n  tracing: true\n  when: null\n')
    with pytest.warns(IgnoredArgumentWarning, match='tracing'):
        dep = Deployment.load_config(str(path))
    assert dep.spec.replicas == 2
    path.write_text('jtype: Deployment\nuses_after: Merger\n')
    with pytest.raises(ValueError, match='uses_after'):
        Deployment.load_config(str(path))


def test_the_reference_systems_default_executor_passes_docs_through():
    from nborch.uses import PassThrough, resolve_uses
    assert resolve_uses('BaseExecutor') is PassThrough


def test_py_modules_are_imported_before_uses_is_resolved(tmp_path):
    from nborch import Deployment
    module = tmp_path / 'my_module_for_py_modules.py'
    module.write_text('from nborch import Executor, requests\n\n'
                      'class FromPyModules(Executor):\n'
                      '    @requests\n    def f(self, docs, **kwargs):\n        return docs\n')
    dep = Deployment(name='d', uses='FromPyModules', py_modules=[str(module)])
    assert dep.spec.executor_class.__name__ == 'FromPyModules'
    with pytest.raises(ValueError, match=r"py_modules: no such file 'nope\.py'"):
        Deployment(name='d', uses='FromPyModules', py_modules='nope.py')


def _documented_names() -> set[str]:
    text = open(os.path.join(ROOT, 'docs', 'compatibility.md')).read()
    rows = [line for line in text.splitlines() if line.startswith('| ')]
    return {name for row in rows for name in re.findall(r'`([a-z0-9_]+)`', row.split(' | ')[0])}


@pytest.mark.parametrize('api', ['Deployment', 'Deployment hidden', 'Flow', 'Client',
                                 'Client.post', 'requests', 'dynamic_batching'])
def test_every_reference_argument_has_a_row_in_the_compatibility_table(api):
    missing = sorted(set(REFERENCE[api]) - _documented_names())
    assert not missing, f'docs/compatibility.md has no row for {api} argument(s) {missing}'


def test_no_reference_deployment_argument_is_a_type_error():
    """Each is a Deployment field, or is warned about / refused by nborch.compat."""
    from nborch.spec import user_keys
    taken = set(user_keys()) | {k.partition('@')[0] for k in
                                (*compat.NO_EFFECT, *compat.NOT_SUPPORTED)}
    every = set(REFERENCE['Deployment']) | set(REFERENCE['Deployment hidden'])
    assert sorted(every - taken) == []


def test_the_reference_parsers_defaults_build_a_deployment_without_a_warning():
    from nborch import Deployment
    defaults = {**REFERENCE['Deployment defaults'], 'port': [free_port_here()],
                'host': ['127.0.0.1']}
    with warnings.catch_warnings():
        warnings.simplefilter('error', IgnoredArgumentWarning)
        dep = Deployment(**defaults)
    assert dep.spec.replicas == 1 and dep.spec.executor_class.__name__ == 'PassThrough'


def free_port_here() -> int:
    from nborch.ports import free_port
    return free_port('127.0.0.1')


def test_tls_true_on_an_external_executor_dials_it_over_tls():
    from nborch import Deployment
    dep = Deployment(name='remote', external=True, host='search.example', port=443, tls=True)
    assert [str(a) for a in dep.spec.external_addresses] == ['grpcs://search.example:443']
    assert dep.spec.tls_files is None
    with pytest.raises(ValueError, match='a server needs both cert and key'):
        Deployment(name='own', tls=True)  # nborch's own gateway needs its certificate
