"""The `nborch` command as a user runs it: real processes, real signals."""
from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from nborch import Client, Deployment
from nborch.cli import build_parser, given, main
from nborch.config import deployment_keys
from nborch.ports import free_port
from nborch.spec import DeploymentSpec
from tests.integration.helpers import text_docs, wait_for_line

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / 'tests' / 'fixtures' / 'local'
SERVING = re.compile(r'serving on 127\.0\.0\.1:(\d+)')


def start(*args: str) -> subprocess.Popen:
    """`python -m nborch ARGS` from the repository root, stdout and stderr merged."""
    return subprocess.Popen([sys.executable, '-m', 'nborch', *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'nborch', *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def kill(proc: subprocess.Popen) -> None:
    """Last resort for a test that failed midway; the replicas follow their owner out."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    proc.stdout.close()


def stop_with(proc: subprocess.Popen, sig: int) -> str:
    """Send `sig`, wait for a clean exit and return what was printed meanwhile."""
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=60)
    return rest


def test_deployment_yaml_with_overrides_serves_until_ctrl_c():
    """The reference page's `with:` form, its executor from an executor YAML with py_modules;
    --replicas overrides the YAML's 5 and --quiet is a generated flag."""
    port = free_port()
    proc = start('deployment', '--uses', LOCAL / 'deployment_with.yml', '--replicas', 2,
                 '--port', port, '--name', 'upper', '--quiet')
    try:
        lines = wait_for_line(proc, 'serving on', timeout=90)
        assert lines[-1].strip() == \
            f'nborch: deployment upper serving on 127.0.0.1:{port} (2 replicas × 1 shard)'
        client = Client(port=port)
        out = client.post('/', text_docs(4), request_size=1)
        client.close()
        texts = [d.text.split('|') for d in out]
        assert [t[0] for t in texts] == ['DOC-0!', 'DOC-1!', 'DOC-2!', 'DOC-3!']  # with: suffix
        assert {t[1] for t in texts} <= {'rep-0', 'rep-1'}
        rest = stop_with(proc, signal.SIGINT)
        assert proc.returncode == 0, rest
        assert rest.strip().splitlines()[-1] == 'nborch: deployment upper stopped'
    finally:
        kill(proc)


def test_deployment_of_a_class_path_stops_on_sigterm():
    port = free_port()
    proc = start('deployment', '--uses', 'tests.integration.helpers:WhoAmI', '--name', 'who',
                 '--port', port)
    try:
        lines = wait_for_line(proc, 'serving on', timeout=90)
        assert f'nborch: deployment who serving on 127.0.0.1:{port} (1 replica × 1 shard)' \
            in lines[-1]  # not --quiet: replica output may share the line
        client = Client(f'127.0.0.1:{port}')
        assert client.post('/', text_docs(1))[0].text.startswith('doc-0|rep-0|pid-')
        client.close()
        rest = stop_with(proc, signal.SIGTERM)
        assert proc.returncode == 0, rest
        assert 'nborch: deployment who stopped' in rest
    finally:
        kill(proc)


def test_deployment_with_both_protocols_serves_http_too():
    grpc_port, http_port = free_port(), free_port()
    proc = start('deployment', '--uses', 'tests.integration.helpers:Echo', '--quiet',
                 '--protocol', 'grpc,http', '--port', f'[{grpc_port},{http_port}]')
    try:
        lines = wait_for_line(proc, 'serving on', timeout=90)
        assert f'serving on 127.0.0.1:{grpc_port} (grpc {grpc_port}, http {http_port})' \
            in lines[-1]
        client = Client(host=f'http://127.0.0.1:{http_port}')
        assert client.post('/', text_docs(2)).text == ['doc-0', 'doc-1']
        client.close()
        rest = stop_with(proc, signal.SIGINT)
        assert proc.returncode == 0, rest
    finally:
        kill(proc)


def test_bad_yaml_is_one_line_with_file_and_line_exit_code_2_and_starts_nothing(tmp_path):
    bad_key = tmp_path / 'dep.yml'
    bad_key.write_text('jtype: Deployment\nwith:\n  uses: tests.integration.helpers:Echo\n'
                       '  replica: 2\n')
    done = run('deployment', '--uses', bad_key)
    assert (done.returncode, done.stdout) == (2, '')
    assert done.stderr == (f"nborch: error: {bad_key}:4: unknown key 'replica' in a "
                           "Deployment's with: (did you mean 'replicas'?)\n")


@pytest.mark.parametrize('args, expected', [
    (['deployment', '--uses', '{tmp}/broken.yml'],
     "{tmp}/broken.yml:3: invalid YAML: expected ',' or ']', but got '<stream end>'"),
    (['deployment', '--uses', '{local}/flow.yml'],
     '{local}/flow.yml is a Flow YAML: run `nborch flow --uses {local}/flow.yml`'),
    (['flow', '--uses', '{local}/deployment.yml'],
     "{local}/deployment.yml:1: jtype 'Deployment': this is a Deployment YAML, not a Flow YAML "
     '(load it with Deployment.load_config or `nborch deployment --uses`)'),
    (['deployment', '--uses', 'tests.integration.helpers:Echo', '--shards', '0'],
     'shards=0: must be an integer >= 1'),
    (['deployment', '--uses', '{tmp}/missing.yml'], '{tmp}/missing.yml: no such file'),
    (['deployment', '--uses', '{reference}/deployment.yml'],
     "uses='jinaai://jina-ai/CLIPEncoder': nborch has no executor hub. Use an Executor class, "
     "'module.path:ClassName', the name of an Executor subclass you imported, or an executor "
     'YAML file'),
    (['executor', '--uses', 'no_such_module_q:Thing'],
     "unknown executor 'no_such_module_q:Thing': cannot import 'no_such_module_q' "
     "(No module named 'no_such_module_q')"),
    (['deployment', '--replicas', 'two'],
     'argument --replicas: expected an integer, got \'two\' (see `nborch deployment --help`)'),
    (['deployment', '--env', '[1]'],
     "argument --env: expected a JSON object, got '[1]' (see `nborch deployment --help`)"),
    (['ping', 'localhost'], "no port given for host 'localhost'"),
])
def test_bad_input_in_process(tmp_path, capsys, args, expected):
    (tmp_path / 'broken.yml').write_text('jtype: Deployment\nreplicas: [1\n')
    where = {'tmp': tmp_path, 'local': LOCAL, 'reference': REPO / 'tests' / 'fixtures' / 'reference'}
    try:
        code = main([a.format(**where) for a in args])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    captured = capsys.readouterr()
    assert (code, captured.out) == (2, '')
    assert captured.err == f'nborch: error: {expected.format(**where)}\n'


def test_options_are_derived_from_the_spec_dataclasses():
    parser = build_parser()
    args = parser.parse_args(['deployment', '--replicas', '3', '--polling', '{"/search": "ALL"}',
                              '--port', '5555', '--host', '0.0.0.0', '--no-quiet',
                              '--uses-with', '{"dim": 3}', '--timeout-ready', '-1'])
    assert given(args, args.options) == {
        'replicas': 3, 'polling': {'/search': 'ALL'}, 'port': 5555, 'host': '0.0.0.0',
        'quiet': False, 'uses_with': {'dim': 3}, 'timeout_ready': -1}
    fields = {f.name for f in dataclasses.fields(DeploymentSpec)}
    flags = {o.name for o in args.options}
    assert flags == {k for k in deployment_keys() if k in fields} - {'uses'}
    executor = parser.parse_args(['executor', '--uses', 'x:Y', '--port', '7', '--shard-id', '1'])
    assert given(executor, executor.options) == {'port': 7, 'shard_id': 1}


@pytest.mark.parametrize('flags, expected', [(['--no-reduce'], {'no_reduce': True}),
                                             (['--disable-reduce'], {'no_reduce': True}),
                                             ([], {})])
def test_no_reduce_is_a_flag_in_the_reference_systems_spellings(flags, expected):
    """A '--no-' flag sets True: it is the option's name, not the negative of 'reduce'."""
    args = build_parser().parse_args(['deployment', '--uses', 'x:Y', *flags])
    assert given(args, args.options) == expected


def test_port_in_use_is_exit_code_2():
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run('deployment', '--uses', 'tests.integration.helpers:Echo', '--port', port)
    assert done.returncode == 2
    assert done.stderr.startswith('nborch: error: ') and f'port {port}' in done.stderr
    assert 'in use' in done.stderr and done.stderr.count('\n') == 1


def test_executor_serves_one_replica_that_ping_sees_and_a_deployment_uses_as_external():
    port = free_port()
    # An external executor is not the deployment's own: it holds none of its secret.
    proc = start('executor', '--uses', 'tests.integration.helpers:Echo', '--port', port,
                 '--name', 'echo', '--insecure')
    try:
        wait_for_line(proc, f'"port": {port}', timeout=60)
        ping = run('ping', f'127.0.0.1:{port}')
        assert (ping.returncode, ping.stdout) == \
            (0, f"127.0.0.1:{port} is ready (worker 'echo' shard 0 replica 0, pid {proc.pid})\n")
        # One external address: nothing starts, posts go straight to it (no gateway hop).
        children = psutil.Process().children(recursive=True)
        with Deployment(name='echo', host=f'localhost:{port}', external=True, quiet=True) as dep:
            assert psutil.Process().children(recursive=True) == children
            assert (dep.address, dep.running, dep.healthy) == (f'127.0.0.1:{port}', True, True)
            assert dep.post('/', text_docs(2)).text == ['doc-0', 'doc-1']
            status = dep.status()
        assert status['gateway']['state'] == 'none'
        assert status['gateway']['direct'] == f'127.0.0.1:{port}'
        (replica,) = status['executors'][0]['shards'][0]['replicas']
        assert replica['address'] == f'127.0.0.1:{port}' and replica['reachable'] is True
        assert (replica['pid'], replica['served']) == (proc.pid, 1)
        assert not dep.running
        stop_with(proc, signal.SIGTERM)
        assert proc.returncode == 0
    finally:
        kill(proc)


def test_executor_without_a_secret_refuses_to_start():
    done = run('executor', '--uses', 'tests.integration.helpers:Echo', '--port', free_port())
    assert done.returncode == 2 and done.stdout == ''
    assert done.stderr.startswith('nborch: error: executor executor has no deployment secret: ')
    assert '--secret-file' in done.stderr and '--insecure' in done.stderr
    assert done.stderr.count('\n') == 1


def test_executor_with_a_secret_answers_only_callers_that_hold_it(tmp_path):
    secret = tmp_path / 'secret'
    secret.write_text('an-example-secret-of-32-characters\n')
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, '-m', 'nborch', 'executor', '--uses', 'tests.integration.helpers:Echo',
         '--port', str(port), '--name', 'echo'], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        env={**os.environ, 'NBORCH_SECRET': secret.read_text()})
    try:
        wait_for_line(proc, f'"port": {port}', timeout=60)
        without = run('ping', f'127.0.0.1:{port}', '--timeout', '10')
        assert without.returncode == 1
        assert 'UNAUTHENTICATED' in without.stderr, without.stderr
        wrong = tmp_path / 'wrong'
        wrong.write_text('another-secret-of-32-characters!!')
        assert run('ping', f'127.0.0.1:{port}', '--secret-file', wrong).returncode == 1
        ping = run('ping', f'127.0.0.1:{port}', '--secret-file', secret)
        assert ping.returncode == 0, ping.stderr
        assert ping.stdout.startswith(f"127.0.0.1:{port} is ready (worker 'echo'")
        rest = stop_with(proc, signal.SIGTERM)
        assert 'refused /nborch.Executor/Status from ' in rest  # one log line per refusal
    finally:
        kill(proc)


def test_ping_of_a_closed_port_exits_1():
    port = free_port()
    done = run('ping', f'127.0.0.1:{port}', '--timeout', '2')
    assert done.returncode == 1 and done.stdout == ''
    assert done.stderr.startswith(f'nborch: 127.0.0.1:{port} is not ready: ')
    assert done.stderr.count('\n') == 1


def test_flow_yaml_serves_until_ctrl_c():
    proc = start('flow', '--uses', LOCAL / 'flow_cli.yml')
    try:
        lines = wait_for_line(proc, 'serving on', timeout=90)
        port = int(SERVING.search(lines[-1]).group(1))
        assert (f'nborch: flow cliflow serving on 127.0.0.1:{port} (2 executors: upper, echo)'
                in lines[-1])
        client = Client(port=port)
        assert client.post('/', text_docs(1))[0].text == 'DOC-0!|rep-0'
        client.close()
        rest = stop_with(proc, signal.SIGINT)
        assert proc.returncode == 0, rest
        assert 'nborch: flow cliflow stopped' in rest
    finally:
        kill(proc)
