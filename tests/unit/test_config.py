"""YAML loading: every form on the reference page, and one-line errors that
name the file, the line and the key."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nborch import Deployment, Executor, Flow
from nborch.runtime.worker_spec import WorkerSpec
from nborch.config import ConfigError, deployment_keys, deployment_kwargs, flow_kwargs
from nborch.uses import executor_yaml
from nborch.yaml_source import yaml_jtype
from nborch.uses import resolve_uses, resolve_uses_and_defaults

FIXTURES = Path(__file__).resolve().parent.parent / 'fixtures'
REFERENCE = FIXTURES / 'reference'
LOCAL = FIXTURES / 'local'
UPPER_YML = str(LOCAL / 'upper.yml')
HUB = 'jinaai://jina-ai/CLIPEncoder'


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip('\n'))
    return str(path)


def config_error(func, path: str) -> str:
    with pytest.raises(ConfigError) as info:
        func(path)
    message = str(info.value)
    assert '\n' not in message
    return message


# -- the reference page's YAML --------------------------------------------------------------

@pytest.mark.parametrize('name', ['deployment.yml', 'deployment_with.yml'])
def test_reference_deployment_forms_load_verbatim(name):
    assert deployment_kwargs(REFERENCE / name) == {'uses': HUB, 'install_requirements': True,
                                                   'replicas': 5}


def test_reference_flow_form_loads_verbatim():
    assert flow_kwargs(REFERENCE / 'flow.yml') == ({}, [{'uses': HUB, 'install_requirements': True,
                                                         'replicas': 5}])


@pytest.mark.parametrize('name', ['deployment.yml', 'deployment_with.yml'])
def test_hub_uses_from_yaml_gets_the_no_hub_error(name):
    with pytest.raises(ValueError, match='nborch has no executor hub'):
        Deployment.load_config(str(REFERENCE / name))


def test_hub_uses_from_a_flow_yaml_gets_the_no_hub_error():
    with pytest.raises(ValueError, match='nborch has no executor hub'):
        Flow.load_config(str(REFERENCE / 'flow.yml'))


def test_resolve_uses_names_the_alternatives_to_a_hub():
    with pytest.raises(ValueError) as info:
        resolve_uses(HUB)
    assert str(info.value) == (
        f"uses='{HUB}': nborch has no executor hub. Use an Executor class, "
        "'module.path:ClassName', the name of an Executor subclass you imported, "
        'or an executor YAML file')


@pytest.mark.parametrize('name', ['deployment.yml', 'deployment_with.yml'])
def test_local_deployment_forms_give_the_same_kwargs_with_uses_made_absolute(name):
    assert deployment_kwargs(LOCAL / name) == {'uses': UPPER_YML, 'install_requirements': True,
                                               'replicas': 5}


def test_local_deployment_yaml_builds_a_deployment_without_starting_it():
    dep = Deployment.load_config(str(LOCAL / 'deployment_with.yml'))
    assert dep.spec.replicas == 5
    assert dep.spec.executor_class.__name__ == 'YamlUpper'
    assert not dep.running


def test_local_flow_forms():
    assert flow_kwargs(LOCAL / 'flow.yml') == ({}, [{'uses': UPPER_YML,
                                                     'install_requirements': True,
                                                     'replicas': 5}])
    gateway, executors = flow_kwargs(LOCAL / 'flow_needs.yml')
    assert gateway == {'port': 12345}
    assert executors == [
        {'name': 'encoder', 'uses': UPPER_YML, 'replicas': 2},
        {'name': 'indexer', 'uses': 'tests.integration.helpers:Echo', 'shards': 2,
         'polling': {'/search': 'ALL', '*': 'ANY'}, 'needs': 'encoder'},
    ]


def test_flow_needs_as_a_list_and_gateway_keys(tmp_path):
    path = write(tmp_path, 'flow.yml', '''
        jtype: Flow
        with: {name: search, host: 127.0.0.1, port: 5555, quiet: true, timeout_ready: 1000}
        executors:
          - {name: a}
          - {name: b}
          - name: join
            needs: [a, b]
    ''')
    gateway, executors = flow_kwargs(path)
    assert gateway == {'name': 'search', 'host': '127.0.0.1', 'port': 5555, 'quiet': True,
                       'timeout_ready': 1000}
    assert executors[2] == {'name': 'join', 'needs': ['a', 'b']}


def test_pass_through_keys_and_uses_class_paths_are_kept_as_written(tmp_path):
    path = write(tmp_path, 'dep.yml', '''
        jtype: Deployment
        uses: tests.integration.helpers:Echo
        stateful: true
        workspace: ./raft
        peer_ports: [12345, 12346, 12347]
        raft_configuration: {heartbeat_timeout: 1000}
        replicas: 3
    ''')
    assert deployment_kwargs(path) == {
        'uses': 'tests.integration.helpers:Echo', 'stateful': True, 'workspace': './raft',
        'peer_ports': [12345, 12346, 12347], 'raft_configuration': {'heartbeat_timeout': 1000},
        'replicas': 3}


def test_uses_yaml_is_relative_to_the_yaml_file_and_absolute_paths_stay(tmp_path):
    (tmp_path / 'sub').mkdir()
    path = write(tmp_path / 'sub', 'dep.yml', '''
        jtype: Deployment
        with:
          uses: ../execs/enc.yaml
    ''')
    assert deployment_kwargs(path) == {'uses': str(tmp_path / 'execs' / 'enc.yaml')}
    path = write(tmp_path, 'dep2.yml', f'''
        jtype: Deployment
        uses: {UPPER_YML}
    ''')
    assert deployment_kwargs(path) == {'uses': UPPER_YML}


def test_keys_come_from_deployment_spec():
    keys = deployment_keys()
    for key in ('name', 'uses', 'uses_with', 'replicas', 'shards', 'polling', 'port', 'host',
                'env', 'workspace', 'timeout_ready', 'quiet', 'external', 'stateful',
                'peer_ports', 'raft_configuration'):
        assert key in keys
    assert 'executor_class' not in keys and 'polling_table' not in keys


def test_yaml_jtype():
    assert yaml_jtype(LOCAL / 'deployment.yml') == 'Deployment'
    assert yaml_jtype(LOCAL / 'flow.yml') == 'Flow'
    assert yaml_jtype(UPPER_YML) == 'YamlUpper'


# -- executor YAML ------------------------------------------------------------------------------

def test_executor_yaml_with_py_modules_and_with():
    cls, defaults = executor_yaml(UPPER_YML)
    assert cls.__name__ == 'YamlUpper' and issubclass(cls, Executor)
    assert defaults == {'suffix': '!'}
    assert sys.modules[cls.__module__].__file__ == str(LOCAL / 'upper_executor.py')
    assert Executor.registered('YamlUpper') is cls
    assert executor_yaml(UPPER_YML)[0] is cls  # an unchanged file is not imported again


def test_classes_from_py_modules_travel_by_value(tmp_path):
    """A replica process gets the class without importing the file (it is not importable)."""
    cls, _ = executor_yaml(UPPER_YML)
    (tmp_path / 'packed').write_text(WorkerSpec.pack_class(cls))
    code = textwrap.dedent(f"""
        import sys
        from nborch.runtime.worker_spec import WorkerSpec
        cls = WorkerSpec(name='u', uses=open({str(tmp_path / 'packed')!r}).read()).executor_class()
        assert not any('upper_executor' in (getattr(m, '__file__', '') or '')
                       for m in sys.modules.values())
        print(cls.__name__, cls(suffix='x').suffix, sorted(cls.endpoints()))
    """)
    done = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['YamlUpper', 'x', "['/default']"]


def test_resolve_uses_and_defaults():
    cls, defaults = resolve_uses_and_defaults(UPPER_YML)
    assert cls.__name__ == 'YamlUpper' and defaults == {'suffix': '!'}
    defaults['suffix'] = 'changed'  # the caller owns the dict
    assert resolve_uses_and_defaults(UPPER_YML)[1] == {'suffix': '!'}
    assert resolve_uses(UPPER_YML) is cls
    from tests.integration.helpers import Echo
    assert resolve_uses_and_defaults('tests.integration.helpers:Echo') == (Echo, {})
    assert resolve_uses_and_defaults(Echo) == (Echo, {})


def test_executor_yaml_legacy_metas_py_modules_and_class_path_jtype(tmp_path):
    (tmp_path / 'mine.py').write_text(textwrap.dedent('''
        from nborch import Executor
        class MetasExec(Executor):
            pass
    '''))
    path = write(tmp_path, 'exec.yml', '''
        jtype: MetasExec
        metas:
          py_modules: mine.py
    ''')
    cls, defaults = executor_yaml(path)
    assert cls.__name__ == 'MetasExec' and defaults == {}
    path = write(tmp_path, 'exec2.yaml', '''
        jtype: tests.integration.helpers:WhoAmI
        with: {}
    ''')
    from tests.integration.helpers import WhoAmI
    assert executor_yaml(path) == (WhoAmI, {})


# -- errors: one line, file, line, key ----------------------------------------------------------

def test_yaml_syntax_error(tmp_path):
    path = write(tmp_path, 'dep.yml', '''
        jtype: Deployment
        with:
          replicas: [1, 2
          shards: 2
    ''')
    assert config_error(deployment_kwargs, path) == \
        f"{path}:4: invalid YAML: expected ',' or ']', but got ':'"


def test_unknown_key_with_suggestion(tmp_path):
    path = write(tmp_path, 'dep.yml', '''
        jtype: Deployment
        with:
          uses: tests.integration.helpers:Echo
          replica: 3
    ''')
    assert config_error(deployment_kwargs, path) == \
        f"{path}:4: unknown key 'replica' in a Deployment's with: (did you mean 'replicas'?)"


def test_unknown_key_at_top_level_and_in_a_flow_executor(tmp_path):
    path = write(tmp_path, 'dep.yml', '''
        jtype: Deployment
        shard: 2
    ''')
    assert config_error(deployment_kwargs, path) == \
        f"{path}:2: unknown key 'shard' in a Deployment (did you mean 'shards'?)"
    path = write(tmp_path, 'flow.yml', '''
        jtype: Flow
        with:
          prot: 5555
        executors:
          - name: a
    ''')
    assert config_error(flow_kwargs, path) == \
        f"{path}:3: unknown key 'prot' in a Flow's with: (did you mean 'port'?)"
    path = write(tmp_path, 'flow.yml', '''
        jtype: Flow
        executors:
          - name: a
          - name: b
            polling: ALL
            neds: a
    ''')
    assert config_error(flow_kwargs, path) == \
        f"{path}:6: unknown key 'neds' in executors[1] of a Flow (did you mean 'needs'?)"


def test_unknown_key_without_a_close_match_lists_the_keys(tmp_path):
    path = write(tmp_path, 'flow.yml', '''
        jtype: Flow
        with: {zzz: 1}
    ''')
    message = config_error(flow_kwargs, path)
    assert message.startswith(f"{path}:2: unknown key 'zzz' in a Flow's with: (expected one of: ")
    assert 'port' in message and 'timeout_ready' in message


def test_wrong_jtype(tmp_path):
    path = write(tmp_path, 'dep.yml', '''
        # a flow, given where a deployment is expected
        jtype: Flow
        executors: []
    ''')
    assert config_error(deployment_kwargs, path) == (
        f"{path}:2: jtype 'Flow': this is a Flow YAML, not a Deployment YAML "
        '(load it with Flow.load_config or `nborch flow --uses`)')
    assert config_error(flow_kwargs, UPPER_YML) == (
        f"{UPPER_YML}:1: jtype 'YamlUpper': this is an executor YAML, not a Flow YAML "
        '(name it in uses: of a Deployment or of a Flow executor)')
    path = write(tmp_path, 'exec.yml', 'jtype: Deployment\n')
    assert config_error(executor_yaml, path) == (
        f"{path}:1: jtype 'Deployment': this is a Deployment YAML, not an executor YAML "
        '(load it with Deployment.load_config or `nborch deployment --uses`)')


def test_missing_jtype_and_not_a_mapping(tmp_path):
    path = write(tmp_path, 'dep.yml', 'replicas: 3\n')
    assert config_error(deployment_kwargs, path) == f"{path}:1: missing 'jtype: Deployment'"
    path = write(tmp_path, 'dep.yml', '- jtype: Deployment\n')
    assert config_error(deployment_kwargs, path) == \
        f"{path}:1: expected a mapping with 'jtype: Deployment', got a list"
    path = write(tmp_path, 'empty.yml', '\n')
    assert config_error(flow_kwargs, path) == f"{path}: the file is empty; expected 'jtype: Flow'"


def test_executors_not_a_list(tmp_path):
    path = write(tmp_path, 'flow.yml', '''
        jtype: Flow
        executors:
          uses: tests.integration.helpers:Echo
          replicas: 2
    ''')
    assert config_error(flow_kwargs, path) == (
        f"{path}:3: executors: expected a list of executors (each line starting with '- '), "
        'got a mapping')


def test_needs_not_a_name_or_a_list_of_names(tmp_path):
    path = write(tmp_path, 'flow.yml', '''
        jtype: Flow
        executors:
          - name: a
          - name: b
            needs: {a: 1}
    ''')
    assert config_error(flow_kwargs, path) == \
        f"{path}:5: executors[1]: needs: expected an executor name or a list of names, got {{'a': 1}}"
    path = write(tmp_path, 'flow.yml', '''
        jtype: Flow
        executors:
          - name: a
            needs: [gateway, 3]
    ''')
    assert config_error(flow_kwargs, path) == \
        f"{path}:4: executors[0]: needs: expected an executor name or a list of names, " \
        "got ['gateway', 3]"


def test_with_not_a_mapping_and_duplicate_keys(tmp_path):
    path = write(tmp_path, 'dep.yml', '''
        jtype: Deployment
        with: [replicas, 3]
    ''')
    assert config_error(deployment_kwargs, path) == f'{path}:2: with:: expected a mapping, got a list'
    path = write(tmp_path, 'dep.yml', '''
        jtype: Deployment
        replicas: 2
        with:
          replicas: 3
    ''')
    assert config_error(deployment_kwargs, path) == \
        f"{path}:4: 'replicas' is given twice: at the top (line 2) and under with:"
    path = write(tmp_path, 'dep.yml', '''
        jtype: Deployment
        replicas: 2
        replicas: 3
    ''')
    assert config_error(deployment_kwargs, path) == \
        f"{path}:3: duplicate key 'replicas' in the file (first on line 2)"


def test_missing_file(tmp_path):
    path = str(tmp_path / 'nope.yml')
    assert config_error(deployment_kwargs, path) == f'{path}: no such file'
    with pytest.raises(ConfigError, match='nope.yml: no such file'):
        resolve_uses_and_defaults(path)


def test_py_modules_file_missing(tmp_path):
    path = write(tmp_path, 'exec.yml', '''
        jtype: Ghost
        py_modules:
          - ghost.py
    ''')
    assert config_error(executor_yaml, path) == \
        f"{path}:3: py_modules: no such file 'ghost.py' (in {tmp_path})"


def test_py_modules_import_failure_is_one_line(tmp_path):
    (tmp_path / 'broken.py').write_text('import no_such_module_anywhere_xyz\n')
    path = write(tmp_path, 'exec.yml', '''
        jtype: Broken
        py_modules: [broken.py]
    ''')
    assert config_error(executor_yaml, path) == (
        f"{path}:2: py_modules: importing 'broken.py' failed: ModuleNotFoundError: "
        "No module named 'no_such_module_anywhere_xyz'")


def test_jtype_class_not_found(tmp_path):
    path = write(tmp_path, 'exec.yml', '''
        jtype: YamlUper
        py_modules: [../local/upper_executor.py]
    '''.replace('../local', str(LOCAL)))
    assert config_error(executor_yaml, path) == (
        f"{path}:1: jtype 'YamlUper': no Executor class of that name in py_modules "
        "upper_executor.py nor registered; did you mean 'YamlUpper'?")
    path = write(tmp_path, 'exec.yml', 'jtype: NoSuchThingAnywhereQ\n')
    assert config_error(executor_yaml, path) == (
        f"{path}:1: jtype 'NoSuchThingAnywhereQ': no Executor class of that name registered "
        "(and no py_modules listed); or give it as 'module:Class'")
    path = write(tmp_path, 'exec.yml', 'with: {a: 1}\njtype: no_such_module_q:Thing\n')
    assert config_error(executor_yaml, path) == (
        f"{path}:2: jtype 'no_such_module_q:Thing': unknown executor 'no_such_module_q:Thing': "
        "cannot import 'no_such_module_q' (No module named 'no_such_module_q')")


def test_unknown_key_in_an_executor_yaml_and_its_metas(tmp_path):
    path = write(tmp_path, 'exec.yml', '''
        jtype: Echo
        witth: {a: 1}
    ''')
    assert config_error(executor_yaml, path) == \
        f"{path}:2: unknown key 'witth' in an executor YAML (did you mean 'with'?)"
    path = write(tmp_path, 'exec.yml', '''
        jtype: Echo
        metas:
          py_module: x.py
    ''')
    assert config_error(executor_yaml, path) == \
        f"{path}:3: unknown key 'py_module' in metas: (did you mean 'py_modules'?)"


def test_flow_gateway_keys_follow_flow_and_merge_keys_work(tmp_path):
    path = write(tmp_path, 'flow.yml', '''
        jtype: Flow
        version: '1'
        with: {protocol: grpc}
        executors:
          - &encoder
            name: a
            replicas: 2
          - <<: *encoder
            name: b
            needs: a
    ''')
    assert flow_kwargs(path) == ({'protocol': 'grpc'}, [
        {'name': 'a', 'replicas': 2}, {'name': 'b', 'replicas': 2, 'needs': 'a'}])


def test_misspelt_with_is_suggested(tmp_path):
    path = write(tmp_path, 'dep.yml', '''
        jtype: Deployment
        witth: {replicas: 2}
    ''')
    assert config_error(deployment_kwargs, path) == \
        f"{path}:2: unknown key 'witth' in a Deployment (did you mean 'with'?)"


def test_no_reduce_is_a_yaml_key_of_a_flow_executor(tmp_path):
    path = write(tmp_path, 'flow.yml', '''
        jtype: Flow
        executors:
          - {name: a}
          - {name: b, needs: gateway}
          - {name: join, needs: [a, b], no_reduce: true}
    ''')
    assert 'no_reduce' in deployment_keys()
    assert [e.no_reduce for e in Flow.load_config(path).executors] == [False, False, True]
