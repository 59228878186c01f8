"""A real Jupyter kernel for tests, driven through jupyter_client, and process checks.

The kernel runs this interpreter (`sys.executable`, the venv the tests run in) through a
kernelspec written to a temp dir, so no installed `python3` kernelspec can send it elsewhere.
It inherits NBORCH_TEST_SESSION, like every process a test starts (tests/conftest.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Iterator

import psutil
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from tests.conftest import session_processes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KERNEL_NAME = 'nborch-test'


@dataclass
class Outcome:
    """What one cell did: its stdout, its `text/plain` result, and its error, if any."""

    status: str
    stdout: str = ''
    result: str | None = None
    ename: str | None = None
    evalue: str | None = None
    traceback: list[str] = field(default_factory=list)


class Kernel:
    def __init__(self, manager: KernelManager):
        self.manager = manager
        self.client = manager.client()

    @property
    def pid(self) -> int:
        return self.manager.provisioner.process.pid

    def run(self, code: str, timeout: float = 60) -> Outcome:
        """Execute `code` as one cell and wait for it.

        Every cell goes with stop_on_error=False: after an error ipykernel aborts requests
        that reach it before its own "stop aborting" message, a race with the next cell.
        """
        outcome = Outcome(status='?')

        def on_output(msg) -> None:
            kind, content = msg['msg_type'], msg['content']
            if kind == 'stream' and content['name'] == 'stdout':
                outcome.stdout += content['text']
            elif kind == 'execute_result':
                outcome.result = content['data'].get('text/plain')

        reply = self.client.execute_interactive(code, output_hook=on_output, timeout=timeout,
                                                stop_on_error=False)
        return _finish(outcome, reply['content'])

    def ok(self, code: str, timeout: float = 60) -> Outcome:
        """`run`, failing the test with the kernel's traceback when the cell raised."""
        outcome = self.run(code, timeout)
        assert outcome.status == 'ok', '\n'.join(
            [f'cell {outcome.status}: {outcome.ename}: {outcome.evalue}', *outcome.traceback])
        return outcome

    def value(self, expression: str):
        """The value of a JSON-able expression evaluated in the kernel."""
        return json.loads(self.ok(f'import json as _json; print(_json.dumps({expression}))')
                          .stdout.strip().splitlines()[-1])

    def send(self, code: str) -> str:
        """Start executing `code` without waiting; `reply(msg_id)` waits for it."""
        return self.client.execute(code, stop_on_error=False)

    def reply(self, msg_id: str, timeout: float) -> Outcome:
        """The outcome of a cell started with `send` (stdout not collected)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.client.get_shell_msg(timeout=max(deadline - time.monotonic(), 0.01))
            if msg['parent_header'].get('msg_id') == msg_id:
                return _finish(Outcome(status='?'), msg['content'])

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)


def _finish(outcome: Outcome, content: dict) -> Outcome:
    outcome.status = content['status']
    if outcome.status == 'error':
        outcome.ename, outcome.evalue = content['ename'], content['evalue']
        outcome.traceback = content['traceback']
    return outcome


@contextlib.contextmanager
def kernel(tmp_path) -> Iterator[Kernel]:
    """A started kernel (cwd: the repo), always shut down and reaped on exit."""
    spec_dir = tmp_path / 'kernels' / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / 'kernel.json').write_text(json.dumps({
        'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
        'display_name': 'nborch test kernel', 'language': 'python'}))
    manager = KernelManager(
        kernel_name=KERNEL_NAME,
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / 'kernels')]))
    manager.start_kernel(cwd=REPO)
    k = Kernel(manager)
    try:
        k.client.start_channels()
        k.client.wait_for_ready(timeout=60)
        yield k
    finally:
        k.client.stop_channels()
        if manager.is_alive():
            manager.shutdown_kernel(now=False)
        else:
            manager.cleanup_resources()


def nborch_processes() -> list[psutil.Process]:
    """Live nborch background processes (gateways, workers) this test session started."""
    found = []
    for proc in session_processes():
        try:
            if any(part.startswith('nborch.runtime.') for part in proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until none of `procs` runs (zombies count as gone); return those still running."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.Error:
                continue
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def wait_for(condition, timeout: float, what: str):
    """Poll `condition()` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f'timed out after {timeout} s waiting for {what}')


EXECUTORS = '''
import os, time
from docarray import DocList
from docarray.documents import TextDoc
from nborch import Executor, requests

class Upper(Executor):
    """Defined in the kernel's __main__: reaches the replica processes by value."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        print(f'Upper ready: shard {self.runtime_args.shard_id} '
              f'replica {self.runtime_args.replica_id}', flush=True)

    @requests(on='/slow')
    def slow(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        time.sleep(0.1)

    @requests
    def upper(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        for doc in docs:
            doc.text = doc.text.upper()

def text_docs(n):
    return DocList[TextDoc]([TextDoc(text=f'doc-{i}') for i in range(n)])
'''
