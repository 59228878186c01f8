"""benchmarks/vs_reference.py without the reference system: how runs become the table (figures,
failures, ratios), what a log's error line is reduced to, and that the reference driver's
search is nborch's."""
from __future__ import annotations

import ast
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import vs_reference  # noqa: E402


def search_run(side, rnd, **figures):
    base = {'key': 'numpy-r3-stateful', 'side': side, 'round': rnd, 'status': 'ok',
            'top1': {'query 0': 'I am document 7', 'query 1': 'I am document 9'},
            'error_log_lines': {'error': 0, 'not_leader': 0}}
    return {**base, **figures}


def plan():
    args = vs_reference.parse(['--quick', '--only', 'numpy-r3-stateful'])
    return [w for w in vs_reference.workloads(args) if w[0] == 'numpy-r3-stateful']


def test_medians_and_ratio_reference_over_nborch():
    runs = [search_run('nborch', r, start_s=1, index_s=i, ms_per_query=2)
            for r, i in ((1, 1.0), (2, 3.0), (3, 2.0))]
    runs += [search_run('reference', r, start_s=2, index_s=i, ms_per_query=8)
             for r, i in ((1, 5.0), (2, 4.0), (3, 9.0))]
    rows, agreement = vs_reference.summarize(plan(), runs, 2000)
    index = next(r for r in rows if 'index' in r['label'])
    assert (index['nborch'], index['reference'], index['ratio']) == (2.0, 5.0, 2.5)
    assert agreement['numpy-r3-stateful'] == {'compared': 2, 'same': 2}


def test_a_failed_side_shows_fails_with_its_reason():
    reason = 'RuntimeError: index: 3 request(s) failed, first: timed out enqueuing operation'
    runs = [search_run('nborch', 1, start_s=1, index_s=1.0, ms_per_query=2),
            search_run('reference', 1, start_s=2, status='failed', ok=False, error=reason)]
    rows, _ = vs_reference.summarize(plan(), runs, 2000)
    index = next(r for r in rows if 'index' in r['label'])
    assert index['reference'] is None and index['ratio'] is None
    assert vs_reference.cell(index, 'reference', width=200) == f'fails: {reason}'
    start = next(r for r in rows if 'start' in r['label'])  # what it measured still counts
    assert start['reference'] == 2


def test_some_rounds_failing_keeps_the_others_median():
    runs = [search_run('reference', 1, start_s=2, index_s=4.0, ms_per_query=8),
            search_run('reference', 2, start_s=2, status='timeout', error='timed out')]
    rows, _ = vs_reference.summarize(plan(), runs, 2000)
    index = next(r for r in rows if 'index' in r['label'])
    assert vs_reference.cell(index, 'reference') == '4.000 (1/2 failed)'


def test_last_error_reduces_raft_lines_and_skips_not_leader(tmp_path):
    log = tmp_path / 'log.txt'
    log.write_text(
        '2026-12-02T04:54:16.048Z [ERROR] RAFT-x/rep-0: failed to appendEntries to: '
        'peer="{Voter 2 127.0.0.1:1}" error="rpc error: code = ResourceExhausted desc = '
        'grpc: received message larger than max (7552837 vs. 4194304)"\n'
        '2026-12-02T04:54:17.000Z [ERROR] RPC-x/rep-1: Error from calling RAFT apply:: '
        'error="node is not the leader"\n'
        '2026-12-02T05:33:01.119Z [INFO]  RAFT-x/rep-1: RAFT shutdown whithout error\n')
    assert vs_reference.last_error(str(log)) == (
        'failed to appendEntries to: rpc error: code = ResourceExhausted desc = grpc: '
        'received message larger than max (7552837 vs. 4194304)')
    assert vs_reference.log_summary(str(log))[1] == {'error': 2, 'not_leader': 1}


def function_source(path: str, name: str) -> str:
    tree = ast.parse(open(path).read())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)
    node.body = [s for s in node.body if not (isinstance(s, ast.Expr)
                                              and isinstance(s.value, ast.Constant))]
    return ast.unparse(node)


def test_the_reference_driver_searches_with_nborchs_top_k():
    ours = function_source(os.path.join(ROOT, 'nborch', 'examples.py'), 'top_k')
    theirs = function_source(os.path.join(ROOT, 'benchmarks', 'reference_driver.py'), 'top_k')
    assert ours.replace(' -> tuple[np.ndarray, np.ndarray]', '') == theirs


@pytest.mark.parametrize('flag,docs', [('--quick', 2_000), ('--full', 100_000), (None, 10_000)])
def test_sizes(flag, docs):
    args = vs_reference.parse([flag] if flag else [])
    assert args.docs == docs and args.rounds == (3 if flag is None else 1)


def test_kill_tree_finds_a_grandchild_in_its_own_session(tmp_path):
    """A driver's children may start their own sessions (nborch's workers do): the marker in
    their environment finds them even when the process group does not reach them."""
    import subprocess
    import time

    import psutil
    pid_file = tmp_path / 'grandchild.pid'
    code = ('import subprocess, sys, time; '
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
            'start_new_session=True); '
            f'open({str(pid_file)!r}, "w").write(str(p.pid)); time.sleep(60)')
    token = 'test-' + os.urandom(4).hex()
    env = {**os.environ, vs_reference.MARKER: token}
    root = subprocess.Popen([sys.executable, '-c', code], env=env, start_new_session=True)
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = psutil.Process(int(pid_file.read_text()))
    assert vs_reference.kill_tree(root, {}, token, grace=5) >= 1
    assert root.poll() is not None
    grandchild.wait(timeout=5)
    assert not vs_reference.marked(token)
