"""The IPython extension in a real kernel (jupyter_client): the magics end to end,
interrupting a post, and no nborch process outliving the kernel (stop --all, restart,
shutdown, SIGKILL).

Executors are defined in a notebook cell (the kernel's __main__), as a user would.
"""
from __future__ import annotations

import time

import pytest

from nborch import Client
from tests.jupyter.kernel import EXECUTORS, kernel, nborch_processes, wait_for, wait_gone

pytestmark = pytest.mark.timeout(120)


SLOW_START = '''
class SlowStart(Executor):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        time.sleep(60)
'''


def start_extension(k) -> None:
    k.ok('%load_ext nborch')
    k.ok(EXECUTORS)


def test_deployment_cell_routes_reports_replaces_and_stops(tmp_path):
    with kernel(tmp_path) as k:
        start_extension(k)
        # The reference page's `with:` form; the flag on the magic line overrides the YAML.
        started = k.ok('%%deployment dep --shards 2\n'
                       'jtype: Deployment\n'
                       'with:\n'
                       '  uses: Upper\n'
                       '  replicas: 3\n'
                       '  shards: 1\n'
                       '  quiet: true\n')
        assert started.result == \
            "Deployment(name='dep', uses=Upper, replicas=3, shards=2, running)"
        first = nborch_processes()
        assert len(first) == 1 + 2 * 3  # the gateway and 2 shards x 3 replicas

        k.ok("out = dep.post('/', text_docs(100), request_size=1)")
        assert k.value('out.text') == [f'DOC-{i}' for i in range(100)]
        k.ok('report = %nborch status dep')
        status = k.value('report')
        replicas = [r for shard in status['executors'][0]['shards'] for r in shard['replicas']]
        assert len(replicas) == 6 and all(r['state'] == 'ready' for r in replicas)
        assert sum(r['served'] for r in replicas) == status['requests'] == 100

        assert k.ok('%nborch list').stdout == \
            "dep: Deployment(name='dep', uses=Upper, replicas=3, shards=2, running)\n"
        assert 'Upper ready: shard 1 replica 2' in \
            k.ok('%nborch logs dep --shard 1 --replica 2').stdout

        # A spec error is a real exception with one line, raised before anything stops.
        bad = k.run('%%deployment dep\nuses: Upper\nreplica: 2\n')
        assert bad.ename == 'ConfigError'
        assert bad.evalue.startswith('%%deployment cell:3: ') and "'replica'" in bad.evalue
        bad = k.run('%%deployment dep --replicas two\nuses: Upper\n')
        assert bad.ename == 'ValueError' and "expected an integer, got 'two'" in bad.evalue
        assert k.value('dep.running') is True

        # Re-running the cell replaces the deployment bound to the name (jtype omitted).
        k.ok('%%deployment dep\nuses: Upper\nquiet: true\n')
        assert wait_gone(first, 5) == []
        second = nborch_processes()
        assert len(second) == 2
        assert k.value("dep.post('/', text_docs(2)).text") == ['DOC-0', 'DOC-1']

        k.ok('%nborch stop --all')
        assert wait_gone(second, 5) == []
        assert k.ok('dep').result.endswith('stopped)')


def test_interrupt_cancels_the_post_and_the_deployment_keeps_serving(tmp_path):
    with kernel(tmp_path) as k:
        start_extension(k)
        k.ok('%%deployment dep\nuses: Upper\nreplicas: 2\nquiet: true\n')
        # dep.post routes from the kernel straight to the replicas: count what they serve.
        ports = k.value("[r['port'] for r in dep.status()['executors'][0]['shards'][0]"
                        "['replicas']]")
        secret = bytes.fromhex(k.value('dep.secret.hex()'))
        replicas = [Client(port=p, secret=secret) for p in ports]

        def served() -> int:
            return sum(r.status()['requests_served'] for r in replicas)

        # 400 requests of 0.1 s, two at a time: ~20 s unless the interrupt cancels it.
        msg_id = k.send("dep.post('/slow', text_docs(400), request_size=1, prefetch=2)")
        wait_for(lambda: served() >= 4, 30, 'the long post to start')
        k.manager.interrupt_kernel()
        interrupted = k.reply(msg_id, timeout=10)
        assert interrupted.ename == 'KeyboardInterrupt'

        assert k.value("dep.post('/', text_docs(3), request_size=1).text") == \
            ['DOC-0', 'DOC-1', 'DOC-2']
        settled = served()
        time.sleep(1.0)  # ten slow requests' worth: a post still sending would show here
        assert served() == settled < 400
        for replica in replicas:
            replica.close()
        status = k.value('dep.status()')
        assert [r['state'] for r in status['executors'][0]['shards'][0]['replicas']] == \
            ['ready', 'ready']

        # Interrupting a cell that is starting a deployment stops what it had started.
        serving = nborch_processes()
        k.ok(SLOW_START)
        msg_id = k.send('%%deployment slow --replicas 2\nuses: SlowStart\nquiet: true\n')
        wait_for(lambda: len(nborch_processes()) == len(serving) + 2, 30, 'two replicas')
        starting = [p for p in nborch_processes() if p.pid not in {s.pid for s in serving}]
        k.manager.interrupt_kernel()
        assert k.reply(msg_id, timeout=10).ename == 'KeyboardInterrupt'
        assert wait_gone(starting, 5.0) == []
        assert k.value("['slow' in globals(), dep.post('/', text_docs(1)).text]") == \
            [False, ['DOC-0']]

        k.ok('%unload_ext nborch')  # stops what the magics started
        assert nborch_processes() == []


def test_sigkill_of_the_kernel_leaves_no_process_within_5_seconds(tmp_path):
    with kernel(tmp_path) as k:
        start_extension(k)
        k.ok('%%deployment dep --replicas 3\nuses: Upper\nquiet: true\n')
        procs = nborch_processes()
        assert len(procs) == 4
        k.kill()  # no atexit, no signal handler: only the parent-death pipes are left
        assert wait_gone(procs, 5.0) == []


def test_kernel_restart_and_shutdown_leave_no_process(tmp_path):
    with kernel(tmp_path) as k:
        for end in (k.manager.restart_kernel, k.manager.shutdown_kernel):
            start_extension(k)
            k.ok('%%deployment dep --replicas 2\nuses: Upper\nquiet: true\n')
            procs = nborch_processes()
            assert len(procs) == 3
            end()
            assert wait_gone(procs, 5.0) == []
            if end == k.manager.restart_kernel:
                k.client.wait_for_ready(timeout=60)
