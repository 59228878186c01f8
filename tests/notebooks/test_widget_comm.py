"""A real kernel shows a live TopologyView: after N requests, the widget's comm messages (the
`comm_open` of its HTML model, then `update`s) carry the counts a Deployment reports."""
from __future__ import annotations

import queue
import re
import time

import pytest

jupyter_client = pytest.importorskip('jupyter_client')

N = 6  # sequential requests over 2 replicas: 3 each (ties go round robin)

SETUP = '''
from docarray.documents import TextDoc
from IPython.display import display
from nborch import Deployment
from nborch.examples import Echo
from nborch.widgets import TopologyView

dep = Deployment(name='echo', uses=Echo, replicas=2, quiet=True).start()
view = TopologyView(dep, interval=0.05)
display(view)
'''

POST = f'''
for i in range({N}):
    assert dep.post('/', TextDoc(text=str(i))).text == [str(i)]
'''

STOP = 'dep.close()'
CLOSE = 'view.close()'


def served_counts(html: str) -> dict[tuple[int, int], int]:
    return {(int(s), int(r)): int(n) for s, r, n in
            re.findall(r'data-shard="(\d+)" data-replica="(\d+)" data-served="(\d+)"', html)}


class KernelSession:
    """One kernel; collects every iopub message while waiting for executions."""

    def __init__(self):
        self.manager, self.client = jupyter_client.manager.start_new_kernel(
            kernel_name='python3', startup_timeout=60)
        self.iopub: list[dict] = []

    def execute(self, code: str, timeout: float = 60) -> None:
        msg_id = self.client.execute(code)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._next(deadline)
            if msg['parent_header'].get('msg_id') == msg_id and msg['msg_type'] == 'error':
                raise AssertionError('\n'.join(msg['content']['traceback']))
            if (msg['parent_header'].get('msg_id') == msg_id and msg['msg_type'] == 'status'
                    and msg['content']['execution_state'] == 'idle'):
                return

    def wait_for(self, predicate, timeout: float = 15) -> dict:
        """The first iopub message (seen already or arriving before `timeout`) that matches."""
        for msg in self.iopub:
            if predicate(msg):
                return msg
        deadline = time.monotonic() + timeout
        while True:
            msg = self._next(deadline)
            if predicate(msg):
                return msg

    def _next(self, deadline: float) -> dict:
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = self.client.get_iopub_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            self.iopub.append(msg)
            return msg
        seen = [(m['msg_type'], str(m['content'])[:200]) for m in self.iopub[-20:]]
        raise TimeoutError(f'no matching kernel message in time; last seen: {seen}')

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


def html_model_value(msg: dict, comm_id: str | None = None) -> str | None:
    """The `value` an HTML widget model gets in this message (comm_open or update)."""
    if msg['msg_type'] == 'comm_open' and msg['content'].get('target_name') == 'jupyter.widget':
        state = msg['content']['data'].get('state', {})
        if state.get('_model_name') == 'HTMLModel' and 'nborch-topology' in state.get('value', ''):
            return state['value']
    if msg['msg_type'] == 'comm_msg' and (comm_id is None or msg['content']['comm_id'] == comm_id):
        data = msg['content']['data']
        if data.get('method') == 'update' and 'value' in data.get('state', {}):
            return data['state']['value']
    return None


def test_live_view_sends_the_counts_to_the_front_end():
    kernel = KernelSession()
    try:
        kernel.execute(SETUP)
        opened = kernel.wait_for(lambda m: m['msg_type'] == 'comm_open'
                                 and html_model_value(m) is not None)
        comm_id = opened['content']['comm_id']
        assert served_counts(html_model_value(opened)) == {(0, 0): 0, (0, 1): 0}
        display = kernel.wait_for(lambda m: m['msg_type'] == 'display_data')
        assert display['content']['data']['text/plain'].startswith('TopologyView: echo (running)')

        kernel.execute(POST)
        update = kernel.wait_for(
            lambda m: m['msg_type'] == 'comm_msg'
            and served_counts(html_model_value(m, comm_id) or '') == {(0, 0): 3, (0, 1): 3})
        value = html_model_value(update, comm_id)
        assert f'data-requests="{N}"' in value
        assert 'running' in value

        kernel.execute(STOP)  # the view draws its last counts, marked stopped
        stopped = kernel.wait_for(lambda m: 'stopped' in (html_model_value(m, comm_id) or ''))
        assert served_counts(html_model_value(stopped, comm_id)) == {(0, 0): 3, (0, 1): 3}
        kernel.execute(CLOSE)
        kernel.wait_for(lambda m: m['msg_type'] == 'comm_close'
                        and m['content']['comm_id'] == comm_id)
    finally:
        kernel.shutdown()
