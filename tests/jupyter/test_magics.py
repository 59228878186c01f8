"""The magics through an in-process IPython shell (like ipyparallel's magic tests): names,
flags, YAML forms, errors and unload. Lifetimes against a real kernel: test_kernel.py."""
from __future__ import annotations

import os
import sys

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from nborch import Deployment, Flow
from nborch.config import ConfigError
from nborch.yaml_text import deployment_from_yaml, flow_from_yaml
from nborch.orchestrator import stop_all
from nborch.ports import free_port
from tests.jupyter.kernel import EXECUTORS, nborch_processes

pytestmark = pytest.mark.timeout(120)

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'fixtures')


@pytest.fixture(scope='module')
def shell():
    """One shell for the module; its `__main__` replaces pytest's until the module ends."""
    main = sys.modules['__main__']
    config = Config()
    config.HistoryManager.enabled = False
    ip = InteractiveShell.instance(config=config)
    try:
        ip.run_line_magic('load_ext', 'nborch')
        run(ip, EXECUTORS)
        yield ip
    finally:
        ip.run_line_magic('unload_ext', 'nborch')
        InteractiveShell.clear_instance()
        sys.modules['__main__'] = main


@pytest.fixture
def ip(shell):
    try:
        yield shell
    finally:
        stop_all()


def run(ip, cell: str):
    """Run a cell; return its result, or raise what it raised."""
    result = ip.run_cell(cell)
    if result.error_before_exec or result.error_in_exec:
        raise result.error_before_exec or result.error_in_exec
    return result.result


def test_deployment_cell_binds_the_yaml_name_and_returns_the_running_deployment(ip):
    dep = run(ip, '%%deployment\nname: slow-encoder\nuses: Upper\nquiet: true\n')
    assert ip.user_ns['slow_encoder'] is dep
    assert isinstance(dep, Deployment) and dep.running and dep.name == 'slow-encoder'
    assert run(ip, "slow_encoder.post('/', text_docs(1)).text") == ['DOC-0']


def test_default_names_and_flags_over_the_yaml(ip):
    port = free_port()
    dep = run(ip, f'%%deployment --replicas 2 --port {port}\nuses: Upper\nreplicas: 1\n'
                  'quiet: true\n')
    assert ip.user_ns['deployment'] is dep and dep.name == 'deployment'
    assert (dep.spec.replicas, dep.port) == (2, port)
    named = run(ip, '%%deployment enc --quiet\nuses: Upper\n')
    assert ip.user_ns['enc'] is named and named.name == 'enc'  # NAME names it too


def test_flow_cell_with_gateway_flags(ip):
    port = free_port()
    flow = run(ip, f'%%flow pipeline --port {port} --quiet\n'
                   'jtype: Flow\n'
                   'executors:\n'
                   '  - name: up\n'
                   '    uses: Upper\n'
                   '    replicas: 2\n'
                   '  - name: passthrough\n')
    assert ip.user_ns['pipeline'] is flow and isinstance(flow, Flow) and flow.port == port
    assert [e.name for e in flow.executors] == ['up', 'passthrough']
    assert run(ip, "pipeline.post('/', text_docs(2)).text") == ['DOC-0', 'DOC-1']
    assert 'Upper ready: shard 0 replica 1' in _stdout(ip, '%nborch logs pipeline --replica 1')
    unnamed = run(ip, '%%flow\nwith:\n  quiet: true\n')
    assert ip.user_ns['flow'] is unnamed


def test_nborch_stop_and_list(ip, capsys):
    run(ip, '%%deployment a --quiet\nuses: Upper\n')
    run(ip, '%%deployment b --quiet\nuses: Upper\n')
    run(ip, '%nborch stop a')
    assert not ip.user_ns['a'].running and ip.user_ns['b'].running
    run(ip, '%nborch list')
    listing = capsys.readouterr().out
    assert "a: Deployment(name='a', uses=Upper, replicas=1, shards=1, stopped)\n" in listing
    assert "b: Deployment(name='b', uses=Upper, replicas=1, shards=1, running)\n" in listing
    run(ip, '%nborch stop --all')
    assert not ip.user_ns['b'].running and nborch_processes() == []


@pytest.mark.parametrize('cell, error, message', [
    ('%%deployment d\nuses: Upper\nshards: [1\n', ConfigError, '%%deployment cell:'),
    ('%%deployment d\nuses: Upper\n\nreplica: 2\n', ConfigError,
     "%%deployment cell:4: unknown key 'replica'"),
    ('%%deployment d\njtype: Flow\nexecutors: []\n', ConfigError,
     "%%deployment cell:2: jtype 'Flow': this is a Flow YAML"),
    ('%%deployment d --shards 0\nuses: Upper\n', ValueError, 'shards=0'),
    ('%%deployment d\nuses: NoSuchExecutor\n', ValueError, "'NoSuchExecutor'"),
    ('%%deployment d --replicas two\nuses: Upper\n', ValueError,
     "%%deployment: argument --replicas: expected an integer, got 'two'"),
    ('%%deployment 2d\nuses: Upper\n', ValueError,
     "%%deployment: NAME '2d' must be a Python identifier"),
    ('%%flow f\nexecutors:\n  - name: a\n    needs: b\n', ValueError, "'b'"),
    ('%nborch status nothing', ValueError, "no deployment or flow named 'nothing'"),
    ('%nborch stop', ValueError, '%nborch stop needs the NAME'),
    ('%nborch restart d', ValueError,
     "%nborch: argument action: invalid choice: 'restart'"),
])
def test_bad_input_is_a_real_exception_with_one_line(ip, cell, error, message):
    with pytest.raises(error) as raised:
        run(ip, cell)
    text = str(raised.value)
    assert message in text and '\n' not in text
    assert 'd' not in ip.user_ns and nborch_processes() == []


def test_yaml_text_api_resolves_relative_paths_from_the_working_directory(monkeypatch):
    monkeypatch.chdir(os.path.join(FIXTURES, 'local'))
    before = set(os.listdir('.'))
    dep = deployment_from_yaml('with:\n  uses: upper.yml\n  replicas: 2\n', name='up')
    assert dep.spec.executor_class.__name__ == 'YamlUpper'
    assert (dep.name, dep.spec.replicas, dep.running) == ('up', 2, False)
    assert set(os.listdir('.')) == before  # the temporary YAML file is gone
    with pytest.raises(ConfigError, match=r'^<yaml>:1: '):
        flow_from_yaml('executors: 3\n')


def test_unload_stops_what_the_magics_started_and_removes_them(ip):
    dep = run(ip, '%%deployment gone --quiet\nuses: Upper\n')
    ip.run_line_magic('unload_ext', 'nborch')
    try:
        assert not dep.running and nborch_processes() == []
        assert 'deployment' not in ip.magics_manager.magics['cell']
        assert 'nborch' not in ip.magics_manager.magics['line']
    finally:
        ip.run_line_magic('load_ext', 'nborch')


def test_help_names_every_flag(shell):
    from nborch.magics import NborchMagics
    help_text = NborchMagics.deployment.__doc__
    # every Deployment argument, as the `nborch deployment` command has them
    for flag in ('--replicas', '--shards', '--port', '--uses', '--polling', '--quiet',
                 '--stateful', '--read-consistency', '--no-reduce', '--timeout-send'):
        assert flag in help_text
    assert help_text.startswith('::\n\n  %%deployment [--uses VALUE]')
    flow_help = NborchMagics.flow.__doc__
    assert '--protocol' in flow_help and '--replicas' not in flow_help
    assert '--replica' in NborchMagics.nborch.__doc__


def _stdout(ip, cell: str) -> str:
    from IPython.utils.capture import capture_output
    with capture_output() as captured:
        run(ip, cell)
    return captured.stdout


def test_flow_yaml_may_name_a_join_before_its_predecessors():
    flow = flow_from_yaml('executors:\n'
                          '  - {name: join, needs: [a, b]}\n'
                          '  - {name: a, needs: gateway}\n'
                          '  - {name: b, needs: gateway}\n', name='f', port=free_port())
    assert (flow.name, [e.name for e in flow.executors]) == ('f', ['join', 'a', 'b'])
    named = flow_from_yaml('with:\n  name: mine\n', name='f')
    assert named.name == 'mine'


def test_rerunning_a_cell_with_only_replicas_changed_scales_the_running_deployment(ip):
    first = run(ip, '%%deployment enc --quiet\nuses: Upper\nreplicas: 1\n')
    pid = first.status()['executors'][0]['shards'][0]['replicas'][0]['pid']
    second = run(ip, '%%deployment enc --quiet\nuses: Upper\nreplicas: 3\n')
    assert second is first and ip.user_ns['enc'] is first and first.running
    replicas = first.status()['executors'][0]['shards'][0]['replicas']
    assert len(replicas) == 3 and replicas[0]['pid'] == pid  # the first replica kept serving
    run(ip, '%nborch scale enc 2')
    assert len(first.status()['executors'][0]['shards'][0]['replicas']) == 2
    # Anything else changed: the old one stops and a new one starts.
    third = run(ip, '%%deployment enc --quiet\nuses: Upper\nreplicas: 2\nshards: 2\n')
    assert third is not first and not first.running and third.running


def test_nborch_scale_on_a_flow_names_the_executor(ip):
    flow = run(ip, '%%flow f --quiet\nexecutors:\n  - name: a\n    uses: Upper\n'
                   '  - name: b\n    uses: Upper\n')
    run(ip, '%nborch scale f 2 --executor b')
    assert [len(e['shards'][0]['replicas']) for e in flow.status()['executors']] == [1, 2]
    again = run(ip, '%%flow f --quiet\nexecutors:\n  - name: a\n    uses: Upper\n'
                    '    replicas: 3\n  - name: b\n    uses: Upper\n    replicas: 2\n')
    assert again is flow
    assert [len(e['shards'][0]['replicas']) for e in flow.status()['executors']] == [3, 2]
    with pytest.raises(ValueError, match='N, the replicas per shard, is missing'):
        run(ip, '%nborch scale f')


MARKER = '''
class Marker(Executor):
    @requests
    def mark(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        for doc in docs:
            doc.text = '{mark}' + doc.text
'''


def test_rerunning_a_cell_after_editing_the_class_rolls_the_new_version_out(ip):
    run(ip, MARKER.format(mark='v1:'))
    dep = run(ip, '%%deployment marked --quiet\nuses: Marker\nreplicas: 2\n')
    before = [r['pid'] for r in dep.status()['executors'][0]['shards'][0]['replicas']]
    assert run(ip, "marked.post('/', text_docs(1)).text") == ['v1:doc-0']
    run(ip, '%%deployment marked --quiet\nuses: Marker\nreplicas: 2\n')  # the same class
    assert [r['pid'] for r in dep.status()['executors'][0]['shards'][0]['replicas']] == before
    run(ip, MARKER.format(mark='v2:'))  # the class edited and its cell re-run
    again = run(ip, '%%deployment marked --quiet\nuses: Marker\nreplicas: 3\n')
    assert again is dep
    after = [r['pid'] for r in dep.status()['executors'][0]['shards'][0]['replicas']]
    assert len(after) == 3 and not set(after) & set(before)
    assert {run(ip, "marked.post('/', text_docs(1)).text[0]") for _ in range(6)} == {'v2:doc-0'}
