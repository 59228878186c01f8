"""The reference system's arguments: each is taken (acted on, warned about, or refused with a
reason) and none is a TypeError; docs/compatibility.md has a row for each."""
import json
import os
import random
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
